//! Wiring: builds the services from the settings, starts the background tasks, binds the
//! listener, and runs until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use socketioxide::SocketIo;
use tokio::net::TcpListener;

use crate::bus::local::LocalBus;
use crate::bus::redis::RedisBus;
use crate::domain::auth::TokenVerifier;
use crate::domain::bus::Bus;
use crate::domain::chat::{ChatLimits, ChatService};
use crate::domain::connections::{ConnectionRegistry, ConnectionService, NodeInfo};
use crate::domain::failure_limit::FailureLimiter;
use crate::domain::notifications::NotificationService;
use crate::domain::observe::Observer;
use crate::domain::presence::PresenceService;
use crate::domain::presence_directory::{LocalDirectory, PresenceDirectory};
use crate::domain::publish::PublishService;
use crate::domain::rate_limit::{RateLimitService, RateLimiter};
use crate::domain::rooms::RoomPolicy;
use crate::fanout::fanout_queue;
use crate::http::client_ip::TrustedProxies;
use crate::settings::Settings;
use crate::socket::deadlines;
use crate::socket::session::EventBudget;
use crate::state::{AppInner, AppState, Lifecycle, Limits};
use crate::supervisor::Supervisor;

/// A built, bound gateway, ready to run.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    io: SocketIo,
    state: AppState,
    settings: Settings,
    supervisor: Supervisor,
}

impl Application {
    pub async fn build(settings: Settings, verifier: TokenVerifier) -> anyhow::Result<Self> {
        Self::build_with_dev(settings, verifier, None).await
    }

    /// `build`, with the development sign-in of `serve --dev` when `dev` is given.
    pub async fn build_with_dev(
        settings: Settings,
        verifier: TokenVerifier,
        dev: Option<crate::http::dev::DevTokens>,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        crate::metrics::install()?;
        let store = crate::store::connect(&settings.database_url, settings.store_timeout())
            .await
            .with_context(|| {
                format!(
                    "cannot open DATABASE_URL={}",
                    crate::store::redact_url(&settings.database_url)
                )
            })?;
        let (fanout_tx, fanout_rx) = fanout_queue(settings.fanout_queue);
        let node_id = settings.node_id.clone().unwrap_or_else(node_id);
        let mut supervisor = Supervisor::default();
        // With REDIS_URL the node is one of a cluster; its bus also takes the blueprint's
        // `websocket:events` channel, routed once the services exist (below).
        let mut ingest = None;
        let bus: Arc<dyn Bus> = match &settings.redis_url {
            Some(url) => {
                let (bus, tasks, events) = RedisBus::start(
                    url,
                    node_id.clone(),
                    fanout_tx.clone(),
                    settings.fanout_queue,
                )
                .await
                .context("cannot set up the Redis bus (REDIS_URL)")?;
                supervisor.watch("bus outbound", tasks.outbound);
                supervisor.watch("bus inbound", tasks.inbound);
                supervisor.watch("bus subscriptions", tasks.subscriptions);
                ingest = Some((bus.claims(), events));
                Arc::new(bus)
            }
            None => Arc::new(LocalBus::new(fanout_tx.clone())),
        };
        let limits = ChatLimits {
            max_message_len: settings.max_message_length,
            max_replay: settings.max_replay,
            max_concurrent_replays: settings.max_concurrent_replays,
        };
        let (chat, writer) =
            ChatService::start(store.clone(), bus.clone(), limits, settings.write_queue);
        let (deadlines, deadline_task) = deadlines::channel();
        let observer: Arc<dyn Observer> = Arc::new(crate::metrics::Prometheus);
        let node = NodeInfo {
            id: node_id.clone(),
            started_at: crate::domain::time::now_rfc3339(),
        };
        // With REDIS_URL, the registry, rate limit and presence are the cluster's.
        let redis = match &settings.redis_url {
            Some(url) => Some(crate::cluster::client(url).await?),
            None => None,
        };
        let registry = redis.as_ref().map(|c| {
            Arc::new(crate::cluster::RedisRegistry::new(
                c.clone(),
                node.clone(),
                settings.cluster(),
            )) as Arc<dyn ConnectionRegistry>
        });
        let limiter = redis.as_ref().map(|c| {
            Arc::new(crate::cluster::RedisRateLimiter::new(
                c.clone(),
                node.id.clone(),
            )) as Arc<dyn RateLimiter>
        });
        let directory: Arc<dyn PresenceDirectory> = match &redis {
            Some(c) => Arc::new(crate::cluster::RedisDirectory::new(
                c.clone(),
                node.id.clone(),
            )),
            None => Arc::new(LocalDirectory::default()),
        };
        let state = AppState::new(AppInner {
            limits: Limits {
                max_rooms_per_connection: settings.max_rooms_per_connection,
                room_metrics_top: settings.room_metrics_top,
                replay_per_second: settings.replay_messages_per_second_per_connection,
                replay_burst: settings.replay_burst_per_connection,
            },
            verifier,
            chat,
            notifications: NotificationService::new(store.clone(), bus.clone()),
            presence: PresenceService::new(
                bus.clone(),
                directory,
                settings.presence(),
                observer.clone(),
            ),
            publisher: PublishService::new(bus.clone()),
            rooms: RoomPolicy::new(store.clone(), bus.clone()),
            connections: ConnectionService::new(
                node,
                settings.max_connections_per_user,
                registry,
                observer.clone(),
            ),
            rate_limits: RateLimitService::new(
                settings.rate_limit_per_minute,
                limiter,
                observer.clone(),
            ),
            bus,
            fanout: fanout_tx,
            event_budget: EventBudget {
                per_second: settings.events_per_second_per_connection,
                burst: settings.event_burst_per_connection,
                max_in_flight: settings.max_events_in_flight,
            },
            store,
            deadlines,
            trusted_proxies: TrustedProxies::parse(&settings.trusted_proxies)?,
            auth_failures: FailureLimiter::new(settings.auth_failures_per_ip_per_minute),
            api_key_failures: FailureLimiter::new(settings.api_key_failures_per_ip_per_minute),
            dedupe: crate::domain::dedupe::Dedupe::new(
                Duration::from_secs(settings.client_message_id_window_secs),
                settings.client_message_id_capacity,
            ),
            lifecycle: Lifecycle::default(),
        });
        if let Some((claims, events)) = ingest {
            let ingest = crate::bus::ingest::Ingest {
                chat: state.chat.clone(),
                publisher: state.publisher.clone(),
                claims: Arc::new(claims),
            };
            supervisor.watch("ingest", ingest.spawn(events));
        }
        let (layer, io) = crate::socket::build(&settings, state.clone());
        supervisor.watch("chat writer", writer);
        supervisor.watch(
            "fanout",
            crate::fanout::spawn(
                io.clone(),
                fanout_rx,
                crate::fanout::FanoutLimits {
                    hold_cap: settings.socket_buffer_packets,
                    recent_per_room: settings.replay_cache_per_room,
                    max_replay: settings.max_replay as usize,
                },
            ),
        );
        supervisor.watch(
            "deadlines",
            deadline_task.spawn(io.clone(), settings.inactive_timeout()),
        );
        supervisor.watch(
            "reaper",
            crate::socket::reaper::spawn(io.clone(), state.clone()),
        );
        state.presence.spawn();
        if redis.is_some() {
            supervisor.watch(
                "heartbeat",
                state
                    .connections
                    .spawn(settings.cluster().heartbeat, state.presence.clone()),
            );
        }
        let router = crate::http::router(&settings, state.clone(), layer, dev)?;
        let addr = SocketAddr::new(settings.host, settings.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOST, PORT)"))?;
        Ok(Self {
            listener,
            router,
            io,
            state,
            settings,
            supervisor,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then: report not-ready and refuse new sockets, close
    /// the live ones (their clients reconnect elsewhere), let queued writes commit, exit. A
    /// background task that ends first stops the node the same way, and the result is an error.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            io,
            state,
            settings,
            mut supervisor,
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let limits = crate::server::HttpLimits {
            header_timeout: Duration::from_secs(settings.handshake_timeout_secs),
            max_header_bytes: settings.max_header_bytes,
        };
        let server = tokio::spawn(crate::server::serve(listener, router, limits, stop_rx));
        let failure = tokio::select! {
            () = shutdown => None,
            exit = supervisor.first_exit() => Some(exit),
        };
        match &failure {
            None => tracing::info!("shutting down"),
            Some(exit) => {
                state.lifecycle.task_failed(exit.task);
                tracing::error!(task = exit.task, "{exit}; shutting down");
            }
        }
        state.lifecycle.begin_shutdown();
        let grace = Duration::from_secs(settings.shutdown_timeout_secs);
        let drained = tokio::time::timeout(grace, async {
            let _ = stop_tx.send(true);
            io.close().await;
            state.chat.flush().await;
            let _ = server.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                ?grace,
                "shutdown took longer than SHUTDOWN_TIMEOUT_SECS; exiting"
            );
        }
        tracing::info!("stopped");
        match failure {
            None => Ok(()),
            Some(exit) => Err(anyhow::anyhow!("{exit}")),
        }
    }
}

/// `hostname:pid`, unique per process on a host and readable in `/stats`.
fn node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}:{}", std::process::id())
}
