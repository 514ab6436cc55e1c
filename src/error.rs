//! The core error type: transport-neutral, with a stable machine-readable `code()`, and the
//! one table of error codes.
//!
//! Core services return [`Error`]; its [`Code`] carries the HTTP status (a number: the core
//! sees no HTTP types) and a description, from the [`error_codes!`] table below, which also
//! drives `http::error::ApiError`, the OpenAPI schema's `ErrorCode` enum and the test that
//! `docs/api.md` lists every code. The CLI prints the message. Internal errors carry their
//! cause for the log but clients only ever see a generic message (see `http::error`).

use crate::extract::ExtractError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Declares [`Code`]: one line per code, `Variant = status, "code", "when it is returned"`.
macro_rules! error_codes {
    ($($variant:ident = $status:literal, $code:literal, $when:literal;)*) => {
        /// Every error code a client can see. `as_str` is the wire form.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $(#[doc = $when] $variant,)*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable wire form, e.g. `"invalid_request"`.
            pub const fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// The HTTP status of a response with this code.
            pub const fn status(self) -> u16 {
                match self { $(Code::$variant => $status,)* }
            }

            /// When the code is returned (the docs' wording).
            pub const fn description(self) -> &'static str {
                match self { $(Code::$variant => $when,)* }
            }
        }
    };
}

error_codes! {
    BadRequest = 400, "bad_request", "a body or path parameter that cannot be read at all";
    MalformedJson = 400, "malformed_json", "the body is not valid JSON";
    MalformedMultipart = 400, "malformed_multipart", "a broken multipart body";
    Unauthorized = 401, "unauthorized", "no credentials where auth is on (with `WWW-Authenticate: Bearer`)";
    InvalidCredentials = 401, "invalid_credentials", "an unknown, wrong, expired or revoked key; a token with a bad signature, `aud`, `iss`, `exp`, `nbf` or an unknown tier";
    Forbidden = 403, "forbidden", "the key or token lacks the route's scope";
    NotFound = 404, "not_found", "unknown source id";
    ConceptNotFound = 404, "concept_not_found", "`/graph/{concept}` names no known concept (`error.suggestions` lists close ones)";
    RouteNotFound = 404, "route_not_found", "unknown path";
    ModelNotFound = 404, "model_not_found", "`/v1/*` names a model this server does not serve";
    MethodNotAllowed = 405, "method_not_allowed", "known path, wrong method";
    BodyTimeout = 408, "body_timeout", "the request body did not arrive whole within `server.body_read_timeout_s` (the connection is closed)";
    PayloadTooLarge = 413, "payload_too_large", "body over `server.max_json_bytes` / `server.max_upload_bytes`, or a file over `ingest.max_file_bytes`";
    UnsupportedMediaType = 415, "unsupported_media_type", "wrong `Content-Type`, or an upload whose file type Cairn cannot read";
    InvalidRequest = 422, "invalid_request", "valid JSON with bad values or unknown fields (the message names the field)";
    UnreadableDocument = 422, "unreadable_document", "a supported file that is corrupt, empty or a bad JSONL record, or whose parser crashed (the reason says which)";
    DocumentTooLarge = 422, "document_too_large", "a file whose extraction needs more than `ingest.extract_memory_mb`, or an archive member that inflates past its cap (a zip bomb)";
    ExtractTimeout = 422, "extract_timeout", "a file whose extraction ran past `ingest.extract_timeout_s` (the worker is killed)";
    RerankerUnavailable = 422, "reranker_unavailable", "`rerank: true` but no cross-encoder is installed (the message says how to get one)";
    GraphUnavailable = 422, "graph_unavailable", "`use_graph: true` but concept extraction is off (`graph.concepts_per_chunk = 0`)";
    GeneratorUnavailable = 422, "generator_unavailable", "`/query` asked for a generator this server does not have";
    ModelUnavailable = 422, "model_unavailable", "the embedding model or its runtime is missing or cannot load (the message says how to fetch it)";
    RateLimited = 429, "rate_limited", "the tier's hourly quota is spent, or too many of the caller's requests run at once (with `Retry-After`)";
    Internal = 500, "internal", "a bug or a storage failure (logged with the cause; clients see no internals)";
    EmbeddingFailed = 500, "embedding_failed", "the embedding model failed on this input (logged with the cause)";
    UpstreamError = 502, "upstream_error", "the `openai` generator's API failed (after retries on 429/5xx) or sent something malformed";
    Overloaded = 503, "overloaded", "too many requests in flight, embedding queue full for 30 s, or every generation slot busy for `generator.queue_timeout_ms` (with `Retry-After`)";
    DataDirLocked = 503, "data_dir_locked", "another `cairn` process holds the data dir";
    MetricsUnavailable = 503, "metrics_unavailable", "another metrics recorder is installed in this process";
    Timeout = 504, "timeout", "the request outlived `server.search_timeout_s` / `query_timeout_s` / `ingest_timeout_s`";
    UpstreamTimeout = 504, "upstream_timeout", "the `openai` generator's API was silent for `generator.read_timeout_s`";
    InsufficientStorage = 507, "insufficient_storage", "the data dir's disk is full: nothing of the write was kept, reads go on, and writes succeed again once space is freed (no restart)";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed JSON but its values are not acceptable.
    #[error("{0}")]
    InvalidInput(String),
    /// A named thing does not exist.
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("concept `{name}` not found{}", did_you_mean(suggestions))]
    UnknownConcept {
        name: String,
        suggestions: Vec<String>,
    },
    /// A file type Cairn cannot read.
    #[error(transparent)]
    Unsupported(ExtractError),
    /// A file of a supported type that could not be read (corrupt, empty, bad record).
    #[error(transparent)]
    Unreadable(ExtractError),
    /// An option that exists in the API but needs a component that is not installed.
    #[error("{message}")]
    Unavailable { code: Code, message: String },
    /// Too much work in flight; the caller should retry after the given seconds.
    #[error("server is busy, retry in {retry_after_s} s")]
    Busy { retry_after_s: u64 },
    /// Another process holds the data dir's writer lock.
    #[error("{0}")]
    Locked(String),
    /// The embedding model or runtime failed.
    #[error("embedding failed: {0}")]
    Embedding(String),
    /// The remote generator API failed or answered something unusable.
    #[error("{0}")]
    Upstream(String),
    /// The remote generator API did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// A write failed because the data dir's disk is full (or a quota is spent). The write was
    /// rolled back; the cause is kept for the log.
    #[error("the data dir's disk is full: nothing of this write was kept; free space and retry")]
    NoSpace(#[source] Internal),
    /// Storage or any other internal failure; the message is for logs, not clients. The
    /// underlying error is kept with its `source()` chain ([`Error::chain`] prints it).
    #[error("internal error: {0}")]
    Internal(#[source] Internal),
}

/// An internal failure: what failed, and the underlying error when there is one.
#[derive(Debug)]
pub struct Internal {
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {s}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Internal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// Stable code for clients and metrics; its status is the HTTP status.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidInput(_) => Code::InvalidRequest,
            Error::NotFound { .. } => Code::NotFound,
            Error::UnknownConcept { .. } => Code::ConceptNotFound,
            Error::Unsupported(_) => Code::UnsupportedMediaType,
            Error::Unreadable(ExtractError::TooLarge { .. }) => Code::DocumentTooLarge,
            Error::Unreadable(ExtractError::Timeout { .. }) => Code::ExtractTimeout,
            Error::Unreadable(_) => Code::UnreadableDocument,
            Error::Unavailable { code, .. } => *code,
            Error::Busy { .. } => Code::Overloaded,
            Error::Locked(_) => Code::DataDirLocked,
            Error::Embedding(_) => Code::EmbeddingFailed,
            Error::Upstream(_) => Code::UpstreamError,
            Error::UpstreamTimeout(_) => Code::UpstreamTimeout,
            Error::NoSpace(_) => Code::InsufficientStorage,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// An internal error from a message (no underlying error).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(Internal {
            context: e.to_string(),
            source: None,
        })
    }

    /// An internal error that keeps its cause (and the cause's own chain).
    pub fn internal_from(
        context: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Internal(Internal {
            context: context.to_string(),
            source: Some(Box::new(source)),
        })
    }

    /// The message and every cause below it that it does not already show, for the log.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let shown = c.to_string();
            if !out.contains(&shown) {
                out.push_str(": ");
                out.push_str(&shown);
            }
            cause = c.source();
        }
        out
    }

    /// An internal error as [`Error::NoSpace`] (the caller knows the disk is full); other
    /// errors unchanged.
    pub fn into_no_space(self) -> Self {
        match self {
            Error::Internal(i) => Error::NoSpace(i),
            other => other,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// Whether the message may be shown to a client as is.
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Internal(_) | Error::Embedding(_))
    }
}

fn did_you_mean(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; did you mean: {}?", s.join(", "))
    }
}

impl From<ExtractError> for Error {
    fn from(e: ExtractError) -> Self {
        match e {
            ExtractError::Unsupported(_) => Error::Unsupported(e),
            other => Error::Unreadable(other),
        }
    }
}

/// A storage failure: [`Error::NoSpace`] when the disk is full, else [`Error::Internal`].
fn storage(context: &str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    let full = no_space(&source);
    let inner = Internal {
        context: context.to_string(),
        source: Some(Box::new(source)),
    };
    if full {
        Error::NoSpace(inner)
    } else {
        Error::Internal(inner)
    }
}

/// Whether an error or one of its causes is a full disk or a spent disk quota. LanceDB and
/// tantivy do not always keep the `io::Error` in the chain, so their messages count too.
pub fn no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
                || matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
            {
                return true;
            }
        }
        let msg = c.to_string();
        if [
            "No space left on device",
            "(os error 28)",
            "Disk quota exceeded",
        ]
        .iter()
        .any(|m| msg.contains(m))
        {
            return true;
        }
        cur = c.source();
    }
    false
}

impl From<lancedb::Error> for Error {
    fn from(e: lancedb::Error) -> Self {
        storage("lancedb", e)
    }
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        match e {
            tantivy::TantivyError::LockFailure(..) => Error::Locked(
                "the data dir is in use by another cairn process (a running `cairn serve`?); \
                 stop it, or send the work to it with `--server URL`"
                    .into(),
            ),
            other => storage("tantivy", other),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        storage("io", e)
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Error::internal_from("arrow", e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::internal_from("json", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_with_error_statuses() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}"
            );
            assert!((400..600).contains(&c.status()), "{c}");
            assert!(!c.description().is_empty());
        }
    }

    #[test]
    fn docs_api_md_lists_every_code_with_its_status() {
        let doc = include_str!("../docs/api.md");
        for c in Code::ALL {
            let row = format!("| {} | `{}` |", c.status(), c.as_str());
            assert!(doc.contains(&row), "docs/api.md lacks the row `{row} ...`");
        }
    }

    #[test]
    fn internal_errors_keep_their_cause_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer failed")]
        struct Outer(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        let e = Error::internal_from("lancedb", Outer(io));
        assert_eq!(e.code(), Code::Internal);
        assert_eq!(e.to_string(), "internal error: lancedb: outer failed");
        assert_eq!(
            e.chain(),
            "internal error: lancedb: outer failed: disk full"
        );
        let root = std::error::Error::source(&e)
            .and_then(|c| c.source())
            .and_then(|c| c.source());
        assert_eq!(root.map(|r| r.to_string()), Some("disk full".into()));
        assert_eq!(Error::internal("plain").chain(), "internal error: plain");
    }

    #[test]
    fn extract_errors_get_their_own_codes() {
        let kind = "pdf";
        let e = |x| Error::from(x).code();
        assert_eq!(e(ExtractError::Empty), Code::UnreadableDocument);
        assert_eq!(
            e(ExtractError::Unsupported(".x".into())),
            Code::UnsupportedMediaType
        );
        assert_eq!(
            e(ExtractError::Timeout { kind, limit_s: 1 }),
            Code::ExtractTimeout
        );
        let big = ExtractError::TooLarge {
            kind,
            reason: "r".into(),
        };
        assert_eq!(e(big), Code::DocumentTooLarge);
    }

    #[test]
    fn a_full_disk_is_insufficient_storage_wherever_it_shows() {
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(Error::from(enospc).code(), Code::InsufficientStorage);
        let quota = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert_eq!(Error::from(quota).code(), Code::InsufficientStorage);
        // Flattened into a message by a library, below another error.
        let flat =
            std::io::Error::other("writing a fragment: No space left on device (os error 28)");
        let wrapped = tantivy::TantivyError::from(flat);
        assert_eq!(Error::from(wrapped).code(), Code::InsufficientStorage);
        let other = std::io::Error::from_raw_os_error(libc::EACCES);
        let e = Error::from(other);
        assert_eq!(e.code(), Code::Internal);
        assert_eq!(e.code().status(), 500);
        assert_eq!(Code::InsufficientStorage.status(), 507);
    }
}
