//! The body-read deadline. hyper bounds how long a request head may take, not its body, so a
//! client trickling a chunked polling POST or an API body at a byte a second would hold its
//! request for as long as it liked. A body must arrive whole within `BODY_READ_TIMEOUT_SECS` of
//! its head: a slower one fails when read, and the answer is 408 with `Connection: close` (the
//! rest of the body is never read). The polling session the POST belonged to stays open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use http_body::{Frame, SizeHint};
use serde_json::json;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("request body not received within BODY_READ_TIMEOUT_SECS")]
struct BodyTimeout;

pub async fn cut_slow_bodies(
    State(timeout): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    // GETs (long-polling, websocket upgrades) have no body to wait for.
    if http_body::Body::is_end_stream(req.body()) {
        return next.run(req).await;
    }
    let fired = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + timeout;
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline,
            sleep: None,
            fired: fired.clone(),
        })
    });
    let res = next.run(req).await;
    if !fired.load(Ordering::Relaxed) {
        return res;
    }
    tracing::info!(?timeout, "request body too slow; cut");
    let body = json!({ "error": {
        "code": "REQUEST_TIMEOUT",
        "message": "Request body not received in time",
    }});
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        axum::Json(body),
    )
        .into_response()
}

/// A body that fails once its deadline has passed while it was still waiting for data.
struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Armed the first time the body has to wait, so a body that is already there costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    fired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.fired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyTimeout.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
