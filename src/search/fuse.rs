//! Fusion: from the retrievers' ranked lists and the plan to one ranking, with every hit's
//! explanation (its score and rank in each list). Pure: no store, no model.
//!
//! Hybrid fusion is tiered so that pages stay stable: RRF over the lists' top `plan.k` ranks
//! first; then RRF over their top `2k` appends the hits that tier adds, then `4k`, and so on.
//! A retrieval twice as deep therefore only appends to the ranking: page 3, which needed the
//! deeper lists, never reorders what page 1 showed. (One RRF over the deepest lists would:
//! a hit at rank 150 of one list gains score there and can overtake a page-1 hit.)

use std::collections::{HashMap, HashSet};

use super::plan::Plan;
use super::{rrf, Explain, Mode};

/// The ranked lists of one search, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HitLists {
    /// BM25: chunk id and score.
    pub keyword: Vec<(String, f32)>,
    /// Nearest neighbours: chunk id and cosine distance.
    pub vector: Vec<(String, f32)>,
    /// Concept graph: chunk id and score.
    pub graph: Vec<(String, f32)>,
    /// Keyword hits that contain a phrase of the query verbatim.
    pub phrase: Vec<String>,
}

/// One ranking and the explanation of each hit in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fused {
    /// Chunk id and score, best first: the fused RRF score in hybrid mode, BM25 in keyword
    /// mode, `1 − distance` in vector mode.
    pub ranked: Vec<(String, f32)>,
    pub explain: HashMap<String, Explain>,
}

/// Fuses the lists as the plan says: tiered weighted RRF over the four lists in hybrid mode,
/// else the one retriever's own order.
pub fn fuse(lists: &HitLists, plan: &Plan) -> Fused {
    let explain = explain(lists);
    let mut ranked: Vec<(String, f32)> = match plan.mode {
        Mode::Hybrid => tiered(lists, plan),
        Mode::Keyword => first_scores(&lists.keyword, &explain, |e| e.bm25.unwrap_or(0.0)),
        Mode::Vector => first_scores(&lists.vector, &explain, |e| {
            1.0 - e.vector_distance.unwrap_or(1.0)
        }),
    };
    let mut explain = explain;
    for (id, score) in &mut ranked {
        if let Some(e) = explain.get_mut(id) {
            e.fused = *score;
        }
    }
    Fused { ranked, explain }
}

/// Tier after tier (depth `k`, `2k`, … until every list is covered), the RRF ranking of the
/// lists cut at that depth, each tier appending the ids the earlier ones lacked. Scores are
/// capped so that they never increase down the ranking.
fn tiered(lists: &HitLists, plan: &Plan) -> Vec<(String, f32)> {
    let deepest = lists
        .keyword
        .len()
        .max(lists.vector.len())
        .max(lists.graph.len());
    let w = plan.weights;
    let mut out: Vec<(String, f32)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut cap = f32::INFINITY;
    let mut depth = plan.k.max(1);
    loop {
        let ids = |l: &[(String, f32)]| -> Vec<String> {
            l.iter().take(depth).map(|(id, _)| id.clone()).collect()
        };
        let keyword = ids(&lists.keyword);
        // Phrase hits are BM25 hits: a tier holds those within its BM25 depth.
        let kept: HashSet<&String> = keyword.iter().collect();
        let phrase: Vec<String> = lists
            .phrase
            .iter()
            .filter(|id| kept.contains(id))
            .cloned()
            .collect();
        let tier = rrf(
            &[
                (&keyword, w.keyword),
                (&ids(&lists.vector), w.vector),
                (&ids(&lists.graph), w.graph),
                (&phrase, w.phrase),
            ],
            plan.rrf_k,
        );
        for (id, score) in tier {
            if seen.insert(id.clone()) {
                cap = cap.min(score);
                out.push((id, cap));
            }
        }
        if depth >= deepest {
            return out;
        }
        depth *= 2;
    }
}

/// A lone retriever's list, scored by what the explanation kept of its first occurrence.
fn first_scores(
    list: &[(String, f32)],
    explain: &HashMap<String, Explain>,
    score: impl Fn(&Explain) -> f32,
) -> Vec<(String, f32)> {
    list.iter()
        .map(|(id, _)| (id.clone(), score(&explain[id])))
        .collect()
}

/// Each hit's score and rank in every list it is in (a later duplicate overwrites).
fn explain(lists: &HitLists) -> HashMap<String, Explain> {
    let mut explain: HashMap<String, Explain> = HashMap::new();
    for (i, id) in lists.phrase.iter().enumerate() {
        explain.entry(id.clone()).or_default().phrase_rank = Some(i + 1);
    }
    for (i, (id, score)) in lists.keyword.iter().enumerate() {
        let e = explain.entry(id.clone()).or_default();
        e.bm25 = Some(*score);
        e.bm25_rank = Some(i + 1);
    }
    for (i, (id, d)) in lists.vector.iter().enumerate() {
        let e = explain.entry(id.clone()).or_default();
        e.vector_distance = Some(*d);
        e.vector_rank = Some(i + 1);
    }
    for (i, (id, score)) in lists.graph.iter().enumerate() {
        let e = explain.entry(id.clone()).or_default();
        e.graph = Some((score * 1e4).round() / 1e4);
        e.graph_rank = Some(i + 1);
    }
    explain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SearchConfig;
    use crate::search::plan::{plan, Capabilities};
    use crate::search::SearchRequest;

    fn list(v: &[(&str, f32)]) -> Vec<(String, f32)> {
        v.iter().map(|(id, s)| (id.to_string(), *s)).collect()
    }

    fn planned(mode: Mode) -> Plan {
        let req = SearchRequest {
            query: "q".into(),
            mode,
            ..Default::default()
        };
        let caps = Capabilities {
            reranker: false,
            graph: true,
        };
        plan(&req, &SearchConfig::default(), caps, 100).unwrap()
    }

    fn lists() -> HitLists {
        HitLists {
            keyword: list(&[("a", 9.0), ("b", 5.0)]),
            vector: list(&[("b", 0.1), ("c", 0.3)]),
            graph: list(&[("c", 0.123456)]),
            phrase: vec!["a".into()],
        }
    }

    #[test]
    fn hybrid_fuses_the_lists_and_explains_each_hit() {
        let f = fuse(&lists(), &planned(Mode::Hybrid));
        let order: Vec<&str> = f.ranked.iter().map(|(id, _)| id.as_str()).collect();
        // b is in both main lists; c's graph rank (balanced: weight 0.1) lifts it over a,
        // whose phrase rank counts for nothing (weight 0).
        assert_eq!(order, ["b", "c", "a"]);
        let b = &f.explain["b"];
        assert_eq!(
            (b.bm25, b.bm25_rank, b.vector_rank),
            (Some(5.0), Some(2), Some(1))
        );
        assert_eq!(b.fused, f.ranked[0].1);
        assert_eq!(f.explain["c"].graph, Some(0.1235));
        assert_eq!(f.explain["a"].phrase_rank, Some(1));
        assert!((f.ranked[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-6);
        assert!((f.ranked[1].1 - (1.0 / 62.0 + 0.1 / 61.0)).abs() < 1e-6);
    }

    #[test]
    fn a_lone_retriever_keeps_its_order_and_scores() {
        let kw = fuse(&lists(), &planned(Mode::Keyword));
        assert_eq!(kw.ranked, list(&[("a", 9.0), ("b", 5.0)]));
        let v = fuse(&lists(), &planned(Mode::Vector));
        assert_eq!(v.ranked[0].0, "b");
        assert!((v.ranked[1].1 - 0.7).abs() < 1e-6);
    }

    #[test]
    fn deeper_lists_only_append_to_the_first_tier() {
        let mut p = planned(Mode::Hybrid);
        p.k = 2;
        // `d` ranks 3rd in both lists: one RRF over both would put it above `b` and `c`
        // (each in one list only); the first tier (depth 2) has already ranked them.
        let l = HitLists {
            keyword: list(&[("a", 3.0), ("b", 2.0), ("d", 1.0)]),
            vector: list(&[("a", 0.1), ("c", 0.2), ("d", 0.3)]),
            ..Default::default()
        };
        let f = fuse(&l, &p);
        let order: Vec<&str> = f.ranked.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        for w in f.ranked.windows(2) {
            assert!(w[0].1 >= w[1].1);
        }
        // The first tier alone is the same prefix.
        let short = HitLists {
            keyword: l.keyword[..2].to_vec(),
            vector: l.vector[..2].to_vec(),
            ..Default::default()
        };
        assert_eq!(fuse(&short, &p).ranked[..], f.ranked[..3]);
        assert_eq!(f.explain["d"].fused, f.ranked[3].1);
    }

    #[test]
    fn weights_steer_the_fusion() {
        let mut p = planned(Mode::Hybrid);
        p.weights.keyword = 0.0;
        let f = fuse(&lists(), &p);
        let order: Vec<&str> = f.ranked.iter().map(|(id, _)| id.as_str()).collect();
        // a (BM25 and phrase only) leaves with its lists; c's graph rank now lifts it over b.
        assert_eq!(order, ["c", "b"]);
        p.weights.keyword = 1.0;
        p.weights.phrase = 5.0;
        assert_eq!(fuse(&lists(), &p).ranked[0].0, "a");
    }
}
