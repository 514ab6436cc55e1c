//! OpenAI-compatible endpoints, so existing tools can use Cairn as their model, RAG or
//! embedding backend: `POST /v1/chat/completions` (the last user message is answered with
//! retrieval; earlier turns are passed on as history), `POST /v1/embeddings` and
//! `GET /v1/models`, with OpenAI's request, response, streaming-chunk and error shapes
//! (`{"error": {"message", "type", "param", "code"}}`).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use futures::StreamExt;

use super::AppState;
use crate::answer::{AnswerEvent, QueryRequest};
use crate::error::Error;
use crate::generate::ChatMessage;

/// An error in OpenAI's shape (a superset of Cairn's: it also has `code` and `message`).
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<&'static str>,
    message: String,
    /// The real cause of an internal error, for the log only (as in [`super::error::ApiError`]).
    internal: Option<String>,
}

impl OpenAiError {
    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: crate::error::Code::InvalidRequest.as_str(),
            param: Some(param),
            message: message.into(),
            internal: None,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = super::openapi::OpenAiErrorResponse {
            error: super::openapi::OpenAiErrorBody {
                message: self.message,
                r#type: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(cause) = self.internal {
            resp.extensions_mut()
                .insert(super::error::InternalCause(cause));
        }
        resp
    }
}

impl From<Error> for OpenAiError {
    fn from(e: Error) -> Self {
        super::error::ApiError::from(e).into()
    }
}

/// An unreadable body: 413 (`payload_too_large`) when over `server.max_json_bytes`.
impl From<axum::extract::rejection::BytesRejection> for OpenAiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            super::error::too_large().into()
        } else {
            Self::invalid("messages", r.body_text())
        }
    }
}

impl From<super::error::ApiError> for OpenAiError {
    fn from(api: super::error::ApiError) -> Self {
        let kind = match api.code.status() {
            400..=499 => "invalid_request_error",
            503 => "overloaded_error",
            _ => "server_error",
        };
        Self {
            status: api.status(),
            kind,
            code: api.code.as_str(),
            param: None,
            message: api.message,
            internal: api.internal,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    /// Token ids or anything else: refused with a clear message.
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: Input,
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// The longest list of inputs one request may carry (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// `POST /v1/embeddings`.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai",
    request_body = super::openapi::EmbeddingsRequestSchema,
    responses(
        (status = 200, description = "OpenAI's embedding list", body = super::openapi::EmbeddingList),
        super::openapi::OpenAiErrors,
        super::openapi::Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn embeddings(
    State(st): State<AppState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: EmbeddingsRequest = serde_json::from_slice(&body?)
        .map_err(|e| OpenAiError::invalid("input", format!("invalid request body: {e}")))?;
    let cairn = &st.cairn;
    let model = cairn.embedder.name().to_string();
    if req.model != model && req.model != "default" {
        return Err(model_not_found(format!(
            "the model `{}` does not exist; available: `{model}`",
            req.model
        )));
    }
    let texts =
        match req.input {
            Input::One(s) => vec![s],
            Input::Many(v) => v,
            Input::Other(_) => return Err(OpenAiError::invalid(
                "input",
                "input must be a string or an array of strings (token-id input is not supported: \
                 Cairn tokenizes with its own model)",
            )),
        };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(OpenAiError::invalid(
            "input",
            format!("input must hold 1 to {MAX_INPUTS} strings"),
        ));
    }
    if texts.iter().any(|t| t.trim().is_empty()) {
        return Err(OpenAiError::invalid(
            "input",
            "input strings must not be empty",
        ));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(OpenAiError::invalid(
                "encoding_format",
                format!("encoding_format must be `float` or `base64`, not `{other}`"),
            ))
        }
    };
    let dim = cairn.embedder.dim();
    if let Some(d) = req.dimensions {
        if d != dim {
            return Err(OpenAiError::invalid(
                "dimensions",
                format!("model `{model}` has {dim} dimensions and cannot be shortened"),
            ));
        }
    }
    let tokens: usize = texts
        .iter()
        .map(|t| cairn.embedder.tokenizer().token_spans(t).len() + 2)
        .sum();
    let vectors = cairn.embed(texts).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

/// `GET /v1/models`: the models this server answers for.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "The embedding model, and the generator if any", body = super::openapi::ModelList), super::openapi::Guarded),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn models(State(st): State<AppState>) -> Json<Value> {
    let created = st.cairn.started_at;
    let mut models = vec![
        json!({"id": st.cairn.embedder.name(), "object": "model", "created": created, "owned_by": "cairn"}),
    ];
    if let Some(g) = &st.cairn.generator {
        models.push(
            json!({"id": g.model(), "object": "model", "created": created, "owned_by": "cairn"}),
        );
    }
    Json(json!({
        "object": "list",
        "data": models,
    }))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    Null(()),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    #[serde(default = "no_content")]
    content: Content,
}

fn no_content() -> Content {
    Content::Null(())
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The Chat Completions request. Unknown fields are ignored, as OpenAI clients send many.
#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    n: Option<u32>,
}

fn text_of(c: Content) -> Result<String, OpenAiError> {
    match c {
        Content::Text(t) => Ok(t),
        Content::Null(()) => Ok(String::new()),
        Content::Parts(parts) => {
            let mut out = Vec::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(OpenAiError::invalid(
                        "messages",
                        format!(
                            "content parts of type `{}` are not supported; send text",
                            p.kind
                        ),
                    ));
                }
                out.push(p.text.unwrap_or_default());
            }
            Ok(out.join("\n"))
        }
    }
}

fn model_not_found(message: String) -> OpenAiError {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: crate::error::Code::ModelNotFound.as_str(),
        param: Some("model"),
        message,
        internal: None,
    }
}

fn finish_reason(r: &str) -> &'static str {
    if r == "length" {
        "length"
    } else {
        "stop"
    }
}

/// `POST /v1/chat/completions`: a retrieval-augmented answer to the last user message.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    description = "OpenAI's Chat Completions: the last user message is answered with retrieval (earlier turns are history) and the response adds Cairn's `citations`. With `stream: true` (or `Accept: text/event-stream`) the answer is `chat.completion.chunk` events ended by `data: [DONE]`; `stream_options.include_usage` adds a usage chunk.",
    request_body = super::openapi::ChatRequestSchema,
    responses(
        (status = 200, description = "A chat completion, or the chunk stream", content(
            (super::openapi::ChatCompletion = "application/json"),
            (super::openapi::ChatStreamEvent = "text/event-stream"),
        )),
        super::openapi::OpenAiErrors,
        super::openapi::Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn chat_completions(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: ChatRequest = serde_json::from_slice(&body?)
        .map_err(|e| OpenAiError::invalid("messages", format!("invalid request body: {e}")))?;
    let cairn = st.cairn.clone();
    // `none` (retrieval only) is no model to chat with.
    let gen = match cairn.pick_generator(Some(&req.model)) {
        Ok(Some(gen)) => gen,
        Ok(None) | Err(_) => {
            let serving = match &cairn.generator {
                Some(g) => format!("this server answers as `{}`", g.model()),
                None => "this server has no generator (start it with --generator llama or \
                         --generator openai)"
                    .into(),
            };
            return Err(model_not_found(format!(
                "model `{}` does not exist; {serving}",
                req.model
            )));
        }
    };
    if req.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid("n", "only n = 1 is supported"));
    }
    let stream = req.stream || super::query::wants_sse(&headers, false);
    let include_usage = req.stream_options.unwrap_or_default().include_usage;
    let (mut query, history) = chat_query(req.messages)?;
    query.options.max_tokens = req.max_completion_tokens.or(req.max_tokens);
    query.options.temperature = req.temperature;
    query.options.generator = Some(gen.backend().as_str().to_string());
    let head = ChunkHead {
        id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
        created: chrono::Utc::now().timestamp(),
        model: gen.model().to_string(),
    };
    if !stream {
        let r = cairn.answer(query, history).await?;
        return Ok(Json(completion(&head, r)).into_response());
    }
    let answer = cairn.answer_stream(query, history).await?;
    let events = chunk_events(answer, head, include_usage);
    let keepalive = Duration::from_secs(st.cairn.config.answer.keepalive_s.max(1));
    Ok(super::query::sse(events, keepalive))
}

/// The question (the last message, a user's) and the history before it. The client's own
/// system prompts give way to Cairn's, which carries the citation instructions.
fn chat_query(messages: Vec<InMessage>) -> Result<(QueryRequest, Vec<ChatMessage>), OpenAiError> {
    let mut turns = Vec::with_capacity(messages.len());
    for m in messages {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant"
        ) {
            return Err(OpenAiError::invalid(
                "messages",
                format!(
                    "unsupported role `{}` (system, developer, user, assistant)",
                    m.role
                ),
            ));
        }
        turns.push(ChatMessage::new(&m.role, text_of(m.content)?));
    }
    let Some(last) = turns.pop().filter(|m| m.role == "user") else {
        return Err(OpenAiError::invalid(
            "messages",
            "the last message must be from the user",
        ));
    };
    let history: Vec<ChatMessage> = turns
        .into_iter()
        .filter(|m| m.role == "user" || m.role == "assistant")
        .collect();
    Ok((QueryRequest::new(last.content), history))
}

/// What every response object of one completion repeats.
#[derive(Clone)]
struct ChunkHead {
    id: String,
    created: i64,
    model: String,
}

impl ChunkHead {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }
}

fn usage_json(u: &crate::answer::QueryUsage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// A whole answer as an OpenAI `chat.completion`.
fn completion(head: &ChunkHead, r: crate::answer::QueryResponse) -> Value {
    json!({
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": r.answer.unwrap_or_default()},
            "logprobs": null,
            "finish_reason": finish_reason(&r.finish_reason),
        }],
        "usage": usage_json(&r.usage),
        "citations": r.citations,
    })
}

/// A streamed answer as OpenAI `chat.completion.chunk` events, ending with `[DONE]`.
fn chunk_events(
    answer: impl futures::Stream<Item = AnswerEvent> + Send + 'static,
    head: ChunkHead,
    include_usage: bool,
) -> impl futures::Stream<Item = Event> + Send + 'static {
    let span = tracing::Span::current();
    answer.flat_map(move |ev| {
        let last = matches!(ev, AnswerEvent::Done(_) | AnswerEvent::Error(_));
        let out: Vec<Value> = match ev {
            AnswerEvent::Sources(_) => {
                vec![head.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            AnswerEvent::Token(t) => vec![head.chunk(json!({"content": t}), None)],
            AnswerEvent::Citation(_) => Vec::new(),
            AnswerEvent::Done(d) => {
                let mut v = vec![head.chunk(json!({}), Some(finish_reason(&d.finish_reason)))];
                if include_usage {
                    let mut u = head.chunk(json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = usage_json(&d.usage);
                    v.push(u);
                }
                v
            }
            AnswerEvent::Error(e) => {
                let p = super::query::error_payload(e, &span);
                vec![json!({"error": {"message": p["message"], "type": "server_error", "param": null, "code": p["code"]}})]
            }
        };
        let mut evs: Vec<Event> = out
            .into_iter()
            .map(|v| Event::default().data(v.to_string()))
            .collect();
        if last {
            evs.push(Event::default().data("[DONE]"));
        }
        futures::stream::iter(evs)
    })
}
