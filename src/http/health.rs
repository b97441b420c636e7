//! `/healthz` (the process answers) and `/readyz` (it can do its job: the store answers, no
//! background task has died and it is not shutting down).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    if let Some(task) = app.failed_task() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "failedTask": task })),
        );
    }
    if app.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting_down" })),
        );
    }
    let db = tokio::time::timeout(std::time::Duration::from_secs(2), app.store.ping()).await;
    match db {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "database": "ok" })),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not_ready", "database": "error" })),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "database": "timeout" })),
        ),
    }
}
