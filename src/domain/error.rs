//! The domain's failures. Each maps to one wire code of PROTOCOL.md §5; the transports turn them
//! into `error` events, ack payloads or HTTP statuses in one place each.

use crate::domain::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    InvalidPayload(String),
    #[error("Invalid room id")]
    InvalidRoom,
    #[error("Access denied to room")]
    AccessDenied,
    #[error("Too many rooms: at most {0} per connection")]
    TooManyRooms(usize),
    #[error("Not in room")]
    NotInRoom,
    #[error("Too many watched users: at most {0} per connection")]
    TooManyWatches(usize),
    #[error("Rate limit exceeded")]
    RateLimited,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidToken(String),
    #[error("Token expired")]
    TokenExpired,
    #[error("Unknown event type: {0}")]
    UnknownEvent(String),
    /// The store failed or is unreachable; nothing was stored or delivered. The cause is for
    /// the log, never for the client.
    #[error("Storage unavailable, try again")]
    Unavailable(String),
    /// The gateway is shutting down or overloaded and refuses new work.
    #[error("Server busy, try again")]
    Busy,
}

impl DomainError {
    /// The stable wire code (`error.code` on the socket, in ack and HTTP error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPayload(_) => "INVALID_PAYLOAD",
            Self::InvalidRoom => "INVALID_ROOM",
            Self::AccessDenied => "ACCESS_DENIED",
            Self::TooManyRooms(_) => "TOO_MANY_ROOMS",
            Self::NotInRoom => "NOT_IN_ROOM",
            Self::TooManyWatches(_) => "TOO_MANY_WATCHES",
            Self::RateLimited => "RATE_LIMITED",
            Self::NotFound(_) => "NOT_FOUND",
            Self::InvalidToken(_) => "INVALID_TOKEN",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::UnknownEvent(_) => "UNKNOWN_EVENT",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Busy => "UNAVAILABLE",
        }
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::InvalidPayload(reason.into())
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failed");
        Self::Unavailable(e.to_string())
    }
}
