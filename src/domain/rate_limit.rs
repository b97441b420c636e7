//! The per-user `message` rate limit: at most N events per rolling minute, counted across all of
//! a user's connections (in a cluster: on every node). Refused events do not count, so a client
//! that stops flooding recovers.
//!
//! When the shared limiter fails (Redis down), `RateLimitService` counts on this node instead:
//! the limit still holds per node, no event is refused for want of Redis; the failure is
//! counted (`aegisx_cluster_fallback_total`) and logged once per outage.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::ids::UserId;
use crate::domain::observe::{Observer, Outage, Port};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitError {
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
}

/// The limiter the nodes of a cluster share.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one event for `user` and returns true, or returns false (and counts nothing)
    /// when the user already had `limit` events in the last minute. Check and count are one
    /// atomic step.
    async fn allow(&self, user: &UserId, limit: u32) -> Result<bool, RateLimitError>;
}

const WINDOW: Duration = Duration::from_secs(60);

/// What adapters call: the shared limiter when there is one, this node's otherwise.
#[derive(Clone)]
pub struct RateLimitService(Arc<ServiceInner>);

struct ServiceInner {
    limit: u32,
    local: LocalRateLimiter,
    cluster: Option<Arc<dyn RateLimiter>>,
    observer: Arc<dyn Observer>,
    outage: Outage,
}

impl RateLimitService {
    pub fn new(
        limit_per_minute: u32,
        cluster: Option<Arc<dyn RateLimiter>>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self(Arc::new(ServiceInner {
            limit: limit_per_minute,
            local: LocalRateLimiter::new(limit_per_minute),
            cluster,
            observer,
            outage: Outage::default(),
        }))
    }

    /// Counts one event for `user`, or refuses it (counting nothing) over the limit.
    pub async fn allow(&self, user: &UserId) -> bool {
        if let Some(cluster) = &self.0.cluster {
            match cluster.allow(user, self.0.limit).await {
                Ok(allowed) => {
                    self.0.outage.succeeded(Port::RateLimit);
                    return allowed;
                }
                Err(e) => {
                    self.0.observer.cluster_fallback(Port::RateLimit);
                    self.0.outage.failed(Port::RateLimit, &e);
                }
            }
        }
        self.0.local.allow(user)
    }
}

/// In-process sliding log: exact, and at most `limit` instants per active user.
pub struct LocalRateLimiter {
    limit: usize,
    // A std Mutex: the critical section is a few deque operations and never awaits.
    state: Mutex<LogState>,
}

struct LogState {
    users: HashMap<UserId, VecDeque<Instant>>,
    last_sweep: Instant,
}

impl LocalRateLimiter {
    pub fn new(limit_per_minute: u32) -> Self {
        Self {
            limit: limit_per_minute as usize,
            state: Mutex::new(LogState {
                users: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    fn allow_at(&self, user: &UserId, now: Instant) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Forget users idle for a whole window, so the map holds only active users.
        if now.duration_since(st.last_sweep) >= WINDOW {
            st.users
                .retain(|_, log| log.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            st.last_sweep = now;
        }
        let log = st.users.entry(user.clone()).or_default();
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            log.pop_front();
        }
        if log.len() >= self.limit {
            return false;
        }
        log.push_back(now);
        true
    }
}

impl LocalRateLimiter {
    pub fn allow(&self, user: &UserId) -> bool {
        self.allow_at(user, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_over_the_limit_and_recovers_after_the_window() {
        let rl = LocalRateLimiter::new(3);
        let u = UserId::parse("u").unwrap();
        let t0 = Instant::now();
        assert!(rl.allow_at(&u, t0));
        assert!(rl.allow_at(&u, t0));
        assert!(rl.allow_at(&u, t0 + Duration::from_secs(30)));
        assert!(!rl.allow_at(&u, t0 + Duration::from_secs(31)));
        // Refused events do not count: once the first two age out, two more fit.
        assert!(rl.allow_at(&u, t0 + Duration::from_secs(60)));
        assert!(rl.allow_at(&u, t0 + Duration::from_secs(60)));
        assert!(!rl.allow_at(&u, t0 + Duration::from_secs(61)));
    }

    struct Down;

    #[async_trait]
    impl RateLimiter for Down {
        async fn allow(&self, _: &UserId, _: u32) -> Result<bool, RateLimitError> {
            Err(RateLimitError::Unavailable("down".into()))
        }
    }

    #[tokio::test]
    async fn with_the_shared_limiter_down_the_limit_holds_on_this_node() {
        let svc = RateLimitService::new(
            2,
            Some(Arc::new(Down)),
            Arc::new(crate::domain::observe::Quiet),
        );
        let u = UserId::parse("u").unwrap();
        assert!(svc.allow(&u).await);
        assert!(svc.allow(&u).await);
        assert!(!svc.allow(&u).await);
    }

    #[test]
    fn users_are_counted_apart() {
        let rl = LocalRateLimiter::new(1);
        let (a, b) = (UserId::parse("a").unwrap(), UserId::parse("b").unwrap());
        let t0 = Instant::now();
        assert!(rl.allow_at(&a, t0));
        assert!(rl.allow_at(&b, t0));
        assert!(!rl.allow_at(&a, t0));
    }
}
