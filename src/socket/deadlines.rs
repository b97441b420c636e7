//! Server-side cuts of live sockets: at token expiry (`exp` plus the leeway, unless refreshed)
//! and after `INACTIVE_TIMEOUT_SECS` without a client event. One task and one timer entry per
//! socket; a fired entry re-reads the session and re-arms when the deadline moved.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::mpsc;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::domain::auth::LEEWAY_SECS;
use crate::domain::events::error_event;
use crate::socket::session::Session;
use crate::socket::{NAMESPACE, reply};

/// Registers sockets with the deadline task.
#[derive(Clone)]
pub struct Deadlines {
    // Bounded: a burst of connects waits here rather than growing memory.
    tx: mpsc::Sender<Sid>,
}

pub struct DeadlineTask {
    rx: mpsc::Receiver<Sid>,
}

pub fn channel() -> (Deadlines, DeadlineTask) {
    let (tx, rx) = mpsc::channel(4096);
    (Deadlines { tx }, DeadlineTask { rx })
}

impl Deadlines {
    /// Arms the socket's cut, or moves it earlier when its deadline came closer (a refresh
    /// that shortened `exp`).
    pub async fn watch(&self, sid: Sid) {
        let _ = self.tx.send(sid).await;
    }
}

impl DeadlineTask {
    pub fn spawn(self, io: SocketIo, inactive: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run(self.rx, io, inactive))
    }
}

/// Furthest a timer entry is set ahead; a later deadline is looked at again then (the timer
/// wheel panics beyond about two years, and `exp` can be anything up to `i64::MAX`).
const HORIZON: Duration = Duration::from_secs(24 * 3600);

enum Due {
    At(Instant),
    Gone,
}

async fn run(mut rx: mpsc::Receiver<Sid>, io: SocketIo, inactive: Duration) {
    let mut queue: DelayQueue<Sid> = DelayQueue::new();
    // One timer entry per socket, so re-arming moves it rather than adding another.
    let mut entries: HashMap<Sid, delay_queue::Key> = HashMap::new();
    loop {
        tokio::select! {
            sid = rx.recv() => match sid {
                Some(sid) => match (check(&io, sid, inactive), entries.get(&sid)) {
                    (Due::At(at), Some(key)) => {
                        if at < queue.deadline(key).into_std() {
                            queue.reset_at(key, at.into());
                        }
                    }
                    (Due::At(at), None) => {
                        entries.insert(sid, queue.insert_at(sid, at.into()));
                    }
                    (Due::Gone, Some(_)) => {
                        if let Some(key) = entries.remove(&sid) {
                            queue.remove(&key);
                        }
                    }
                    (Due::Gone, None) => {}
                },
                None => return,
            },
            Some(expired) = queue.next() => {
                let sid = expired.into_inner();
                entries.remove(&sid);
                if let Due::At(at) = check(&io, sid, inactive) {
                    entries.insert(sid, queue.insert_at(sid, at.into()));
                }
            }
        }
    }
}

fn socket(io: &SocketIo, sid: Sid) -> Option<(SocketRef, Arc<Session>)> {
    let s = io.of(NAMESPACE)?.get_socket(sid)?;
    let session = s.extensions.get::<Arc<Session>>()?;
    Some((s, session))
}

/// Cuts the socket if a deadline passed; otherwise says when to look again.
fn check(io: &SocketIo, sid: Sid, inactive: Duration) -> Due {
    let Some((s, session)) = socket(io, sid) else {
        return Due::Gone;
    };
    let now = Instant::now();
    let expiry = expiry_instant(session.exp(), now);
    if expiry.is_some_and(|at| at <= now) {
        tracing::info!(sid = %sid, "token expired; disconnecting");
        reply::emit(&s, "error", &error_event("TOKEN_EXPIRED", "Token expired"));
        let _ = s.disconnect();
        return Due::Gone;
    }
    let horizon = now + HORIZON;
    let idle_at = session
        .last_activity()
        .checked_add(inactive)
        .unwrap_or(horizon);
    if idle_at <= now {
        tracing::info!(sid = %sid, "inactive; disconnecting");
        let _ = s.disconnect();
        return Due::Gone;
    }
    let due = expiry.map_or(idle_at, |e| e.min(idle_at));
    Due::At(due.min(horizon))
}

/// When a token with this `exp` stops being accepted on a live socket: `exp` plus the leeway.
/// `None` when that is too far ahead to represent (never, for a live socket).
fn expiry_instant(exp: i64, now: Instant) -> Option<Instant> {
    let secs = u64::try_from(exp.max(0)).ok()?.checked_add(LEEWAY_SECS)?;
    let cut = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    match cut.duration_since(SystemTime::now()) {
        Ok(left) => now.checked_add(left),
        Err(_) => Some(now),
    }
}

/// Parses a socket id the domain carries as a string.
pub fn parse_sid(s: &str) -> Option<Sid> {
    Sid::from_str(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_exp_gives_an_instant_or_none_without_panicking() {
        let now = Instant::now();
        for exp in [i64::MIN, -1, 0, 1_767_225_600, i64::MAX - 1, i64::MAX] {
            let _ = expiry_instant(exp, now);
        }
        assert_eq!(expiry_instant(0, now), Some(now));
    }
}
