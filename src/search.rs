//! Search: the request and response types, reciprocal rank fusion and MMR (transport-neutral);
//! [`plan`] decides what a search does, [`fuse`] ranks, [`exec`] runs it.
//!
//! Hybrid search runs BM25 (tantivy) and vector (LanceDB) retrieval with the same filters and
//! fuses the ranked lists with weighted reciprocal rank fusion:
//! `score(d) = Σ_i w_i / (k + rank_i(d))`, ranks starting at 1, `k = 60` by default.
//! Two more lists can join the fusion: chunks scored by the concept graph (`use_graph`) and
//! BM25 hits that contain a phrase of the query verbatim (the `auditing` preset). After
//! fusion, MMR can diversify the order ([`mmr`]) and a cross-encoder can re-score the top.

pub mod exec;
pub mod fuse;
pub mod group;
pub mod plan;

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

/// What results are collapsed by: nothing (ranked chunks), their source, or a metadata key of
/// their source. On the wire and in `cairn.toml`: `"none"`, `"source"`, `"metadata.<key>"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GroupBy {
    #[default]
    None,
    Source,
    Metadata(String),
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(GroupBy::None),
            "source" => Ok(GroupBy::Source),
            _ => match s.strip_prefix("metadata.") {
                Some(k) if !k.is_empty() && !k.contains('=') => Ok(GroupBy::Metadata(k.into())),
                _ => Err(format!(
                    "unknown group_by `{s}` (none, source, or metadata.<key>)"
                )),
            },
        }
    }
}

impl TryFrom<String> for GroupBy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<GroupBy> for String {
    fn from(g: GroupBy) -> String {
        match g {
            GroupBy::None => "none".into(),
            GroupBy::Source => "source".into(),
            GroupBy::Metadata(k) => format!("metadata.{k}"),
        }
    }
}

/// Per-request fusion weights; unset ones take the configured defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub keyword: Option<f32>,
    pub vector: Option<f32>,
    /// Weight of the concept-graph list (with `use_graph`).
    pub graph: Option<f32>,
    /// Weight of the exact-phrase list.
    pub phrase: Option<f32>,
}

/// A search as the core sees it (the HTTP and CLI layers build it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The question or keywords; must not be blank.
    #[schema(min_length = 1)]
    pub query: String,
    /// Results to return, 1 to 100 (default `search.default_limit`).
    /// Results to return, 1 to 100 (default `search.default_limit`). With `group_by`, the
    /// number of groups.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// Results (or groups) to skip: the next page starts at the previous response's
    /// `next_offset`. `offset + limit` is at most 1000. Pages of the same request with the same
    /// `limit` never repeat or skip a result while the index is unchanged.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 900)]
    pub offset: Option<usize>,
    /// Collapse the ranking: `source` returns one group per source (document), `metadata.<key>`
    /// one per value of the source's metadata `key` (sources without it share one group with
    /// key `null`), `none` the ranked chunks. Groups rank by their best chunk. Default:
    /// `search.group_by`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "source", pattern = "^(none|source|metadata\\.[^=]+)$")]
    pub group_by: Option<GroupBy>,
    /// Chunks per group, 1 to 10 (default `search.group_size`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub group_size: Option<usize>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub weights: Option<Weights>,
    #[serde(default)]
    pub explain: bool,
    /// Named retrieval preset from `search.presets`: `balanced` (default), `building` (breadth:
    /// vector + graph, MMR-diversified) or `auditing` (precision: keyword and exact phrases, no
    /// expansion). Explicit `weights` override the preset's.
    #[serde(default)]
    #[schema(example = "balanced")]
    pub context_type: Option<String>,
    /// Expand the query through the concept graph and fuse the chunks that mention the
    /// matched concepts as a third list. Unset: the preset decides (on for `building`).
    #[serde(default)]
    pub use_graph: Option<bool>,
    /// Re-score the top `search.rerank_candidates` fused hits with the cross-encoder
    /// (422 `reranker_unavailable` when none is installed).
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
    /// Concept-graph score (`Σ weight · idf` of the expanded concepts the chunk mentions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_rank: Option<usize>,
    /// Rank in the exact-phrase list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phrase_rank: Option<usize>,
    pub fused: f32,
    /// Cross-encoder score, when re-ranked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank: Option<f32>,
    /// Rank before MMR diversification, when it moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_mmr_rank: Option<usize>,
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

/// The chunks of one source (or metadata value), best first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchGroup {
    /// The source id, or the metadata value (`null`: sources without the key).
    pub key: Option<String>,
    /// The best chunk's score.
    pub score: f32,
    /// The group's best `group_size` chunks among the ranked candidates.
    pub hits: Vec<SearchHit>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// Ranked chunks; with `group_by`, each group's best chunk (one per group, in group order).
    pub results: Vec<SearchHit>,
    /// With `group_by`: the groups, in rank order (`results[i]` is `groups[i].hits[0]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<SearchGroup>>,
    /// The `offset` of this page.
    pub offset: usize,
    /// The `offset` of the next page, or `null` when this page is the last.
    pub next_offset: Option<usize>,
    pub mode: Mode,
    /// The preset used.
    pub context_type: String,
    /// The concepts the query was expanded with (when the graph was used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concepts: Option<Vec<crate::graph::Expansion>>,
    /// Whether the cross-encoder re-scored the top hits.
    pub reranked: bool,
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
    /// Graph expansion and scoring (0 without `use_graph`).
    #[serde(default)]
    pub graph_ms: f64,
    /// Cross-encoder re-scoring (0 without `rerank`).
    #[serde(default)]
    pub rerank_ms: f64,
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

/// Maximal marginal relevance: re-orders `relevance` (best first, scores in any scale) so that
/// each next pick maximises `λ·rel − (1−λ)·max cos(pick, picked)`. `vectors` are unit length,
/// one per item; an item without a vector counts as dissimilar to everything. Returns indices.
pub fn mmr(relevance: &[f32], vectors: &[Option<&[f32]>], lambda: f32, k: usize) -> Vec<usize> {
    let n = relevance.len();
    // Relevance relative to the best (scores are non-negative: fused, or probabilities).
    let hi = relevance.iter().fold(0.0f32, |h, &x| h.max(x));
    let rel: Vec<f32> = relevance
        .iter()
        .map(|x| if hi > 0.0 { x / hi } else { *x })
        .collect();
    let mut picked: Vec<usize> = Vec::with_capacity(k.min(n));
    let mut max_sim = vec![0.0f32; n];
    let mut left: Vec<usize> = (0..n).collect();
    while picked.len() < k && !left.is_empty() {
        let (pos, _) = left
            .iter()
            .enumerate()
            .map(|(p, &i)| (p, lambda * rel[i] - (1.0 - lambda) * max_sim[i]))
            .fold((0, f32::NEG_INFINITY), |best, (p, v)| {
                if v > best.1 {
                    (p, v)
                } else {
                    best
                }
            });
        let i = left.remove(pos);
        picked.push(i);
        if let Some(vi) = vectors[i] {
            for &j in &left {
                if let Some(vj) = vectors[j] {
                    let c: f32 = vi.iter().zip(vj).map(|(a, b)| a * b).sum();
                    max_sim[j] = max_sim[j].max(c);
                }
            }
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mmr_prefers_a_different_second_pick() {
        let a = [1.0f32, 0.0];
        let dup = [1.0f32, 0.0];
        let other = [0.0f32, 1.0];
        let v = [Some(&a[..]), Some(&dup[..]), Some(&other[..])];
        // The duplicate is slightly more relevant than the other, but MMR takes the other.
        assert_eq!(mmr(&[1.0, 0.9, 0.8], &v, 0.7, 3), vec![0, 2, 1]);
        // λ = 1 keeps the relevance order.
        assert_eq!(mmr(&[1.0, 0.9, 0.8], &v, 1.0, 3), vec![0, 1, 2]);
    }

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
        fn mmr_is_a_permutation_led_by_the_best(rel in proptest::collection::vec(0.0f32..1.0, 1..30), lambda in 0.0f32..=1.0) {
            let vecs: Vec<[f32; 2]> = rel.iter().enumerate().map(|(i, _)| {
                let t = i as f32 * 0.7;
                [t.cos(), t.sin()]
            }).collect();
            let refs: Vec<Option<&[f32]>> = vecs.iter().map(|v| Some(&v[..])).collect();
            let out = mmr(&rel, &refs, lambda, rel.len());
            let mut sorted = out.clone();
            sorted.sort();
            prop_assert_eq!(sorted, (0..rel.len()).collect::<Vec<_>>());
            // The first pick is always a most relevant item (nothing is picked yet to differ from).
            let best = rel.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            prop_assert_eq!(rel[out[0]], best);
            if lambda == 1.0 {
                for w in out.windows(2) { prop_assert!(rel[w[0]] >= rel[w[1]]); }
            }
        }

        #[test]
        fn a_single_list_keeps_its_order(a in list()) {
            let out = rrf(&[(&a, 1.0)], 60.0);
            let got: Vec<String> = out.into_iter().map(|(i, _)| i).collect();
            prop_assert_eq!(got, a);
        }
    }
}
