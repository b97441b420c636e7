//! API errors: `{ "error": { "code", "message" } }` with a fitting status, and extractors whose
//! rejections come out in that same shape.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::domain::error::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("Missing or invalid API key")]
    Unauthorized,
    #[error("No such endpoint")]
    NoRoute,
    /// Too many wrong API keys from this client IP; answered with `Retry-After`.
    #[error("Too many failed attempts")]
    TooManyFailures { retry_after_secs: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Self::NoRoute => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::TooManyFailures { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "INVALID_PAYLOAD"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::Domain(e) => {
                let status = match e {
                    DomainError::NotFound(_) => StatusCode::NOT_FOUND,
                    DomainError::AccessDenied => StatusCode::FORBIDDEN,
                    DomainError::Unavailable(_) | DomainError::Busy => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    DomainError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                    _ => StatusCode::BAD_REQUEST,
                };
                (status, e.code())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        crate::metrics::api_error(code);
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        let mut res = (status, Json(body)).into_response();
        if let Self::TooManyFailures { retry_after_secs } = self {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, retry_after_secs.into());
        }
        res
    }
}

/// `Json<T>` whose rejections (bad JSON, wrong shape, wrong content type) are `INVALID_PAYLOAD`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Self(v))
            .map_err(|e: JsonRejection| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(e.body_text()),
                _ => ApiError::BadRequest(e.body_text()),
            })
    }
}

/// `Query<T>` whose rejections are `INVALID_PAYLOAD`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e: QueryRejection| ApiError::BadRequest(e.body_text()))
    }
}
