//! `/admin/keys`: create (the key is in the response, once), list, revoke. Scope `admin`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::openapi::{BadBody, Guarded};
use super::{ApiJson, AppState};
use crate::auth::Scope;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for people (logs show it, never the key).
    #[schema(min_length = 1)]
    name: String,
    /// A configured tier (`auth.tiers`); default `standard`.
    #[serde(default = "default_tier")]
    tier: String,
    /// Default `["search", "query"]`.
    #[serde(default = "default_scopes")]
    scopes: Vec<Scope>,
    /// Unix seconds.
    #[serde(default)]
    expires_at: Option<i64>,
}

fn default_tier() -> String {
    "standard".into()
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Search, Scope::Query]
}

/// `POST /admin/keys`: the key is in this response and nowhere else, ever.
#[utoipa::path(post, path = "/admin/keys", tag = "admin", request_body = CreateKey,
    responses(
        (status = 201, description = "The new key (`key` is shown once)", body = crate::auth::keys::NewKey),
        BadBody,
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_key(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let k = st
        .cairn
        .create_key(&req.name, &req.tier, req.scopes, req.expires_at)?;
    Ok((StatusCode::CREATED, Json(k)).into_response())
}

/// `GET /admin/keys`: every key's metadata (never the key).
#[utoipa::path(get, path = "/admin/keys", tag = "admin",
    responses((status = 200, description = "The keys", body = super::openapi::KeyList), Guarded),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_keys(State(st): State<AppState>) -> Result<Response, ApiError> {
    let keys = st.cairn.list_keys()?;
    Ok(Json(super::openapi::KeyList { keys }).into_response())
}

/// `DELETE /admin/keys/{id}`.
#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "The key's id (not the key)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key (`not_found`)", body = super::openapi::ErrorResponse),
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn revoke_key(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.cairn.revoke_key(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Who the caller is, as `GET /me` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The key's name, the token's subject, or `anonymous` when auth is off.
    name: String,
    tier: String,
    /// What the credential may do (every scope when auth is off).
    scopes: Vec<Scope>,
    /// The server's `auth.mode`.
    auth: &'static str,
}

/// `GET /me`: the caller's name, tier and scopes, for any valid credential whatever its
/// scopes (a client such as the console shows only what the caller may use).
#[utoipa::path(get, path = "/me", tag = "admin",
    responses((status = 200, description = "The caller", body = Me), Guarded),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn me(
    State(st): State<AppState>,
    axum::Extension(p): axum::Extension<crate::auth::Principal>,
) -> Json<Me> {
    Json(Me {
        name: p.name,
        tier: p.tier,
        scopes: p.scopes,
        auth: st.cairn.auth.mode.as_str(),
    })
}
