//! Every setting, with its environment variable, default and one line of doc. Read from flags
//! and the environment (flags win), validated once at start with a message naming the variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[clap(rename_all = "UPPER")]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

impl From<JwtAlgorithm> for jsonwebtoken::Algorithm {
    fn from(a: JwtAlgorithm) -> Self {
        match a {
            JwtAlgorithm::HS256 => Self::HS256,
            JwtAlgorithm::RS256 => Self::RS256,
            JwtAlgorithm::ES256 => Self::ES256,
        }
    }
}

/// How tokens are verified (and, for `token` and `--dev`, minted).
#[derive(Args, Clone)]
pub struct JwtSettings {
    /// HS256 shared secret (at least 32 bytes). Exactly one of this and JWT_PUBLIC_KEY_FILE.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// PEM public key for RS256/ES256 verification.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// PEM private key, only for minting RS256/ES256 tokens with `token`.
    #[arg(long, env = "JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,
    /// The pinned algorithm. Default: HS256 with a secret; with a key file, RS256 or ES256 as the
    /// key's type says.
    #[arg(long, env = "JWT_ALGORITHM", value_enum)]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_algorithm", &self.jwt_algorithm)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .finish()
    }
}

impl JwtSettings {
    pub fn secret_bytes(&self) -> Option<&[u8]> {
        self.jwt_secret
            .as_ref()
            .map(|s| s.expose_secret().as_bytes())
    }
}

#[derive(Args, Clone)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    #[command(flatten)]
    pub jwt: JwtSettings,
    /// Allowed browser origins (comma list). `*` allows any origin (not for production).
    #[arg(
        long,
        env = "CORS_ORIGIN",
        default_value = "http://localhost:3000",
        value_delimiter = ','
    )]
    pub cors_origin: Vec<String>,
    /// Where messages, notifications and grants are stored: sqlite://… or postgres://…
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/aegisx.db",
        hide_env_values = true
    )]
    pub database_url: String,
    /// API keys for `/api/v1` (comma list). None: the HTTP API is off (404).
    #[arg(long, env = "API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<SecretString>,
    /// Bearer token `/metrics` requires, when set.
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<SecretString>,
    /// `message` events per user per rolling minute, across all the user's connections.
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 60)]
    pub rate_limit_per_minute: u32,
    /// Live connections one user may hold; the next connect is refused.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 10)]
    pub max_connections_per_user: usize,
    /// Rooms one connection may join besides its own user and tenant rooms.
    #[arg(long, env = "MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub max_rooms_per_connection: usize,
    /// Longest chat message, in Unicode scalar values.
    #[arg(long, env = "MAX_MESSAGE_LENGTH", default_value_t = 4000)]
    pub max_message_length: usize,
    /// Largest websocket frame/message accepted; a larger one closes that socket.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 65_536)]
    pub max_payload_bytes: usize,
    /// Largest HTTP long-polling payload (Engine.IO maxPayload).
    #[arg(long, env = "MAX_POLLING_PAYLOAD_BYTES", default_value_t = 1_000_000)]
    pub max_polling_payload_bytes: u64,
    /// Binary attachments allowed in one packet; more closes that socket.
    #[arg(long, env = "MAX_BINARY_ATTACHMENTS", default_value_t = 4)]
    pub max_binary_attachments: usize,
    /// Most messages replayed by one `join_room` with `since`.
    #[arg(long, env = "MAX_REPLAY", default_value_t = 1000)]
    pub max_replay: u32,
    /// Seconds without a client event before the server disconnects the socket.
    #[arg(long, env = "INACTIVE_TIMEOUT_SECS", default_value_t = 1800)]
    pub inactive_timeout_secs: u64,
    /// Seconds a client has to join the namespace after opening the transport (also how long a
    /// refused CONNECT keeps its transport).
    #[arg(long, env = "CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    pub connect_timeout_secs: u64,
    /// Seconds a client has to send complete HTTP request headers.
    #[arg(long, env = "HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,
    /// Engine.IO ping interval, milliseconds.
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,
    /// Engine.IO ping timeout, milliseconds.
    #[arg(long, env = "PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,
    /// Packets buffered per socket before the socket counts as too slow (packets are dropped
    /// and counted, and the socket is closed at its next heartbeat).
    #[arg(long, env = "SOCKET_BUFFER_PACKETS", default_value_t = 1024)]
    pub socket_buffer_packets: usize,
    /// Pending chat writes before senders wait.
    #[arg(long, env = "WRITE_QUEUE", default_value_t = 8192)]
    pub write_queue: usize,
    /// Pending deliveries before publishers wait.
    #[arg(long, env = "FANOUT_QUEUE", default_value_t = 8192)]
    pub fanout_queue: usize,
    /// Rooms reported by the `websocket_room_connections` gauge (the largest ones).
    #[arg(long, env = "ROOM_METRICS_TOP", default_value_t = 100)]
    pub room_metrics_top: usize,
    /// Seconds a graceful shutdown may take before the process exits anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Presence: tenant-wide announcements while the tenant has at most this many users online;
    /// above it, only sockets watching a user (`watch_presence`) hear of it.
    #[arg(long, env = "PRESENCE_BROADCAST_MAX", default_value_t = 1000)]
    pub presence_broadcast_max: usize,
    /// Presence: milliseconds a user whose last connection closed stays online (a reconnect
    /// within it announces nothing). Connections closed by a shutdown get at least 10 s.
    #[arg(long, env = "PRESENCE_OFFLINE_GRACE_MS", default_value_t = 0)]
    pub presence_offline_grace_ms: u64,
    /// Presence: milliseconds between presence passes; the transitions of one are coalesced.
    #[arg(long, env = "PRESENCE_TICK_MS", default_value_t = 50)]
    pub presence_tick_ms: u64,
    /// Presence: most users one `list_online` answers (`truncated: true` beyond).
    #[arg(long, env = "PRESENCE_LIST_MAX", default_value_t = 1000)]
    pub presence_list_max: usize,
    /// Presence: users one socket may watch with `watch_presence`.
    #[arg(long, env = "PRESENCE_WATCH_MAX", default_value_t = 500)]
    pub presence_watch_max: usize,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    // Web client support.
    /// Seconds a `send_message` `clientMessageId` is remembered, so a resend is not stored twice.
    #[arg(long, env = "CLIENT_MESSAGE_ID_WINDOW_SECS", default_value_t = 600)]
    pub client_message_id_window_secs: u64,
    /// Most client message ids remembered (oldest forgotten first), bounding the memory used.
    #[arg(long, env = "CLIENT_MESSAGE_ID_CAPACITY", default_value_t = 100_000)]
    pub client_message_id_capacity: usize,
    /// Directory of the built web demo served at `/` when it exists (empty: serve none).
    #[arg(long, env = "WEB_DIR", default_value = "web/dist")]
    pub web_dir: PathBuf,
}

/// A setting that cannot work, with the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "no JWT key configured: set JWT_SECRET (HS256) or JWT_PUBLIC_KEY_FILE (RS256/ES256), or run `serve --dev`"
    )]
    NoKey,
    #[error("JWT_SECRET and JWT_PUBLIC_KEY_FILE are both set: configure exactly one")]
    TwoKeys,
    #[error("JWT_SECRET must be at least 32 bytes")]
    ShortSecret,
    #[error("JWT_ALGORITHM={0:?} does not fit the configured key")]
    AlgorithmMismatch(JwtAlgorithm),
    #[error("cannot read {var} at {path}: {reason}")]
    KeyFile {
        var: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{var} must be {rule}")]
    Range {
        var: &'static str,
        rule: &'static str,
    },
}

impl Settings {
    /// Checks the limits; key material is checked when the keys are loaded.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let checks: [(&'static str, bool, &'static str); 9] = [
            (
                "RATE_LIMIT_PER_MINUTE",
                self.rate_limit_per_minute >= 1,
                "at least 1",
            ),
            (
                "MAX_CONNECTIONS_PER_USER",
                self.max_connections_per_user >= 1,
                "at least 1",
            ),
            (
                "MAX_MESSAGE_LENGTH",
                self.max_message_length >= 1,
                "at least 1",
            ),
            (
                "MAX_PAYLOAD_BYTES",
                self.max_payload_bytes >= 1024,
                "at least 1024",
            ),
            (
                "MAX_REPLAY",
                (1..=100_000).contains(&self.max_replay),
                "1 to 100000",
            ),
            (
                "INACTIVE_TIMEOUT_SECS",
                self.inactive_timeout_secs >= 1,
                "at least 1",
            ),
            (
                "CONNECT_TIMEOUT_SECS",
                self.connect_timeout_secs >= 1,
                "at least 1",
            ),
            (
                "SOCKET_BUFFER_PACKETS",
                self.socket_buffer_packets >= 16,
                "at least 16",
            ),
            (
                "WRITE_QUEUE",
                self.write_queue >= 1 && self.fanout_queue >= 1,
                "at least 1 (and FANOUT_QUEUE)",
            ),
        ];
        for (var, ok, rule) in checks {
            if !ok {
                return Err(SettingsError::Range { var, rule });
            }
        }
        let presence: [(&'static str, bool, &'static str); 3] = [
            (
                "PRESENCE_TICK_MS",
                (1..=10_000).contains(&self.presence_tick_ms),
                "1 to 10000",
            ),
            (
                "PRESENCE_LIST_MAX",
                (1..=1000).contains(&self.presence_list_max),
                "1 to 1000",
            ),
            (
                "PRESENCE_WATCH_MAX",
                (1..=500).contains(&self.presence_watch_max),
                "1 to 500",
            ),
        ];
        for (var, ok, rule) in presence {
            if !ok {
                return Err(SettingsError::Range { var, rule });
            }
        }
        Ok(())
    }

    pub fn inactive_timeout(&self) -> Duration {
        Duration::from_secs(self.inactive_timeout_secs)
    }

    pub fn presence(&self) -> crate::domain::presence::PresenceSettings {
        crate::domain::presence::PresenceSettings {
            broadcast_max: self.presence_broadcast_max,
            offline_grace: Duration::from_millis(self.presence_offline_grace_ms),
            tick: Duration::from_millis(self.presence_tick_ms),
            list_max: self.presence_list_max,
            watch_max: self.presence_watch_max,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("jwt", &self.jwt)
            .field("cors_origin", &self.cors_origin)
            .field(
                "database_url",
                &crate::store::redact_url(&self.database_url),
            )
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "[redacted]"),
            )
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field("max_rooms_per_connection", &self.max_rooms_per_connection)
            .field("max_message_length", &self.max_message_length)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("max_polling_payload_bytes", &self.max_polling_payload_bytes)
            .field("max_binary_attachments", &self.max_binary_attachments)
            .field("max_replay", &self.max_replay)
            .field("inactive_timeout_secs", &self.inactive_timeout_secs)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("handshake_timeout_secs", &self.handshake_timeout_secs)
            .field("ping_interval_ms", &self.ping_interval_ms)
            .field("ping_timeout_ms", &self.ping_timeout_ms)
            .field("socket_buffer_packets", &self.socket_buffer_packets)
            .field("write_queue", &self.write_queue)
            .field("fanout_queue", &self.fanout_queue)
            .field("room_metrics_top", &self.room_metrics_top)
            .field("shutdown_timeout_secs", &self.shutdown_timeout_secs)
            .field("presence_broadcast_max", &self.presence_broadcast_max)
            .field("presence_offline_grace_ms", &self.presence_offline_grace_ms)
            .field("presence_tick_ms", &self.presence_tick_ms)
            .field("presence_list_max", &self.presence_list_max)
            .field("presence_watch_max", &self.presence_watch_max)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field(
                "client_message_id_window_secs",
                &self.client_message_id_window_secs,
            )
            .field(
                "client_message_id_capacity",
                &self.client_message_id_capacity,
            )
            .field("web_dir", &self.web_dir)
            .finish()
    }
}
