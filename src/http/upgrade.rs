//! Websocket handshake validation on the Socket.IO path (RFC 6455 §4.2.1). engineioxide answers
//! 101 to any upgrade that has a `Sec-WebSocket-Key`, whatever its shape or version, and opens a
//! polling session for a polling request that also asks to upgrade. Here a malformed handshake
//! gets 400, an unsupported version 426 with the one spoken, and a polling request carrying
//! upgrade headers 400, before any session exists.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

/// socketioxide's request path.
const SOCKET_IO_PATH: &str = "/socket.io/";
/// The only websocket version there is (RFC 6455 §4.1).
const WS_VERSION: &str = "13";

#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    BadRequest(&'static str),
    UnsupportedVersion,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            Self::UnsupportedVersion => (
                StatusCode::UPGRADE_REQUIRED,
                [(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static(WS_VERSION),
                )],
                "Unsupported Sec-WebSocket-Version",
            )
                .into_response(),
        }
    }
}

pub async fn guard(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(SOCKET_IO_PATH) {
        return next.run(req).await;
    }
    match check(req.method(), req.uri().query(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::info!(?refusal, "malformed websocket handshake refused");
            refusal.into_response()
        }
    }
}

fn check(method: &Method, query: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
    let wants_websocket = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
    let transport = query
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("transport="));
    if transport != Some("websocket") {
        let carries_upgrade = headers.contains_key(header::UPGRADE)
            || headers.contains_key(header::SEC_WEBSOCKET_KEY);
        return if carries_upgrade {
            Err(Refusal::BadRequest(
                "Upgrade headers on a non-websocket request",
            ))
        } else {
            Ok(())
        };
    }
    if !wants_websocket {
        // engineioxide refuses a websocket transport request without an upgrade itself.
        return Ok(());
    }
    if method != Method::GET {
        return Err(Refusal::BadRequest("A websocket handshake is a GET"));
    }
    if !well_formed_key(headers) {
        return Err(Refusal::BadRequest("Malformed Sec-WebSocket-Key"));
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (None, _) => Err(Refusal::BadRequest("Missing Sec-WebSocket-Version")),
        (Some(v), None) if v == WS_VERSION => Ok(()),
        _ => Err(Refusal::UnsupportedVersion),
    }
}

/// Exactly one key, the base64 of 16 bytes (RFC 6455 §4.1: a random 16-byte nonce).
fn well_formed_key(headers: &HeaderMap) -> bool {
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return false;
    };
    let mut nonce = [0u8; 18];
    matches!(
        base64::prelude::BASE64_STANDARD.decode_slice(key.as_bytes().trim_ascii(), &mut nonce),
        Ok(16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ws(pairs: &[(&'static str, &str)]) -> Result<(), Refusal> {
        check(
            &Method::GET,
            Some("EIO=4&transport=websocket"),
            &headers(pairs),
        )
    }

    #[test]
    fn a_well_formed_handshake_passes() {
        let ok = [
            ("upgrade", "websocket"),
            ("sec-websocket-key", KEY),
            ("sec-websocket-version", "13"),
        ];
        assert_eq!(ws(&ok), Ok(()));
    }

    #[test]
    fn keys_must_be_16_bytes_of_base64() {
        for key in [
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZXg=",
            "!!!!!!!!!!!!!!!!!!!!!!==",
            "",
        ] {
            let h = [
                ("upgrade", "websocket"),
                ("sec-websocket-key", key),
                ("sec-websocket-version", "13"),
            ];
            assert!(matches!(ws(&h), Err(Refusal::BadRequest(_))), "{key:?}");
        }
        let two = [
            ("upgrade", "websocket"),
            ("sec-websocket-key", KEY),
            ("sec-websocket-key", KEY),
            ("sec-websocket-version", "13"),
        ];
        assert!(matches!(ws(&two), Err(Refusal::BadRequest(_))));
    }

    #[test]
    fn other_versions_get_426_and_a_missing_one_400() {
        for v in ["8", "14", "13, 8"] {
            let h = [
                ("upgrade", "websocket"),
                ("sec-websocket-key", KEY),
                ("sec-websocket-version", v),
            ];
            assert_eq!(ws(&h), Err(Refusal::UnsupportedVersion), "{v}");
        }
        let h = [("upgrade", "websocket"), ("sec-websocket-key", KEY)];
        assert!(matches!(ws(&h), Err(Refusal::BadRequest(_))));
    }

    #[test]
    fn polling_requests_with_upgrade_headers_are_refused() {
        let polling = Some("EIO=4&transport=polling");
        let h = headers(&[("upgrade", "websocket"), ("sec-websocket-key", KEY)]);
        assert!(check(&Method::GET, polling, &h).is_err());
        assert_eq!(check(&Method::GET, polling, &HeaderMap::new()), Ok(()));
        assert_eq!(check(&Method::POST, polling, &HeaderMap::new()), Ok(()));
    }
}
