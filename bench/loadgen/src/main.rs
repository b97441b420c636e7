//! `loadgen`: the AegisX Realtime load generator. One scenario per run, chosen by subcommand,
//! every parameter a flag; prints one JSON object on stdout (progress goes to stderr).
//!
//! Runs on one thread (a current-thread tokio runtime): pin it to a core with `taskset`.
//! Exit codes: 0 ran; 1 could not run (setup failed); 2 `--strict` and the run lost messages,
//! saw errors or failed connects; 3 the server has no such HTTP API (404, `notify`).

mod broadcast;
mod chat_ack;
mod http;
mod idle;
mod jwt;
mod notify;
mod replay_flood;
mod sio;
mod stats;
mod storm;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Engine.IO v4 / Socket.IO v5 load generator for AegisX Realtime"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N authenticated connections opened at a set rate and held: connect rate, failures, the
    /// server's RSS per connection.
    Idle(idle::IdleArgs),
    /// N subscribers in one room, one publisher at R msgs/s (stepped): deliveries/s, latency, loss.
    Fanout(broadcast::FanoutArgs),
    /// N clients in rooms of K, each sending at R msgs/s (stepped): deliveries/s, latency, loss.
    Rooms(broadcast::RoomsArgs),
    /// C clients sending acked `send_message` with a window of W each: acked msgs/s, ack latency.
    ChatAck(chat_ack::ChatAckArgs),
    /// Notifications created over `POST /api/v1/notifications` to connected users: end-to-end
    /// latency until the `notification` event arrives.
    Notify(notify::NotifyArgs),
    /// N clients of one tenant in rooms of K chatting; the server gets SIGTERM and is started
    /// again (`--restart-cmd`); every client reconnects with backoff and rejoins with `since`
    /// while a backend posts messages over HTTP: recovery time, missed/duplicated, peak RSS.
    Storm(storm::StormArgs),
    /// One user's sockets loop `join_room { since: 0 }` on a room of stored messages while
    /// other users chat with acks: their ack latency, the flood's joins/s (`--no-flood`: without).
    ReplayFlood(replay_flood::ReplayFloodArgs),
}

/// How the users of a run are spread over tenants (the JWT `tenantId` claim).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tenants {
    /// No `tenantId` claim (no presence).
    None,
    /// One tenant per user.
    PerUser,
    /// Tenants of 100 consecutive users (100 tenants of 100 for N = 10,000).
    #[value(name = "100x100")]
    Hundreds,
    /// Every user in one tenant.
    One,
}

impl Tenants {
    pub fn name(self) -> &'static str {
        match self {
            Tenants::None => "none",
            Tenants::PerUser => "per-user",
            Tenants::Hundreds => "100x100",
            Tenants::One => "one",
        }
    }

    /// Index of the tenant of user `i`, if any.
    pub fn of(self, i: usize) -> Option<usize> {
        match self {
            Tenants::None => None,
            Tenants::PerUser => Some(i),
            Tenants::Hundreds => Some(i / 100),
            Tenants::One => Some(0),
        }
    }
}

/// Flags every scenario has.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Server address (127.0.0.x only).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Socket.IO namespace.
    #[arg(long, default_value = "/ws")]
    pub namespace: String,
    /// HS256 secret the server verifies with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Client sockets are spread over 127.0.0.1 ..= 127.0.0.<sources>.
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Connects started per second while opening (0: as fast as `--connect-inflight` allows).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 128)]
    pub connect_inflight: usize,
    /// Seconds one connect may take.
    #[arg(long, default_value_t = 15.0)]
    pub connect_timeout: f64,
    /// Prefix of every `sub` and room id of this run (default: unique per run).
    #[arg(long)]
    pub prefix: Option<String>,
    /// PID of the server: its RSS and CPU use are reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The core the server is pinned to: its busy share is reported (softirq included).
    #[arg(long)]
    pub server_core: Option<usize>,
    /// Free text copied into the output (e.g. the server's name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Exit 2 when the run lost messages, saw error events or failed connects.
    #[arg(long)]
    pub strict: bool,
    /// Tenant layout of the users, minted into the JWT `tenantId` claim.
    #[arg(long, value_enum, default_value = "none")]
    pub tenants: Tenants,
}

impl Common {
    pub fn target(&self) -> sio::Target {
        sio::Target {
            addr: self.addr,
            namespace: self.namespace.clone(),
            sources: self.sources,
            connect_timeout: Duration::from_secs_f64(self.connect_timeout),
            // A different stretch of client ports each run (see sio::tcp_connect).
            port_offset: (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
                % 50_000) as u16,
        }
    }

    pub fn prefix(&self) -> String {
        self.prefix.clone().unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() % 100_000_000)
                .unwrap_or(0);
            format!("b{}x{t}", std::process::id())
        })
    }

    /// Tenant id of user `i` of this run.
    pub fn tenant(&self, prefix: &str, i: usize) -> Option<String> {
        self.tenants.of(i).map(|t| format!("{prefix}-t{t}"))
    }

    /// The token of user `i` (`sub` = `<prefix>-<i>`, tenant by `--tenants`).
    pub fn token(&self, minter: &jwt::Minter, prefix: &str, i: usize) -> String {
        let tenant = self.tenant(prefix, i);
        minter.mint_in(&format!("{prefix}-{i}"), tenant.as_deref())
    }

    pub fn minter(&self) -> jwt::Minter {
        jwt::Minter::new(&self.jwt_secret, 6 * 3600)
    }

    fn check(&self) -> anyhow::Result<()> {
        match self.addr.ip() {
            std::net::IpAddr::V4(v4) if v4.octets()[0] == 127 => {}
            ip => anyhow::bail!("--addr {ip}: load is only generated to 127.0.0.x"),
        }
        anyhow::ensure!(
            (1..=254).contains(&self.sources),
            "--sources must be 1..=254"
        );
        Ok(())
    }
}

/// What a scenario hands back: its JSON and whether it was clean (no loss, errors, failures).
pub struct Outcome {
    pub json: Value,
    pub clean: bool,
    pub unavailable: bool,
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let (common, name) = match &cli.scenario {
        Scenario::Idle(a) => (a.common.clone(), "idle"),
        Scenario::Fanout(a) => (a.common.clone(), "fanout"),
        Scenario::Rooms(a) => (a.common.clone(), "rooms"),
        Scenario::ChatAck(a) => (a.common.clone(), "chat-ack"),
        Scenario::Notify(a) => (a.common.clone(), "notify"),
        Scenario::Storm(a) => (a.common.clone(), "storm"),
        Scenario::ReplayFlood(a) => (a.common.clone(), "replay-flood"),
    };
    let res = local.block_on(&rt, async {
        common.check()?;
        let me = stats::CpuMeter::start(std::process::id());
        let mut out = match cli.scenario {
            Scenario::Idle(a) => idle::run(a).await?,
            Scenario::Fanout(a) => broadcast::run_fanout(a).await?,
            Scenario::Rooms(a) => broadcast::run_rooms(a).await?,
            Scenario::ChatAck(a) => chat_ack::run(a).await?,
            Scenario::Notify(a) => notify::run(a).await?,
            Scenario::Storm(a) => storm::run(a).await?,
            Scenario::ReplayFlood(a) => replay_flood::run(a).await?,
        };
        if let Value::Object(m) = &mut out.json {
            let mut head = serde_json::Map::new();
            head.insert("scenario".into(), json!(name));
            head.insert("label".into(), json!(common.label));
            head.insert("addr".into(), json!(common.addr.to_string()));
            head.insert("clean".into(), json!(out.clean));
            head.insert("tenants".into(), json!(common.tenants.name()));
            // Presence cost: every `user_status` any client of the run received.
            head.insert(
                "user_status_received".into(),
                json!(sio::user_status_seen()),
            );
            head.insert("loadgen_cpu_pct_total".into(), json!(me.percent()));
            head.append(m);
            *m = head;
        }
        anyhow::Ok(out)
    });
    match res {
        Ok(out) => {
            println!("{}", out.json);
            if out.unavailable {
                std::process::exit(3);
            }
            if common.strict && !out.clean {
                std::process::exit(2);
            }
        }
        Err(e) => {
            println!(
                "{}",
                json!({ "scenario": name, "label": common.label, "error": format!("{e:#}") })
            );
            eprintln!("loadgen {name}: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Progress on stderr.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { eprintln!("[loadgen] {}", format_args!($($t)*)) };
}
