//! Abuse of the CONNECT path: a client IP that keeps presenting bad tokens is turned away before
//! its token is verified, and a transport that keeps being refused is closed.

use std::net::IpAddr;

use socketioxide::extract::SocketRef;

use crate::domain::auth::{AuthError, Principal};
use crate::http::client_ip::{self, Peer};
use crate::state::AppState;

/// Refused CONNECTs one transport may collect; the next refusal closes it.
pub const MAX_REFUSED_CONNECTS: u32 = 3;

/// The client's IP: the transport's peer, through `TRUSTED_PROXIES`.
pub fn client_ip(s: &SocketRef, app: &AppState) -> Option<IpAddr> {
    let parts = s.req_parts();
    client_ip::of_request(&app.trusted_proxies, &parts.extensions, &parts.headers)
}

/// Whether `ip` failed too often to have its token verified now.
pub fn throttled(app: &AppState, ip: Option<IpAddr>) -> bool {
    let throttled = ip.is_some_and(|ip| app.auth_failures.check(ip).is_err());
    if throttled {
        crate::metrics::auth_throttled("socket");
    }
    throttled
}

/// Verifies the token, counting a failure against `ip`.
pub async fn verify(
    app: &AppState,
    ip: Option<IpAddr>,
    token: &str,
) -> Result<Principal, AuthError> {
    let res = app.verifier.verify(token).await;
    if let (Err(_), Some(ip)) = (&res, ip) {
        app.auth_failures.record_failure(ip);
    }
    res
}

/// Counts a refused CONNECT on the socket's transport and closes the transport past the limit:
/// a client refused that often is probing, not retrying with a fresh token.
pub fn refused(s: &SocketRef) {
    let parts = s.req_parts();
    let Some(peer) = parts.extensions.get::<Peer>() else {
        return;
    };
    if peer.count_refused_connect() > MAX_REFUSED_CONNECTS
        && let Some(closer) = parts.extensions.get::<engineioxide::SessionControl>()
    {
        tracing::info!(sid = %s.id, peer = %peer.addr(), "too many refused CONNECTs; closing the transport");
        closer.close(engineioxide::DisconnectReason::PacketParsingError);
    }
}
