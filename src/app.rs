//! Wiring: builds the services from the settings, starts the background tasks, binds the
//! listener, and runs until a shutdown signal.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use socketioxide::SocketIo;
use tokio::net::TcpListener;

use crate::bus::local::LocalBus;
use crate::domain::auth::TokenVerifier;
use crate::domain::bus::{Bus, fanout_queue};
use crate::domain::chat::{ChatLimits, ChatService};
use crate::domain::notifications::NotificationService;
use crate::domain::presence::{ConnectionRegistry, LocalRegistry, PresenceService};
use crate::domain::presence_directory::LocalDirectory;
use crate::domain::publish::PublishService;
use crate::domain::rate_limit::{LocalRateLimiter, RateLimiter};
use crate::domain::rooms::RoomPolicy;
use crate::domain::store::Store;
use crate::settings::Settings;
use crate::socket::deadlines::{self, Deadlines};

/// Limits the adapters enforce themselves.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections_per_user: usize,
    pub max_rooms_per_connection: usize,
    pub room_metrics_top: usize,
}

/// Everything a handler needs: the domain services and the ports. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub limits: Limits,
    pub verifier: TokenVerifier,
    pub chat: ChatService,
    pub notifications: NotificationService,
    pub presence: PresenceService,
    pub publisher: PublishService,
    pub rooms: RoomPolicy,
    pub registry: Arc<dyn ConnectionRegistry>,
    pub rate_limiter: Arc<dyn RateLimiter>,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub deadlines: Deadlines,
    pub dedupe: crate::domain::dedupe::Dedupe,
    /// This node's id in `/stats`.
    pub node_id: String,
    shutting_down: AtomicBool,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// A built, bound gateway, ready to run.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    io: SocketIo,
    state: AppState,
    settings: Settings,
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
        let store = crate::store::connect(&settings.database_url)
            .await
            .with_context(|| {
                format!(
                    "cannot open DATABASE_URL={}",
                    crate::store::redact_url(&settings.database_url)
                )
            })?;
        let (fanout_tx, fanout_rx) = fanout_queue(settings.fanout_queue);
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new(fanout_tx.clone()));
        let limits = ChatLimits {
            max_message_len: settings.max_message_length,
            max_replay: settings.max_replay,
        };
        let (chat, _writer) = ChatService::start(
            store.clone(),
            bus.clone(),
            fanout_tx,
            limits,
            settings.write_queue,
        );
        let (deadlines, deadline_task) = deadlines::channel();
        let state = AppState(Arc::new(AppInner {
            limits: Limits {
                max_connections_per_user: settings.max_connections_per_user,
                max_rooms_per_connection: settings.max_rooms_per_connection,
                room_metrics_top: settings.room_metrics_top,
            },
            verifier,
            chat,
            notifications: NotificationService::new(store.clone(), bus.clone()),
            presence: PresenceService::new(
                bus.clone(),
                Arc::new(LocalDirectory::default()),
                settings.presence(),
            ),
            publisher: PublishService::new(bus.clone()),
            rooms: RoomPolicy::new(store.clone(), bus.clone()),
            registry: Arc::new(LocalRegistry::default()),
            rate_limiter: Arc::new(LocalRateLimiter::new(settings.rate_limit_per_minute)),
            bus,
            store,
            deadlines,
            dedupe: crate::domain::dedupe::Dedupe::new(
                Duration::from_secs(settings.client_message_id_window_secs),
                settings.client_message_id_capacity,
            ),
            node_id: node_id(),
            shutting_down: AtomicBool::new(false),
        }));
        let (layer, io) = crate::socket::build(&settings, state.clone());
        crate::fanout::spawn(io.clone(), fanout_rx);
        deadline_task.spawn(io.clone(), settings.inactive_timeout());
        crate::socket::reaper::spawn(io.clone(), state.clone());
        state.presence.spawn();
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
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then: report not-ready and refuse new sockets, close
    /// the live ones (their clients reconnect elsewhere), let queued writes commit, exit.
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
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let header_timeout = Duration::from_secs(settings.handshake_timeout_secs);
        let server = tokio::spawn(crate::server::serve(
            listener,
            router,
            header_timeout,
            stop_rx,
        ));
        shutdown.await;
        tracing::info!("shutting down");
        state.shutting_down.store(true, Ordering::Release);
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
        Ok(())
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
