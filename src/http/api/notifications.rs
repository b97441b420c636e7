//! `POST /notifications` and `GET /users/{userId}/notifications`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, ApiQuery, parse_limit, parse_tenant, parse_user};
use crate::domain::events::Notification;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateNotification {
    #[schema(min_length = 1, max_length = 128)]
    user_id: String,
    #[schema(max_length = 128)]
    tenant_id: Option<String>,
    #[schema(min_length = 1, max_length = 256)]
    title: String,
    #[schema(min_length = 1, max_length = 4000)]
    message: String,
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 64)]
    kind: String,
}

/// Store a notification and deliver it live to the user's connections.
#[utoipa::path(post, path = "/notifications", request_body = CreateNotification,
    responses((status = 201, body = Notification), (status = 400), (status = 401)))]
pub async fn create(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateNotification>,
) -> Result<(StatusCode, Json<Notification>), ApiError> {
    let user = parse_user(&req.user_id)?;
    let tenant = parse_tenant(req.tenant_id.as_deref())?;
    let n = app
        .notifications
        .create(user, tenant, req.title, req.message, req.kind)
        .await?;
    Ok((StatusCode::CREATED, Json(n)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only unread ones.
    unread: Option<bool>,
    /// 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A user's stored notifications, newest first: `{ notifications: [...] }`.
#[utoipa::path(get, path = "/users/{userId}/notifications",
    params(("userId" = String, Path, min_length = 1, max_length = 128), ListQuery),
    responses((status = 200, description = "{ notifications: [Notification] }"), (status = 400), (status = 401)))]
pub async fn list(
    State(app): State<AppState>,
    Path(user_id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let user = parse_user(&user_id)?;
    let limit = parse_limit(q.limit)?;
    let list = app
        .notifications
        .list(&user, q.unread.unwrap_or(false), limit)
        .await?;
    Ok(Json(json!({ "notifications": list })))
}
