//! The one place that emits to other sockets than the caller: it drains the fan-out queue (fed by
//! the bus) and emits to the local sockets of each target, in queue order. It also applies room
//! joins, in that same order, so a socket's live messages start at an exact point; and it holds
//! a joining socket's room deliveries while its replay is read elsewhere (`FanoutCmd::Hold`).

pub mod cmd;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;
use socketioxide::{BroadcastError, SendError, SocketError, SocketIo};

use crate::domain::events::{BusMessage, Delivery, Target};
use crate::domain::ids::{RoomKey, presence_adapter_room, tenant_adapter_room, user_adapter_room};
use crate::socket::deadlines::parse_sid;
use crate::socket::rooms::leave_room;
use crate::socket::session::{Added, Session};
use crate::socket::{NAMESPACE, reply};
pub use cmd::{
    FanoutCmd, FanoutReceiver, FanoutSender, JoinRoom, Joined, Release, ReleaseJoin, Released,
    fanout_queue,
};

/// Rooms whose last delivered `seq` is remembered; past it the memory starts over (members keep
/// what they have, see `track`).
const MAX_TRACKED_ROOMS: usize = 100_000;
/// Recent messages kept over all rooms; past it every room's are dropped (and refill).
const MAX_RECENT_TOTAL: usize = 65_536;

/// Sizes the fan-out works with.
#[derive(Debug, Clone, Copy)]
pub struct FanoutLimits {
    /// Room deliveries held per joining socket before it counts as too slow.
    pub hold_cap: usize,
    /// Recent `chat_message`s kept per room to answer replays without a store read (0: none).
    pub recent_per_room: usize,
    /// A replay longer than this is read from the store (`MAX_REPLAY`).
    pub max_replay: usize,
}

pub fn spawn(
    io: SocketIo,
    rx: FanoutReceiver,
    limits: FanoutLimits,
) -> tokio::task::JoinHandle<()> {
    let fanout = Fanout {
        last: HashMap::new(),
        holds: HashMap::new(),
        recent: HashMap::new(),
        recent_total: 0,
        limits,
    };
    tokio::spawn(fanout.run(io, rx))
}

struct Fanout {
    /// The last chat `seq` delivered per room (rooms seen since the start).
    last: HashMap<RoomKey, i64>,
    /// Sockets joining with replay, whose room deliveries wait here.
    holds: HashMap<RoomKey, Vec<Hold>>,
    /// The last `chat_message`s delivered per room, consecutive in `seq`: clients rejoining
    /// with a recent `since` (a reconnect storm) are answered from here, not by the store.
    recent: HashMap<RoomKey, VecDeque<(i64, Value)>>,
    recent_total: usize,
    limits: FanoutLimits,
}

struct Hold {
    sid: Sid,
    held: Vec<Held>,
    overflowed: bool,
    /// `last` of the room when the hold began.
    last_at_hold: Option<i64>,
    /// Released, but the replay went past what this fan-out has delivered of the room (the
    /// store read saw commits still on their way here): the socket is not in the room yet;
    /// chat messages up to this `seq` are dropped for it (replayed already), other room events
    /// go to it directly, and the first chat message past it puts it in the room.
    catch_up: Option<i64>,
}

struct Held {
    event: String,
    data: Value,
    seq: Option<i64>,
}

fn find(ns: &BroadcastOperators<LocalAdapter>, sid: &str) -> Option<(SocketRef, Arc<Session>)> {
    let s = ns.get_socket(parse_sid(sid)?)?;
    let session = s.extensions.get::<Arc<Session>>()?;
    Some((s, session))
}

impl Fanout {
    async fn run(mut self, io: SocketIo, mut rx: FanoutReceiver) {
        while let Some(cmd) = rx.recv().await {
            let Some(ns) = io.of(NAMESPACE) else {
                // The server is closing: nothing local to deliver to.
                match cmd {
                    FanoutCmd::Join(j) | FanoutCmd::Hold(j) => {
                        let _ = j.done.send(Joined::SocketGone);
                    }
                    FanoutCmd::Release(r) => {
                        let _ = r.done.send(Released::SocketGone);
                    }
                    FanoutCmd::Bus(_) | FanoutCmd::Gap => {}
                }
                continue;
            };
            match cmd {
                FanoutCmd::Bus(BusMessage::Deliver(d)) => self.deliver(&ns, d).await,
                FanoutCmd::Bus(BusMessage::DisconnectUser { user }) => {
                    // Not through the user's room: a socket joins it only once `connected` has
                    // been sent, and one acknowledged just before would be missed. A scan of
                    // this node's sockets is cheap for an operator's rare call.
                    for s in ns.sockets() {
                        if s.extensions
                            .get::<Arc<Session>>()
                            .is_some_and(|session| session.conn.user == user)
                        {
                            let _ = s.disconnect();
                        }
                    }
                }
                FanoutCmd::Bus(BusMessage::RevokeRoom { key, user }) => {
                    for s in ns.to(user_adapter_room(&user)).sockets() {
                        // A socket whose token names the room keeps it: only the grant went away.
                        if let Some(session) = s.extensions.get::<Arc<Session>>()
                            && session.is_in(&key)
                            && !session
                                .principal()
                                .rooms
                                .iter()
                                .any(|r| r == key.room.as_str())
                        {
                            self.take_hold(&key, s.id);
                            leave_room(&s, &session, &key);
                        }
                    }
                }
                FanoutCmd::Join(j) => {
                    let r = self.join(&ns, &j);
                    let _ = j.done.send(r);
                }
                FanoutCmd::Hold(j) => {
                    let r = self.hold(&ns, &j);
                    let _ = j.done.send(r);
                }
                FanoutCmd::Release(r) => {
                    let res = self.release(&ns, &r);
                    let _ = r.done.send(res);
                }
                FanoutCmd::Gap => self.forget(&ns),
            }
        }
    }

    async fn deliver(&mut self, ns: &BroadcastOperators<LocalAdapter>, d: Delivery) {
        if d.event == "chat_message" {
            crate::metrics::delivery_latency(&d.data);
        }
        if let Target::Room { key } = &d.target {
            let seq = (d.event == "chat_message")
                .then(|| d.data.get("seq").and_then(Value::as_i64))
                .flatten();
            if let Some(seq) = seq {
                self.track(ns, key, seq);
            }
            if let Some(holds) = self.holds.get_mut(key) {
                holds.retain(|h| catch_up(ns, key, h, &d, seq));
                for h in holds
                    .iter_mut()
                    .filter(|h| !h.overflowed && h.catch_up.is_none())
                {
                    if h.held.len() >= self.limits.hold_cap {
                        h.overflowed = true;
                        h.held = Vec::new();
                    } else {
                        h.held.push(Held {
                            event: d.event.clone(),
                            data: d.data.clone(),
                            seq,
                        });
                    }
                }
            }
        }
        let ops = match &d.target {
            Target::Room { key } => ns.clone().to(key.adapter_room()),
            Target::User { user } => ns.clone().to(user_adapter_room(user)),
            Target::UserInTenant { user, tenant } => {
                // A user has a handful of connections: filter them rather than keep a room per
                // (tenant, user).
                let mut full = 0;
                for s in ns.clone().to(user_adapter_room(user)).sockets() {
                    let in_tenant = s
                        .extensions
                        .get::<Arc<Session>>()
                        .is_some_and(|x| x.principal().tenant.as_ref() == Some(tenant));
                    if in_tenant
                        && let Err(SendError::Socket(SocketError::InternalChannelFull)) =
                            s.emit(&d.event, &d.data)
                    {
                        full += 1;
                    }
                }
                return dropped(full, &d.event);
            }
            Target::Tenant { tenant } => ns.clone().to(tenant_adapter_room(tenant)),
            Target::Presence { tenant, user } => ns.clone().to(presence_adapter_room(tenant, user)),
            Target::All => ns.clone(),
        };
        if let Err(BroadcastError::Socket(errs)) = ops.emit(&d.event, &d.data).await {
            let full = errs
                .iter()
                .filter(|e| matches!(e, SocketError::InternalChannelFull))
                .count();
            dropped(full, &d.event);
        }
        if let Target::Room { key } = d.target
            && d.event == "chat_message"
            && let Some(seq) = d.data.get("seq").and_then(Value::as_i64)
        {
            self.remember(key, seq, d.data);
        }
    }

    fn remember(&mut self, key: RoomKey, seq: i64, data: Value) {
        if self.limits.recent_per_room == 0 {
            return;
        }
        if self.recent_total >= MAX_RECENT_TOTAL {
            self.recent.clear();
            self.recent_total = 0;
        }
        let ring = self.recent.entry(key).or_default();
        if ring.back().is_some_and(|(last, _)| *last + 1 != seq) {
            // Not the next one (a restart, another writer): start over, so what is kept stays
            // consecutive.
            self.recent_total -= ring.len();
            ring.clear();
        }
        ring.push_back((seq, data));
        self.recent_total += 1;
        if ring.len() > self.limits.recent_per_room {
            ring.pop_front();
            self.recent_total -= 1;
        }
    }

    /// The replay `(since, upto]` from the recent messages, when they hold all of it.
    fn recent_replay(&self, key: &RoomKey, since: i64, upto: Option<i64>) -> Option<Vec<Value>> {
        let upto = upto?;
        if upto <= since {
            return Some(Vec::new());
        }
        let ring = self.recent.get(key)?;
        let (first, _) = ring.front()?;
        let (last, _) = ring.back()?;
        if *first > since + 1 || *last < upto || (upto - since) as usize > self.limits.max_replay {
            return None;
        }
        Some(
            ring.iter()
                .filter(|(seq, _)| *seq > since && *seq <= upto)
                .map(|(_, v)| v.clone())
                .collect(),
        )
    }

    /// Remembers the room's last delivered `seq`. At the first delivery since the room was
    /// (re)tracked, the members that joined while it was untracked have had nothing live yet:
    /// from here on they have every message after `seq - 1`.
    ///
    /// A `seq` past the next one means this node did not see the ones between: lost on the
    /// way from another node, or still on their way from another writer. Either way the
    /// members do not have them live, so what they are known to have moves up to `seq - 1`,
    /// and a rejoin replays the missing ones.
    fn track(&mut self, ns: &BroadcastOperators<LocalAdapter>, key: &RoomKey, seq: i64) {
        if let Some(last) = self.last.get_mut(key) {
            let jumped = seq > *last + 1;
            *last = (*last).max(seq);
            if jumped {
                for s in ns.clone().to(key.adapter_room()).sockets() {
                    if let Some(session) = s.extensions.get::<Arc<Session>>() {
                        session.raise_has_after(key, seq - 1);
                    }
                }
            }
            return;
        }
        if self.last.len() >= MAX_TRACKED_ROOMS {
            self.last.clear();
            self.recent.clear();
            self.recent_total = 0;
        }
        for s in ns.clone().to(key.adapter_room()).sockets() {
            if let Some(session) = s.extensions.get::<Arc<Session>>() {
                session.resolve_has_after(key, seq - 1);
            }
        }
        self.last.insert(key.clone(), seq);
    }

    /// After deliveries may have been lost: nothing is known any more to have been delivered
    /// up to some `seq`, so no replay is answered from memory or shortened by `HasAfter` until
    /// the rooms are tracked again (at their next delivery, as after a start).
    fn forget(&mut self, ns: &BroadcastOperators<LocalAdapter>) {
        self.last.clear();
        self.recent.clear();
        self.recent_total = 0;
        for s in ns.clone().sockets() {
            if let Some(session) = s.extensions.get::<Arc<Session>>() {
                session.forget_has_after();
            }
        }
    }

    /// Joins now: the socket gets every room delivery after this point.
    fn join(&mut self, ns: &BroadcastOperators<LocalAdapter>, j: &JoinRoom) -> Joined {
        let Some((s, session)) = find(ns, &j.socket_id) else {
            return Joined::SocketGone;
        };
        match session.add_room(j.key.clone(), self.last.get(&j.key).copied()) {
            Added::Closed => return Joined::SocketGone,
            Added::New => crate::metrics::room_joined(&j.key),
            Added::Already => {}
        }
        if !enter(&s, &j.key) {
            return Joined::SocketGone;
        }
        Joined::Yes {
            had_after: None,
            recent: None,
        }
    }

    /// Counts the socket in the room but holds its deliveries until `release`.
    fn hold(&mut self, ns: &BroadcastOperators<LocalAdapter>, j: &JoinRoom) -> Joined {
        let Some((s, session)) = find(ns, &j.socket_id) else {
            return Joined::SocketGone;
        };
        if !s.connected() {
            return Joined::SocketGone;
        }
        let had_after = session.has_after(&j.key).flatten();
        match session.add_room(j.key.clone(), None) {
            Added::Closed => return Joined::SocketGone,
            Added::New => crate::metrics::room_joined(&j.key),
            Added::Already => {}
        }
        // A member rejoining: its deliveries are held as well, so the replay comes before them.
        s.leave(j.key.adapter_room());
        self.take_hold(&j.key, s.id);
        let last_at_hold = self.last.get(&j.key).copied();
        self.holds.entry(j.key.clone()).or_default().push(Hold {
            sid: s.id,
            held: Vec::new(),
            overflowed: false,
            last_at_hold,
            catch_up: None,
        });
        // Up to what the socket had already, or everything delivered so far.
        let recent = self.recent_replay(&j.key, j.since, had_after.or(last_at_hold));
        Joined::Yes { had_after, recent }
    }

    fn take_hold(&mut self, key: &RoomKey, sid: Sid) -> Option<Hold> {
        let holds = self.holds.get_mut(key)?;
        let i = holds.iter().position(|h| h.sid == sid)?;
        let hold = holds.swap_remove(i);
        if holds.is_empty() {
            self.holds.remove(key);
        }
        Some(hold)
    }

    fn release(&mut self, ns: &BroadcastOperators<LocalAdapter>, r: &Release) -> Released {
        let hold = parse_sid(&r.socket_id).and_then(|sid| self.take_hold(&r.key, sid));
        let Some((s, session)) = find(ns, &r.socket_id) else {
            return Released::SocketGone;
        };
        let Some(hold) = hold else {
            // A revoke took the socket out of the room during the hold.
            return Released::Revoked;
        };
        let Some(j) = r.join else {
            if session.remove_room(&r.key) {
                crate::metrics::room_left(&r.key);
            }
            return Released::Revoked;
        };
        if hold.overflowed {
            tracing::warn!(sid = %s.id, "room deliveries overflowed during a replay; disconnecting");
            let _ = s.clone().disconnect();
            return Released::Overflowed;
        }
        let mut first_held = None;
        for h in &hold.held {
            if let Some(seq) = h.seq {
                first_held.get_or_insert(seq);
            }
            if !cmd::passes_mark(h.seq, j.skip_upto) {
                continue; // replayed already
            }
            reply::emit(&s, &h.event, &h.data);
        }
        let behind =
            j.skip_upto != i64::MIN && self.last.get(&r.key).is_none_or(|last| *last < j.skip_upto);
        if behind {
            self.holds.entry(r.key.clone()).or_default().push(Hold {
                sid: s.id,
                held: Vec::new(),
                overflowed: false,
                last_at_hold: hold.last_at_hold,
                catch_up: Some(j.skip_upto),
            });
        } else if !enter(&s, &r.key) {
            return Released::SocketGone;
        }
        let has = j
            .has_after
            .or(hold.last_at_hold)
            .or(first_held.map(|f| f - 1));
        session.set_has_after(&r.key, has);
        Released::Joined
    }
}

/// One room delivery for a released socket still catching up (`Hold::catch_up`); false when
/// the entry is done: the socket entered the room (this delivery then reaches it through the
/// room), left it, or is gone.
fn catch_up(
    ns: &BroadcastOperators<LocalAdapter>,
    key: &RoomKey,
    h: &Hold,
    d: &Delivery,
    seq: Option<i64>,
) -> bool {
    let Some(upto) = h.catch_up else {
        return true;
    };
    let Some(s) = ns.get_socket(h.sid) else {
        return false;
    };
    if !s
        .extensions
        .get::<Arc<Session>>()
        .is_some_and(|session| session.is_in(key))
    {
        return false;
    }
    match seq {
        // Replayed already.
        Some(seq) if seq <= upto => true,
        Some(_) => {
            enter(&s, key);
            false
        }
        None => {
            reply::emit(&s, &d.event, &d.data);
            true
        }
    }
}

/// Puts the socket in the adapter room, unless it closed meanwhile: its close may already have
/// removed it from every room, and a join after that would stay behind.
fn enter(s: &SocketRef, key: &RoomKey) -> bool {
    s.join(key.adapter_room());
    if s.connected() {
        return true;
    }
    s.leave(key.adapter_room());
    false
}

fn dropped(full: usize, event: &str) {
    if full > 0 {
        // The engine closes a socket the first time its buffer is full and reports it closed
        // afterwards, so each slow socket is counted (and logged) here once.
        tracing::warn!(sockets = full, event = %event, "send buffers full; slow consumers disconnected");
        crate::metrics::dropped_packets(full as u64);
        crate::metrics::slow_consumer_disconnects(full as u64);
    }
}
