//! Copies the request head of Socket.IO requests into allocations of its own, keeping only the
//! headers that are read. Socket.IO keeps
//! each socket's request head for the socket's life; as parsed by hyper, its header values and
//! URI are slices of the connection's 8 KiB read buffer, which they would keep alive: about a
//! third of an idle connection's memory. Axum's routing adds an `OriginalUri` (a shared clone of
//! the URI) to the extensions, which would do the same; of the extensions only the client's
//! address and the websocket upgrade are kept.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};

use crate::http::client_ip::Peer;

/// The headers the Socket.IO transports and our connect middleware read; the rest (cookies,
/// `accept-*`, `user-agent`: often kilobytes from a browser; `host` and `origin`, which the
/// layers outside this one have checked) would only sit in memory. The websocket session drops
/// the upgrade headers once the handshake is done (vendored engineioxide, `session_head`).
const KEPT: [HeaderName; 11] = [
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    // The client IP behind a trusted proxy (`client_ip`).
    HeaderName::from_static("x-forwarded-for"),
];

pub async fn compact_head(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/socket.io") {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let mut headers = HeaderMap::new();
    for (name, value) in parts.headers.iter().filter(|(n, _)| KEPT.contains(n)) {
        // `from_bytes` copies: a standard name is static, a custom one gets its own bytes.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    parts.headers = headers;
    if let Ok(uri) = parts.uri.to_string().parse::<Uri>() {
        parts.uri = uri;
    }
    // Only what the Engine.IO session needs from the extensions: the client's address and the
    // websocket upgrade. Routing adds more (`OriginalUri`, a shared clone of the URI, and its URL
    // parameters), and each entry is an allocation the session would keep.
    let peer = parts.extensions.remove::<Peer>();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    parts.extensions = http::Extensions::new();
    if let Some(peer) = peer {
        parts.extensions.insert(peer);
    }
    if let Some(upgrade) = upgrade {
        parts.extensions.insert(upgrade);
    }
    next.run(Request::from_parts(parts, body)).await
}
