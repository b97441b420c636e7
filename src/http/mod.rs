//! The axum adapter: health and readiness, CORS and the websocket Origin check around the
//! Socket.IO layer.

pub mod admission;
mod api;
mod body_deadline;
pub mod client_ip;
mod compact;
pub mod dev;
mod health;
mod metrics;
mod origin;
mod upgrade;

use axum::Router;
use axum::routing::get;
use http::{HeaderValue, Method};
use socketioxide::layer::SocketIoLayer;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::settings::Settings;
use crate::state::AppState;

pub use origin::AllowedOrigins;

/// The credentials of an `Authorization: Bearer <credentials>` header value. The scheme is
/// case-insensitive (RFC 7235); another scheme or empty credentials give `None`.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let credentials = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

pub fn router(
    settings: &Settings,
    state: AppState,
    sio: SocketIoLayer,
    dev: Option<dev::DevTokens>,
) -> anyhow::Result<Router> {
    let origins = AllowedOrigins::parse(&settings.cors_origin)?;
    let cors = CorsLayer::new()
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_origin(match &origins {
            AllowedOrigins::Any => AllowOrigin::mirror_request(),
            AllowedOrigins::List(list) => AllowOrigin::list(
                list.iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            ),
        });
    let admission = admission::Admission::new(settings.max_handshakes_in_progress);
    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .with_state(state.clone())
        .layer(axum::Extension(metrics::MetricsAccess::new(
            settings.metrics_token.clone(),
            settings.room_metrics_top,
            admission.clone(),
        )));
    if let Some(api) = api::router(state.clone(), &settings.api_keys) {
        app = app.nest("/api/v1", api);
    }
    if let Some(dev) = dev {
        app = app.merge(dev::router(dev, state.clone()));
    }
    app = web_demo(app, &settings.web_dir);
    Ok(app
        .layer(sio)
        .layer(axum::middleware::from_fn(upgrade::guard))
        // Outside the handshake check: a refusal here is the cheapest answer the path has.
        .layer(axum::middleware::from_fn_with_state(
            admission,
            admission::admit,
        ))
        .layer(axum::middleware::from_fn(compact::compact_head))
        .layer(axum::middleware::from_fn_with_state(origins, origin::guard))
        .layer(cors)
        .layer(
            // One span per request, with the path only: query strings may carry tokens.
            TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            std::time::Duration::from_secs(settings.body_read_timeout_secs),
            body_deadline::cut_slow_bodies,
        )))
}

/// The built web demo at `/`, when its directory exists. A fallback: every route above (the
/// API, `/metrics`, health) and the Socket.IO layer keep priority.
fn web_demo(app: Router, dir: &std::path::Path) -> Router {
    if dir.as_os_str().is_empty() || !dir.join("index.html").is_file() {
        return app;
    }
    tracing::info!(dir = %dir.display(), "serving the web demo at /");
    app.fallback_service(tower_http::services::ServeDir::new(dir))
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_credentials() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
}
