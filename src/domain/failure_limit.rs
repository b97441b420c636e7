//! Failed credentials per client IP (bad tokens on CONNECT, bad API keys): past N failures in a
//! rolling minute, the IP is turned away before its credentials are checked, so guessing costs
//! the guesser a minute per N tries and the gateway nothing.
//!
//! Counts are kept for the current and the previous minute and blended (the usual sliding-window
//! estimate): two small counters per IP instead of a log of instants. Memory is bounded: IPv6
//! clients are counted per /64 (what one host is usually given), and at most `MAX_TRACKED` IPs
//! per minute are tracked; past that, new IPs go uncounted for the rest of the minute (logged),
//! rather than letting a flood of addresses grow the map or evict the counts of real offenders.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// IPs tracked per minute (about 30 bytes each, twice: current and previous minute).
pub const MAX_TRACKED: usize = 65_536;

pub struct FailureLimiter {
    limit: u32,
    // A std Mutex: a few map operations, never held across an await.
    state: Mutex<Windows>,
}

struct Windows {
    started: Instant,
    previous: HashMap<IpAddr, u32>,
    current: HashMap<IpAddr, u32>,
    /// Whether this minute's "too many IPs" warning was logged.
    warned_full: bool,
}

impl FailureLimiter {
    pub fn new(limit_per_minute: u32) -> Self {
        Self {
            limit: limit_per_minute.max(1),
            state: Mutex::new(Windows {
                started: Instant::now(),
                previous: HashMap::new(),
                current: HashMap::new(),
                warned_full: false,
            }),
        }
    }

    /// `Ok` when `ip` may present credentials; `Err(retry_after)` when it failed too often.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    /// Counts one failed attempt from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        self.record_at(ip, Instant::now());
    }

    fn lock(&self, now: Instant) -> std::sync::MutexGuard<'_, Windows> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        w.rotate(now);
        w
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = key(ip);
        let w = self.lock(now);
        let prev = w.previous.get(&key).copied().unwrap_or(0) as f64;
        let cur = w.current.get(&key).copied().unwrap_or(0) as f64;
        let elapsed = now.duration_since(w.started).as_secs_f64();
        let win = WINDOW.as_secs_f64();
        let limit = self.limit as f64;
        if prev * (1.0 - elapsed / win) + cur < limit {
            return Ok(());
        }
        // When, with no further failure, the estimate drops below the limit.
        let wait = if cur < limit {
            win * (1.0 - (limit - cur) / prev) - elapsed
        } else {
            (win - elapsed) + win * (1.0 - limit / cur)
        };
        Err(Duration::from_secs_f64(wait.max(0.0)))
    }

    fn record_at(&self, ip: IpAddr, now: Instant) {
        let key = key(ip);
        let mut w = self.lock(now);
        if let Some(n) = w.current.get_mut(&key) {
            *n = n.saturating_add(1);
        } else if w.current.len() < MAX_TRACKED {
            w.current.insert(key, 1);
        } else if !w.warned_full {
            w.warned_full = true;
            tracing::warn!(
                tracked = MAX_TRACKED,
                "credential failures from too many IPs this minute; new IPs go uncounted"
            );
        }
    }
}

impl Windows {
    fn rotate(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.started);
        if elapsed < WINDOW {
            return;
        }
        let windows = (elapsed.as_secs_f64() / WINDOW.as_secs_f64()) as u32;
        self.previous = if windows == 1 {
            std::mem::take(&mut self.current)
        } else {
            self.current.clear();
            HashMap::new()
        };
        self.started += WINDOW * windows;
        self.warned_full = false;
    }
}

/// IPv6 addresses count per /64; IPv4 per address.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ip_over_the_limit_waits_and_others_do_not() {
        let l = FailureLimiter::new(3);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert!(l.check_at(a, t0).is_ok());
            l.record_at(a, t0);
        }
        let wait = l.check_at(a, t0).unwrap_err();
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60));
        assert!(l.check_at(ip("10.0.0.2"), t0).is_ok());
        assert!(
            l.check_at(a, t0 + wait - Duration::from_millis(100))
                .is_err()
        );
        assert!(
            l.check_at(a, t0 + wait + Duration::from_millis(100))
                .is_ok()
        );
    }

    #[test]
    fn failures_of_the_previous_minute_still_count_in_part() {
        let l = FailureLimiter::new(4);
        let t0 = Instant::now();
        for _ in 0..5 {
            l.record_at(ip("10.0.0.1"), t0 + Duration::from_secs(50));
        }
        // 15 s into the next minute, 5 × 3/4 = 3.75 still count: one more failure blocks again,
        // for as long as it takes the blend to drop under 4 (9 s).
        let t1 = t0 + Duration::from_secs(75);
        assert!(l.check_at(ip("10.0.0.1"), t1).is_ok());
        l.record_at(ip("10.0.0.1"), t1);
        let wait = l.check_at(ip("10.0.0.1"), t1).unwrap_err();
        assert!(wait > Duration::from_secs(8) && wait < Duration::from_secs(10));
        assert!(
            l.check_at(ip("10.0.0.1"), t1 + wait + Duration::from_millis(100))
                .is_ok()
        );
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = FailureLimiter::new(2);
        let t0 = Instant::now();
        l.record_at(ip("2001:db8:1:2::1"), t0);
        l.record_at(ip("2001:db8:1:2::ffff"), t0);
        assert!(l.check_at(ip("2001:db8:1:2::42"), t0).is_err());
        assert!(l.check_at(ip("2001:db8:1:3::1"), t0).is_ok());
        l.record_at(ip("::ffff:1.2.3.4"), t0);
        l.record_at(ip("1.2.3.4"), t0);
        assert!(l.check_at(ip("1.2.3.4"), t0).is_err());
    }

    #[test]
    fn memory_is_bounded_by_the_tracked_cap() {
        let l = FailureLimiter::new(1);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            l.record_at(IpAddr::V4(i.into()), t0);
        }
        let w = l.state.lock().unwrap();
        assert_eq!(w.current.len(), MAX_TRACKED);
        drop(w);
        // Tracked IPs stay limited; the minute after next, everything is forgotten.
        assert!(l.check_at(IpAddr::V4(0u32.into()), t0).is_err());
        l.record_at(ip("9.9.9.9"), t0 + Duration::from_secs(125));
        let w = l.state.lock().unwrap();
        assert_eq!((w.previous.len(), w.current.len()), (0, 1));
    }
}
