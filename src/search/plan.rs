//! The search plan: every decision a search makes before any I/O, as a pure function of the
//! request, the configuration and what the server has installed.
//!
//! Why a separate step: the fetch sizes (`k`, `need`, each retriever's depth), the lists that
//! join the fusion and the stages after it interact (rerank and MMR need more rows than the
//! results; a single retriever needs only its own top `need`), and they are easiest to check
//! where no store or model is involved. The executor (`search::exec`) follows the plan.

use crate::config::SearchConfig;
use crate::error::{Code, Error, Result};

use super::{Mode, SearchRequest};

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 4096;

/// What the server has installed, as far as planning needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// A cross-encoder is loaded (`rerank` can run).
    pub reranker: bool,
    /// Concepts are extracted at ingest (`use_graph` can run).
    pub graph: bool,
}

/// The weight of each list in the fusion (0 = the list does not join).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListWeights {
    pub keyword: f32,
    pub vector: f32,
    pub graph: f32,
    pub phrase: f32,
}

/// Everything a search will do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The query, trimmed.
    pub query: String,
    pub mode: Mode,
    /// Results returned.
    pub limit: usize,
    /// The preset's name.
    pub preset: String,
    pub weights: ListWeights,
    /// The concept graph's list joins the fusion.
    pub use_graph: bool,
    /// The graph expands the query to neighbouring and similar concepts.
    pub expand: bool,
    /// MMR's λ; 1 = no diversification.
    pub mmr_lambda: f32,
    /// The cross-encoder re-scores the top `rerank_candidates`.
    pub rerank: bool,
    /// Candidates each retriever contributes to fusion, and the graph's list length.
    pub k: usize,
    /// Ranked hits that need their rows: the results, and what rerank or MMR looks at.
    pub need: usize,
    /// BM25 depth; `None` when BM25 does not run (its snippet maker is still prepared).
    pub keyword_k: Option<usize>,
    /// Nearest-neighbour depth; `None` when vector retrieval does not run.
    pub vector_k: Option<usize>,
    /// The query is embedded (for vector retrieval or graph expansion).
    pub embed: bool,
    pub rrf_k: f32,
}

/// The hits MMR re-orders: the top `3 × limit`, at most 100.
pub fn mmr_window(limit: usize) -> usize {
    (3 * limit).min(100)
}

/// Plans a search, refusing what cannot run (in this order: the query, the limit, the filters,
/// the preset,
/// `use_graph` outside hybrid, the weights, a missing graph, a missing cross-encoder).
pub fn plan(
    req: &SearchRequest,
    cfg: &SearchConfig,
    caps: Capabilities,
    max_limit: usize,
) -> Result<Plan> {
    let query = req.query.trim().to_string();
    if query.is_empty() {
        return Err(Error::InvalidInput("query must not be empty".into()));
    }
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(Error::InvalidInput(format!(
            "query is longer than {MAX_QUERY_CHARS} characters"
        )));
    }
    let limit = req.limit.unwrap_or(cfg.default_limit);
    if limit == 0 || limit > max_limit {
        return Err(Error::InvalidInput(format!(
            "limit must be between 1 and {max_limit}"
        )));
    }
    req.filters.validate().map_err(Error::InvalidInput)?;
    let stages = stages(req, cfg, caps)?;
    Ok(sized(query, limit, stages, cfg))
}

/// The preset's choices, with the request's overrides, validated.
struct Stages {
    preset: String,
    weights: ListWeights,
    use_graph: bool,
    expand: bool,
    mmr_lambda: f32,
    rerank: bool,
    mode: Mode,
}

fn stages(req: &SearchRequest, cfg: &SearchConfig, caps: Capabilities) -> Result<Stages> {
    let name = req.context_type.as_deref().unwrap_or("balanced");
    let preset = cfg.presets.get(name).ok_or_else(|| {
        Error::InvalidInput(format!(
            "unknown context_type `{name}` (available: {})",
            cfg.presets.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let w = req.weights.unwrap_or_default();
    let hybrid = req.mode == Mode::Hybrid;
    let weights = ListWeights {
        keyword: w
            .keyword
            .or(preset.keyword_weight)
            .unwrap_or(cfg.keyword_weight),
        vector: w
            .vector
            .or(preset.vector_weight)
            .unwrap_or(cfg.vector_weight),
        graph: w.graph.unwrap_or(preset.graph_weight),
        phrase: if hybrid {
            w.phrase.unwrap_or(preset.phrase_weight)
        } else {
            0.0
        },
    };
    let use_graph = match req.use_graph {
        Some(true) if !hybrid => {
            return Err(Error::InvalidInput(
                "use_graph adds a list to hybrid fusion: it needs mode `hybrid`".into(),
            ))
        }
        Some(u) => u,
        None => preset.use_graph && hybrid,
    };
    let ListWeights {
        keyword,
        vector,
        graph,
        phrase,
    } = weights;
    if [keyword, vector, graph, phrase]
        .iter()
        .any(|x| !x.is_finite() || *x < 0.0)
    {
        return Err(Error::InvalidInput(
            "weights must be finite and non-negative".into(),
        ));
    }
    if hybrid && keyword == 0.0 && vector == 0.0 {
        return Err(Error::InvalidInput(
            "at least one of the keyword and vector weights must be positive".into(),
        ));
    }
    if use_graph && !caps.graph {
        return Err(Error::Unavailable {
            code: Code::GraphUnavailable,
            message: "use_graph needs the concept graph, and concept extraction is off \
                      (graph.concepts_per_chunk = 0)"
                .into(),
        });
    }
    if req.rerank && !caps.reranker {
        return Err(Error::Unavailable {
            code: Code::RerankerUnavailable,
            message: crate::rerank::install_hint(),
        });
    }
    Ok(Stages {
        preset: name.to_string(),
        weights,
        use_graph,
        expand: preset.expand,
        mmr_lambda: preset.mmr_lambda,
        rerank: req.rerank,
        mode: req.mode,
    })
}

/// The fetch sizes of validated stages.
fn sized(query: String, limit: usize, s: Stages, cfg: &SearchConfig) -> Plan {
    let k = cfg.candidates.max(limit * 2);
    let rerank_need = if s.rerank { cfg.rerank_candidates } else { 0 };
    let mmr_need = if s.mmr_lambda < 1.0 {
        mmr_window(limit)
    } else {
        0
    };
    let need = limit.max(rerank_need).max(mmr_need);
    // Without fusion a retriever's own top `need` is the answer.
    let single = need.min(k);
    let (mode, w) = (s.mode, s.weights);
    let run_keyword = mode != Mode::Vector && (mode == Mode::Keyword || w.keyword > 0.0);
    let run_vector = mode != Mode::Keyword && (mode == Mode::Vector || w.vector > 0.0);
    let depth = |alone: bool| if alone { single } else { k };
    Plan {
        query,
        mode,
        limit,
        preset: s.preset,
        weights: w,
        use_graph: s.use_graph,
        expand: s.expand,
        mmr_lambda: s.mmr_lambda,
        rerank: s.rerank,
        k,
        need,
        keyword_k: run_keyword.then(|| depth(mode == Mode::Keyword)),
        vector_k: run_vector.then(|| depth(mode == Mode::Vector)),
        embed: run_vector || (s.use_graph && s.expand),
        rrf_k: cfg.rrf_k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Weights;
    use serde_json::json;

    const ALL: Capabilities = Capabilities {
        reranker: true,
        graph: true,
    };

    fn req(query: &str) -> SearchRequest {
        SearchRequest {
            query: query.into(),
            ..Default::default()
        }
    }

    fn planned(r: SearchRequest) -> Plan {
        plan(&r, &SearchConfig::default(), ALL, 100).unwrap()
    }

    fn refused(r: SearchRequest, caps: Capabilities) -> Error {
        plan(&r, &SearchConfig::default(), caps, 100).unwrap_err()
    }

    #[test]
    fn a_plain_hybrid_search_runs_both_retrievers_at_the_fusion_depth() {
        let p = planned(req("  trail markers "));
        assert_eq!(p.query, "trail markers");
        assert_eq!((p.limit, p.k, p.need), (10, 100, 10));
        assert_eq!(
            (p.keyword_k, p.vector_k, p.embed),
            (Some(100), Some(100), true)
        );
        assert_eq!(p.preset, "balanced");
        assert!(!p.use_graph && !p.rerank && p.mmr_lambda == 1.0);
    }

    #[test]
    fn a_single_retriever_fetches_only_what_it_returns() {
        let kw = planned(SearchRequest {
            mode: Mode::Keyword,
            limit: Some(7),
            ..req("x")
        });
        assert_eq!(
            (kw.keyword_k, kw.vector_k, kw.embed),
            (Some(7), None, false)
        );
        assert_eq!(kw.weights.phrase, 0.0);
        let v = planned(SearchRequest {
            mode: Mode::Vector,
            ..req("x")
        });
        assert_eq!((v.keyword_k, v.vector_k, v.embed), (None, Some(10), true));
    }

    #[test]
    fn rerank_and_mmr_widen_what_needs_rows() {
        let r = planned(SearchRequest {
            rerank: true,
            ..req("x")
        });
        assert_eq!(r.need, SearchConfig::default().rerank_candidates);
        let b = planned(SearchRequest {
            context_type: Some("building".into()),
            ..req("x")
        });
        assert!(b.mmr_lambda < 1.0 && b.use_graph);
        assert_eq!(b.need, mmr_window(10));
        // Fusion depth grows with the limit.
        let big = planned(SearchRequest {
            limit: Some(80),
            ..req("x")
        });
        assert_eq!((big.k, big.need), (160, 80));
    }

    #[test]
    fn a_zero_weight_list_does_not_run_in_hybrid() {
        let w = Weights {
            vector: Some(0.0),
            ..Default::default()
        };
        let p = planned(SearchRequest {
            weights: Some(w),
            ..req("x")
        });
        assert_eq!((p.keyword_k, p.vector_k, p.embed), (Some(100), None, false));
    }

    #[test]
    fn what_cannot_run_is_refused_with_its_code() {
        let none = Capabilities {
            reranker: false,
            graph: false,
        };
        let code = |r, caps| refused(r, caps).code();
        assert_eq!(code(req(" "), ALL), Code::InvalidRequest);
        assert_eq!(code(req(&"q".repeat(4097)), ALL), Code::InvalidRequest);
        assert_eq!(
            code(
                SearchRequest {
                    limit: Some(0),
                    ..req("x")
                },
                ALL
            ),
            Code::InvalidRequest
        );
        assert_eq!(
            code(
                SearchRequest {
                    limit: Some(101),
                    ..req("x")
                },
                ALL
            ),
            Code::InvalidRequest
        );
        let unknown = SearchRequest {
            context_type: Some("nope".into()),
            ..req("x")
        };
        assert!(refused(unknown, ALL).to_string().contains("balanced"));
        let graph_kw = SearchRequest {
            mode: Mode::Keyword,
            use_graph: Some(true),
            ..req("x")
        };
        assert_eq!(code(graph_kw, ALL), Code::InvalidRequest);
        let neg = Weights {
            keyword: Some(-1.0),
            ..Default::default()
        };
        assert_eq!(
            code(
                SearchRequest {
                    weights: Some(neg),
                    ..req("x")
                },
                ALL
            ),
            Code::InvalidRequest
        );
        let zero = Weights {
            keyword: Some(0.0),
            vector: Some(0.0),
            ..Default::default()
        };
        assert_eq!(
            code(
                SearchRequest {
                    weights: Some(zero),
                    ..req("x")
                },
                ALL
            ),
            Code::InvalidRequest
        );
        let g = SearchRequest {
            use_graph: Some(true),
            ..req("x")
        };
        assert_eq!(code(g, none), Code::GraphUnavailable);
        let r = SearchRequest {
            rerank: true,
            ..req("x")
        };
        assert_eq!(code(r, none), Code::RerankerUnavailable);
    }

    #[test]
    fn a_metadata_filter_that_cannot_match_as_written_is_refused() {
        let with = |v: serde_json::Value| SearchRequest {
            filters: crate::store::Filters {
                metadata: [("team".to_string(), v)].into(),
                ..Default::default()
            },
            ..req("x")
        };
        for bad in [
            json!({"$eq": "zzz"}),
            json!(null),
            json!([]),
            json!([{"a": 1}]),
        ] {
            let e = refused(with(bad.clone()), ALL);
            assert_eq!(e.code(), Code::InvalidRequest, "{bad}");
            assert!(e.to_string().contains("filters.metadata.team"), "{e}");
        }
        for good in [json!("zzz"), json!(3), json!(true), json!(["a", 2])] {
            planned(with(good));
        }
    }

    #[test]
    fn the_limit_bound_is_the_callers() {
        let r = SearchRequest {
            limit: Some(500),
            ..req("x")
        };
        assert_eq!(
            plan(&r, &SearchConfig::default(), ALL, 1000).unwrap().limit,
            500
        );
    }
}
