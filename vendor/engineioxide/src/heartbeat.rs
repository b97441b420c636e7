//! AegisX patch: the Engine.IO v4 heartbeats of all sessions in one task, on one timer queue.
//!
//! Upstream spawns a task per session (`Socket::spawn_heartbeat`) whose future (an `Interval`,
//! a `Timeout<Notified>`, the cancellation wrapper) is ~1.2 KiB, in a task cell aligned to 128
//! bytes: about 1.5 KiB of every idle connection. Here a session costs one entry of a
//! `DelayQueue` (its id, a phase and an instant) in a task the engine starts on first use.
//!
//! The schedule is upstream's: a ping when the session starts and every `ping_interval` after
//! it (skipped while the transport is upgrading); if no pong has arrived `ping_timeout` after a
//! ping, or the ping finds the buffer full, the session is closed with `HeartbeatTimeout`. One
//! difference: a pong is looked for only after its ping (a stale pong stored before a ping
//! answers nothing), where upstream consumed a pong sent early only once, at the start.
//! Protocol v3 (client pings, server answers) keeps upstream's per-session task.

use std::sync::{Arc, OnceLock, Weak};

use engineioxide_core::{Packet, Sid};
use futures_util::{FutureExt, StreamExt};
use smallvec::smallvec;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;

use crate::{engine::EngineIo, handler::EngineIoHandler, socket::DisconnectReason};

/// The engine's heartbeat task, started with the first session.
pub(crate) struct Heartbeats {
    // Unbounded: one send per new session, from synchronous code (session creation); the task
    // takes each at once. A bounded queue would have to drop sessions' heartbeats when full.
    tx: OnceLock<mpsc::UnboundedSender<Sid>>,
}

impl Heartbeats {
    pub(crate) fn new() -> Self {
        Self {
            tx: OnceLock::new(),
        }
    }
}

/// What a session's next timer entry is for.
enum Phase {
    /// Send a ping (due at `due`).
    Ping,
    /// Check that the pong of the ping sent at the instant held came.
    AwaitPong(Instant),
}

struct Beat {
    sid: Sid,
    phase: Phase,
    /// When the ping of this round was (or is) due; the next is one interval later.
    due: Instant,
}

impl<H: EngineIoHandler> EngineIo<H> {
    /// Starts the heartbeat of a new session (after its open packet is on its way).
    pub(crate) fn start_heartbeat(self: &Arc<Self>, socket: &Arc<crate::Socket<H::Data>>) {
        #[cfg(feature = "v3")]
        if socket.protocol == engineioxide_core::ProtocolVersion::V3 {
            socket
                .clone()
                .spawn_heartbeat(self.config.ping_interval, self.config.ping_timeout);
            return;
        }
        let tx = self.heartbeats.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(Arc::downgrade(self), rx));
            tx
        });
        // The task ends only once the engine (which owns `tx`) is gone.
        let _ = tx.send(socket.id);
    }
}

/// Runs until the engine is dropped. Holds the engine weakly: the engine owns the sender.
async fn run<H: EngineIoHandler>(engine: Weak<EngineIo<H>>, mut rx: mpsc::UnboundedReceiver<Sid>) {
    let mut queue: DelayQueue<Beat> = DelayQueue::new();
    loop {
        let beat = tokio::select! {
            sid = rx.recv() => match sid {
                Some(sid) => Beat { sid, phase: Phase::Ping, due: Instant::now() },
                None => return,
            },
            Some(expired) = queue.next() => expired.into_inner(),
        };
        let Some(engine) = engine.upgrade() else {
            return;
        };
        // A closed session is no longer in the map: its entry just ends.
        let Some(socket) = engine.get_socket(beat.sid) else {
            continue;
        };
        if socket.cancellation_token.is_cancelled() {
            continue;
        }
        let (interval, timeout) = (engine.config.ping_interval, engine.config.ping_timeout);
        match beat.phase {
            Phase::Ping if socket.is_upgrading() => {
                let due = beat.due + interval;
                queue.insert_at(Beat { due, ..beat }, due);
            }
            Phase::Ping => {
                // Forget a pong that came before this ping.
                let _ = socket.heartbeat.notified().now_or_never();
                if socket
                    .internal_tx
                    .try_send(Box::new(smallvec![Packet::Ping]))
                    .is_err()
                {
                    socket.close(DisconnectReason::HeartbeatTimeout);
                    continue;
                }
                let sent = Instant::now();
                // Looked at when the next ping is due, or at the timeout if that comes first.
                let check = (beat.due + interval).min(sent + timeout);
                queue.insert_at(
                    Beat {
                        phase: Phase::AwaitPong(sent),
                        ..beat
                    },
                    check,
                );
            }
            Phase::AwaitPong(sent) => {
                if socket.heartbeat.notified().now_or_never().is_none() {
                    let deadline = sent + timeout;
                    if Instant::now() < deadline {
                        // A timeout longer than the interval: the next ping waits for the pong.
                        queue.insert_at(beat, deadline);
                    } else {
                        socket.close(DisconnectReason::HeartbeatTimeout);
                    }
                    continue;
                }
                // A pong later than an interval gets the next ping at once, as upstream's
                // `Interval` (missed ticks burst) did.
                let due = (beat.due + interval).max(Instant::now());
                queue.insert_at(
                    Beat {
                        phase: Phase::Ping,
                        due,
                        sid: beat.sid,
                    },
                    due,
                );
            }
        }
    }
}
