//! The websocket `Origin` check (cross-site WebSocket hijacking): CORS does not apply to
//! websocket upgrades, so a browser page from any site could otherwise open one with the
//! user's cookies. An upgrade whose `Origin` is present and not allowed is refused with 403, and
//! so is any request with more than one `Origin`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

#[derive(Debug, Clone)]
pub enum AllowedOrigins {
    Any,
    List(Vec<String>),
}

impl AllowedOrigins {
    pub fn parse(list: &[String]) -> anyhow::Result<Self> {
        let list: Vec<String> = list
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if list.iter().any(|o| o == "*") {
            return Ok(Self::Any);
        }
        for o in &list {
            if !(o.starts_with("http://") || o.starts_with("https://")) {
                anyhow::bail!(
                    "CORS_ORIGIN entry {o:?} must be an origin like https://app.example.com"
                );
            }
        }
        Ok(Self::List(list))
    }

    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// A page (or a non-browser client library) of the gateway's own origin is not cross-site:
/// python-socketio, for one, always sends `Origin` set to the URL it connects to.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

pub async fn guard(State(origins): State<AllowedOrigins>, req: Request, next: Next) -> Response {
    // Two `Origin` headers: which one the CORS layer, a proxy or this check would read is
    // anyone's guess, so nothing is granted on either.
    if req
        .headers()
        .get_all(header::ORIGIN)
        .iter()
        .nth(1)
        .is_some()
    {
        tracing::info!("request with several Origin headers refused");
        return (StatusCode::FORBIDDEN, Body::from("Several Origin headers")).into_response();
    }
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade && let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|o| origins.allows(o) || same_origin(o, host));
        if !allowed {
            tracing::info!(origin = ?origin, "websocket upgrade from a disallowed origin refused");
            return (StatusCode::FORBIDDEN, Body::from("Origin not allowed")).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_without_trailing_slash() {
        let o = AllowedOrigins::parse(&["http://localhost:3000/".into(), "https://a.io".into()])
            .unwrap();
        assert!(o.allows("http://localhost:3000"));
        assert!(o.allows("https://a.io"));
        assert!(!o.allows("https://evil.io"));
        assert!(!o.allows("http://localhost:3001"));
        assert!(
            AllowedOrigins::parse(&["*".into()])
                .unwrap()
                .allows("https://x")
        );
        assert!(AllowedOrigins::parse(&["localhost".into()]).is_err());
    }

    #[test]
    fn the_gateways_own_origin_is_not_cross_site() {
        assert!(same_origin("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(same_origin(
            "https://rt.example.com",
            Some("rt.example.com")
        ));
        assert!(!same_origin("http://evil.io", Some("127.0.0.1:3000")));
        assert!(!same_origin("http://127.0.0.1:3000", None));
        assert!(!same_origin("null", Some("null")));
    }
}
