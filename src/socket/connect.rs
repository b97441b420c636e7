//! Connecting and disconnecting: authentication and the connection cap (as connect middleware,
//! so a refused socket never joins the namespace), then `connected`, rooms and presence.

use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};
use socketioxide::extract::{Extension, SocketRef, State, TryData};
use socketioxide::socket::{DisconnectReason, SharedHandlers};
use socketioxide::{SendError, SocketError};

use crate::domain::auth::AuthError;
use crate::domain::bus::Topic;
use crate::domain::connections::{ConnectionInfo, RegistryError};
use crate::domain::ids::{tenant_adapter_room, user_adapter_room};
use crate::http::admission::HandshakeSlot;
use crate::socket::interest::SocketInterest;
use crate::socket::session::Session;
use crate::socket::{guard, messages, presence, rooms, token};
use crate::state::AppState;

/// Pause between the CONNECT ack and the `connected` event (see `on_connect`).
const CONNECTED_DELAY: std::time::Duration = std::time::Duration::from_millis(15);

/// Why a CONNECT was refused; `Display` is the `connect_error` message the client sees.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("Server shutting down")]
    ShuttingDown,
    /// The client's IP failed too many token verifications (`AUTH_FAILURES_PER_IP_PER_MINUTE`).
    #[error("Too many failed attempts")]
    TooManyFailures,
}

/// The token, from the first present source: `Authorization: Bearer`, `?token=`, `auth.token`.
/// Empty values and non-Bearer headers count as absent.
pub fn extract_token(parts: &http::request::Parts, auth: Option<&Value>) -> Option<String> {
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::http::bearer);
    if let Some(t) = header {
        return Some(t.to_owned());
    }
    let query = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, v)| k == "token" && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    });
    if query.is_some() {
        return query;
    }
    auth.and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The client events, one table for every socket (a map per socket would be a few hundred bytes
/// each, all alike).
static HANDLERS: LazyLock<Arc<SharedHandlers>> = LazyLock::new(|| {
    Arc::new(
        SharedHandlers::default()
            .on("join_room", rooms::join)
            .on("leave_room", rooms::leave)
            .on("message", messages::handle)
            .on("refresh_token", token::refresh)
            .on("watch_presence", presence::watch)
            .on("unwatch_presence", presence::unwatch)
            .on("list_online", presence::list_online)
            .on_fallback(messages::unknown_event),
    )
});

/// Connect middleware: verify the token, enforce the per-user cap, attach the session.
pub async fn authenticate(
    s: SocketRef,
    TryData(auth): TryData<Value>,
    State(app): State<AppState>,
) -> Result<(), Refusal> {
    if app.is_shutting_down() {
        return Err(Refusal::ShuttingDown);
    }
    let ip = guard::client_ip(&s, &app);
    let refuse = |e: Refusal| {
        crate::metrics::connect_refused(&e.to_string());
        tracing::info!(sid = %s.id, ip = ?ip, reason = %e, "connect refused");
        guard::refused(&s);
        e
    };
    // Before anything is verified: a guesser gets no answer about its guesses.
    if guard::throttled(&app, ip) {
        return Err(refuse(Refusal::TooManyFailures));
    }
    let token = extract_token(s.req_parts(), auth.as_ref().ok())
        .ok_or_else(|| refuse(AuthError::NoToken.into()))?;
    let principal = guard::verify(&app, ip, &token)
        .await
        .map_err(|e| refuse(e.into()))?;
    let conn = ConnectionInfo {
        socket_id: s.id.to_string(),
        user: principal.user_id.clone(),
        tenant: principal.tenant.clone(),
    };
    // The user's connections that died while connecting would count against the quota and
    // hide that this one comes online: reap them first (a lookup per existing connection).
    crate::socket::reaper::reap(&s.broadcast(), &app, Some(&conn.user)).await;
    app.connections
        .register(&conn)
        .await
        .map_err(|e| refuse(e.into()))?;
    let session = Arc::new(Session::new(conn, principal));
    // `connected` is the first event the client gets: its events wait for it (see `on_connect`).
    session.hold_first_turn();
    // Before the CONNECT ack: from here on, what any node sends the user (a disconnect, a
    // revoke, a notification) or its tenant reaches this node. A single node has nothing to
    // subscribe to, and its sockets carry no interest.
    if app.bus.routes_by_interest() {
        let interest = Arc::new(SocketInterest::new(app.bus.clone()));
        interest.enter(Topic::User(session.conn.user.clone())).await;
        if let Some(t) = &session.conn.tenant {
            interest.enter(Topic::Tenant(t.clone())).await;
        }
        s.extensions.insert(interest);
    }
    s.extensions.insert(session);
    // Here, not in `on_connect`: socketioxide sends the CONNECT ack and then *spawns* the
    // connect handler, so a client answering the ack at once could find no handler yet and its
    // event would be dropped without a word. The middleware runs before the ack.
    s.use_shared_handlers(HANDLERS.clone());
    Ok(())
}

/// Runs (in a task of its own) once the client has been told it is connected; its events wait
/// (in their `Turn`) until `connected` is sent. The disconnect handler is registered before the
/// first `.await`.
pub async fn on_connect(
    s: SocketRef,
    State(app): State<AppState>,
    Extension(session): Extension<Arc<Session>>,
) {
    let p = session.principal();
    crate::metrics::connection_opened(p.tenant_label());
    s.on_disconnect(on_disconnect);
    if !s.connected() {
        // Closed before the disconnect handler was in place: it will not run, so clean up here.
        return cleanup(&s, &app, &session, DisconnectReason::TransportClose).await;
    }
    session
        .span
        .in_scope(|| tracing::info!(transport = ?s.transport_type(), "connected"));
    app.deadlines.watch(s.id).await;
    // Clients written against the blueprint attach their `connected` listener once `connect`
    // has resolved (its jest spec does). Sent in the same write as the CONNECT ack, both
    // packets are dispatched in one tick and that listener misses it; the blueprint's server
    // only sent it after awaiting Redis. A short pause puts it in a later read.
    tokio::time::sleep(CONNECTED_DELAY).await;
    let connected = json!({
        "message": "Connected to WebSocket server",
        "userId": p.user_id,
        "connectionId": s.id.to_string(),
    });
    let sent = s.emit("connected", &connected);
    // The handshake is over either way: its admission slot goes to the next one.
    if let Some(slot) = s.req_parts().extensions.get::<HandshakeSlot>() {
        slot.release();
    }
    if let Err(SendError::Socket(SocketError::Closed)) = sent {
        // The transport closed while the CONNECT was in flight, unseen by the namespace: close
        // the socket here so its disconnect handler runs.
        let _ = s.disconnect();
        return;
    }
    // Into its rooms only now, so nothing reaches the socket before `connected`.
    s.join(user_adapter_room(&p.user_id));
    if let Some(t) = &p.tenant {
        s.join(tenant_adapter_room(t));
    }
    if !s.connected() {
        // Closed meanwhile: its disconnect ran before these joins and could not undo them.
        s.leave_all();
    }
    // After the joins, so the user's own announcement reaches this socket too; a no-op when
    // the disconnect cleanup ran already.
    app.presence
        .open(&session.presence, p.tenant.as_ref(), &p.user_id);
    session.release_first_turn();
}

async fn on_disconnect(
    s: SocketRef,
    reason: DisconnectReason,
    State(app): State<AppState>,
    Extension(session): Extension<Arc<Session>>,
) {
    cleanup(&s, &app, &session, reason).await;
}

/// Unregisters the connection (once), drops its bus interest and takes it out of presence.
async fn cleanup(s: &SocketRef, app: &AppState, session: &Session, reason: DisconnectReason) {
    // Events still waiting for `connected` run (and find the socket closed).
    session.release_first_turn();
    if !session.mark_closed() {
        return;
    }
    if let Some(interest) = crate::socket::interest::of(s) {
        interest.close();
    }
    let p = session.principal();
    crate::metrics::connection_closed(p.tenant_label(), session.connected_at.elapsed());
    for key in session.joined_rooms() {
        crate::metrics::room_left(&key);
    }
    session
        .span
        .in_scope(|| tracing::info!(?reason, "disconnected"));
    app.connections.unregister(&session.conn).await;
    let shutdown = app.is_shutting_down() || matches!(reason, DisconnectReason::ClosingServer);
    app.presence.close(
        &session.presence,
        session.conn.tenant.as_ref(),
        &session.conn.user,
        shutdown,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, auth_header: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = auth_header {
            b = b.header("authorization", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn first_present_source_wins() {
        let auth = json!({"token": "from-auth"});
        assert_eq!(
            extract_token(&parts("/?token=q", Some("Bearer h")), Some(&auth)).as_deref(),
            Some("h")
        );
        assert_eq!(
            extract_token(&parts("/?token=q", None), Some(&auth)).as_deref(),
            Some("q")
        );
        assert_eq!(
            extract_token(&parts("/", None), Some(&auth)).as_deref(),
            Some("from-auth")
        );
    }

    #[test]
    fn empty_and_non_bearer_count_as_absent() {
        let auth = json!({"token": "a"});
        assert_eq!(
            extract_token(&parts("/?token=", Some("Basic xyz")), Some(&auth)).as_deref(),
            Some("a")
        );
        assert_eq!(extract_token(&parts("/", Some("Bearer ")), None), None);
        assert_eq!(
            extract_token(&parts("/", None), Some(&json!({"token": ""}))),
            None
        );
        assert_eq!(
            extract_token(&parts("/", None), Some(&json!({"token": 5}))),
            None
        );
    }
}
