//! Connections: disconnect a user everywhere, and cluster-wide stats.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiError, parse_user};
use crate::app::AppState;

/// Close every connection of the user, on every node: `{ disconnected: N }`.
#[utoipa::path(post, path = "/users/{userId}/disconnect", params(("userId" = String, Path, min_length = 1, max_length = 128)),
    responses((status = 200, description = "{ disconnected: N }"), (status = 400), (status = 401)))]
pub async fn disconnect(
    State(app): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = parse_user(&user)?;
    let n = app.registry.user_connections(&user).await;
    app.publisher.disconnect_user(user).await?;
    Ok(Json(json!({ "disconnected": n })))
}

/// Connection counts: `{ totalConnections, users, tenants, nodes }`.
#[utoipa::path(get, path = "/stats",
    responses((status = 200, description = "{ totalConnections, users: {id: n}, tenants: {id: n}, nodes: [{ id, connections }] }"), (status = 401)))]
pub async fn stats(State(app): State<AppState>) -> Json<Value> {
    let s = app.registry.stats().await;
    Json(json!({
        "totalConnections": s.total_connections,
        "users": s.users,
        "tenants": s.tenants,
        "nodes": [{ "id": app.node_id, "connections": s.total_connections }],
    }))
}
