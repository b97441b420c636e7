//! `/healthz` (the process answers) and `/readyz` (it can do its job: the store answers, no
//! background task has died, it is not shutting down; with a JWKS, the provider's keys are held;
//! with Redis, the cluster bus is connected and the cluster state answers).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

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
    let (mut ready, database) = match db {
        Ok(Ok(())) => (true, "ok"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database failed");
            (false, "error")
        }
        Err(_) => (false, "timeout"),
    };
    let mut body = json!({ "database": database });
    // A cluster node cut off from the others serves its own sockets but misses what the other
    // nodes send: not ready, so a load balancer sends new clients elsewhere.
    let bus = app.bus.state();
    if bus.kind != "local" {
        ready &= bus.connected;
        body["bus"] = json!({
            "kind": bus.kind,
            "status": if bus.connected { "ok" } else { "disconnected" },
        });
    }
    // With REDIS_URL the cluster state must answer too. Without it the node still serves (it
    // counts locally, see `ConnectionService`), but a load balancer should prefer a node that
    // sees the cluster.
    if let Some(redis) = app.connections.shared_ready().await {
        let ok = redis.is_ok();
        if let Err(e) = redis {
            tracing::warn!(error = %e, "readiness: Redis failed");
        }
        ready &= ok;
        body["redis"] = if ok { "ok" } else { "error" }.into();
    }
    // With JWT_JWKS_URL: not ready until the provider's keys are held; a provider down later
    // leaves the cached keys in use (`stale`), still ready.
    if let Some(k) = app.verifier.key_status() {
        ready &= k.ready;
        body["jwks"] = json!({
            "status": k.state,
            "keys": k.keys,
            "ageSecs": k.age_secs,
            "error": k.error,
        });
    }
    body["status"] = if ready { "ready" } else { "not_ready" }.into();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
