//! What every adapter handler gets: the domain services and the ports, built by `app.rs`.
//! `http/` and `socket/` depend on this, never on the wiring.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::domain::auth::TokenVerifier;
use crate::domain::bus::Bus;
use crate::domain::chat::ChatService;
use crate::domain::connections::ConnectionService;
use crate::domain::failure_limit::FailureLimiter;
use crate::domain::notifications::NotificationService;
use crate::domain::presence::PresenceService;
use crate::domain::publish::PublishService;
use crate::domain::rate_limit::RateLimitService;
use crate::domain::rooms::RoomPolicy;
use crate::domain::store::Store;
use crate::fanout::FanoutSender;
use crate::http::client_ip::TrustedProxies;
use crate::socket::deadlines::Deadlines;
use crate::socket::session::EventBudget;

/// Limits the adapters enforce themselves.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rooms_per_connection: usize,
    pub room_metrics_top: usize,
    /// The replay budget of one connection, in messages.
    pub replay_per_second: u32,
    pub replay_burst: u32,
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
    /// Who is connected: the per-user cap, `/stats`, disconnect counts (cluster-wide with Redis).
    pub connections: ConnectionService,
    /// The per-user `message` rate limit (cluster-wide with Redis).
    pub rate_limits: RateLimitService,
    pub bus: Arc<dyn Bus>,
    /// This node's fan-out queue, for joins (which the fan-out applies in delivery order).
    pub fanout: FanoutSender,
    pub event_budget: EventBudget,
    pub store: Arc<dyn Store>,
    pub deadlines: Deadlines,
    /// Whose `X-Forwarded-For` names the client (`TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// Failed token verifications per client IP (`AUTH_FAILURES_PER_IP_PER_MINUTE`).
    pub auth_failures: FailureLimiter,
    /// Failed API keys per client IP (`API_KEY_FAILURES_PER_IP_PER_MINUTE`).
    pub api_key_failures: FailureLimiter,
    pub dedupe: crate::domain::dedupe::Dedupe,
    pub lifecycle: Lifecycle,
}

/// Where the node is in its life: serving, stopping, or stopped by a failed task.
#[derive(Default)]
pub struct Lifecycle {
    shutting_down: AtomicBool,
    /// The background task whose end stopped this node (see `supervisor`).
    failed_task: OnceLock<&'static str>,
}

impl Lifecycle {
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Records the task whose end stops the node (the first one only).
    pub fn task_failed(&self, task: &'static str) {
        let _ = self.failed_task.set(task);
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle.shutting_down.load(Ordering::Acquire)
    }

    /// The background task that ended unexpectedly, if one did (the node is then stopping).
    pub fn failed_task(&self) -> Option<&'static str> {
        self.lifecycle.failed_task.get().copied()
    }
}
