//! Room history, messages from backends, and private-room membership.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, ApiQuery, parse_limit, parse_room, parse_tenant, parse_user};
use crate::domain::events::ChatMessage;
use crate::domain::ids::RoomKey;
use crate::state::AppState;

fn room_key(room: &str, tenant: Option<&str>) -> Result<RoomKey, ApiError> {
    let room = parse_room(room)?;
    if room.reserved().is_some() {
        return Err(ApiError::BadRequest(
            "user: and tenant: rooms have no history or members".into(),
        ));
    }
    Ok(RoomKey::new(parse_tenant(tenant)?, room))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    /// Tenant scope; omitted means the no-tenant scope.
    #[param(max_length = 128)]
    tenant_id: Option<String>,
    /// Only messages with a smaller `seq` (pages backwards).
    #[param(minimum = 1)]
    before: Option<i64>,
    /// 1 to 1000, default 50: the most recent ones.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Stored chat history, ascending by `seq`: `{ messages, nextBefore }`.
#[utoipa::path(get, path = "/rooms/{roomId}/messages",
    params(("roomId" = String, Path, pattern = "^(?!user:|tenant:)[A-Za-z0-9_.:-]{1,128}$"), HistoryQuery),
    responses((status = 200, description = "{ messages: [ChatMessage], nextBefore: seq | null }"), (status = 400), (status = 401)))]
pub async fn history(
    State(app): State<AppState>,
    Path(room): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = room_key(&room, q.tenant_id.as_deref())?;
    let limit = parse_limit(q.limit)?;
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::BadRequest("before must be a seq (>= 1)".into()));
    }
    let messages = app.chat.history(&key, q.before, limit).await?;
    let next_before = match messages.first() {
        Some(first) if messages.len() == limit as usize && first.seq > 1 => Some(first.seq),
        _ => None,
    };
    Ok(Json(
        json!({ "messages": messages, "nextBefore": next_before }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostMessage {
    #[schema(max_length = 128)]
    tenant_id: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    user_id: String,
    /// Defaults to `userId`.
    user_name: Option<String>,
    /// 1 to `MAX_MESSAGE_LENGTH` characters.
    #[schema(min_length = 1)]
    message: String,
}

/// Store and deliver a chat message as a backend (bots, system messages); not rate-limited.
#[utoipa::path(post, path = "/rooms/{roomId}/messages", params(("roomId" = String, Path, pattern = "^(?!user:|tenant:)[A-Za-z0-9_.:-]{1,128}$")),
    request_body = PostMessage,
    responses((status = 201, body = ChatMessage), (status = 400), (status = 401)))]
pub async fn post_message(
    State(app): State<AppState>,
    Path(room): Path<String>,
    ApiJson(req): ApiJson<PostMessage>,
) -> Result<(StatusCode, Json<ChatMessage>), ApiError> {
    let key = room_key(&room, req.tenant_id.as_deref())?;
    let user = parse_user(&req.user_id)?;
    let name = req
        .user_name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| user.to_string());
    let m = app.chat.send(key, user, name, req.message).await?;
    Ok((StatusCode::CREATED, Json(m)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuery {
    /// Tenant scope; omitted means the no-tenant scope.
    #[param(max_length = 128)]
    tenant_id: Option<String>,
}

/// Let a user join a `private:` room.
#[utoipa::path(put, path = "/rooms/{roomId}/members/{userId}",
    params(("roomId" = String, Path, pattern = "^private:[A-Za-z0-9_.:-]{0,120}$", description = "A `private:` room: other rooms have no members"),
        ("userId" = String, Path, min_length = 1, max_length = 128), TenantQuery),
    responses((status = 200, description = "{ granted: true, created: bool }"), (status = 400), (status = 401)))]
pub async fn grant(
    State(app): State<AppState>,
    Path((room, user)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = room_key(&room, q.tenant_id.as_deref())?;
    let user = parse_user(&user)?;
    let created = app.rooms.grant(&key, &user).await?;
    Ok(Json(json!({ "granted": true, "created": created })))
}

/// Withdraw a `private:` room grant; the user's sockets that lose access leave it at once.
#[utoipa::path(delete, path = "/rooms/{roomId}/members/{userId}",
    params(("roomId" = String, Path, pattern = "^private:[A-Za-z0-9_.:-]{0,120}$", description = "A `private:` room: other rooms have no members"),
        ("userId" = String, Path, min_length = 1, max_length = 128), TenantQuery),
    responses((status = 200, description = "{ revoked: bool }"), (status = 400), (status = 401)))]
pub async fn revoke(
    State(app): State<AppState>,
    Path((room, user)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = room_key(&room, q.tenant_id.as_deref())?;
    let user = parse_user(&user)?;
    let revoked = app.rooms.revoke(&key, &user).await?;
    Ok(Json(json!({ "revoked": revoked })))
}
