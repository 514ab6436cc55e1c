//! The HTTP API (axum): thin handlers that extract a request, call one core function on
//! [`Cairn`] and map the result. No storage access here; no HTTP types below here.

pub mod admin;
pub mod console;
pub mod error;
pub mod graph;
pub mod guard;
mod listen;
pub mod openai;
pub mod openapi;
pub mod query;
pub mod slow;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Path, Query, Request, State,
};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::Instrument;

use crate::error::Code;
use crate::extract::ExtractedDoc;
use crate::search::SearchRequest;
use crate::service::{Cairn, IngestFile, IngestReport, IngestStatus};
use error::{too_large, ApiError, InternalCause};
use openapi::{BadBody, Guarded};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub cairn: Arc<Cairn>,
    /// Requests in flight (`server.max_in_flight`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

/// JSON body extractor whose rejections become Cairn's JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// The router with every route and middleware.
pub fn router(cairn: Arc<Cairn>) -> Router {
    let upload_limit = cairn.config.server.max_upload_bytes;
    let json_limit = cairn.config.server.max_json_bytes;
    crate::telemetry::handle();
    let cors = cors_layer(&cairn.config.server.cors_origins);
    let state = AppState {
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            cairn.config.server.max_in_flight.max(1),
        )),
        cairn,
    };
    let (router, _) = api_router(upload_limit, json_limit).split_for_parts();
    let docs = swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
        uri_prefix: "/docs",
        api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
        title: Some("Cairn API"),
    });
    let router = router
        .merge(docs.with_state::<AppState>(()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::deadline,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::back_pressure,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            slow::body_deadline,
        ));
    // Outside the guards: the console's files are public and the same for everyone.
    let router = match state.cairn.config.server.console {
        true => router.merge(console::routes()),
        false => router,
    };
    let router = match cors {
        Some(c) => router.layer(c),
        None => router,
    };
    router.layer(middleware::from_fn(observe)).with_state(state)
}

/// Every API route, each with its OpenAPI operation (the `routes!` macro takes both from the
/// handler's `#[utoipa::path]`), grouped by body limit. The `/docs` UI and the console are added
/// by [`router`], the only other place a route may be added (a test holds this).
pub fn api_router(upload_limit: usize, json_limit: usize) -> OpenApiRouter<AppState> {
    let uploads = OpenApiRouter::new()
        .routes(routes!(create_sources, list_sources))
        .layer(DefaultBodyLimit::max(upload_limit));
    let json_bodies = OpenApiRouter::new()
        .routes(routes!(search))
        .routes(routes!(query::query))
        .routes(routes!(openai::chat_completions))
        .routes(routes!(openai::embeddings))
        .routes(routes!(admin::create_key, admin::list_keys))
        .layer(DefaultBodyLimit::max(json_limit));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(uploads)
        .merge(json_bodies)
        .routes(routes!(get_source, delete_source))
        .routes(routes!(source_chunks))
        .routes(routes!(admin::me))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(graph::concepts))
        .routes(routes!(graph::graph))
        .routes(routes!(stats))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics_text))
        .routes(routes!(openai::models))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document of [`api_router`] (what `/openapi.json` serves).
pub fn openapi_spec() -> utoipa::openapi::OpenApi {
    let mut spec = api_router(0, 0).split_for_parts().1;
    openapi::error_code_enum(&mut spec);
    spec
}

/// `GET /openapi.json`: this document, generated once.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| openapi::document(&openapi_spec()));
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// CORS from `server.cors_origins`: off when empty, any origin for `["*"]`.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                axum::http::HeaderName::from_static("x-api-key"),
                axum::http::HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                axum::http::HeaderName::from_static("x-request-id"),
                axum::http::HeaderName::from_static("ratelimit-limit"),
                axum::http::HeaderName::from_static("ratelimit-remaining"),
                axum::http::HeaderName::from_static("ratelimit-reset"),
                header::RETRY_AFTER,
            ]),
    )
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    cairn: Arc<Cairn>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(cairn.clone());
    // Rate-limit counters are saved periodically and once more at shutdown.
    let limits = cairn.limits.clone();
    let every = std::time::Duration::from_secs(cairn.config.auth.persist_interval_s.max(1));
    let saver = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = limits.persist() {
                tracing::warn!(error = %e, "could not save rate-limit counters");
            }
        }
    });
    let header_timeout =
        std::time::Duration::from_secs(cairn.config.server.header_read_timeout_s.max(1));
    let r = listen::run(app, listener, header_timeout, shutdown).await;
    saver.abort();
    if let Err(e) = cairn.limits.persist() {
        tracing::warn!(error = %e, "could not save rate-limit counters");
    }
    r
}

/// Request id, a span per request, one access log line, and the single place where internal
/// error causes are logged.
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        request_id = %request_id,
        method = %method,
        path = %path,
        key = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    {
        let h = req.headers();
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        crate::telemetry::set_remote_parent(&span, header("traceparent"), header("tracestate"));
    }
    metrics::gauge!("cairn_http_requests_in_flight").increment(1.0);
    let mut resp = next.run(req).instrument(span.clone()).await;
    metrics::gauge!("cairn_http_requests_in_flight").decrement(1.0);
    let secs = started.elapsed().as_secs_f64();
    let ms = secs * 1e3;
    let status = resp.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("cairn_http_requests_total", &labels).increment(1);
    metrics::histogram!("cairn_http_request_duration_seconds", &labels).record(secs);
    span.in_scope(|| {
        if let Some(InternalCause(cause)) = resp.extensions().get::<InternalCause>() {
            tracing::error!(status, error = %cause, "internal error");
        }
        let caller = resp
            .extensions()
            .get::<guard::Caller>()
            .map(|c| c.0.as_str())
            .unwrap_or("-");
        let bytes = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        tracing::info!(status, ms, route = %labels[1].1, caller, bytes, "request finished");
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(Code::RouteNotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(Code::MethodNotAllowed, "method not allowed on this route")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextSource {
    /// External id; when absent the text's hash identifies it.
    id: Option<String>,
    title: Option<String>,
    text: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// `POST /sources`: multipart files (plus an optional `metadata` JSON field applied to all), or a
/// JSON `{id?, title?, text, metadata?}`.
#[utoipa::path(post, path = "/sources", tag = "sources",
    description = "Add or update documents: multipart files (txt, md, html, pdf, docx, jsonl) with an optional `metadata` JSON field applied to all, or one JSON text document. Re-sending unchanged content changes nothing (200); a changed document replaces its old chunks.",
    request_body(content(
        (openapi::UploadForm = "multipart/form-data"),
        (openapi::TextSourceSchema = "application/json"),
    )),
    responses(
        (status = 201, description = "Something was created or updated", body = openapi::IngestResponse),
        (status = 200, description = "Everything was unchanged", body = openapi::IngestResponse),
        (status = 415, description = "Unsupported content type, or every file was of an unsupported type (`unsupported_media_type`)", body = openapi::IngestFailure),
        (status = 422, description = "Invalid body, or every file failed (`invalid_request`, `unreadable`, ...)", body = openapi::IngestFailure),
        (status = 400, description = "Malformed JSON or multipart body", body = openapi::ErrorResponse),
        (status = 408, description = "The body did not arrive within `server.body_read_timeout_s` (`body_timeout`)", body = openapi::ErrorResponse),
        (status = 413, description = "The body exceeds `server.max_upload_bytes` / `server.max_json_bytes`", body = openapi::ErrorResponse),
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
async fn create_sources(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let cairn = st.cairn.clone();
    let reports = if ctype.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, &st)
            .await
            .map_err(|r| ApiError::new(Code::MalformedMultipart, r.body_text()))?;
        let mut files = Vec::new();
        let mut shared_meta = serde_json::Map::new();
        while let Some(field) = mp.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            match field.file_name().map(str::to_string) {
                Some(fname) if !fname.is_empty() => {
                    let bytes = field.bytes().await?;
                    files.push(IngestFile { name: fname, bytes: bytes.to_vec(), metadata: Default::default() });
                }
                _ if name == "metadata" => {
                    let text = field.text().await?;
                    shared_meta = serde_json::from_str(&text).map_err(|e| {
                        ApiError::new(Code::InvalidRequest, format!("field `metadata` must be a JSON object: {e}"),
                        )
                    })?;
                }
                _ => {
                    return Err(ApiError::new(Code::InvalidRequest, format!("unexpected form field `{name}`: send files (with a filename) and an optional `metadata` field"),
                    ))
                }
            }
        }
        if files.is_empty() {
            return Err(ApiError::new(
                Code::InvalidRequest,
                "no files in the upload",
            ));
        }
        for f in &mut files {
            f.metadata = shared_meta.clone();
        }
        cairn.ingest_files(files, &|_| {}).await?
    } else if ctype.starts_with("application/json") {
        let bytes = Bytes::from_request(req, &st).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::new(Code::BadRequest, r.body_text())
            }
        })?;
        if bytes.len() > cairn.config.server.max_json_bytes {
            return Err(too_large());
        }
        let body: TextSource = serde_json::from_slice(&bytes).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ApiError::new(Code::MalformedJson, e.to_string())
            } else {
                ApiError::new(Code::InvalidRequest, e.to_string())
            }
        })?;
        let doc = text_doc(body)?;
        let label = doc.external_id.clone().unwrap_or_default();
        cairn.ingest_docs(vec![(label, doc)], &|_| {}).await?
    } else {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send multipart/form-data files or an application/json {title, text, metadata} body",
        ));
    };
    Ok(ingest_response(reports))
}

fn text_doc(body: TextSource) -> Result<ExtractedDoc, ApiError> {
    let record = crate::extract::TextRecord {
        id: body.id,
        title: body.title,
        text: body.text,
        metadata: body.metadata,
    };
    crate::extract::text_record(record.or_text_id())
        .map_err(|_| ApiError::new(Code::InvalidRequest, "`text` must not be empty"))
}

/// 201 when anything was created or updated, 200 when everything was unchanged; when every
/// file failed, the first failure's status (415 for an unsupported type, else 422).
fn ingest_response(reports: Vec<IngestReport>) -> Response {
    let any_written = reports
        .iter()
        .any(|r| matches!(r.status, IngestStatus::Created | IngestStatus::Updated));
    let all_failed =
        !reports.is_empty() && reports.iter().all(|r| r.status == IngestStatus::Failed);
    if all_failed {
        let first = reports[0]
            .error
            .clone()
            .expect("failed report has an error");
        let status = if first.code == "unsupported_media_type" {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let body = openapi::IngestFailure {
            error: first,
            sources: Some(reports),
        };
        return (status, Json(body)).into_response();
    }
    let status = if any_written {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = openapi::IngestResponse {
        status: if any_written { "written" } else { "unchanged" },
        sources: reports,
    };
    (status, Json(body)).into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Sources per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /sources`: a page of sources, ordered by id.
#[utoipa::path(get, path = "/sources", tag = "sources", params(ListParams),
    responses(
        (status = 200, description = "A page of sources", body = crate::service::SourcePage),
        (status = 422, description = "Bad parameter (`invalid_request`)", body = openapi::ErrorResponse),
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
async fn list_sources(
    State(st): State<AppState>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = q?;
    let page = st
        .cairn
        .list_sources(p.limit.unwrap_or(50), p.cursor.as_deref())
        .await?;
    Ok(Json(page).into_response())
}

/// `GET /sources/{id}`.
#[utoipa::path(get, path = "/sources/{id}", tag = "sources",
    params(("id" = String, Path, description = "The source id (`source_id` in ingest reports and search hits)")),
    responses(
        (status = 200, description = "The source", body = crate::service::SourceInfo),
        (status = 404, description = "No such source (`not_found`)", body = openapi::ErrorResponse),
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
async fn get_source(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.cairn.get_source(&id).await?).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ChunkParams {
    /// Chunks per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// Chunks to skip (the previous page's `next_offset`).
    offset: Option<usize>,
}

/// `GET /sources/{id}/chunks`: the source's chunks in reading order with their concepts.
#[utoipa::path(get, path = "/sources/{id}/chunks", tag = "sources",
    params(("id" = String, Path, description = "The source id"), ChunkParams),
    responses(
        (status = 200, description = "A page of the source's chunks", body = crate::service::SourceChunks),
        (status = 404, description = "No such source (`not_found`)", body = openapi::ErrorResponse),
        (status = 422, description = "Bad parameter (`invalid_request`)", body = openapi::ErrorResponse),
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
async fn source_chunks(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ChunkParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = q?;
    let page = st
        .cairn
        .source_chunks(&id, p.offset.unwrap_or(0), p.limit.unwrap_or(100))
        .await?;
    Ok(Json(page).into_response())
}

/// `DELETE /sources/{id}`: the source, its chunks, vectors and keyword entries.
#[utoipa::path(delete, path = "/sources/{id}", tag = "sources",
    params(("id" = String, Path, description = "The source id (`source_id` in ingest reports and search hits)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such source (`not_found`)", body = openapi::ErrorResponse),
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
async fn delete_source(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.cairn.delete_source(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /search`.
#[utoipa::path(post, path = "/search", tag = "search",
    description = "Hybrid (BM25 + vectors, fused with weighted reciprocal rank fusion), keyword or vector search, with filters, per-request weights, per-stage timings and, with `explain`, each retriever's score and rank.",
    request_body = SearchRequest,
    responses(
        (status = 200, description = "Ranked chunks with citations", body = crate::search::SearchResponse),
        BadBody,
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
async fn search(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    // The plan checks the limit (1 to 100) with everything else.
    Ok(Json(st.cairn.search(req).await?).into_response())
}

/// `GET /stats`.
#[utoipa::path(get, path = "/stats", tag = "operations",
    responses((status = 200, description = "Counts, sizes, the model and the generator", body = crate::service::Stats), Guarded),
    security(("bearer" = []), ("api_key" = [])))]
async fn stats(State(st): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(st.cairn.stats().await?).into_response())
}

/// `GET /health`: liveness (the process answers).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process answers", body = openapi::Liveness)))]
async fn live(State(st): State<AppState>) -> Response {
    Json(openapi::Liveness {
        status: "ok",
        uptime_s: chrono::Utc::now().timestamp() - st.cairn.started_at,
    })
    .into_response()
}

/// `GET /health/ready`: readiness, each component checked and timed; 503 when one fails.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    description = "Readiness: the store is open, the keyword index readable, the embedder answers a probe within its deadline and the generator (if configured) is reachable; each component with its status and latency.",
    responses(
        (status = 200, description = "Ready", body = crate::service::Health),
        (status = 503, description = "A component failed", body = crate::service::Health),
    ))]
async fn ready(State(st): State<AppState>) -> Response {
    let h = st.cairn.health().await;
    let status = if h.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h)).into_response()
}

/// `GET /metrics`: Prometheus text exposition. Store gauges are refreshed at scrape time.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String),
        (status = 503, description = "No metrics recorder in this process (`metrics_unavailable`)", body = openapi::ErrorResponse),
    ))]
async fn metrics_text(State(st): State<AppState>) -> Response {
    let Some(handle) = crate::telemetry::handle() else {
        return ApiError::new(
            Code::MetricsUnavailable,
            "another metrics recorder is installed in this process",
        )
        .into_response();
    };
    st.cairn.refresh_gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
