//! `/admin/keys`: create (the key is in the response, once), list, revoke. Scope `admin`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::{ApiJson, AppState};
use crate::auth::Scope;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    #[serde(default = "default_tier")]
    tier: String,
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

pub async fn create_key(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let k = st
        .cairn
        .create_key(&req.name, &req.tier, req.scopes, req.expires_at)?;
    Ok((StatusCode::CREATED, Json(k)).into_response())
}

pub async fn list_keys(State(st): State<AppState>) -> Result<Response, ApiError> {
    let keys = st.cairn.list_keys()?;
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}

pub async fn revoke_key(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.cairn.revoke_key(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
