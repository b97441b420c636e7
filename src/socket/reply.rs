//! The one place domain results become wire answers: `error` events and ack payloads.

use serde_json::{Value, json};
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::{SendError, SocketError};

use crate::domain::error::DomainError;
use crate::domain::events::error_event;

/// Answers a failed event: an `error` event (except `UNKNOWN_EVENT`, ack-only by contract) and,
/// when the client asked for one, an ack `{ ok: false, error: { code, message } }`.
pub fn fail(s: &SocketRef, ack: AckSender, err: &DomainError) {
    let code = err.code();
    let message = err.to_string();
    crate::metrics::error(code);
    if !matches!(err, DomainError::UnknownEvent(_)) {
        emit(s, "error", &error_event(code, &message));
    }
    let _ = ack.send(&json!({ "ok": false, "error": { "code": code, "message": message } }));
}

/// Answers a successful event's ack with `{ ok: true, ...fields }`.
pub fn ok(ack: AckSender, fields: Value) {
    let mut body = json!({ "ok": true });
    if let (Some(b), Value::Object(f)) = (body.as_object_mut(), fields) {
        b.extend(f);
    }
    let _ = ack.send(&body);
}

/// Emits to this socket alone. A full socket buffer drops the packet (counted) and closes the
/// socket at once: that is how a client that cannot keep up is let go. Only the first send to
/// find it full says so; later ones find it closed.
pub fn emit(s: &SocketRef, event: &str, data: &Value) {
    sent(s, event, 1, s.emit(event, data));
}

/// Emits several events of one name to this socket, in order, as one item of its send buffer
/// (one slot, one wake of its writer). Full buffer: as `emit`.
pub fn emit_all<T: serde::Serialize>(s: &SocketRef, event: &str, data: &[T]) {
    let encoded: Result<Vec<_>, _> = data.iter().map(|d| s.encode_event(event, d)).collect();
    let res = encoded.and_then(|e| s.emit_encoded(&e).map_err(SendError::Socket));
    sent(s, event, data.len() as u64, res);
}

fn sent(s: &SocketRef, event: &str, count: u64, res: Result<(), SendError>) {
    match res {
        Ok(()) => {}
        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
            tracing::warn!(sid = %s.id, event, "send buffer full; slow consumer disconnected");
            crate::metrics::dropped_packets(count);
            crate::metrics::slow_consumer_disconnects(1);
        }
        Err(e) => {
            tracing::debug!(sid = %s.id, event, error = %e, "emit to socket failed");
            crate::metrics::dropped_packets(count);
        }
    }
}
