//! `GET /concepts/{query}` and `GET /graph/{concept}`: the concept graph, read-only.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::openapi::{self, Guarded};
use super::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConceptParams {
    /// Concepts to return, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
}

/// `GET /concepts/{query}`.
#[utoipa::path(get, path = "/concepts/{query}", tag = "graph",
    description = "Concepts matching a text, best first: an exact name or alias (score 1), then lexical word overlap (0.6 to 0.9), then embedding similarity (below 0.6). Each with the sources and chunks that mention it.",
    params(("query" = String, Path, description = "A concept name, alias or any short text"), ConceptParams),
    responses(
        (status = 200, description = "Matching concepts (possibly none)", body = Vec<crate::graph::ConceptMatch>),
        (status = 422, description = "Bad parameter (`invalid_request`)", body = openapi::ErrorResponse),
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn concepts(
    State(st): State<AppState>,
    Path(query): Path<String>,
    q: Result<Query<ConceptParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = q?;
    let found = st.cairn.concepts(&query, p.limit.unwrap_or(10)).await?;
    Ok(Json(found).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GraphParams {
    /// Hops from the concept, 1 to 3 (default 1).
    #[param(minimum = 1, maximum = 3)]
    depth: Option<usize>,
    /// Most nodes besides the centre, 1 to 200 (default 25).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// Smallest edge weight kept, 0 to 1 (default 0).
    #[param(minimum = 0, maximum = 1)]
    min_weight: Option<f32>,
}

/// `GET /graph/{concept}`.
#[utoipa::path(get, path = "/graph/{concept}", tag = "graph",
    description = "The neighbourhood of a concept (by id, name or alias): nodes up to `depth` hops away, the strongest edges first. Edges are `co_occurs` (weight: damped normalised PMI of the two concepts over chunks) and `similar_to` (weight: cosine similarity of their name embeddings, at least `graph.similar_min`).",
    params(("concept" = String, Path, description = "Concept id, name or alias"), GraphParams),
    responses(
        (status = 200, description = "The neighbourhood", body = crate::graph::Neighbourhood),
        (status = 404, description = "Unknown concept (`concept_not_found`); `error.suggestions` lists close matches", body = openapi::ErrorResponse),
        (status = 422, description = "Bad parameter (`invalid_request`)", body = openapi::ErrorResponse),
        Guarded,
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn graph(
    State(st): State<AppState>,
    Path(concept): Path<String>,
    q: Result<Query<GraphParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = q?;
    let n = st
        .cairn
        .graph(
            &concept,
            p.depth.unwrap_or(1),
            p.limit.unwrap_or(25),
            p.min_weight.unwrap_or(0.0),
        )
        .await?;
    Ok(Json(n).into_response())
}
