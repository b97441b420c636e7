//! Server-side cuts of live sockets: at token expiry (`exp` plus the leeway, unless refreshed)
//! and after `INACTIVE_TIMEOUT_SECS` without a client event. One task and one timer entry per
//! socket; a fired entry re-reads the session and re-arms when the deadline moved.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;

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
    pub async fn watch(&self, sid: Sid) {
        let _ = self.tx.send(sid).await;
    }
}

impl DeadlineTask {
    pub fn spawn(self, io: SocketIo, inactive: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run(self.rx, io, inactive))
    }
}

enum Due {
    At(Instant),
    Gone,
}

async fn run(mut rx: mpsc::Receiver<Sid>, io: SocketIo, inactive: Duration) {
    let mut queue: DelayQueue<Sid> = DelayQueue::new();
    loop {
        tokio::select! {
            sid = rx.recv() => match sid {
                Some(sid) => {
                    if let Due::At(at) = check(&io, sid, inactive) {
                        queue.insert_at(sid, at.into());
                    }
                }
                None => return,
            },
            Some(expired) = queue.next() => {
                let sid = expired.into_inner();
                if let Due::At(at) = check(&io, sid, inactive) {
                    queue.insert_at(sid, at.into());
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
    let idle_at = session.last_activity() + inactive;
    if idle_at <= now {
        tracing::info!(sid = %sid, "inactive; disconnecting");
        let _ = s.disconnect();
        return Due::Gone;
    }
    Due::At(expiry.map_or(idle_at, |e| e.min(idle_at)))
}

/// When a token with this `exp` stops being accepted on a live socket: `exp` plus the leeway.
fn expiry_instant(exp: i64, now: Instant) -> Option<Instant> {
    if exp == i64::MAX {
        return None;
    }
    let cut = UNIX_EPOCH + Duration::from_secs(exp.max(0) as u64 + LEEWAY_SECS);
    Some(match cut.duration_since(SystemTime::now()) {
        Ok(left) => now + left,
        Err(_) => now,
    })
}

/// Parses a socket id the domain carries as a string.
pub fn parse_sid(s: &str) -> Option<Sid> {
    Sid::from_str(s).ok()
}
