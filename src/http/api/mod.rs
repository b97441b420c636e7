//! The HTTP API for backends and operators (`/api/v1`, PROTOCOL.md §7). Handlers parse into
//! domain types and call the same services as the socket path; the OpenAPI document is built
//! from the same route list, so the two cannot disagree.

mod error;
mod notifications;
mod presence;
mod publish;
mod rooms;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::error::DomainError;
use crate::domain::ids::{RoomId, TenantId, UserId};
use crate::state::AppState;

pub use error::{ApiError, ApiJson, ApiQuery};

#[derive(OpenApi)]
#[openapi(
    info(title = "AegisX Realtime HTTP API", description = "Publish to clients, manage notifications, rooms and connections. Authenticate with `Authorization: Bearer <API key>`."),
    servers((url = "/api/v1")),
    modifiers(&BearerAuth),
    security(("api_key" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// SHA-256 digests of the configured keys: comparing digests in constant time leaks neither a
/// key's bytes nor its length.
#[derive(Clone)]
struct ApiKeys(Arc<Vec<[u8; 32]>>);

impl ApiKeys {
    fn allows(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Check every key, so the time taken does not say which one matched.
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(&digest))
            .into()
    }
}

/// `/api/v1`, or `None` when no API key is configured (the API is off: 404, never open).
pub fn router(state: AppState, keys: &[SecretString]) -> Option<Router> {
    let digests: Vec<[u8; 32]> = keys
        .iter()
        .map(|k| k.expose_secret().trim())
        .filter(|k| !k.is_empty())
        .map(|k| Sha256::digest(k.as_bytes()).into())
        .collect();
    if digests.is_empty() {
        return None;
    }
    let state_for_doc = state.clone();
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(publish::publish))
        .routes(routes!(notifications::create))
        .routes(routes!(notifications::list))
        .routes(routes!(users::disconnect))
        .routes(routes!(rooms::history, rooms::post_message))
        .routes(routes!(rooms::grant, rooms::revoke))
        .routes(routes!(users::stats))
        .routes(routes!(presence::presence))
        .with_state(state.clone())
        .split_for_parts();
    let doc = Arc::new(document(doc, &state_for_doc));
    let authed = api.layer(axum::middleware::from_fn_with_state(
        (ApiKeys(Arc::new(digests)), state),
        require_key,
    ));
    Some(
        Router::new()
            .route(
                "/openapi.json",
                axum::routing::get(move || {
                    let doc = doc.clone();
                    async move { axum::Json(doc.as_ref().clone()) }
                }),
            )
            .merge(authed)
            .fallback(|| async { ApiError::NoRoute }),
    )
}

/// The served document: utoipa's, plus the constraints its attributes cannot express, so that
/// it states every rule the handlers enforce (a schema fuzzer checks both agree).
fn document(doc: utoipa::openapi::OpenApi, app: &AppState) -> serde_json::Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    publish::refine_schema(&mut doc);
    if let Some(message) = doc.pointer_mut("/components/schemas/PostMessage/properties/message") {
        message["maxLength"] = app.chat.max_message_len().into();
    }
    doc
}

/// The API key check. A client IP past `API_KEY_FAILURES_PER_IP_PER_MINUTE` failures gets 429
/// before its key is looked at, so guessing keys costs a minute per N guesses.
async fn require_key(
    State((keys, app)): State<(ApiKeys, AppState)>,
    req: Request,
    next: Next,
) -> Response {
    let ip =
        crate::http::client_ip::of_request(&app.trusted_proxies, req.extensions(), req.headers());
    if let Some(Err(wait)) = ip.map(|ip| app.api_key_failures.check(ip)) {
        crate::metrics::auth_throttled("api");
        return ApiError::TooManyFailures {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
        .into_response();
    }
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::http::bearer);
    match presented {
        Some(key) if keys.allows(key) => next.run(req).await,
        _ => {
            if let Some(ip) = ip {
                app.api_key_failures.record_failure(ip);
            }
            ApiError::Unauthorized.into_response()
        }
    }
}

pub(crate) fn parse_user(s: &str) -> Result<UserId, ApiError> {
    UserId::parse(s)
        .ok_or_else(|| ApiError::BadRequest("userId must be 1 to 128 characters".into()))
}

pub(crate) fn parse_tenant(s: Option<&str>) -> Result<Option<TenantId>, ApiError> {
    TenantId::parse_optional(s)
        .map_err(|_| ApiError::BadRequest("tenantId must be at most 128 characters".into()))
}

pub(crate) fn parse_room(s: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(s).ok_or(ApiError::Domain(DomainError::InvalidRoom))
}

/// `limit` of list endpoints: default 50, 1 to 1000.
pub(crate) fn parse_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=1000) => Ok(n),
        Some(_) => Err(ApiError::BadRequest("limit must be 1 to 1000".into())),
    }
}
