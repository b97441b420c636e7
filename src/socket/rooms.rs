//! `join_room` and `leave_room`.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tracing::Instrument;

use crate::app::AppState;
use crate::domain::chat::Joined;
use crate::domain::error::DomainError;
use crate::domain::ids::RoomKey;
use crate::domain::rooms::{JoinDecision, RoomPolicy};
use crate::socket::reply;
use crate::socket::session::{Session, Turn};

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
    let key = match app.rooms.authorize_join(&session.principal(), room).await? {
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
    match since {
        None => {
            // `joined_room` first: every live message after it is one the client expects.
            reply::emit(s, "joined_room", &json!({ "roomId": room_id }));
            s.join(key.adapter_room());
            if session.add_room(key.clone()) {
                crate::metrics::room_joined(&key);
            }
        }
        Some(since) => {
            let joined = app
                .chat
                .join_with_replay(s.id.to_string(), key, since)
                .await?;
            if joined == Joined::SocketGone {
                return Err(DomainError::Busy);
            }
        }
    }
    Ok(room_id)
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
    reply::emit(s, "left_room", &json!({ "roomId": key.room }));
}
