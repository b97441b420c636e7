//! `watch_presence`, `unwatch_presence` and `list_online` (PROTOCOL.md §3, "Presence at scale").
//! A watching socket is in one adapter room per watched user, so the fan-out reaches every
//! watcher of a transition with one room emit.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tracing::Instrument;

use crate::domain::error::DomainError;
use crate::domain::ids::{UserId, presence_adapter_room};
use crate::domain::presence_directory::UserPresence;
use crate::socket::reply;
use crate::socket::session::{Session, Turn};
use crate::state::AppState;

pub async fn watch(
    s: SocketRef,
    turn: Turn,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(app): State<AppState>,
    Extension(session): Extension<Arc<Session>>,
) {
    let span = session.span.clone();
    run(turn, &s, ack, do_watch(&s, &app, &session, data.ok()))
        .instrument(span)
        .await
}

pub async fn unwatch(
    s: SocketRef,
    turn: Turn,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(app): State<AppState>,
    Extension(session): Extension<Arc<Session>>,
) {
    let span = session.span.clone();
    run(turn, &s, ack, do_unwatch(&s, &app, &session, data.ok()))
        .instrument(span)
        .await
}

pub async fn list_online(
    s: SocketRef,
    turn: Turn,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(app): State<AppState>,
    Extension(session): Extension<Arc<Session>>,
) {
    let span = session.span.clone();
    run(turn, &s, ack, do_list(&app, &session, data.ok()))
        .instrument(span)
        .await
}

/// Runs one event in the socket's order and answers it.
async fn run(
    mut turn: Turn,
    s: &SocketRef,
    ack: AckSender,
    work: impl Future<Output = Result<Value, DomainError>>,
) {
    turn.wait().await;
    let res = work.await;
    turn.pass();
    match res {
        Ok(fields) => reply::ok(ack, fields),
        Err(e) => reply::fail(s, ack, &e),
    }
}

/// `{ userIds: [id, …] }`, without duplicates, in the order given.
fn user_ids(data: Option<Value>, event: &str) -> Result<Vec<UserId>, DomainError> {
    let Some(Value::Object(obj)) = data else {
        return Err(DomainError::invalid(format!(
            "{event} expects an object {{ userIds }}"
        )));
    };
    let Some(Value::Array(ids)) = obj.get("userIds") else {
        return Err(DomainError::invalid("userIds must be an array of user ids"));
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for id in ids {
        let user = id.as_str().and_then(UserId::parse).ok_or_else(|| {
            DomainError::invalid("userIds must be strings of 1 to 128 characters")
        })?;
        if seen.insert(user.clone()) {
            out.push(user);
        }
    }
    Ok(out)
}

fn users_map(users: Vec<(UserId, UserPresence)>) -> Value {
    let map: Map<String, Value> = users
        .into_iter()
        .map(|(u, p)| (u.to_string(), json!(p)))
        .collect();
    Value::Object(map)
}

async fn do_watch(
    s: &SocketRef,
    app: &AppState,
    session: &Session,
    data: Option<Value>,
) -> Result<Value, DomainError> {
    let max = app.presence.settings().watch_max;
    let users = user_ids(data, "watch_presence")?;
    let added = session
        .watch(&users, max)
        .ok_or(DomainError::TooManyWatches(max))?;
    // Users without a tenant have no presence: nothing to hear of.
    if let Some(t) = &session.conn.tenant {
        s.join(
            added
                .iter()
                .map(|u| presence_adapter_room(t, u))
                .collect::<Vec<_>>(),
        );
    }
    // Read after joining: a transition after the read is announced to this socket.
    let states = app
        .presence
        .lookup(session.conn.tenant.as_ref(), &users)
        .await?;
    Ok(json!({ "users": users_map(states) }))
}

async fn do_unwatch(
    s: &SocketRef,
    app: &AppState,
    session: &Session,
    data: Option<Value>,
) -> Result<Value, DomainError> {
    let users = user_ids(data, "unwatch_presence")?;
    let removed = session.unwatch(&users);
    if let Some(t) = &session.conn.tenant {
        s.leave(
            removed
                .iter()
                .map(|u| presence_adapter_room(t, u))
                .collect::<Vec<_>>(),
        );
    }
    let states = app
        .presence
        .lookup(session.conn.tenant.as_ref(), &users)
        .await?;
    Ok(json!({ "users": users_map(states) }))
}

async fn do_list(
    app: &AppState,
    session: &Session,
    data: Option<Value>,
) -> Result<Value, DomainError> {
    if !matches!(data, None | Some(Value::Null) | Some(Value::Object(_))) {
        return Err(DomainError::invalid("list_online expects an object {}"));
    }
    let (users, truncated) = app
        .presence
        .online(
            session.conn.tenant.as_ref(),
            app.presence.settings().list_max,
        )
        .await?;
    Ok(json!({ "users": users_map(users), "truncated": truncated }))
}
