//! The axum adapter: health and readiness, CORS and the websocket Origin check around the
//! Socket.IO layer.

mod health;
mod origin;

use axum::Router;
use axum::routing::get;
use http::{HeaderValue, Method};
use socketioxide::layer::SocketIoLayer;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::app::AppState;
use crate::settings::Settings;

pub use origin::AllowedOrigins;

pub fn router(settings: &Settings, state: AppState, sio: SocketIoLayer) -> anyhow::Result<Router> {
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
    Ok(Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
        .layer(sio)
        .layer(axum::middleware::from_fn_with_state(origins, origin::guard))
        .layer(cors))
}
