//! The one place that emits to other sockets than the caller: it drains the fan-out queue (fed by
//! the bus) and emits to the local sockets of each target, in queue order. It also applies room
//! joins, in that same order, so a socket's live messages start at an exact point; and it holds
//! a joining socket's room deliveries while its replay is read elsewhere (`FanoutCmd::Hold`).

pub mod cmd;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        ahead: HashMap::new(),
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
    /// Chat messages that came ahead of a missing `seq` of their room (written on another
    /// node, whose message is still in transit), waiting for it.
    ahead: HashMap<RoomKey, Ahead>,
    limits: FanoutLimits,
}

/// A room's messages waiting for the `seq` before them, until `until` at the latest.
struct Ahead {
    until: Instant,
    msgs: BTreeMap<i64, Delivery>,
}

/// How long a room's chat message waits for a missing earlier `seq`. Two nodes writing one room
/// publish in commit order each, but their messages cross the bus independently: without the
/// wait, a socket could see `seq` 3 (written here) before 2 (written there, still in transit).
/// A `seq` that never comes (its node's copy was dropped) costs the room this much once.
const REORDER_WAIT: Duration = Duration::from_millis(20);

/// Most messages a room may hold back while waiting; past it they go out at once.
const AHEAD_MAX: usize = 1024;

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
        // A command taken from the queue while gathering a batch, to be handled next.
        let mut next: Option<FanoutCmd> = None;
        loop {
            let cmd = match next.take() {
                Some(cmd) => cmd,
                None => {
                    let due = self.ahead.values().map(|a| a.until).min();
                    let wake = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                    tokio::select! {
                        biased;
                        cmd = rx.recv() => match cmd {
                            Some(cmd) => cmd,
                            None => break,
                        },
                        () = tokio::time::sleep_until(wake.into()), if due.is_some() => {
                            match io.of(NAMESPACE) {
                                Some(ns) => self.release_due(&ns).await,
                                None => self.ahead.clear(),
                            }
                            continue;
                        }
                    }
                }
            };
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
                FanoutCmd::Bus(BusMessage::Deliver(d)) if batches(&d) => {
                    // A presence tick announces each user who came online to the whole tenant:
                    // as many commands in a row as users, each for every socket of the tenant.
                    // Gathered, they cost each socket one slot and one write, not one per user.
                    let mut batch = vec![d];
                    while batch.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok(FanoutCmd::Bus(BusMessage::Deliver(d)))
                                if d.target == batch[0].target && batches(&d) =>
                            {
                                batch.push(d)
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    deliver_batch(&ns, batch);
                }
                FanoutCmd::Bus(BusMessage::Deliver(d)) => self.deliver_in_order(&ns, d).await,
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
                FanoutCmd::Gap => {
                    // What waited for a message the gap may have lost goes out now.
                    for key in self.ahead.keys().cloned().collect::<Vec<_>>() {
                        self.release_ahead(&ns, &key, true).await;
                    }
                    self.forget(&ns)
                }
            }
        }
    }

    /// Delivers `d`, unless it is a room's chat message ahead of a `seq` still missing here
    /// (then it waits in `ahead`, see `REORDER_WAIT`); a message that fills the gap releases
    /// those that waited for it.
    async fn deliver_in_order(&mut self, ns: &BroadcastOperators<LocalAdapter>, d: Delivery) {
        let Target::Room { key } = &d.target else {
            return self.deliver(ns, d).await;
        };
        let key = key.clone();
        let seq = chat_seq(&d);
        if let (Some(seq), Some(last)) = (seq, self.last.get(&key))
            && seq > last + 1
        {
            let a = self.ahead.entry(key.clone()).or_insert_with(|| Ahead {
                until: Instant::now() + REORDER_WAIT,
                msgs: BTreeMap::new(),
            });
            a.msgs.insert(seq, d);
            if a.msgs.len() > AHEAD_MAX {
                self.release_ahead(ns, &key, true).await;
            }
            return;
        }
        self.deliver(ns, d).await;
        self.release_ahead(ns, &key, false).await;
    }

    /// Delivers, in `seq` order, what waits in `key` and is now next (everything when `all`).
    async fn release_ahead(
        &mut self,
        ns: &BroadcastOperators<LocalAdapter>,
        key: &RoomKey,
        all: bool,
    ) {
        loop {
            let last = self.last.get(key).copied();
            let Some(a) = self.ahead.get_mut(key) else {
                return;
            };
            let next = a.msgs.first_entry().filter(|e| {
                let seq = *e.key();
                all || last.is_none_or(|l| seq <= l + 1)
            });
            let Some(next) = next else {
                if a.msgs.is_empty() {
                    self.ahead.remove(key);
                }
                return;
            };
            let d = next.remove();
            self.deliver(ns, d).await;
        }
    }

    /// Rooms whose wait is over: their messages go out as they are.
    async fn release_due(&mut self, ns: &BroadcastOperators<LocalAdapter>) {
        let now = Instant::now();
        let due: Vec<RoomKey> = self
            .ahead
            .iter()
            .filter(|(_, a)| a.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.release_ahead(ns, &key, true).await;
        }
    }

    async fn deliver(&mut self, ns: &BroadcastOperators<LocalAdapter>, d: Delivery) {
        if d.event == "chat_message" {
            crate::metrics::delivery_latency(&d.data);
        }
        let seq = chat_seq(&d);
        if let Target::Room { key } = &d.target {
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
        if let Target::UserInTenant { tenant, .. } = &d.target {
            // A user has a handful of connections: filter them rather than keep a room per
            // (tenant, user).
            let mut full = 0;
            for s in audience(ns, &d.target).sockets() {
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
        let ops = audience(ns, &d.target);
        if let Err(BroadcastError::Socket(errs)) = ops.emit(&d.event, &d.data).await {
            let full = errs
                .iter()
                .filter(|e| matches!(e, SocketError::InternalChannelFull))
                .count();
            dropped(full, &d.event);
        }
        if let (Target::Room { key }, Some(seq)) = (d.target, seq) {
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
            upto: None,
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
        let upto = had_after.or(last_at_hold);
        let recent = self.recent_replay(&j.key, j.since, upto);
        Joined::Yes {
            had_after,
            recent,
            upto,
        }
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

/// The `seq` of a chat message (other deliveries have none).
fn chat_seq(d: &Delivery) -> Option<i64> {
    (d.event == "chat_message")
        .then(|| d.data.get("seq").and_then(Value::as_i64))
        .flatten()
}

/// The sockets a delivery to `target` goes to; for `UserInTenant`, the user's sockets of every
/// tenant, which the caller filters (see `deliver`).
fn audience(
    ns: &BroadcastOperators<LocalAdapter>,
    target: &Target,
) -> BroadcastOperators<LocalAdapter> {
    match target {
        Target::Room { key } => ns.clone().to(key.adapter_room()),
        Target::User { user } | Target::UserInTenant { user, .. } => {
            ns.clone().to(user_adapter_room(user))
        }
        Target::Tenant { tenant } => ns.clone().to(tenant_adapter_room(tenant)),
        Target::Presence { tenant, user } => ns.clone().to(presence_adapter_room(tenant, user)),
        Target::All => ns.clone(),
    }
}

/// Most deliveries gathered into one batch (a socket's buffer holds `SOCKET_BUFFER_PACKETS`
/// items, whatever their size).
const BATCH_MAX: usize = 256;

/// Deliveries that may be gathered: tenant-wide or to everyone, and not chat (whose `seq` the
/// fan-out tracks one by one, see `deliver`).
fn batches(d: &Delivery) -> bool {
    matches!(d.target, Target::Tenant { .. } | Target::All) && d.event != "chat_message"
}

/// Delivers consecutive deliveries to one target, in order, encoded once and sent to each
/// socket as one item of its channel.
fn deliver_batch(ns: &BroadcastOperators<LocalAdapter>, batch: Vec<Delivery>) {
    let sockets = audience(ns, &batch[0].target).sockets();
    let Some(first) = sockets.first() else {
        return;
    };
    let mut encoded = Vec::with_capacity(batch.len());
    for d in &batch {
        match first.encode_event(&d.event, &d.data) {
            Ok(e) => encoded.push(e),
            Err(e) => tracing::warn!(error = %e, event = %d.event, "delivery not encoded; dropped"),
        }
    }
    let full = sockets
        .iter()
        .filter(|s| {
            matches!(
                s.emit_encoded(&encoded),
                Err(SocketError::InternalChannelFull)
            )
        })
        .count();
    dropped(full, &batch[0].event);
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
