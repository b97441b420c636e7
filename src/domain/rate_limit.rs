//! The per-user `message` rate limit: at most N events per rolling minute, counted across all of
//! a user's connections. Refused events do not count, so a client that stops flooding recovers.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::ids::UserId;

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one event for `user` and returns true, or returns false (and counts nothing)
    /// when the user already had `limit` events in the last minute.
    async fn allow(&self, user: &UserId) -> bool;
}

const WINDOW: Duration = Duration::from_secs(60);

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

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn allow(&self, user: &UserId) -> bool {
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
