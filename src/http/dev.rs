//! Development sign-in for the demo (`serve --dev` only): `POST /dev/token { name }` mints a
//! token of tenant `demo` whose `sub` is the typed name. Two reads stand in for the backend a
//! real app would have in front of the API key (the demo's history and unread list), with the
//! user's token: `GET /dev/rooms/{roomId}/messages?before&limit` and `GET /dev/notifications`.
//! Never mounted outside dev mode, where these routes do not exist (404).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{ApiError, ApiJson, ApiQuery, parse_limit, parse_room};
use crate::domain::auth::{Principal, TokenIssuer, TokenSpec};
use crate::domain::error::DomainError;
use crate::domain::ids::UserId;
use crate::domain::rooms::JoinDecision;
use crate::state::AppState;

/// The tenant every development token belongs to.
pub const DEV_TENANT: &str = "demo";
/// Lifetime of a development token; the demo fetches a fresh one before it expires.
const DEV_TOKEN_TTL_SECS: i64 = 3600;

/// What `serve --dev` hands the router to mint development tokens.
#[derive(Clone)]
pub struct DevTokens {
    pub issuer: Arc<TokenIssuer>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
}

#[derive(Deserialize)]
struct SignIn {
    name: String,
}

pub fn router(dev: DevTokens, state: AppState) -> Router {
    let reads = Router::new()
        .route("/dev/rooms/{room}/messages", get(history))
        .route("/dev/notifications", get(notifications))
        .with_state(state);
    Router::new()
        .route("/dev/token", post(mint))
        .with_state(dev)
        .merge(reads)
}

/// The caller's token (`Authorization: Bearer`), verified like a socket's.
async fn principal(app: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::bearer)
        .ok_or(ApiError::Unauthorized)?;
    app.verifier
        .verify(token)
        .await
        .map_err(|_| ApiError::Unauthorized)
}

#[derive(Deserialize)]
struct HistoryQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

/// A room's history as `GET /api/v1/rooms/{roomId}/messages` answers it, for a room the
/// caller may join, in the caller's tenant.
async fn history(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(room): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = principal(&app, &headers).await?;
    let limit = parse_limit(q.limit)?;
    let JoinDecision::Join(key) = app.rooms.authorize_join(&who, parse_room(&room)?).await? else {
        return Err(ApiError::Domain(DomainError::InvalidRoom));
    };
    let messages = app.chat.history(&key, q.before, limit).await?;
    let next_before = match messages.first() {
        Some(first) if messages.len() == limit as usize && first.seq > 1 => Some(first.seq),
        _ => None,
    };
    Ok(Json(
        json!({ "messages": messages, "nextBefore": next_before }),
    ))
}

/// The caller's unread notifications of its tenant (or of none), newest first.
async fn notifications(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let who = principal(&app, &headers).await?;
    let tenant = who.tenant.as_ref().map(|t| t.as_str().to_owned());
    let list: Vec<_> = app
        .notifications
        .list(&who.user_id, true, 100)
        .await?
        .into_iter()
        .filter(|n| n.tenant_id.is_none() || n.tenant_id == tenant)
        .collect();
    Ok(Json(json!({ "notifications": list })))
}

async fn mint(
    State(dev): State<DevTokens>,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Json<Value>, ApiError> {
    let name = body.name;
    if name.trim().is_empty() || UserId::parse(&name).is_none() {
        return Err(ApiError::BadRequest(
            "name must be 1 to 128 characters".into(),
        ));
    }
    let now = crate::domain::time::unix_now();
    let token = dev
        .issuer
        .mint(&TokenSpec {
            sub: name.clone(),
            tenant: Some(DEV_TENANT.into()),
            name: Some(name.clone()),
            ttl_secs: DEV_TOKEN_TTL_SECS,
            issuer: dev.jwt_issuer.clone(),
            audience: dev.jwt_audience.clone(),
            ..Default::default()
        })
        .map_err(|e| ApiError::BadRequest(format!("cannot mint a token: {e}")))?;
    Ok(Json(json!({
        "token": token,
        "userId": name,
        "tenantId": DEV_TENANT,
        "exp": now + DEV_TOKEN_TTL_SECS,
    })))
}
