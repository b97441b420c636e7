//! `refresh_token`: extends a live connection with a new token for the same user and tenant.

use std::sync::Arc;

use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tracing::Instrument;

use crate::domain::auth::AuthError;
use crate::domain::error::DomainError;
use crate::socket::reply;
use crate::socket::rooms::leave_room;
use crate::socket::session::{Session, Turn};
use crate::state::AppState;

pub async fn refresh(
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
        match do_refresh(&s, &app, &session, data.ok()).await {
            Ok(exp) => {
                reply::emit(&s, "token_refreshed", &json!({ "exp": exp }));
                reply::ok(ack, json!({ "exp": exp }));
            }
            Err(e) => reply::fail(&s, ack, &e),
        }
    }
    .instrument(span)
    .await
}

async fn do_refresh(
    s: &SocketRef,
    app: &AppState,
    session: &Session,
    data: Option<Value>,
) -> Result<Option<i64>, DomainError> {
    let token = match data {
        Some(Value::Object(o)) => match o.get("token") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            _ => return Err(DomainError::InvalidToken("No token provided".into())),
        },
        _ => {
            return Err(DomainError::invalid(
                "refresh_token expects an object { token }",
            ));
        }
    };
    let new = app.verifier.verify(&token).await.map_err(|e| match e {
        AuthError::Expired => DomainError::InvalidToken("Token expired".into()),
        _ => DomainError::InvalidToken("Invalid token".into()),
    })?;
    let old = session.principal();
    if new.user_id != old.user_id || new.tenant != old.tenant {
        return Err(DomainError::InvalidToken(
            "Token is for another user or tenant".into(),
        ));
    }
    // Every check before anything changes: a refresh that fails (the store is down) leaves
    // the old principal, its rooms and its expiry in place.
    // The new `rooms` claim replaces the old: private rooms the user may no longer join.
    let mut lost = Vec::new();
    for key in session.joined_rooms() {
        if key.room.is_private()
            && !new.rooms.iter().any(|r| r == key.room.as_str())
            && !app.store.has_grant(&key, &new.user_id).await?
        {
            lost.push(key);
        }
    }
    let exp = new.exp;
    let shortened = exp.unwrap_or(i64::MAX) < session.exp();
    session.replace_principal(new);
    for key in lost {
        leave_room(s, session, &key);
    }
    if shortened {
        // The cut armed for the old, later `exp` would come too late: re-arm it.
        app.deadlines.watch(s.id).await;
    }
    Ok(exp)
}
