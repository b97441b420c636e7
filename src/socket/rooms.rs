//! `join_room` and `leave_room`.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tracing::Instrument;

use tokio::sync::oneshot;

use crate::domain::bus::Topic;
use crate::domain::error::DomainError;
use crate::domain::ids::RoomKey;
use crate::domain::replay_cache::CachedReplay;
use crate::domain::rooms::{JoinDecision, RoomPolicy};
use crate::fanout::{FanoutCmd, JoinRoom, Joined, Release, ReleaseJoin, Released};
use crate::socket::session::{Session, Turn};
use crate::socket::{interest, reply};
use crate::state::AppState;

pub async fn join(
    s: SocketRef,
    mut turn: Turn,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(app): State<AppState>,
    Extension(session): Extension<Arc<Session>>,
) {
    let span = session.span.clone();
    async move {
        turn.wait().await;
        match do_join(&s, &app, &session, data.ok()).await {
            Ok(room_id) => reply::ok(ack, json!({ "roomId": room_id })),
            Err(e) => reply::fail(&s, ack, &e),
        }
    }
    .instrument(span)
    .await
}

/// `roomId` of a room event payload: not an object is `INVALID_PAYLOAD`; a missing, non-string
/// or malformed id is `INVALID_ROOM`.
pub fn room_arg(
    data: Option<Value>,
    event: &str,
) -> Result<(Map<String, Value>, String), DomainError> {
    let Some(Value::Object(obj)) = data else {
        return Err(DomainError::invalid(format!(
            "{event} expects an object {{ roomId }}"
        )));
    };
    let Some(Value::String(room)) = obj.get("roomId") else {
        return Err(DomainError::InvalidRoom);
    };
    let room = room.clone();
    Ok((obj, room))
}

async fn do_join(
    s: &SocketRef,
    app: &AppState,
    session: &Session,
    data: Option<Value>,
) -> Result<String, DomainError> {
    let (obj, room) = room_arg(data, "join_room")?;
    let room = RoomPolicy::parse(&room)?;
    let since = match obj.get("since") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|n| *n >= 0)
                .ok_or_else(|| DomainError::invalid("since must be a non-negative integer"))?,
        ),
    };
    let room_id = room.to_string();
    let p = session.principal();
    let key = match app.rooms.authorize_join(&p, room).await? {
        JoinDecision::AlreadyMember => {
            reply::emit(s, "joined_room", &json!({ "roomId": room_id }));
            return Ok(room_id);
        }
        JoinDecision::Join(key) => key,
    };
    let max = app.limits.max_rooms_per_connection;
    if !session.is_in(&key) && session.joined_count() >= max {
        return Err(DomainError::TooManyRooms(max));
    }
    if !s.connected() {
        return Err(DomainError::Busy);
    }
    // The node subscribes to the room (confirmed) before the join is applied and before any
    // replay read starts: every message any node writes from here on reaches this node.
    let interest = interest::of(s);
    let topic = Topic::Room(key.clone());
    if let Some(i) = &interest {
        i.enter(topic.clone()).await;
    }
    let joined = join_as_asked(s, app, session, &p, &key, &room_id, since).await;
    // However the join ended (refused, revoked meanwhile, socket gone), the interest follows
    // the membership.
    if let Some(i) = &interest {
        if session.is_in(&key) {
            // A no-op unless a revoke took the interest while the join was being applied.
            i.enter(topic).await;
        } else {
            i.leave(&topic);
        }
    }
    joined.map(|()| room_id)
}

async fn join_as_asked(
    s: &SocketRef,
    app: &AppState,
    session: &Session,
    p: &crate::domain::auth::Principal,
    key: &RoomKey,
    room_id: &str,
    since: Option<i64>,
) -> Result<(), DomainError> {
    match since {
        None => {
            // `joined_room` first: every live message after it is one the client expects.
            reply::emit(s, "joined_room", &json!({ "roomId": room_id }));
            match fanout(app, FanoutCmd::Join, s, key, 0).await? {
                Joined::Yes { .. } => {}
                Joined::SocketGone => return Err(DomainError::Busy),
            }
            if !app.rooms.may_stay(p, key).await? {
                leave_room(s, session, key);
                return Err(DomainError::AccessDenied);
            }
            Ok(())
        }
        Some(since) => join_with_replay(s, app, session, key, since).await,
    }
}

/// Sends a join command to the fan-out and waits for its answer.
async fn fanout(
    app: &AppState,
    cmd: fn(JoinRoom) -> FanoutCmd,
    s: &SocketRef,
    key: &RoomKey,
    since: i64,
) -> Result<Joined, DomainError> {
    let (done, rx) = oneshot::channel();
    app.fanout
        .send(cmd(JoinRoom {
            socket_id: s.id.to_string(),
            key: key.clone(),
            since,
            done,
        }))
        .await
        .map_err(|_| DomainError::Busy)?;
    rx.await.map_err(|_| DomainError::Busy)
}

async fn release(
    app: &AppState,
    s: &SocketRef,
    key: &RoomKey,
    join: Option<ReleaseJoin>,
) -> Result<Released, DomainError> {
    let (done, rx) = oneshot::channel();
    app.fanout
        .send(FanoutCmd::Release(Release {
            socket_id: s.id.to_string(),
            key: key.clone(),
            join,
            done,
        }))
        .await
        .map_err(|_| DomainError::Busy)?;
    rx.await.map_err(|_| DomainError::Busy)
}

/// A replay's `chat_message` payloads: the fan-out's recent messages, or stored ones (read
/// now, or kept from the room's last read).
enum Payloads {
    Recent(Vec<Value>),
    Stored(CachedReplay),
}

impl Payloads {
    fn len(&self) -> usize {
        match self {
            Self::Recent(v) => v.len(),
            Self::Stored(c) => c.messages().len(),
        }
    }

    fn last_seq(&self) -> Option<i64> {
        match self {
            Self::Recent(v) => v.last().and_then(|m| m.get("seq")).and_then(Value::as_i64),
            Self::Stored(c) => c.messages().last().map(|m| m.seq),
        }
    }

    /// Sends them in chunks, with a yield after each: a replay is up to `MAX_REPLAY` messages
    /// to encode, which in one go kept every other socket of the core waiting a few ms (the
    /// replay-flood benchmark's p99, FINDINGS §9). The room's live deliveries to this socket
    /// stay held meanwhile; other events to it (another room, a notification, a revoke's
    /// `left_room`, which could already come during the read) may go out between chunks.
    async fn send(&self, s: &SocketRef) {
        match self {
            Self::Recent(v) => send_chunks(s, v).await,
            Self::Stored(c) => send_chunks(s, c.messages()).await,
        }
    }
}

async fn send_chunks<T: serde::Serialize>(s: &SocketRef, messages: &[T]) {
    for chunk in messages.chunks(REPLAY_CHUNK) {
        reply::emit_all(s, "chat_message", chunk);
        tokio::task::yield_now().await;
    }
}

struct Replayed {
    messages: Payloads,
    truncated: bool,
}

/// Replayed messages per item of the socket's send buffer (a slot each, one writer wake),
/// encoded between two yields to the runtime: a replay of `MAX_REPLAY` takes a few dozen
/// slots of `SOCKET_BUFFER_PACKETS`, not 1,000.
const REPLAY_CHUNK: usize = 32;

/// Join with replay, without gap or duplicate, and without the chat writer: the fan-out first
/// holds the socket's deliveries of the room (from an exact point in delivery order), the
/// replay is read here (every message up to that point is committed, so the read has them all),
/// sent, and then the fan-out sends what it held that the replay did not have, and joins.
async fn join_with_replay(
    s: &SocketRef,
    app: &AppState,
    session: &Session,
    key: &RoomKey,
    since: i64,
) -> Result<(), DomainError> {
    let budget = app.limits;
    if !session.replay_allowed(budget.replay_per_second, budget.replay_burst) {
        crate::metrics::event_refused("replay");
        return Err(DomainError::TooManyReplays);
    }
    // Taken before the hold, so waiting for a slot holds back no deliveries.
    let slot = app.chat.replay_slot().await?;
    let was_in = session.is_in(key);
    let (had_after, recent, upto) = match fanout(app, FanoutCmd::Hold, s, key, since).await? {
        Joined::Yes {
            had_after,
            recent,
            upto,
        } => (had_after, recent, upto),
        Joined::SocketGone => return Err(DomainError::Busy),
    };
    let p = session.principal();
    let checked = app.rooms.may_stay(&p, key).await;
    if !matches!(checked, Ok(true)) {
        release(app, s, key, None).await?;
        if was_in {
            reply::emit(s, "left_room", &json!({ "roomId": key.room }));
        }
        return Err(checked.err().unwrap_or(DomainError::AccessDenied));
    }
    // A member rejoining has everything after `had_after` already: replay only what is older.
    let read = if let Some(messages) = recent {
        crate::metrics::replay_read("recent");
        Ok(Replayed {
            messages: Payloads::Recent(messages),
            truncated: false,
        })
    } else if let Some(c) = upto.and_then(|u| app.chat.cached_replay(key, since, u)) {
        crate::metrics::replay_read("cache");
        Ok(Replayed {
            messages: Payloads::Stored(c),
            truncated: false,
        })
    } else {
        crate::metrics::replay_read("store");
        slot.read(key, since, had_after).await.map(|r| Replayed {
            messages: Payloads::Stored(r.messages),
            truncated: r.truncated,
        })
    };
    let replay = match read {
        Ok(r) => r,
        Err(e) => {
            // A member keeps its membership (and what it has); a new one is not joined.
            let keep = had_after.map(|a| ReleaseJoin {
                skip_upto: i64::MIN,
                has_after: Some(a),
            });
            if keep.is_none() && was_in {
                reply::emit(s, "left_room", &json!({ "roomId": key.room }));
            }
            release(app, s, key, keep).await?;
            return Err(e);
        }
    };
    drop(slot);
    session.charge_replay(replay.messages.len());
    let mut joined = json!({ "roomId": key.room });
    if replay.truncated {
        joined["truncated"] = true.into();
    }
    reply::emit(s, "joined_room", &joined);
    // The room's live deliveries to this socket stay held until the release below.
    replay.messages.send(s).await;
    let last = replay
        .messages
        .last_seq()
        .map_or(since, |seq| seq.max(since));
    let has_after = match (had_after, replay.truncated) {
        (Some(a), false) => Some(since.min(a)),
        (Some(a), true) => Some(a),
        (None, false) => Some(since),
        // A gap after the replay: the socket has only what is delivered from the hold on.
        (None, true) => None,
    };
    let join = ReleaseJoin {
        skip_upto: last,
        has_after,
    };
    match release(app, s, key, Some(join)).await? {
        Released::Joined => Ok(()),
        Released::Revoked => Err(DomainError::AccessDenied),
        Released::SocketGone | Released::Overflowed => Err(DomainError::Busy),
    }
}

pub async fn leave(
    s: SocketRef,
    mut turn: Turn,
    TryData(data): TryData<Value>,
    ack: AckSender,
    Extension(session): Extension<Arc<Session>>,
) {
    let span = session.span.clone();
    async move {
        turn.wait().await;
        let res = room_arg(data.ok(), "leave_room").and_then(|(_, room)| {
            RoomPolicy::scoped(&session.principal(), RoomPolicy::parse(&room)?)
        });
        match res {
            Ok(key) => {
                leave_room(&s, &session, &key);
                reply::ok(ack, json!({ "roomId": key.room }));
            }
            Err(e) => reply::fail(&s, ack, &e),
        }
    }
    .instrument(span)
    .await
}

/// Takes the socket out of a room and tells it (`left_room`). Also used on revoke and refresh.
pub fn leave_room(s: &SocketRef, session: &Session, key: &RoomKey) {
    s.leave(key.adapter_room());
    if session.remove_room(key) {
        crate::metrics::room_left(key);
    }
    if let Some(interest) = interest::of(s) {
        interest.leave(&Topic::Room(key.clone()));
    }
    reply::emit(s, "left_room", &json!({ "roomId": key.room }));
}
