//! Connections: disconnect a user everywhere, and cluster-wide stats.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiError, parse_user};
use crate::state::AppState;

/// Close every connection of the user, on every node: `{ disconnected: N }`.
#[utoipa::path(post, path = "/users/{userId}/disconnect", params(("userId" = String, Path, min_length = 1, max_length = 128)),
    responses((status = 200, description = "{ disconnected: N }"), (status = 400), (status = 401)))]
pub async fn disconnect(
    State(app): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = parse_user(&user)?;
    // Counted before the disconnect goes out: afterwards the count falls as sockets close.
    let n = app.connections.user_connections(&user).await;
    app.publisher.disconnect_user(user).await?;
    Ok(Json(json!({ "disconnected": n })))
}

/// Connection counts of the whole cluster: `{ totalConnections, users, tenants, nodes }`.
#[utoipa::path(get, path = "/stats",
    responses((status = 200, description = "{ totalConnections, users: {id: n}, tenants: {id: n}, nodes: [{ id, connections, startedAt }] }"), (status = 401)))]
pub async fn stats(State(app): State<AppState>) -> Json<Value> {
    let s = app.connections.stats().await;
    Json(json!({
        "totalConnections": s.total_connections,
        "users": s.users,
        "tenants": s.tenants,
        "nodes": s.nodes,
    }))
}
