//! Per-socket state, kept in the socket's extensions (never in our own maps): who it is, which
//! rooms it joined, when it was last active, and the order its events are handled in.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use engineioxide::SessionControl;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Event, SocketRef, State};
use socketioxide::handler::FromMessageParts;
use socketioxide::socket::Socket;
use tokio::sync::oneshot;

use crate::domain::auth::Principal;
use crate::domain::connections::ConnectionInfo;
use crate::domain::error::DomainError;
use crate::domain::ids::{RoomKey, UserId};
use crate::domain::presence::Seat;
use crate::socket::reply;
use crate::state::AppState;

/// What a socket has of a room it joined: every message with `seq` greater than this was (or
/// is being) delivered to it. `None`: nothing was delivered to it live yet (the fan-out had not
/// seen the room since it started); the fan-out fills it in at its first delivery.
pub type HasAfter = Option<i64>;

/// Outcome of `Session::add_room`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    Already,
    /// The disconnect cleanup ran: the socket must not join anything any more.
    Closed,
}

/// A token bucket. Starts full; `rate` tokens a second refill it up to `burst`.
#[derive(Debug, Default)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, rate: f64, burst: f64) {
        let now = Instant::now();
        self.tokens = match self.at {
            None => burst,
            Some(at) => (self.tokens + now.duration_since(at).as_secs_f64() * rate).min(burst),
        };
        self.at = Some(now);
    }

    /// Takes one token if there is one; otherwise says how long until there is.
    fn take(&mut self, rate: f64, burst: f64) -> Result<(), Duration> {
        self.refill(rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

#[derive(Default)]
struct Joined {
    rooms: HashMap<RoomKey, HasAfter>,
    closed: bool,
}

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
    /// Users whose presence the socket watches (in its own tenant).
    // A std Mutex: held only for a set operation, never across an await.
    watched: Mutex<HashSet<UserId>>,
    /// The turn of the connect itself: every event waits until `connected` has been sent.
    first_turn: Mutex<Option<Turn>>,
    /// Rooms joined with `join_room` (not the socket's own user/tenant rooms), and whether the
    /// disconnect cleanup ran (under the same lock, so no join lands after it).
    // A std Mutex: held only for a map operation, never across an await.
    joined: Mutex<Joined>,
    pub connected_at: Instant,
    /// Milliseconds after `connected_at` of the last client event (pings do not count).
    last_activity_ms: AtomicU64,
    /// Set once the disconnect cleanup ran (it may be reached from two places, see `connect`).
    closed: std::sync::atomic::AtomicBool,
    /// The receiver the next event waits on before it runs (see `Turn`).
    // A std Mutex: a pointer swap, in the socket's receive loop.
    tail: Mutex<Option<oneshot::Receiver<()>>>,
    /// Client events accepted and not finished (live `Turn`s).
    in_flight: AtomicUsize,
    /// Client events per second (`EVENTS_PER_SECOND_PER_CONNECTION`).
    events: Mutex<Bucket>,
    /// Replayed messages per second (`REPLAY_MESSAGES_PER_SECOND_PER_CONNECTION`).
    replayed: Mutex<Bucket>,
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
            watched: Mutex::new(HashSet::new()),
            first_turn: Mutex::new(None),
            joined: Mutex::new(Joined::default()),
            connected_at: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            tail: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            events: Mutex::new(Bucket::default()),
            replayed: Mutex::new(Bucket::default()),
        }
    }

    /// True the first time only: the caller runs the disconnect cleanup. From then on the
    /// socket joins no room (`add_room` answers `Closed`).
    pub fn mark_closed(&self) -> bool {
        self.joined().closed = true;
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

    fn joined(&self) -> std::sync::MutexGuard<'_, Joined> {
        self.joined.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_in(&self, key: &RoomKey) -> bool {
        self.joined().rooms.contains_key(key)
    }

    pub fn joined_count(&self) -> usize {
        self.joined().rooms.len()
    }

    pub fn joined_rooms(&self) -> Vec<RoomKey> {
        self.joined().rooms.keys().cloned().collect()
    }

    /// What the socket has of a room it is in (`None` when it is not in it).
    pub fn has_after(&self, key: &RoomKey) -> Option<HasAfter> {
        self.joined().rooms.get(key).copied()
    }

    /// Adds the room (keeping what an existing membership has), unless the socket closed.
    pub fn add_room(&self, key: RoomKey, has: HasAfter) -> Added {
        let mut j = self.joined();
        if j.closed {
            return Added::Closed;
        }
        match j.rooms.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => Added::Already,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(has);
                Added::New
            }
        }
    }

    /// Records what the socket now has of a room it is in.
    pub fn set_has_after(&self, key: &RoomKey, has: HasAfter) {
        if let Some(h) = self.joined().rooms.get_mut(key) {
            *h = has;
        }
    }

    /// Makes every room's `has_after` unknown again (deliveries may have been lost).
    pub fn forget_has_after(&self) {
        for h in self.joined().rooms.values_mut() {
            *h = None;
        }
    }

    /// Deliveries up to `has` were missed live: the socket has at most what comes after it.
    pub fn raise_has_after(&self, key: &RoomKey, has: i64) {
        if let Some(h) = self.joined().rooms.get_mut(key) {
            *h = Some(h.map_or(has, |x| x.max(has)));
        }
    }

    /// Fills in an unknown `has_after` (see `HasAfter`).
    pub fn resolve_has_after(&self, key: &RoomKey, has: i64) {
        if let Some(h @ None) = self.joined().rooms.get_mut(key) {
            *h = Some(has);
        }
    }

    /// Returns whether the socket was in the room.
    pub fn remove_room(&self, key: &RoomKey) -> bool {
        self.joined().rooms.remove(key).is_some()
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
    pub fn hold_first_turn(self: &Arc<Self>) {
        // Counted in flight like any turn, since dropping it uncounts it.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
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

    /// Whether a replay may start now: the replay budget is not in debt. The replay's size is
    /// charged afterwards (`charge_replay`), so one large replay is allowed, then the next waits.
    pub fn replay_allowed(&self, rate: u32, burst: u32) -> bool {
        let mut b = self.replayed.lock().unwrap_or_else(|e| e.into_inner());
        b.refill(f64::from(rate), f64::from(burst));
        b.tokens >= 0.0
    }

    pub fn charge_replay(&self, messages: usize) {
        let mut b = self.replayed.lock().unwrap_or_else(|e| e.into_inner());
        b.tokens -= messages as f64;
    }

    /// Admits one client event against the connection's budgets, before it waits in line.
    /// `message` events have their own per-user rate limit (`RATE_LIMIT_PER_MINUTE`, which a
    /// deployment may raise for chat alone), so only the in-flight bound applies to them.
    fn admit(&self, budget: &EventBudget, is_message: bool) -> Result<(), Refusal> {
        if !is_message
            && let Err(refill) = self
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(f64::from(budget.per_second), f64::from(budget.burst))
        {
            crate::metrics::event_refused("rate");
            return Err(Refusal {
                error: DomainError::TooManyEvents,
                hold: Some(refill),
            });
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= budget.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::event_refused("in_flight");
            return Err(Refusal {
                error: DomainError::TooManyInFlight(budget.max_in_flight),
                hold: None,
            });
        }
        Ok(())
    }

    fn take_turn(self: &Arc<Self>) -> Turn {
        let (tx, rx) = oneshot::channel();
        let prev = self
            .tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(rx);
        Turn {
            prev,
            next: Some(tx),
            session: self.clone(),
        }
    }
}

/// An event `admit` refused.
struct Refusal {
    error: DomainError,
    /// Until the budget has a token again: the socket's next frame is not read before then, so
    /// a client that ignores refusals gets about one per token instead of one per frame it can
    /// send, and costs the node no more than one within its budget.
    hold: Option<Duration>,
}

/// The per-connection event budget (`EVENTS_PER_SECOND_PER_CONNECTION`,
/// `EVENT_BURST_PER_CONNECTION`, `MAX_EVENTS_IN_FLIGHT`).
#[derive(Debug, Clone, Copy)]
pub struct EventBudget {
    pub per_second: u32,
    pub burst: u32,
    pub max_in_flight: usize,
}

/// A socket's place in line. Socket.IO runs every event handler in its own task, so two events
/// of one socket could otherwise run out of order (a `send_message` overtaking the `join_room`
/// before it, or two messages swapping `seq`). The extractor runs in the socket's receive loop,
/// in arrival order; each handler first waits for its predecessor to pass, then passes (or is
/// dropped) once its order-relevant work is queued.
///
/// Taking a turn first spends the connection's event budget (every event but `message`, which
/// has the chat rate limit) and counts it in flight: an event over either is answered
/// `RATE_LIMITED` (error event and ack) right away and its handler never runs. Over the rate,
/// the socket's websocket is also not read again until the budget has a token.
pub struct Turn {
    prev: Option<oneshot::Receiver<()>>,
    next: Option<oneshot::Sender<()>>,
    /// Counts the event in flight until the handler is done with it.
    session: Arc<Session>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.session.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
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
pub enum NoTurn {
    #[error("socket has no session")]
    NoSession,
    /// Over the event budget; already answered.
    #[error("event refused: {0}")]
    Refused(DomainError),
}

impl FromMessageParts<LocalAdapter> for Turn {
    type Error = NoTurn;
    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, NoTurn> {
        let session = s
            .extensions
            .get::<Arc<Session>>()
            .ok_or(NoTurn::NoSession)?;
        session.touch();
        let State(app) =
            State::<AppState>::from_message_parts(s, v, ack_id).map_err(|_| NoTurn::NoSession)?;
        let is_message = Event::from_message_parts(s, v, ack_id).is_ok_and(|e| e.0 == "message");
        if let Err(Refusal { error, hold }) = session.admit(&app.event_budget, is_message) {
            if let Some(hold) = hold
                && let Some(control) = s.req_parts().extensions.get::<SessionControl>()
            {
                control.hold_reads(tokio::time::Instant::now() + hold);
            }
            let Ok(ack) = AckSender::from_message_parts(s, v, ack_id);
            reply::fail(&SocketRef::from(s.clone()), ack, &error);
            return Err(NoTurn::Refused(error));
        }
        Ok(session.take_turn())
    }
}
