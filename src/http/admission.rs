//! Admission control for Socket.IO handshakes. A handshake is in progress from the request that
//! opens an Engine.IO session (a `/socket.io/` request without `sid`) until the socket is sent
//! `connected`, or until the session is gone without getting there. At most
//! `MAX_HANDSHAKES_IN_PROGRESS` are; an opening request beyond it gets 503 with `Retry-After`
//! before any session exists.
//!
//! Why there, and why 503: a reconnect storm (every client of a restarted node at once) would
//! otherwise start thousands of handshakes that all share the same core, each getting slower,
//! while the sockets already in wait behind them. Refusing the open request costs almost
//! nothing, and socket.io-client treats a failed Engine.IO open as a transport error and
//! reconnects by itself with its backoff; a Socket.IO `connect_error` (a refused CONNECT), by
//! contrast, is final for that client until the application reconnects it.
//!
//! The slot travels in the request's extensions, which the Engine.IO session keeps as its
//! request head, so a session that dies before `connected` (transport closed, connect timeout,
//! refused CONNECT) gives its slot back when it is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::json;

/// socketioxide's request path.
const SOCKET_IO_PATH: &str = "/socket.io/";
/// Seconds a refused client is asked to wait (socket.io-client uses its own backoff instead).
const RETRY_AFTER_SECS: &str = "1";

/// The node's handshake slots.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    in_progress: AtomicUsize,
}

impl Admission {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            in_progress: AtomicUsize::new(0),
        })
    }

    /// Handshakes holding a slot now.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// A slot, or `None` when all `limit` are taken.
    pub fn try_admit(self: &Arc<Self>) -> Option<HandshakeSlot> {
        self.in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()?;
        Some(HandshakeSlot(Arc::new(SlotInner {
            admission: self.clone(),
            released: AtomicBool::new(false),
        })))
    }
}

/// One handshake's slot. Clones share it (engineioxide clones the request head of a websocket
/// upgrade); it is given back once, by `release` or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct HandshakeSlot(Arc<SlotInner>);

#[derive(Debug)]
struct SlotInner {
    admission: Arc<Admission>,
    released: AtomicBool,
}

impl SlotInner {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.admission.in_progress.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl HandshakeSlot {
    /// The handshake is over: the socket was told `connected`.
    pub fn release(&self) {
        self.0.release();
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.release();
    }
}

/// Middleware: a slot for every request that opens an Engine.IO session, or 503.
pub async fn admit(
    State(admission): State<Arc<Admission>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !opens_session(req.method(), req.uri()) {
        return next.run(req).await;
    }
    let Some(slot) = admission.try_admit() else {
        crate::metrics::handshake_refused();
        tracing::debug!("handshake refused: MAX_HANDSHAKES_IN_PROGRESS reached");
        return refusal();
    };
    req.extensions_mut().insert(slot);
    next.run(req).await
}

/// A GET on the Socket.IO path without `sid`: a new Engine.IO session, on either transport.
/// Polling requests and websocket upgrades of an existing session carry its `sid`.
fn opens_session(method: &Method, uri: &http::Uri) -> bool {
    method == Method::GET
        && uri.path().starts_with(SOCKET_IO_PATH)
        && !uri
            .query()
            .unwrap_or_default()
            .split('&')
            .any(|p| p.starts_with("sid="))
}

fn refusal() -> Response {
    let body = json!({ "error": {
        "code": "UNAVAILABLE",
        "message": "Too many connections being set up; retry shortly",
    }});
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        )],
        axum::Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back_once() {
        let a = Admission::new(2);
        let one = a.try_admit().expect("first slot");
        let two = a.try_admit().expect("second slot");
        assert!(a.try_admit().is_none(), "a third is refused");
        assert_eq!(a.in_progress(), 2);
        one.release();
        one.release();
        assert_eq!(a.in_progress(), 1, "a second release gives nothing back");
        drop(one);
        assert_eq!(
            a.in_progress(),
            1,
            "dropping a released slot gives nothing back"
        );
        let clone = two.clone();
        drop(two);
        assert_eq!(a.in_progress(), 1, "a clone still holds the slot");
        drop(clone);
        assert_eq!(a.in_progress(), 0, "the last clone's drop gives it back");
        assert!(a.try_admit().is_some());
    }

    #[test]
    fn only_requests_opening_a_session_take_a_slot() {
        let opens = |m: Method, uri: &str| opens_session(&m, &uri.parse().unwrap());
        assert!(opens(Method::GET, "/socket.io/?EIO=4&transport=polling"));
        assert!(opens(Method::GET, "/socket.io/?EIO=4&transport=websocket"));
        assert!(!opens(
            Method::GET,
            "/socket.io/?EIO=4&transport=polling&sid=abc"
        ));
        assert!(!opens(
            Method::GET,
            "/socket.io/?EIO=4&transport=websocket&sid=abc"
        ));
        assert!(!opens(
            Method::POST,
            "/socket.io/?EIO=4&transport=polling&sid=abc"
        ));
        assert!(!opens(Method::GET, "/api/v1/rooms"));
        assert!(!opens(Method::GET, "/healthz"));
    }
}
