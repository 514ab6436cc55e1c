//! `POST /query`: a cited answer as one JSON response, or as server-sent events when
//! `stream: true` or `Accept: text/event-stream`.
//!
//! Events, each with an increasing `id:` and JSON `data:`: `sources` (`{"citations": [...]}`,
//! before generation starts), `token` (`{"delta": "..."}`), `citation` (a citation object, when
//! a `[n]` marker completes), `done` (finish reason, usage, timing, used citation numbers) and
//! `error` (`{"code", "message"}`). Keep-alive comments fill long silences. Dropping the
//! connection drops the answer stream, which stops the generator (see `answer`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{Stream, StreamExt};

use super::error::ApiError;
use super::openapi::{BadBody, Guarded};
use super::{ApiJson, AppState};
use crate::answer::{AnswerEvent, QueryEvent, QueryRequest};

/// Whether the client asked for an event stream.
pub fn wants_sse(headers: &HeaderMap, stream_flag: bool) -> bool {
    stream_flag
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"))
}

/// `POST /query`.
#[utoipa::path(post, path = "/query", tag = "answers",
    description = "A cited answer: retrieval as in `/search`, then generation with numbered context chunks the answer cites as `[n]`.\n\nWith `stream: true` or `Accept: text/event-stream` the answer is server-sent events, each with an increasing `id` and JSON `data`: `sources` (`{\"citations\": [Citation]}`, before generation), `token` (`{\"delta\": \"...\"}`), `citation` (a Citation, when a `[n]` marker completes), `done` (an AnswerDone: finish reason, usage, timing, used citation numbers) and `error` (`{\"code\", \"message\"}`); `: keep-alive` comments fill long silences. Closing the connection stops generation.",
    request_body = QueryRequest,
    responses(
        (status = 200, description = "The answer (JSON), or the event stream", content(
            (crate::answer::QueryResponse = "application/json"),
            (super::openapi::QueryEvent = "text/event-stream"),
        )),
        (status = 502, description = "The upstream model API failed (`upstream`)", body = super::openapi::ErrorResponse),
        BadBody,
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn query(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<QueryRequest>,
) -> Result<Response, ApiError> {
    if !wants_sse(&headers, req.options.stream) {
        return Ok(Json(st.cairn.answer(req, Vec::new()).await?).into_response());
    }
    let stream = st.cairn.answer_stream(req, Vec::new()).await?;
    let keepalive = Duration::from_secs(st.cairn.config.answer.keepalive_s.max(1));
    // The body is polled after the handler returns: carry the request's span for error logs.
    let span = tracing::Span::current();
    Ok(sse(stream.map(move |ev| to_event(ev, &span)), keepalive))
}

/// Wraps events as an SSE response with numbered ids and keep-alives.
pub fn sse(events: impl Stream<Item = Event> + Send + 'static, keepalive: Duration) -> Response {
    let numbered = events
        .enumerate()
        .map(|(i, e)| Ok::<_, Infallible>(e.id(i.to_string())));
    Sse::new(numbered)
        .keep_alive(KeepAlive::new().interval(keepalive).text("keep-alive"))
        .into_response()
}

/// An error after the response started: logged here (with the request's span) and sent as
/// the `{code, message}` a JSON error would carry.
pub fn error_payload(e: crate::error::Error, span: &tracing::Span) -> serde_json::Value {
    serde_json::to_value(error_body(e, span)).unwrap_or_default()
}

/// The `{code, message}` of an error after the response started, logged here.
fn error_body(e: crate::error::Error, span: &tracing::Span) -> crate::service::ErrorBody {
    let api = ApiError::from(e);
    let code = api.code.as_str();
    if let Some(cause) = &api.internal {
        span.in_scope(|| tracing::error!(error = %cause, "internal error during a stream"));
    } else {
        span.in_scope(|| tracing::warn!(code, message = %api.message, "stream failed"));
    }
    crate::service::ErrorBody {
        code: code.to_string(),
        message: api.message,
        suggestions: None,
    }
}

fn to_event(ev: AnswerEvent, span: &tracing::Span) -> Event {
    let wire = match ev {
        AnswerEvent::Sources(citations) => QueryEvent::Sources { citations },
        AnswerEvent::Token(delta) => QueryEvent::Token { delta },
        AnswerEvent::Citation(c) => QueryEvent::Citation(c),
        AnswerEvent::Done(d) => QueryEvent::Done(d),
        AnswerEvent::Error(e) => QueryEvent::Error(error_body(e, span)),
    };
    Event::default()
        .event(wire.name())
        .json_data(wire.data())
        .unwrap_or_else(|_| Event::default().event("error"))
}
