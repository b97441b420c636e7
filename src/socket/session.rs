//! Per-socket state, kept in the socket's extensions (never in our own maps): who it is, which
//! rooms it joined, when it was last active, and the order its events are handled in.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use socketioxide::adapter::Adapter;
use socketioxide::handler::FromMessageParts;
use socketioxide::socket::Socket;
use tokio::sync::oneshot;

use crate::domain::auth::Principal;
use crate::domain::ids::{RoomKey, UserId};
use crate::domain::presence::{ConnectionInfo, Seat};

pub struct Session {
    pub conn: ConnectionInfo,
    /// The connection's log span (`sid`, `user`, `tenant`): every handler runs inside it.
    pub span: tracing::Span,
    /// The connection's count in presence (opened once `connected` is sent).
    pub presence: Seat,
    // Replaced whole by `refresh_token`; read far more than written.
    principal: RwLock<Arc<Principal>>,
    /// `exp` of the current token (seconds since the epoch), `i64::MAX` when it has none.
    exp: AtomicI64,
    /// Rooms joined with `join_room` (not the socket's own user/tenant rooms).
    // A std Mutex: held only for a set operation, never across an await.
    joined: Mutex<HashSet<RoomKey>>,
    /// Users whose presence the socket watches (in its own tenant).
    // A std Mutex: held only for a set operation, never across an await.
    watched: Mutex<HashSet<UserId>>,
    /// The turn of the connect itself: every event waits until `connected` has been sent.
    first_turn: Mutex<Option<Turn>>,
    pub connected_at: Instant,
    /// Milliseconds after `connected_at` of the last client event (pings do not count).
    last_activity_ms: AtomicU64,
    /// Set once the disconnect cleanup ran (it may be reached from two places, see `connect`).
    closed: std::sync::atomic::AtomicBool,
    /// The receiver the next event waits on before it runs (see `Turn`).
    // A std Mutex: a pointer swap, in the socket's receive loop.
    tail: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Session {
    pub fn new(conn: ConnectionInfo, principal: Principal) -> Self {
        let span = tracing::info_span!(
            "ws",
            sid = %conn.socket_id,
            user = %conn.user,
            tenant = principal.tenant_label(),
        );
        Self {
            conn,
            span,
            presence: Seat::default(),
            exp: AtomicI64::new(principal.exp.unwrap_or(i64::MAX)),
            principal: RwLock::new(Arc::new(principal)),
            joined: Mutex::new(HashSet::new()),
            watched: Mutex::new(HashSet::new()),
            first_turn: Mutex::new(None),
            connected_at: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            tail: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True the first time only: the caller runs the disconnect cleanup.
    pub fn mark_closed(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    pub fn principal(&self) -> Arc<Principal> {
        self.principal
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace_principal(&self, p: Principal) {
        self.exp.store(p.exp.unwrap_or(i64::MAX), Ordering::Release);
        *self.principal.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
    }

    pub fn exp(&self) -> i64 {
        self.exp.load(Ordering::Acquire)
    }

    pub fn touch(&self) {
        let ms = self.connected_at.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    pub fn last_activity(&self) -> Instant {
        self.connected_at
            + std::time::Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    fn joined(&self) -> std::sync::MutexGuard<'_, HashSet<RoomKey>> {
        self.joined.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_in(&self, key: &RoomKey) -> bool {
        self.joined().contains(key)
    }

    pub fn joined_count(&self) -> usize {
        self.joined().len()
    }

    pub fn joined_rooms(&self) -> Vec<RoomKey> {
        self.joined().iter().cloned().collect()
    }

    /// Returns whether the room is new for this socket.
    pub fn add_room(&self, key: RoomKey) -> bool {
        self.joined().insert(key)
    }

    /// Returns whether the socket was in the room.
    pub fn remove_room(&self, key: &RoomKey) -> bool {
        self.joined().remove(key)
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, HashSet<UserId>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the users to the watched set unless that would exceed `max`; returns the ones that
    /// were not watched yet.
    pub fn watch(&self, users: &[UserId], max: usize) -> Option<Vec<UserId>> {
        let mut watched = self.watched();
        let new: Vec<UserId> = users
            .iter()
            .filter(|u| !watched.contains(*u))
            .cloned()
            .collect();
        if watched.len() + new.len() > max {
            return None;
        }
        watched.extend(new.iter().cloned());
        Some(new)
    }

    /// Removes the users from the watched set; returns the ones that were watched.
    pub fn unwatch(&self, users: &[UserId]) -> Vec<UserId> {
        let mut watched = self.watched();
        users
            .iter()
            .filter(|u| watched.remove(*u))
            .cloned()
            .collect()
    }

    /// Called before the CONNECT ack: events queue behind the connect until `release_first_turn`.
    pub fn hold_first_turn(&self) {
        let turn = self.take_turn();
        *self.first_turn.lock().unwrap_or_else(|e| e.into_inner()) = Some(turn);
    }

    /// `connected` has been sent: the socket's events may run.
    pub fn release_first_turn(&self) {
        let turn = self
            .first_turn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut turn) = turn {
            turn.pass();
        }
    }

    fn take_turn(&self) -> Turn {
        let (tx, rx) = oneshot::channel();
        let prev = self
            .tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(rx);
        Turn {
            prev,
            next: Some(tx),
        }
    }
}

/// A socket's place in line. Socket.IO runs every event handler in its own task, so two events
/// of one socket could otherwise run out of order (a `send_message` overtaking the `join_room`
/// before it, or two messages swapping `seq`). The extractor runs in the socket's receive loop,
/// in arrival order; each handler first waits for its predecessor to pass, then passes (or is
/// dropped) once its order-relevant work is queued.
pub struct Turn {
    prev: Option<oneshot::Receiver<()>>,
    next: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Waits until every earlier event of the socket has passed.
    pub async fn wait(&mut self) {
        if let Some(prev) = self.prev.take() {
            let _ = prev.await; // a dropped predecessor has passed too
        }
    }

    /// Lets the next event run.
    pub fn pass(&mut self) {
        if let Some(next) = self.next.take() {
            let _ = next.send(());
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("socket has no session")]
pub struct NoSession;

impl<A: Adapter> FromMessageParts<A> for Turn {
    type Error = NoSession;
    fn from_message_parts(
        s: &Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, NoSession> {
        let session = s.extensions.get::<Arc<Session>>().ok_or(NoSession)?;
        session.touch();
        Ok(session.take_turn())
    }
}
