//! The one mapping from core errors and request rejections to HTTP: status, a stable code and
//! the JSON body `{"error": {"code", "message"}}`. Internal errors are logged once, by the
//! `log_internal_errors` middleware, and clients only see "internal error".

use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::error::{Code, Error};
use crate::service::ErrorBody;

/// The body of every Cairn error.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_request", "message": "limit must be between 1 and 100"}}))]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    /// The code, and with it the status (the error-code table in `crate::error`).
    pub code: Code,
    pub message: String,
    pub retry_after_s: Option<u64>,
    /// The real cause of an internal error, for the log only.
    pub internal: Option<String>,
    /// Close matches for an unknown name (`concept_not_found`).
    pub suggestions: Option<Vec<String>>,
}

/// Carried in the response extensions so the middleware can log the cause.
#[derive(Clone, Debug)]
pub struct InternalCause(pub String);

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_s: None,
            internal: None,
            suggestions: None,
        }
    }

    /// The HTTP status, from the error-code table.
    pub fn status(&self) -> StatusCode {
        status_of_code(self.code)
    }
}

/// The HTTP status of a code (the table holds it as a number).
pub fn status_of_code(code: Code) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let retry_after_s = match &e {
            Error::Busy { retry_after_s } => Some(*retry_after_s),
            _ => None,
        };
        let suggestions = match &e {
            Error::UnknownConcept { suggestions, .. } => Some(suggestions.clone()),
            _ => None,
        };
        if e.is_internal() {
            Self {
                code: e.code(),
                message: "internal error".into(),
                retry_after_s,
                internal: Some(e.chain()),
                suggestions: None,
            }
        } else {
            Self {
                code: e.code(),
                message: e.to_string(),
                retry_after_s,
                // A full disk is the operator's to see: its cause is logged like an internal one.
                internal: matches!(e, Error::NoSpace(_)).then(|| e.chain()),
                suggestions,
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match &r {
            JsonRejection::JsonSyntaxError(_) => ApiError::new(Code::MalformedJson, r.body_text()),
            JsonRejection::JsonDataError(_) => ApiError::new(Code::InvalidRequest, r.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                Code::UnsupportedMediaType,
                "expected `Content-Type: application/json`",
            ),
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            _ => ApiError::new(Code::BadRequest, r.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(Code::InvalidRequest, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(Code::BadRequest, r.body_text())
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::new(Code::MalformedMultipart, e.body_text())
        }
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(Code::PayloadTooLarge, "request body is larger than the configured limit (server.max_json_bytes / server.max_upload_bytes)",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code.as_str().to_string(),
                message: self.message,
                suggestions: self.suggestions,
            },
        };
        let mut resp = (status_of_code(self.code), Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if let Some(cause) = self.internal {
            resp.extensions_mut().insert(InternalCause(cause));
        }
        resp
    }
}
