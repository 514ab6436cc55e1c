//! Search requests, reciprocal rank fusion and result shaping (transport-neutral).
//!
//! Hybrid search runs BM25 (tantivy) and vector (LanceDB) retrieval with the same filters and
//! fuses the two ranked lists with weighted reciprocal rank fusion:
//! `score(d) = Σ_i w_i / (k + rank_i(d))`, ranks starting at 1, `k = 60` by default.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::store::Filters;

/// Which retrievers run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Vector,
    Keyword,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hybrid" => Ok(Mode::Hybrid),
            "vector" => Ok(Mode::Vector),
            "keyword" => Ok(Mode::Keyword),
            other => Err(format!("unknown mode `{other}` (hybrid, vector, keyword)")),
        }
    }
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Vector => "vector",
            Mode::Keyword => "keyword",
        }
    }
}

/// Per-request fusion weights; unset ones take the configured defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub keyword: Option<f32>,
    pub vector: Option<f32>,
}

/// A search as the core sees it (the HTTP and CLI layers build it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The question or keywords; must not be blank.
    #[schema(min_length = 1)]
    pub query: String,
    /// Results to return, 1 to 100 (default `search.default_limit`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub weights: Option<Weights>,
    #[serde(default)]
    pub explain: bool,
    /// Named retrieval preset (`balanced` now; `building`/`auditing` come with the graph work).
    #[serde(default)]
    #[schema(example = "balanced")]
    pub context_type: Option<String>,
    /// Graph expansion (needs the concept graph).
    #[serde(default)]
    pub use_graph: bool,
    /// Cross-encoder re-ranking (needs a reranker model).
    #[serde(default)]
    pub rerank: bool,
}

/// How a hit scored in each retriever.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Explain {
    pub bm25: Option<f32>,
    pub bm25_rank: Option<usize>,
    pub vector_distance: Option<f32>,
    pub vector_rank: Option<usize>,
    pub fused: f32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub chunk_id: String,
    pub source_id: String,
    pub external_id: String,
    pub title: String,
    pub text: String,
    /// HTML-escaped text with matched terms wrapped in `<mark>`.
    pub snippet: String,
    pub score: f32,
    pub page: Option<u32>,
    pub section: Option<String>,
    pub ordinal: u32,
    /// Character span of the chunk in its source's extracted text.
    pub char_start: u32,
    pub char_end: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<Explain>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub results: Vec<SearchHit>,
    pub mode: Mode,
    pub took_ms: f64,
    pub timing: SearchTiming,
}

/// Per-stage wall times of one search, in milliseconds. Keyword retrieval runs concurrently
/// with embedding + vector retrieval, so the stages overlap and do not add up to `took_ms`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SearchTiming {
    /// Embedding the query (0 in keyword mode).
    pub embed_ms: f64,
    /// BM25 retrieval including snippet preparation (0 in vector mode).
    pub keyword_ms: f64,
    /// Nearest-neighbour search in LanceDB (0 in keyword mode).
    pub vector_ms: f64,
    /// Fusion, snippets and shaping the results.
    pub fusion_ms: f64,
}

/// Weighted reciprocal rank fusion. Each list is ids in rank order (best first) with a weight.
/// Returns every id that appears in a list with positive weight, best first; ties are broken
/// by the best rank in any list, then by id, so the order is deterministic.
pub fn rrf(lists: &[(&[String], f32)], k: f32) -> Vec<(String, f32)> {
    let mut acc: HashMap<&str, (f32, usize)> = HashMap::new();
    for (ids, w) in lists {
        if *w <= 0.0 {
            continue;
        }
        for (i, id) in ids.iter().enumerate() {
            let e = acc.entry(id.as_str()).or_insert((0.0, usize::MAX));
            // A duplicate id in one list counts at its best rank only.
            if ids[..i].contains(id) {
                continue;
            }
            e.0 += w / (k + (i + 1) as f32);
            e.1 = e.1.min(i);
        }
    }
    let mut out: Vec<(&str, f32, usize)> = acc.into_iter().map(|(id, (s, r))| (id, s, r)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(b.0)));
    out.into_iter()
        .map(|(id, s, _)| (id.to_string(), s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn agreeing_lists_keep_their_order() {
        let a = ids(&["x", "y", "z"]);
        let out = rrf(&[(&a, 1.0), (&a, 1.0)], 60.0);
        let order: Vec<&str> = out.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(order, ["x", "y", "z"]);
        assert!((out[0].1 - 2.0 / 61.0).abs() < 1e-6);
    }

    #[test]
    fn an_id_in_both_lists_beats_one_in_one() {
        let a = ids(&["a", "both"]);
        let b = ids(&["b", "both"]);
        let out = rrf(&[(&a, 1.0), (&b, 1.0)], 60.0);
        assert_eq!(out[0].0, "both");
    }

    #[test]
    fn zero_weight_ignores_a_list() {
        let a = ids(&["a"]);
        let b = ids(&["b"]);
        let out = rrf(&[(&a, 0.0), (&b, 1.0)], 60.0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "b");
    }

    fn list() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(0u8..30, 0..20).prop_map(|v| {
            let mut seen = std::collections::HashSet::new();
            v.into_iter()
                .filter(|x| seen.insert(*x))
                .map(|x| format!("d{x}"))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn fusion_properties(a in list(), b in list(), wa in 0.1f32..3.0, wb in 0.1f32..3.0) {
            let out = rrf(&[(&a, wa), (&b, wb)], 60.0);
            // Union of ids, each once.
            let mut expect: Vec<&String> = a.iter().chain(b.iter()).collect();
            expect.sort(); expect.dedup();
            let mut got: Vec<&String> = out.iter().map(|(i, _)| i).collect();
            got.sort();
            prop_assert_eq!(got, expect);
            // Sorted by score, descending.
            for w in out.windows(2) { prop_assert!(w[0].1 >= w[1].1); }
            // Each score is exactly the weighted sum of reciprocal ranks.
            for (id, s) in &out {
                let mut e = 0.0f32;
                if let Some(r) = a.iter().position(|x| x == id) { e += wa / (61.0 + r as f32); }
                if let Some(r) = b.iter().position(|x| x == id) { e += wb / (61.0 + r as f32); }
                prop_assert!((e - s).abs() < 1e-6);
            }
            // Deterministic.
            prop_assert_eq!(out.clone(), rrf(&[(&a, wa), (&b, wb)], 60.0));
        }

        #[test]
        fn a_single_list_keeps_its_order(a in list()) {
            let out = rrf(&[(&a, 1.0)], 60.0);
            let got: Vec<String> = out.into_iter().map(|(i, _)| i).collect();
            prop_assert_eq!(got, a);
        }
    }
}
