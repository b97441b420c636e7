//! `GET /metrics`: Prometheus text, behind `METRICS_TOKEN` when one is set.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::http::admission::Admission;
use crate::state::AppState;

#[derive(Clone)]
pub struct MetricsAccess {
    token: Option<SecretString>,
    top_rooms: usize,
    admission: Arc<Admission>,
}

impl MetricsAccess {
    pub fn new(token: Option<SecretString>, top_rooms: usize, admission: Arc<Admission>) -> Self {
        Self {
            token,
            top_rooms,
            admission,
        }
    }
}

pub async fn metrics(
    State(app): State<AppState>,
    Extension(access): Extension<MetricsAccess>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = &access.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::http::bearer)
            .unwrap_or("");
        let ok: bool = presented
            .as_bytes()
            .ct_eq(token.expose_secret().as_bytes())
            .into();
        if !ok {
            return (StatusCode::UNAUTHORIZED, "metrics token required\n").into_response();
        }
    }
    crate::metrics::queues(app.bus.state(), app.chat.queue_depth());
    crate::metrics::handshakes_in_progress(access.admission.in_progress());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(access.top_rooms),
    )
        .into_response()
}
