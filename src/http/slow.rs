//! Slow clients: a deadline for a request's body. A client that trickles its upload would
//! otherwise hold a request slot (`server.max_in_flight`) and its caller's concurrency for as
//! long as it likes; here the whole body must arrive within `server.body_read_timeout_s` or the
//! request ends with 408 `body_timeout`. (The header deadline, `server.header_read_timeout_s`,
//! is hyper's, set where connections are served: [`super::serve`].)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use super::error::ApiError;
use super::AppState;
use crate::error::Code;

/// The error a [`DeadlineBody`] yields once its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} s")]
pub struct BodyTimeout(pub u64);

/// A request body that fails with [`BodyTimeout`] if it has not ended by its deadline, and
/// records that it did in `tripped` (whatever the handler then makes of the read error).
pub struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    secs: u64,
    tripped: Arc<AtomicBool>,
}

impl DeadlineBody {
    pub fn new(inner: Body, secs: u64, tripped: Arc<AtomicBool>) -> Self {
        DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(secs))),
            secs,
            tripped,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.tripped.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(self.secs)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Gives every request body its deadline; a request whose body ran out of time answers 408
/// `body_timeout` (and closes the connection: the rest of the body was never read), whatever
/// error the handler made of the failed read.
pub async fn body_deadline(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let secs = st.cairn.config.server.body_read_timeout_s.max(1);
    let tripped = Arc::new(AtomicBool::new(false));
    let req = req.map(|b| Body::new(DeadlineBody::new(b, secs, tripped.clone())));
    let resp = next.run(req).await;
    if !tripped.load(Ordering::Relaxed) {
        return resp;
    }
    metrics::counter!("cairn_body_timeouts_total").increment(1);
    let mut resp = ApiError::new(
        Code::BodyTimeout,
        format!(
            "the request body did not arrive within {secs} s (server.body_read_timeout_s); \
             send it faster or raise the limit"
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// A body that sends one chunk and then never ends: the read after it fails with
    /// `BodyTimeout` once the deadline has passed (not before), and marks the request.
    #[tokio::test]
    async fn a_body_that_stalls_fails_at_its_deadline() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.try_send(Ok(Bytes::from_static(b"part"))).unwrap();
        let tripped = Arc::new(AtomicBool::new(false));
        let started = tokio::time::Instant::now();
        let body = DeadlineBody::new(Body::from_stream(rx), 1, tripped.clone());
        let mut data = Body::new(body).into_data_stream();
        assert_eq!(data.next().await.unwrap().unwrap(), "part");
        assert!(!tripped.load(Ordering::Relaxed));
        let err = data.next().await.unwrap().unwrap_err();
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert!(err.to_string().contains("within 1 s"), "{err}");
        assert!(tripped.load(Ordering::Relaxed));
        drop(tx);
    }

    #[tokio::test]
    async fn a_body_that_ends_in_time_is_untouched() {
        let tripped = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody::new(Body::from("whole"), 5, tripped.clone());
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        let bytes = axum::body::to_bytes(Body::new(body), 1024).await.unwrap();
        assert_eq!(bytes, "whole");
        assert!(!tripped.load(Ordering::Relaxed));
    }
}
