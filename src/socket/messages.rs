//! The `message` event and its types (PROTOCOL.md §5), and events nobody handles.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use socketioxide::extract::{AckSender, Event, Extension, SocketRef, State, TryData};
use tracing::Instrument;

use crate::domain::auth::Principal;
use crate::domain::dedupe::{self, Claim, Sent};
use crate::domain::error::DomainError;
use crate::domain::ids::RoomKey;
use crate::domain::rooms::RoomPolicy;
use crate::socket::reply;
use crate::socket::session::{Session, Turn};
use crate::state::AppState;

pub async fn handle(
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
        let p = session.principal();
        // Rate limit first: it counts every event that reaches it, whatever its shape.
        if !app.rate_limits.allow(&p.user_id).await {
            crate::metrics::rate_limited();
            turn.pass();
            return reply::fail(&s, ack, &DomainError::RateLimited);
        }
        let (kind, body) = match envelope(data.ok()) {
            Ok(v) => v,
            Err(e) => {
                turn.pass();
                return reply::fail(&s, ack, &e);
            }
        };
        let res = match kind.as_str() {
            "send_message" => send_message(&app, &session, &p, body, &mut turn).await,
            "typing_start" => typing(&app, &session, &p, body, true).await,
            "typing_stop" => typing(&app, &session, &p, body, false).await,
            "mark_notification_read" => mark_read(&app, &p, body).await,
            "user_status" => user_status(&app, &p, body).await,
            _ => {
                let shown = crate::telemetry::untrusted(&kind);
                tracing::warn!(sid = %s.id, r#type = %shown, "unknown message type dropped");
                crate::metrics::message("unknown", p.tenant_label());
                Err(DomainError::UnknownEvent(kind.clone()))
            }
        };
        turn.pass();
        match res {
            Ok(fields) => {
                crate::metrics::message(&kind, p.tenant_label());
                reply::ok(ack, fields);
            }
            Err(e) => reply::fail(&s, ack, &e),
        }
    }
    .instrument(span)
    .await
}

/// `{ type, data }`: a missing or non-string `type` is `INVALID_PAYLOAD`; `data` may be absent.
pub(crate) fn envelope(data: Option<Value>) -> Result<(String, Value), DomainError> {
    let Some(Value::Object(mut obj)) = data else {
        return Err(DomainError::invalid(
            "message expects an object { type, data }",
        ));
    };
    let Some(Value::String(kind)) = obj.remove("type") else {
        return Err(DomainError::invalid("type must be a string"));
    };
    Ok((kind, obj.remove("data").unwrap_or(Value::Null)))
}

fn object(body: Value, expects: &str) -> Result<Map<String, Value>, DomainError> {
    match body {
        Value::Object(o) => Ok(o),
        _ => Err(DomainError::invalid(format!(
            "data must be an object {expects}"
        ))),
    }
}

fn string_field(o: &Map<String, Value>, name: &str) -> Result<String, DomainError> {
    match o.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(DomainError::invalid(format!("{name} must be a string"))),
    }
}

/// A room the socket joined with `join_room`, or `NOT_IN_ROOM`.
fn joined_room(
    session: &Session,
    p: &Principal,
    o: &Map<String, Value>,
) -> Result<RoomKey, DomainError> {
    let room = RoomPolicy::parse(&string_field(o, "roomId")?)?;
    let key = RoomKey::new(p.tenant.clone(), room);
    if session.is_in(&key) {
        Ok(key)
    } else {
        Err(DomainError::NotInRoom)
    }
}

async fn send_message(
    app: &AppState,
    session: &Session,
    p: &Principal,
    body: Value,
    turn: &mut Turn,
) -> Result<Value, DomainError> {
    let o = object(body, "{ roomId, message }")?;
    let key = joined_room(session, p, &o)?;
    let text = string_field(&o, "message")?;
    let guard = match dedupe::parse_client_id(o.get("clientMessageId"))? {
        Some(cid) => match app.dedupe.claim(key.clone(), p.user_id.clone(), cid).await {
            Claim::Resent(s) => return Ok(json!({ "id": s.id, "seq": s.seq })),
            Claim::First(guard) => Some(guard),
        },
        None => None,
    };
    let pending = app
        .chat
        .submit(key, p.user_id.clone(), p.name.clone(), text)
        .await?;
    // Queued in arrival order; the next event of this socket may go while this one commits.
    turn.pass();
    let m = pending.stored().await?;
    if let Some(guard) = guard {
        guard.complete(Sent {
            id: m.id.clone(),
            seq: m.seq,
        });
    }
    Ok(json!({ "id": m.id, "seq": m.seq }))
}

async fn typing(
    app: &AppState,
    session: &Session,
    p: &Principal,
    body: Value,
    typing: bool,
) -> Result<Value, DomainError> {
    let o = object(body, "{ roomId }")?;
    let key = joined_room(session, p, &o)?;
    app.chat.typing(key, &p.user_id, typing).await?;
    Ok(json!({}))
}

async fn mark_read(app: &AppState, p: &Principal, body: Value) -> Result<Value, DomainError> {
    let o = object(body, "{ notificationId }")?;
    let id = string_field(&o, "notificationId")?;
    app.notifications
        .mark_read(&p.user_id, p.tenant.as_ref(), &id)
        .await?;
    Ok(json!({ "notificationId": id }))
}

async fn user_status(app: &AppState, p: &Principal, body: Value) -> Result<Value, DomainError> {
    let o = object(body, "{ status }")?;
    let status = string_field(&o, "status")?;
    app.presence
        .set_status(&p.user_id, p.tenant.as_ref(), &status)
        .await?;
    Ok(json!({ "status": status }))
}

/// Any other event name: logged, and an ack (when asked for) gets `UNKNOWN_EVENT`.
pub async fn unknown_event(s: SocketRef, mut turn: Turn, Event(event): Event, ack: AckSender) {
    turn.wait().await;
    tracing::debug!(sid = %s.id, event = %crate::telemetry::untrusted(&event), "unhandled event");
    reply::fail(&s, ack, &DomainError::UnknownEvent(event));
}
