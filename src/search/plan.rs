//! The search plan: every decision a search makes before any I/O, as a pure function of the
//! request, the configuration and what the server has installed.
//!
//! Why a separate step: the fetch sizes (`k`, `need`, each retriever's depth), the lists that
//! join the fusion and the stages after it interact (rerank and MMR need more rows than the
//! results; a single retriever needs only its own top `need`), and they are easiest to check
//! where no store or model is involved. The executor (`search::exec`) follows the plan.

use crate::config::SearchConfig;
use crate::error::{Code, Error, Result};

use super::{GroupBy, Mode, SearchRequest};

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 4096;

/// The deepest result a page may reach (`offset + limit`), unless the caller's own limit is
/// higher (evaluation).
pub const MAX_WINDOW: usize = 1000;

/// Most chunks per group.
pub const MAX_GROUP_SIZE: usize = 10;

/// How the ranking is collapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// `Source` or `Metadata(key)`, never `None`.
    pub by: GroupBy,
    /// Chunks kept per group.
    pub size: usize,
}

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
    /// Results (or groups) returned.
    pub limit: usize,
    /// Results (or groups) skipped.
    pub offset: usize,
    /// Collapse the ranking into groups.
    pub group: Option<Grouping>,
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
    /// The first fusion tier's depth: hybrid fusion ranks the retrievers' top `k` first, then
    /// appends what their top `2k`, `4k`, … add (see `search::fuse`), so that a deeper
    /// retrieval never reorders what a shallower one ranked.
    pub k: usize,
    /// Ranked hits that need their rows: the page, one more (is there a next page?), and what
    /// rerank or MMR looks at.
    pub need: usize,
    /// BM25 runs (when it does not, its snippet maker is still prepared).
    pub keyword: bool,
    /// Nearest-neighbour retrieval runs.
    pub vector: bool,
    /// How deep the retrievers (and the graph's list) fetch first.
    pub depth: usize,
    /// How deep they may fetch when the first depth did not fill the page (groups of long
    /// sources, filtered-out hits).
    pub max_depth: usize,
    /// The query is embedded (for vector retrieval or graph expansion).
    pub embed: bool,
    pub rrf_k: f32,
}

/// The hits MMR re-orders: the top 30, whatever the page (so that pages of any size agree).
pub const MMR_WINDOW: usize = 30;

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
    let offset = req.offset.unwrap_or(0);
    let max_window = MAX_WINDOW.max(max_limit);
    if offset + limit > max_window {
        return Err(Error::InvalidInput(format!(
            "offset + limit must be at most {max_window}"
        )));
    }
    let group = grouping(req, cfg)?;
    req.filters.validate().map_err(Error::InvalidInput)?;
    let stages = stages(req, cfg, caps)?;
    Ok(sized(query, (offset, limit), group, stages, cfg))
}

/// The request's grouping, or the configured default.
fn grouping(req: &SearchRequest, cfg: &SearchConfig) -> Result<Option<Grouping>> {
    let size = req.group_size.unwrap_or(cfg.group_size);
    if size == 0 || size > MAX_GROUP_SIZE {
        return Err(Error::InvalidInput(format!(
            "group_size must be between 1 and {MAX_GROUP_SIZE}"
        )));
    }
    Ok(match req.group_by.as_ref().unwrap_or(&cfg.group_by) {
        GroupBy::None => None,
        by => Some(Grouping {
            by: by.clone(),
            size,
        }),
    })
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
fn sized(
    query: String,
    (offset, limit): (usize, usize),
    group: Option<Grouping>,
    s: Stages,
    cfg: &SearchConfig,
) -> Plan {
    let k = cfg.candidates;
    let rerank_need = if s.rerank { cfg.rerank_candidates } else { 0 };
    let mmr_need = if s.mmr_lambda < 1.0 { MMR_WINDOW } else { 0 };
    let need = (offset + limit + 1).max(rerank_need).max(mmr_need);
    let (mode, w) = (s.mode, s.weights);
    let keyword = mode != Mode::Vector && (mode == Mode::Keyword || w.keyword > 0.0);
    let vector = mode != Mode::Keyword && (mode == Mode::Vector || w.vector > 0.0);
    let depth = match (mode, &group) {
        // Without fusion a retriever's own top `need` is the answer.
        (Mode::Keyword | Mode::Vector, None) => need,
        // Grouped, BM25 starts at twice the page and deepens until the groups are found: each
        // of its hits costs a read of the doc store, and 200 of them cost 2.5x the search
        // (docs/benchmarks.md). A flat vector scan costs the same at any depth: no re-scans.
        (Mode::Keyword, Some(_)) => (2 * need).min(k.max(need)),
        (Mode::Vector, Some(_)) => k.max(need),
        // The first fusion tier deep enough to rank `need` hits.
        (Mode::Hybrid, _) => std::iter::successors(Some(k), |d| Some(d * 2))
            .find(|d| *d >= need)
            .unwrap_or(k),
    };
    Plan {
        query,
        mode,
        limit,
        offset,
        group,
        preset: s.preset,
        weights: w,
        use_graph: s.use_graph,
        expand: s.expand,
        mmr_lambda: s.mmr_lambda,
        rerank: s.rerank,
        k,
        need,
        keyword,
        vector,
        depth,
        max_depth: cfg.max_candidates.max(depth),
        embed: vector || (s.use_graph && s.expand),
        rrf_k: cfg.rrf_k,
    }
}

impl Plan {
    /// The results a page covers: `offset + limit`.
    pub fn window(&self) -> usize {
        self.offset + self.limit
    }

    /// The next retrieval depth after `depth`, if the plan allows one.
    pub fn deeper(&self, depth: usize) -> Option<usize> {
        let next = depth * 2;
        (next <= self.max_depth).then_some(next)
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

    /// Fixed sizes and no default grouping, whatever the shipped defaults become.
    fn cfg() -> SearchConfig {
        SearchConfig {
            candidates: 100,
            max_candidates: 1000,
            group_by: GroupBy::None,
            ..Default::default()
        }
    }

    fn req(query: &str) -> SearchRequest {
        SearchRequest {
            query: query.into(),
            ..Default::default()
        }
    }

    fn planned(r: SearchRequest) -> Plan {
        plan(&r, &cfg(), ALL, 100).unwrap()
    }

    fn refused(r: SearchRequest, caps: Capabilities) -> Error {
        plan(&r, &cfg(), caps, 100).unwrap_err()
    }

    #[test]
    fn a_plain_hybrid_search_runs_both_retrievers_at_the_fusion_depth() {
        let p = planned(req("  trail markers "));
        assert_eq!(p.query, "trail markers");
        // The page, and one more to know whether another page follows.
        assert_eq!((p.limit, p.offset, p.k, p.need), (10, 0, 100, 11));
        assert_eq!(
            (p.keyword, p.vector, p.embed, p.depth),
            (true, true, true, 100)
        );
        assert_eq!((p.group.clone(), p.max_depth), (None, 1000));
        assert_eq!((p.deeper(400), p.deeper(800)), (Some(800), None));
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
            (kw.keyword, kw.vector, kw.embed, kw.depth),
            (true, false, false, 8)
        );
        assert_eq!(kw.weights.phrase, 0.0);
        let v = planned(SearchRequest {
            mode: Mode::Vector,
            ..req("x")
        });
        assert_eq!(
            (v.keyword, v.vector, v.embed, v.depth),
            (false, true, true, 11)
        );
        // Grouped, BM25 starts at twice the page (it deepens when the groups are not found);
        // vector search at the fusion depth.
        let grouped = |mode, limit| {
            planned(SearchRequest {
                mode,
                limit: Some(limit),
                group_by: Some(GroupBy::Source),
                ..req("x")
            })
            .depth
        };
        assert_eq!(grouped(Mode::Keyword, 10), 22);
        assert_eq!(grouped(Mode::Keyword, 100), 101);
        assert_eq!(grouped(Mode::Vector, 10), 100);
    }

    #[test]
    fn pages_and_groups_are_planned_and_bounded() {
        let p = planned(SearchRequest {
            offset: Some(190),
            limit: Some(10),
            group_by: Some(GroupBy::Metadata("team".into())),
            group_size: Some(2),
            ..req("x")
        });
        // Hybrid starts at the first fusion tier that ranks the page and one more.
        assert_eq!((p.window(), p.need, p.k, p.depth), (200, 201, 100, 400));
        let g = p.group.unwrap();
        assert_eq!((g.by, g.size), (GroupBy::Metadata("team".into()), 2));
        // The configured default groups, and a request can turn it off.
        let cfg = SearchConfig {
            group_by: GroupBy::Source,
            ..cfg()
        };
        let on = plan(&req("x"), &cfg, ALL, 100).unwrap();
        assert_eq!(on.group.map(|g| (g.by, g.size)), Some((GroupBy::Source, 3)));
        let off = SearchRequest {
            group_by: Some(GroupBy::None),
            ..req("x")
        };
        assert_eq!(plan(&off, &cfg, ALL, 100).unwrap().group, None);
        for bad in [
            SearchRequest {
                offset: Some(991),
                ..req("x")
            },
            SearchRequest {
                group_size: Some(0),
                ..req("x")
            },
            SearchRequest {
                group_size: Some(11),
                ..req("x")
            },
        ] {
            assert_eq!(refused(bad, ALL).code(), Code::InvalidRequest);
        }
        assert!("metadata.".parse::<GroupBy>().is_err());
        assert!("title".parse::<GroupBy>().is_err());
        assert_eq!(
            "metadata.team".parse::<GroupBy>(),
            Ok(GroupBy::Metadata("team".into()))
        );
    }

    #[test]
    fn rerank_and_mmr_widen_what_needs_rows() {
        let r = planned(SearchRequest {
            rerank: true,
            ..req("x")
        });
        assert_eq!(r.need, cfg().rerank_candidates);
        assert_eq!(r.depth, 100);
        let b = planned(SearchRequest {
            context_type: Some("building".into()),
            ..req("x")
        });
        assert!(b.mmr_lambda < 1.0 && b.use_graph);
        assert_eq!(b.need, MMR_WINDOW);
        // The first tier stays; the first retrieval goes deeper when the page needs it.
        let big = planned(SearchRequest {
            limit: Some(100),
            ..req("x")
        });
        assert_eq!((big.k, big.need, big.depth), (100, 101, 200));
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
        assert_eq!((p.keyword, p.vector, p.embed), (true, false, false));
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
        assert_eq!(plan(&r, &cfg(), ALL, 1000).unwrap().limit, 500);
    }
}
