//! OpenAI-compatible endpoints, so existing tools can use Cairn as their embedding backend:
//! `POST /v1/embeddings` and `GET /v1/models`, with OpenAI's request, response and error shapes
//! (`{"error": {"message", "type", "param", "code"}}`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::error::Error;

/// An error in OpenAI's shape (a superset of Cairn's: it also has `code` and `message`).
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<&'static str>,
    message: String,
}

impl OpenAiError {
    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_request",
            param: Some(param),
            message: message.into(),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code}});
        (self.status, Json(body)).into_response()
    }
}

impl From<Error> for OpenAiError {
    fn from(e: Error) -> Self {
        let api = super::error::ApiError::from(e);
        let kind = match api.status.as_u16() {
            400..=499 => "invalid_request_error",
            503 => "overloaded_error",
            _ => "server_error",
        };
        Self {
            status: api.status,
            kind,
            code: api.code,
            param: None,
            message: api.message,
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
pub async fn embeddings(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, OpenAiError> {
    let req: EmbeddingsRequest = serde_json::from_slice(&body)
        .map_err(|e| OpenAiError::invalid("input", format!("invalid request body: {e}")))?;
    let cairn = &st.cairn;
    let model = cairn.embedder.name().to_string();
    if req.model != model && req.model != "default" {
        return Err(OpenAiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            param: Some("model"),
            message: format!(
                "the model `{}` does not exist; available: `{model}`",
                req.model
            ),
        });
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
pub async fn models(State(st): State<AppState>) -> Json<Value> {
    let created = st.cairn.started_at;
    Json(json!({
        "object": "list",
        "data": [{"id": st.cairn.embedder.name(), "object": "model", "created": created, "owned_by": "cairn"}],
    }))
}
