//! The core error type: transport-neutral, with a stable machine-readable `code()`.
//!
//! Core services return [`Error`]; the HTTP layer maps each variant to a status exactly once
//! (`http::error`), and the CLI prints the message. Internal errors carry their cause for the
//! log but clients only ever see a generic message (see `http::error`).

use crate::extract::ExtractError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    Unavailable { code: &'static str, message: String },
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
    /// Storage or any other internal failure; the message is for logs, not clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Stable code for clients and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_request",
            Error::NotFound { .. } => "not_found",
            Error::UnknownConcept { .. } => "concept_not_found",
            Error::Unsupported(_) => "unsupported_media_type",
            Error::Unreadable(_) => "unreadable_document",
            Error::Unavailable { code, .. } => code,
            Error::Busy { .. } => "overloaded",
            Error::Locked(_) => "data_dir_locked",
            Error::Embedding(_) => "embedding_failed",
            Error::Upstream(_) => "upstream_error",
            Error::UpstreamTimeout(_) => "upstream_timeout",
            Error::Internal(_) => "internal",
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
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

impl From<lancedb::Error> for Error {
    fn from(e: lancedb::Error) -> Self {
        Error::Internal(format!("lancedb: {e}"))
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
            other => Error::Internal(format!("tantivy: {other}")),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(format!("io: {e}"))
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Error::Internal(format!("arrow: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("json: {e}"))
    }
}
