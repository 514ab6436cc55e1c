//! The OpenAPI 3.1 description of the HTTP API, generated from the code: every handler carries
//! a `#[utoipa::path]` and is mounted through `utoipa_axum::routes!`, so a route cannot be
//! served without being described. `/openapi.json` serves the document and `/docs` an
//! embedded Swagger UI (the assets are compiled into the binary: no CDN, works offline).
//!
//! The wire types of the core (search, answers, sources, keys) derive their schemas where
//! they are defined; this module adds what only exists on the wire: the error envelope, the
//! multipart upload form, the OpenAI-compatible shapes, the security schemes and the shared
//! error responses.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

pub use super::error::ErrorResponse;
use crate::service::ErrorBody;

/// The top-level document: metadata, security schemes and tags. Paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cairn",
        description = "Hybrid search and cited, retrieval-augmented answers over your documents.\n\n\
            Every error is `{\"error\": {\"code\", \"message\"}}` with a stable `code` (the \
            OpenAI-compatible `/v1/*` routes use OpenAI's error shape, which also carries `code` \
            and `message`). Every response carries `X-Request-Id`; when auth is on, \
            authenticated responses carry `RateLimit-Limit`, `RateLimit-Remaining` and \
            `RateLimit-Reset`, and 429/503 carry `Retry-After`.\n\n\
            Credentials: `Authorization: Bearer <key or JWT>` or `X-API-Key: <key>`. Health, \
            metrics and these docs need none by default (`auth.public_paths`).",
        license(name = "Apache-2.0"),
    ),
    paths(docs_ui),
    modifiers(&Security),
    components(schemas(ErrorResponse, ErrorBody, OpenAiErrorResponse, OpenAiErrorBody)),
    tags(
        (name = "search", description = "Hybrid, keyword and vector search"),
        (name = "graph", description = "The concept graph: concepts and their neighbourhoods"),
        (name = "answers", description = "Cited answers, as JSON or server-sent events"),
        (name = "sources", description = "Add, list and delete documents"),
        (name = "admin", description = "API keys (scope `admin`)"),
        (name = "openai", description = "OpenAI-compatible chat, embeddings and models"),
        (name = "operations", description = "Health, readiness, stats, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Security schemes: bearer (API key or JWT) and the `X-API-Key` header.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`cairn_...`) or a JWT, depending on `auth.mode`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// `ErrorBody.code` as the enum of the error-code table (`crate::error::Code`), set on the
/// assembled document (the routes' schemas are merged in after the derive's modifiers run).
pub fn error_code_enum(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;
    let Some(components) = spec.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut("ErrorBody") else {
        return;
    };
    let codes = crate::error::Code::ALL.iter().map(|c| c.as_str());
    let code = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(codes))
        .description(Some(
            "A stable error code; docs/api.md says when each is returned",
        ))
        .build();
    body.properties.insert("code".into(), code.into());
}

/// Errors of any guarded route: authentication, scopes, rate limits, overload, deadlines.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Guarded {
    /// Missing or invalid credentials (`unauthorized`, `invalid_credentials`); carries
    /// `WWW-Authenticate`.
    #[response(status = 401)]
    Unauthorized(ErrorResponse),
    /// The credential lacks the route's scope (`forbidden`).
    #[response(status = 403)]
    Forbidden(ErrorResponse),
    /// The tier's hourly quota or concurrency is spent (`rate_limited`); carries `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorResponse),
    /// Internal error (`internal`); the cause is logged, never sent.
    #[response(status = 500)]
    Internal(ErrorResponse),
    /// Overloaded or busy (`overloaded`, `busy`, `locked`); carries `Retry-After`.
    #[response(status = 503)]
    Unavailable(ErrorResponse),
    /// The request outlived its deadline (`timeout`).
    #[response(status = 504)]
    Timeout(ErrorResponse),
}

/// Errors of a route that takes a JSON body.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum BadBody {
    /// The body is not JSON (`malformed_json`, `bad_request`).
    #[response(status = 400)]
    Malformed(ErrorResponse),
    /// The body did not arrive within `server.body_read_timeout_s` (`body_timeout`).
    #[response(status = 408)]
    SlowBody(ErrorResponse),
    /// The body exceeds `server.max_json_bytes` or `server.max_upload_bytes`
    /// (`payload_too_large`).
    #[response(status = 413)]
    TooLarge(ErrorResponse),
    /// Not `application/json` (`unsupported_media_type`).
    #[response(status = 415)]
    Unsupported(ErrorResponse),
    /// A field is missing, unknown or out of range (`invalid_request`).
    #[response(status = 422)]
    Invalid(ErrorResponse),
}

/// `POST /sources` as JSON: one text document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TextSourceSchema {
    /// External id; re-sending the same id replaces the document. Default: a hash of the text.
    id: Option<String>,
    /// Default: the first 80 characters of the text.
    title: Option<String>,
    /// The document; blank lines separate paragraphs. Must not be empty.
    text: String,
    /// Any JSON object; top-level scalars (and arrays of scalars) become filterable.
    #[schema(value_type = Object)]
    metadata: Option<serde_json::Value>,
}

/// `POST /sources` as `multipart/form-data`: one or more files and an optional metadata object.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// A file (txt, md, html, pdf, docx, jsonl); any field name, a filename is required.
    /// Send the field several times for several files.
    #[schema(format = Binary)]
    file: String,
    /// A JSON object applied to every file's metadata.
    metadata: Option<String>,
}

/// The result of `POST /sources`.
#[derive(Serialize, ToSchema)]
pub struct IngestResponse {
    /// `written` (something was created or updated) or `unchanged`.
    pub status: &'static str,
    pub sources: Vec<crate::service::IngestReport>,
}

/// A failed `POST /sources`: the first failure's error, and every file's outcome when files
/// were read (absent when the request itself was refused).
#[derive(Serialize, ToSchema)]
pub struct IngestFailure {
    pub error: ErrorBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<crate::service::IngestReport>>,
}

/// One server-sent event of `POST /query` (`stream: true`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct QueryEvent {
    /// `sources` (data `{"citations": [Citation]}`), `token` (`{"delta": "..."}`), `citation`
    /// (a Citation), `done` (an AnswerDone) or `error` (`{"code", "message"}`).
    #[schema(pattern = "^(sources|token|citation|done|error)$")]
    event: String,
    /// The event's JSON payload.
    #[schema(content_media_type = "application/json")]
    data: String,
    /// 0, 1, 2, ... in order.
    #[schema(pattern = "^[0-9]+$")]
    id: String,
}

/// One server-sent event of a streamed `POST /v1/chat/completions`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatStreamEvent {
    /// A `chat.completion.chunk` as JSON (an error in OpenAI's shape if generation fails), or
    /// `[DONE]` last.
    data: String,
    #[schema(pattern = "^[0-9]+$")]
    id: String,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: &'static str,
    /// Seconds since the server started.
    pub uptime_s: i64,
}

/// `GET /admin/keys`.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<crate::auth::keys::KeyInfo>,
}

/// An error in OpenAI's shape.
#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorResponse {
    pub error: OpenAiErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub message: String,
    /// `invalid_request_error`, `server_error` or `overloaded_error`.
    pub r#type: &'static str,
    pub param: Option<&'static str>,
    pub code: &'static str,
}

/// Errors of the OpenAI-compatible routes that the route itself returns (OpenAI's shape);
/// the guards before it answer in Cairn's shape ([`Guarded`]).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum OpenAiErrors {
    /// The body is invalid (`invalid_request`).
    #[response(status = 400)]
    Invalid(OpenAiErrorResponse),
    /// Unknown model (`model_not_found`), or no generator configured.
    #[response(status = 404)]
    NotFound(OpenAiErrorResponse),
    /// The body exceeds `server.max_json_bytes` (`payload_too_large`).
    #[response(status = 413)]
    TooLarge(OpenAiErrorResponse),
    /// A valid request the server cannot serve (e.g. a generator that is unavailable).
    #[response(status = 422)]
    Unprocessable(OpenAiErrorResponse),
    /// The upstream model API failed (`upstream`).
    #[response(status = 502)]
    Upstream(OpenAiErrorResponse),
}

/// `POST /v1/embeddings`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EmbeddingsRequestSchema {
    /// A string or an array of 1 to 2048 non-empty strings.
    #[schema(value_type = Object)]
    input: serde_json::Value,
    /// The embedding model's name (see `/v1/models`) or `default`.
    #[schema(example = "default")]
    model: String,
    /// `float` (default) or `base64` (little-endian f32).
    encoding_format: Option<String>,
    /// Must equal the model's dimension if given.
    dimensions: Option<u32>,
    user: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EmbeddingList {
    /// `list`.
    object: String,
    data: Vec<EmbeddingItem>,
    model: String,
    usage: EmbeddingUsage,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EmbeddingItem {
    /// `embedding`.
    object: String,
    index: u32,
    /// An array of floats, or a base64 string when `encoding_format` is `base64`.
    #[schema(value_type = Object)]
    embedding: serde_json::Value,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ModelList {
    /// `list`.
    object: String,
    data: Vec<ModelInfo>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ModelInfo {
    id: String,
    /// `model`.
    object: String,
    created: i64,
    owned_by: String,
}

/// `POST /v1/chat/completions`. Unknown fields are ignored, as OpenAI clients send many.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatRequestSchema {
    /// The generator's model name (see `/v1/models`) or its backend (`llama`, `openai`).
    model: String,
    /// The last message must be from the user; earlier user/assistant turns are history.
    messages: Vec<ChatMessageSchema>,
    /// Stream `chat.completion.chunk` events, ended by `data: [DONE]`.
    stream: Option<bool>,
    stream_options: Option<StreamOptionsSchema>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    /// Only 1 is supported.
    n: Option<u32>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatMessageSchema {
    /// `system`, `developer`, `user` or `assistant`.
    role: String,
    /// A string, or an array of `{"type": "text", "text": ...}` parts.
    #[schema(value_type = Object)]
    content: Option<serde_json::Value>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StreamOptionsSchema {
    include_usage: Option<bool>,
}

/// A `chat.completion`, with Cairn's `citations` added.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatCompletion {
    id: String,
    /// `chat.completion`.
    object: String,
    created: i64,
    model: String,
    choices: Vec<ChatChoice>,
    usage: ChatUsage,
    citations: Vec<crate::answer::Citation>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatChoice {
    index: u32,
    message: ChatMessageOut,
    #[schema(value_type = Option<Object>)]
    logprobs: Option<serde_json::Value>,
    /// `stop` or `length`.
    finish_reason: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatMessageOut {
    /// `assistant`.
    role: String,
    content: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// `GET /docs`: the embedded Swagger UI. Mounted by `http::router` from `swagger_ui_dist` (with
/// its scripts and styles under `/docs/`); this function only carries the description.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "Swagger UI for this document (HTML; its scripts and styles are served under `/docs/`, nothing is loaded from elsewhere)", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn docs_ui() {}

/// The OpenAPI document as JSON (what `/openapi.json` serves).
pub fn document(api: &utoipa::openapi::OpenApi) -> String {
    api.to_pretty_json()
        .expect("an OpenAPI document always serialises")
}
