//! Request guards, outermost first after `observe`: global back-pressure (`max_in_flight` →
//! 503), authentication and scopes (401/403), per-tier rate and concurrency limits (429 with
//! `RateLimit-*` headers on every response), and per-endpoint deadlines (504). Public paths
//! (`auth.public_paths`: health, metrics and the API docs by default) skip all of it.

use crate::error::Code;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::error::ApiError;
use super::AppState;
use crate::auth::limits::Quotas;
use crate::auth::{AuthError, Principal, Scope};
use crate::config::AuthMode;

/// The caller's name (key name or token subject), for the access log.
#[derive(Clone, Debug)]
pub struct Caller(pub String);

fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
}

/// The scope each route needs (`None`: any valid credential).
pub fn scope_of(method: &Method, route: &str) -> Option<Scope> {
    Some(match (method.as_str(), route) {
        // Any valid credential may ask who it is.
        (_, "/me") => return None,
        (_, "/query" | "/v1/chat/completions") => Scope::Query,
        ("POST", "/sources") | ("DELETE", "/sources/{id}") => Scope::Ingest,
        (_, r) if r.starts_with("/admin/") => Scope::Admin,
        _ => Scope::Search,
    })
}

fn is_public(st: &AppState, req: &Request) -> bool {
    let path = req.uri().path();
    st.cairn
        .config
        .auth
        .public_paths
        .iter()
        .any(|p| match p.strip_suffix("/*") {
            Some(prefix) => path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/')),
            None => p == path,
        })
}

/// The presented credential: `Authorization: Bearer X`, else `X-API-Key: X` (also when an
/// `Authorization` header of another scheme is present, e.g. a proxy's `Basic`).
fn credential(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        });
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let mut api = ApiError::new(e.code(), e.to_string());
        if let AuthError::Internal(cause) = &e {
            api.message = "internal error".into();
            api.internal = Some(cause.clone());
        }
        api
    }
}

fn set_quota_headers(h: &mut HeaderMap, q: &Quotas) {
    for (name, v) in [
        ("ratelimit-limit", q.limit as u64),
        ("ratelimit-remaining", q.remaining as u64),
        ("ratelimit-reset", q.reset_s),
    ] {
        h.insert(name, HeaderValue::from(v));
    }
}

/// 503 when too many requests are in flight, before any other work.
pub async fn back_pressure(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if is_public(&st, &req) {
        return next.run(req).await;
    }
    let Ok(_permit) = st.in_flight.clone().try_acquire_owned() else {
        metrics::counter!("cairn_overload_rejections_total").increment(1);
        let mut e = ApiError::new(
            Code::Overloaded,
            "too many requests in flight (server.max_in_flight); retry shortly",
        );
        e.retry_after_s = Some(1);
        return e.into_response();
    };
    hold_for_streams(next.run(req).await, _permit)
}

/// A streamed response keeps its permit until the stream ends (or the client leaves).
fn hold_for_streams<T: Send + 'static>(resp: Response, permit: T) -> Response {
    let streaming = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !streaming {
        return resp;
    }
    resp.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _held = &permit;
            chunk
        }))
    })
}

/// Authentication, scope and rate limits.
pub async fn authorize(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    if is_public(&st, &req) {
        return next.run(req).await;
    }
    let cairn = &st.cairn;
    let scope = scope_of(req.method(), &route_of(&req));
    let principal = if cairn.auth.mode == AuthMode::Disabled {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        Principal {
            name: "anonymous".into(),
            subject: format!("ip:{ip}"),
            tier: "anonymous".into(),
            scopes: Scope::ALL.to_vec(),
        }
    } else {
        match cairn.auth.authenticate(credential(req.headers()), scope) {
            Ok(p) => p,
            Err(e) => {
                metrics::counter!("cairn_auth_failures_total", "code" => e.code().as_str())
                    .increment(1);
                let challenge = match &e {
                    AuthError::Missing => Some("Bearer realm=\"cairn\""),
                    AuthError::Invalid(_) => {
                        Some("Bearer realm=\"cairn\", error=\"invalid_token\"")
                    }
                    _ => None,
                };
                let mut resp = ApiError::from(e).into_response();
                if let Some(c) = challenge {
                    resp.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
                }
                return resp;
            }
        }
    };
    tracing::Span::current().record("key", principal.name.as_str());
    let admission = match cairn.limits.admit(&principal) {
        Ok(a) => a,
        Err(r) => {
            metrics::counter!("cairn_rate_limited_total", "tier" => r.tier.clone(), "reason" => r.reason)
                .increment(1);
            let msg = if r.reason == "rate" {
                format!(
                    "the hourly quota of tier `{}` ({} requests) is spent; retry in {} s",
                    r.tier, r.quotas.limit, r.retry_after_s
                )
            } else {
                format!(
                    "too many concurrent requests for tier `{}`; retry when one finishes",
                    r.tier
                )
            };
            let mut e = ApiError::new(Code::RateLimited, msg);
            e.retry_after_s = Some(r.retry_after_s);
            let mut resp = e.into_response();
            set_quota_headers(resp.headers_mut(), &r.quotas);
            resp.extensions_mut().insert(Caller(principal.name));
            return resp;
        }
    };
    let quotas = admission.quotas;
    req.extensions_mut().insert(principal.clone());
    let mut resp = hold_for_streams(next.run(req).await, admission);
    set_quota_headers(resp.headers_mut(), &quotas);
    resp.extensions_mut().insert(Caller(principal.name));
    resp
}

/// 504 when a request outlives its endpoint's deadline.
pub async fn deadline(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let s = &st.cairn.config.server;
    let route = route_of(&req);
    let secs = match (req.method().as_str(), route.as_str()) {
        (_, "/query" | "/v1/chat/completions") => s.query_timeout_s,
        ("POST", "/sources") => s.ingest_timeout_s,
        _ => s.search_timeout_s,
    };
    match tokio::time::timeout(Duration::from_secs(secs), next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            metrics::counter!("cairn_timeouts_total", "route" => route).increment(1);
            ApiError::new(
                Code::Timeout,
                format!("the request took longer than {secs} s"),
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_credential_is_the_bearer_else_the_api_key_header() {
        let both = headers(&[("authorization", "Bearer a"), ("x-api-key", "b")]);
        assert_eq!(credential(&both), Some("a"));
        let basic = headers(&[("authorization", "Basic dTpw"), ("x-api-key", "b")]);
        assert_eq!(
            credential(&basic),
            Some("b"),
            "another scheme does not hide X-API-Key"
        );
        assert_eq!(credential(&headers(&[("x-api-key", "b")])), Some("b"));
        assert_eq!(
            credential(&headers(&[("authorization", "Basic dTpw")])),
            None
        );
        assert_eq!(credential(&headers(&[])), None);
    }
}
