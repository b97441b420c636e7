//! The HTTP server loop. `axum::serve` has no header-read timeout, so connections are served
//! with hyper directly: a client that opens a connection and sends nothing is dropped after
//! `HANDSHAKE_TIMEOUT_SECS`; on stop, the listener closes and open requests finish. A request
//! head over `MAX_HEADER_BYTES` gets 431, and connections the server closes linger (`linger`).

mod linger;

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Deadlines and sizes the connection loop enforces itself.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    /// The read buffer bound, hence the largest request head (hyper answers 431 beyond it).
    pub max_header_bytes: usize,
}

pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    // Tracks open HTTP connections so shutdown can wait for their requests to finish.
    let tracker = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Handlers learn the client's address from the request (`client_ip`).
                let svc = TowerToHyperService::new(router.clone().map_request(
                    move |mut req: http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(crate::http::client_ip::Peer::new(peer));
                        req
                    },
                ));
                let conn = http
                    .serve_connection(TokioIo::new(linger::LingeringStream::new(stream)), svc)
                    .with_upgrades();
                let mut stop = stop.clone();
                let tracked = tracker.clone();
                tracker.spawn(async move {
                    // Open HTTP connections (an upgraded websocket leaves this task).
                    crate::metrics::http_connections(tracked.len());
                    let mut conn = std::pin::pin!(conn);
                    let res = tokio::select! {
                        res = conn.as_mut() => res,
                        _ = stop.changed() => {
                            // Finish the request in flight, then close (websockets have
                            // already been handed off and are closed by Socket.IO).
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "http connection ended with an error");
                    }
                    // This task still counts itself until it returns.
                    crate::metrics::http_connections(tracked.len().saturating_sub(1));
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}
