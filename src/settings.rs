//! Every setting, with its environment variable, default and one line of doc. Read from flags
//! and the environment (flags win), validated once at start with a message naming the variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::auth::{ClaimMap, ClaimPath};

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
    #[value(name = "EdDSA")]
    EdDSA,
}

impl From<JwtAlgorithm> for jsonwebtoken::Algorithm {
    fn from(a: JwtAlgorithm) -> Self {
        match a {
            JwtAlgorithm::HS256 => Self::HS256,
            JwtAlgorithm::RS256 => Self::RS256,
            JwtAlgorithm::ES256 => Self::ES256,
            JwtAlgorithm::EdDSA => Self::EdDSA,
        }
    }
}

/// How tokens are verified (and, for `token` and `--dev`, minted).
#[derive(Args, Clone)]
pub struct JwtSettings {
    /// HS256 shared secrets (each at least 32 bytes), comma list: the first mints, all verify.
    /// Exactly one of this, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// PEM public key, or a bundle of several, for RS256/ES256/EdDSA verification.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// PEM private key, only for minting RS256/ES256/EdDSA tokens with `token`.
    #[arg(long, env = "JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,
    /// The pinned algorithm. Default: HS256 with a secret; with a key file, as the key's type
    /// says; RS256 with a JWKS URL.
    #[arg(long, env = "JWT_ALGORITHM", value_enum)]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    /// Key ids (`kid`) of the JWT_SECRET entries or JWT_PUBLIC_KEY_FILE keys, comma list in the
    /// same order; a token naming one is checked with that key only.
    #[arg(long, env = "JWT_KEY_IDS", value_delimiter = ',')]
    pub jwt_key_ids: Vec<String>,
    /// The identity provider's JWKS document (https:// or http://): keys fetched at start,
    /// cached, refreshed on schedule and on an unknown `kid`.
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// Shortest interval between two JWKS fetches (also bounds `Cache-Control: max-age` and the
    /// fetch on an unknown `kid`), seconds.
    #[arg(long, env = "JWT_JWKS_MIN_REFRESH_SECS", default_value_t = 30)]
    pub jwt_jwks_min_refresh_secs: u64,
    /// Longest interval between two JWKS fetches (used when no `max-age` is given), seconds.
    #[arg(long, env = "JWT_JWKS_MAX_REFRESH_SECS", default_value_t = 600)]
    pub jwt_jwks_max_refresh_secs: u64,
    /// Deadline of one JWKS fetch, seconds.
    #[arg(long, env = "JWT_JWKS_TIMEOUT_SECS", default_value_t = 5)]
    pub jwt_jwks_timeout_secs: u64,
    /// Claim holding the user id: a claim name, or a JSON pointer (`/a/b`) for a nested one.
    #[arg(long, env = "JWT_CLAIM_USER_ID", default_value = "sub")]
    pub jwt_claim_user_id: String,
    /// Claim holding the tenant id (name or JSON pointer).
    #[arg(long, env = "JWT_CLAIM_TENANT", default_value = "tenantId")]
    pub jwt_claim_tenant: String,
    /// Claim holding the display name (name or JSON pointer).
    #[arg(long, env = "JWT_CLAIM_NAME", default_value = "name")]
    pub jwt_claim_name: String,
    /// Claim holding the email (name or JSON pointer).
    #[arg(long, env = "JWT_CLAIM_EMAIL", default_value = "email")]
    pub jwt_claim_email: String,
    /// Claim holding the roles, an array or a space-separated string (name or JSON pointer).
    #[arg(long, env = "JWT_CLAIM_ROLES", default_value = "roles")]
    pub jwt_claim_roles: String,
    /// Claim holding the permissions, an array or a space-separated string (name or pointer).
    #[arg(long, env = "JWT_CLAIM_PERMISSIONS", default_value = "permissions")]
    pub jwt_claim_permissions: String,
    /// Claim holding the private rooms the user may join (name or JSON pointer).
    #[arg(long, env = "JWT_CLAIM_ROOMS", default_value = "rooms")]
    pub jwt_claim_rooms: String,
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
            .field("jwt_key_ids", &self.jwt_key_ids)
            .field(
                "jwt_jwks_url",
                &self.jwt_jwks_url.as_deref().map(crate::store::redact_url),
            )
            .field("jwt_jwks_min_refresh_secs", &self.jwt_jwks_min_refresh_secs)
            .field("jwt_jwks_max_refresh_secs", &self.jwt_jwks_max_refresh_secs)
            .field("jwt_jwks_timeout_secs", &self.jwt_jwks_timeout_secs)
            .field("claims", &self.claim_map())
            .finish()
    }
}

impl JwtSettings {
    /// The JWT_SECRET entries, in order (the first one mints).
    pub fn secrets(&self) -> Option<Vec<&[u8]>> {
        self.jwt_secret.as_ref().map(|s| {
            s.expose_secret()
                .split(',')
                .map(|p| p.trim().as_bytes())
                .collect()
        })
    }

    /// Where the principal's fields are read from; an empty setting keeps its default.
    pub fn claim_map(&self) -> ClaimMap {
        let d = ClaimMap::default();
        let p = |s: &str, d: ClaimPath| ClaimPath::parse(s.trim()).unwrap_or(d);
        ClaimMap {
            user_id: p(&self.jwt_claim_user_id, d.user_id),
            tenant: p(&self.jwt_claim_tenant, d.tenant),
            name: p(&self.jwt_claim_name, d.name),
            email: p(&self.jwt_claim_email, d.email),
            roles: p(&self.jwt_claim_roles, d.roles),
            permissions: p(&self.jwt_claim_permissions, d.permissions),
            rooms: p(&self.jwt_claim_rooms, d.rooms),
        }
    }

    pub fn jwks_refresh_bounds(&self) -> (Duration, Duration) {
        let min = Duration::from_secs(self.jwt_jwks_min_refresh_secs.max(1));
        let max = Duration::from_secs(self.jwt_jwks_max_refresh_secs).max(min);
        (min, max)
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
    /// Redis (`redis://host:port`) or Redis Cluster (`redis-cluster://host:port?node=host:port`).
    /// Set: this node is one of a cluster (bus, registry, rate limits and presence shared through
    /// Redis). Unset: a single node.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's id in the cluster (`/stats`, registry entries). Default: `hostname:pid`.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// With `REDIS_URL`: how often this node says it is alive. Its heartbeat expires after three
    /// missed beats; a survivor then purges its registry entries and presence, within four beats.
    #[arg(long, env = "NODE_HEARTBEAT_MS", default_value_t = 5000)]
    pub node_heartbeat_ms: u64,
    /// With `REDIS_URL`: TTL of `ws:connection:{socketId}`, refreshed while the connection lives.
    #[arg(long, env = "REGISTRY_TTL_SECS", default_value_t = 3600)]
    pub registry_ttl_secs: u64,
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
    /// Handshakes in progress at once on the node, from the request that opens an Engine.IO
    /// session to `connected` (the client's round trips included); a further opening request
    /// gets 503 with `Retry-After`, which socket.io-client retries with its backoff.
    #[arg(long, env = "MAX_HANDSHAKES_IN_PROGRESS", default_value_t = 1024)]
    pub max_handshakes_in_progress: usize,
    /// Seconds a client has to send complete HTTP request headers.
    #[arg(long, env = "HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,
    /// Seconds a client has to send a whole request body (polling POST, API); a slower body is
    /// cut with 408 and its connection closed.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub body_read_timeout_secs: u64,
    /// Largest request head (request line and headers) in bytes; a larger one gets 431.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 65_536)]
    pub max_header_bytes: usize,
    /// Seconds the binary attachments of a Socket.IO packet have to arrive; later, the packet is
    /// dropped and its connection closed.
    #[arg(long, env = "ATTACHMENT_TIMEOUT_SECS", default_value_t = 10)]
    pub attachment_timeout_secs: u64,
    /// Engine.IO ping interval, milliseconds.
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,
    /// Engine.IO ping timeout, milliseconds.
    #[arg(long, env = "PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,
    /// Packets buffered per socket before the socket counts as too slow: it is then
    /// disconnected at once (counted in `websocket_slow_consumer_disconnects_total`).
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
    /// within it announces nothing). Connections closed by a shutdown get at least 10 s; with
    /// REDIS_URL every close gets at least two presence ticks.
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
    /// Failed token verifications one client IP may make per rolling minute; past it, that IP's
    /// CONNECTs are refused without verifying ("Too many failed attempts"). Loopback counts too.
    #[arg(long, env = "AUTH_FAILURES_PER_IP_PER_MINUTE", default_value_t = 30)]
    pub auth_failures_per_ip_per_minute: u32,
    /// Wrong or missing API keys one client IP may present per rolling minute; past it, that
    /// IP's `/api/v1` requests get 429 with `Retry-After`, without checking the key.
    #[arg(long, env = "API_KEY_FAILURES_PER_IP_PER_MINUTE", default_value_t = 30)]
    pub api_key_failures_per_ip_per_minute: u32,
    /// Reverse proxies (comma list of IPs or CIDRs) whose `X-Forwarded-For` is believed: from a
    /// trusted peer, the client is the rightmost address in it that is not a trusted proxy.
    /// Empty: the TCP peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Milliseconds any database call may take (statement, lock wait, pooled connection, whole
    /// call); past it the call fails with UNAVAILABLE / 503.
    #[arg(long, env = "STORE_TIMEOUT_MS", default_value_t = 5000)]
    pub store_timeout_ms: u64,
    /// Client events other than `message` (join_room, leave_room, refresh_token, unknown ones)
    /// one connection may send per second, on average; over it the event is refused with
    /// RATE_LIMITED before it waits in line, and the connection's websocket is not read again
    /// until the budget has a token. `message` has RATE_LIMIT_PER_MINUTE instead.
    #[arg(long, env = "EVENTS_PER_SECOND_PER_CONNECTION", default_value_t = 100)]
    pub events_per_second_per_connection: u32,
    /// Client events one connection may send at once above that rate (the bucket's size).
    #[arg(long, env = "EVENT_BURST_PER_CONNECTION", default_value_t = 200)]
    pub event_burst_per_connection: u32,
    /// Client events (of any kind, `message` too) of one connection accepted but not yet
    /// answered; the next is refused with RATE_LIMITED.
    #[arg(long, env = "MAX_EVENTS_IN_FLIGHT", default_value_t = 200)]
    pub max_events_in_flight: usize,
    /// Replayed messages (`join_room` with `since`) one connection may receive per second, on
    /// average; a join with `since` over it is refused with RATE_LIMITED.
    #[arg(
        long,
        env = "REPLAY_MESSAGES_PER_SECOND_PER_CONNECTION",
        default_value_t = 2000
    )]
    pub replay_messages_per_second_per_connection: u32,
    /// Replayed messages one connection may receive at once above that rate.
    #[arg(long, env = "REPLAY_BURST_PER_CONNECTION", default_value_t = 5000)]
    pub replay_burst_per_connection: u32,
    /// Replay reads running at once on the node; further joins with `since` wait for a slot.
    #[arg(long, env = "MAX_CONCURRENT_REPLAYS", default_value_t = 16)]
    pub max_concurrent_replays: usize,
    /// Last chat messages kept per room so a replay with a recent `since` needs no store read
    /// (0: off). At most 65,536 are kept over all rooms.
    #[arg(long, env = "REPLAY_CACHE_PER_ROOM", default_value_t = 32)]
    pub replay_cache_per_room: usize,
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
        "no JWT key configured: set JWT_SECRET (HS256), JWT_PUBLIC_KEY_FILE (RS256/ES256/EdDSA) or JWT_JWKS_URL, or run `serve --dev`"
    )]
    NoKey,
    #[error(
        "more than one of JWT_SECRET, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL is set: configure exactly one"
    )]
    TwoKeys,
    #[error("JWT_SECRET must be at least 32 bytes (each entry of a comma list)")]
    ShortSecret,
    #[error("JWT_KEY_IDS names {ids} keys but {keys} are configured")]
    KeyIds { ids: usize, keys: usize },
    #[error("JWT_JWKS_URL must be an http:// or https:// URL: {0}")]
    JwksUrl(String),
    #[error("JWT_ALGORITHM={0:?} does not fit the configured key")]
    AlgorithmMismatch(JwtAlgorithm),
    #[error("cannot read {var} at {path}: {reason}")]
    KeyFile {
        var: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    TrustedProxies(#[from] crate::http::client_ip::BadProxy),
    #[error("{var} must be {rule}")]
    Range {
        var: &'static str,
        rule: &'static str,
    },
}

impl Settings {
    /// Checks the limits; key material is checked when the keys are loaded.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let checks: [(&'static str, bool, &'static str); 17] = [
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
                "MAX_HANDSHAKES_IN_PROGRESS",
                self.max_handshakes_in_progress >= 1,
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
            (
                "AUTH_FAILURES_PER_IP_PER_MINUTE",
                self.auth_failures_per_ip_per_minute >= 1,
                "at least 1",
            ),
            (
                "API_KEY_FAILURES_PER_IP_PER_MINUTE",
                self.api_key_failures_per_ip_per_minute >= 1,
                "at least 1",
            ),
            (
                "STORE_TIMEOUT_MS",
                self.store_timeout_ms >= 10,
                "at least 10",
            ),
            (
                "EVENTS_PER_SECOND_PER_CONNECTION",
                self.events_per_second_per_connection >= 1 && self.event_burst_per_connection >= 1,
                "at least 1 (and EVENT_BURST_PER_CONNECTION)",
            ),
            (
                "MAX_EVENTS_IN_FLIGHT",
                self.max_events_in_flight >= 1,
                "at least 1",
            ),
            (
                "REPLAY_MESSAGES_PER_SECOND_PER_CONNECTION",
                self.replay_messages_per_second_per_connection >= 1
                    && self.replay_burst_per_connection >= 1,
                "at least 1 (and REPLAY_BURST_PER_CONNECTION)",
            ),
            (
                "MAX_CONCURRENT_REPLAYS",
                self.max_concurrent_replays >= 1,
                "at least 1",
            ),
        ];
        for (var, ok, rule) in checks {
            if !ok {
                return Err(SettingsError::Range { var, rule });
            }
        }
        self.validate_added_limits()
    }

    /// The HTTP and packet deadlines and sizes (hyper refuses a head buffer under 8 KiB), and
    /// the presence bounds.
    fn validate_added_limits(&self) -> Result<(), SettingsError> {
        let checks: [(&'static str, bool, &'static str); 8] = [
            (
                // Four beats (three missed, then the survivor's next) stay within the 30 s in
                // which a dead node's entries must be gone.
                "NODE_HEARTBEAT_MS",
                (100..=7_000).contains(&self.node_heartbeat_ms),
                "100 to 7000",
            ),
            (
                "REGISTRY_TTL_SECS",
                self.registry_ttl_secs >= 60,
                "at least 60",
            ),
            (
                "BODY_READ_TIMEOUT_SECS",
                self.body_read_timeout_secs >= 1,
                "at least 1",
            ),
            (
                "MAX_HEADER_BYTES",
                self.max_header_bytes >= 8192,
                "at least 8192",
            ),
            (
                "ATTACHMENT_TIMEOUT_SECS",
                self.attachment_timeout_secs >= 1,
                "at least 1",
            ),
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
        for (var, ok, rule) in checks {
            if !ok {
                return Err(SettingsError::Range { var, rule });
            }
        }
        crate::http::client_ip::TrustedProxies::parse(&self.trusted_proxies)?;
        Ok(())
    }

    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }

    pub fn inactive_timeout(&self) -> Duration {
        Duration::from_secs(self.inactive_timeout_secs)
    }

    pub fn cluster(&self) -> crate::cluster::ClusterSettings {
        crate::cluster::ClusterSettings {
            heartbeat: Duration::from_millis(self.node_heartbeat_ms),
            connection_ttl: Duration::from_secs(self.registry_ttl_secs),
        }
    }

    /// In a cluster a user's connection opened on another node reaches the shared counts only at
    /// that node's next tick; a last close here held for two ticks lets it land first, so a user
    /// who moves from one node to another is never announced offline in between.
    fn offline_grace(&self) -> Duration {
        let grace = Duration::from_millis(self.presence_offline_grace_ms);
        if self.redis_url.is_some() {
            grace.max(Duration::from_millis(self.presence_tick_ms) * 2)
        } else {
            grace
        }
    }

    pub fn presence(&self) -> crate::domain::presence::PresenceSettings {
        crate::domain::presence::PresenceSettings {
            broadcast_max: self.presence_broadcast_max,
            offline_grace: self.offline_grace(),
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
                "redis_url",
                &self.redis_url.as_deref().map(crate::store::redact_url),
            )
            .field("node_id", &self.node_id)
            .field("node_heartbeat_ms", &self.node_heartbeat_ms)
            .field("registry_ttl_secs", &self.registry_ttl_secs)
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
            .field(
                "max_handshakes_in_progress",
                &self.max_handshakes_in_progress,
            )
            .field("handshake_timeout_secs", &self.handshake_timeout_secs)
            .field("body_read_timeout_secs", &self.body_read_timeout_secs)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("attachment_timeout_secs", &self.attachment_timeout_secs)
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
            .field(
                "auth_failures_per_ip_per_minute",
                &self.auth_failures_per_ip_per_minute,
            )
            .field(
                "api_key_failures_per_ip_per_minute",
                &self.api_key_failures_per_ip_per_minute,
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .field("store_timeout_ms", &self.store_timeout_ms)
            .field(
                "events_per_second_per_connection",
                &self.events_per_second_per_connection,
            )
            .field(
                "event_burst_per_connection",
                &self.event_burst_per_connection,
            )
            .field("max_events_in_flight", &self.max_events_in_flight)
            .field(
                "replay_messages_per_second_per_connection",
                &self.replay_messages_per_second_per_connection,
            )
            .field(
                "replay_burst_per_connection",
                &self.replay_burst_per_connection,
            )
            .field("max_concurrent_replays", &self.max_concurrent_replays)
            .field("replay_cache_per_room", &self.replay_cache_per_room)
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
