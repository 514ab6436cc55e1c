//! The concept graph: extraction at ingest, `/concepts/{query}`, `/graph/{concept}`, updates and
//! deletes, `use_graph`, `context_type` presets and cross-encoder `rerank`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::*;

const IV: &str = "Instrumental variables (IV) estimation addresses endogeneity in observational \
    data. An instrumental variable must satisfy the exclusion restriction. IV estimates are \
    consistent when the exclusion restriction holds and the instrument is relevant.";
const TSLS: &str = "Two-stage least squares is the standard estimator for instrumental \
    variables. It needs a relevant instrument and the exclusion restriction. Weak instruments \
    bias two-stage least squares.";
const RCT: &str = "Randomized controlled trials avoid endogeneity by design. Randomized \
    controlled trials are the gold standard of causal inference in medicine.";
const CAIRNS: &str = "Trail cairns mark hiking routes above the tree line. Hikers should never \
    build new trail cairns, because extra cairns confuse other hikers in fog.";

async fn seeded() -> TestApp {
    seeded_with(|_| {}).await
}

async fn seeded_with(tweak: impl FnOnce(&mut cairn::config::Config)) -> TestApp {
    let app = spawn_app_with(tweak).await;
    let (s, b) = app
        .upload(&[
            ("iv.txt", IV.as_bytes().to_vec()),
            ("tsls.txt", TSLS.as_bytes().to_vec()),
            ("rct.txt", RCT.as_bytes().to_vec()),
            ("cairns.txt", CAIRNS.as_bytes().to_vec()),
        ])
        .await;
    assert_eq!(s, 201, "{b}");
    app
}

fn source_id(app_body: &Value, file: &str) -> String {
    app_body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["file"] == file)
        .and_then(|r| r["source_id"].as_str())
        .unwrap()
        .to_string()
}

fn ids(nodes: &Value) -> BTreeSet<String> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn concepts_are_found_with_merged_aliases() {
    let app = seeded().await;
    let (s, body) = app.get("/concepts/instrumental%20variables").await;
    assert_eq!(s, 200, "{body}");
    let top = &body[0];
    assert_eq!(top["id"], "instrumental-variable", "{body}");
    assert_eq!(top["score"], 1.0);
    let aliases: Vec<&str> = top["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    // Plural and singular surface forms meet in one concept, and the acronym defined as
    // `instrumental variables (IV)` is an alias of it.
    let forms: BTreeSet<&str> = aliases
        .iter()
        .copied()
        .chain([top["name"].as_str().unwrap()])
        .collect();
    assert!(forms.contains("instrumental variables"), "{top}");
    assert!(forms.contains("instrumental variable"), "{top}");
    assert!(aliases.contains(&"iv"), "{top}");
    assert_eq!(
        top["sources"].as_array().unwrap().len(),
        2,
        "iv.txt and tsls.txt: {top}"
    );
    assert!(top["frequency"].as_u64().unwrap() >= 2);
    // The alias finds the same concept, exactly.
    let (_, by_alias) = app.get("/concepts/IV").await;
    assert_eq!(by_alias[0]["id"], "instrumental-variable", "{by_alias}");
    assert_eq!(by_alias[0]["score"], 1.0);
    // Unrelated concepts are not mixed in.
    assert!(!ids(&body).contains("instrumental-variable-estimation-addresses"));
    let (_, limited) = app.get("/concepts/least%20squares?limit=1").await;
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let (s, b) = app.get("/concepts/x?limit=0").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
}

#[tokio::test]
async fn neighbourhoods_at_depth_one_and_two() {
    let app = seeded().await;
    let big = "limit=200";
    let (s, d1) = app
        .get(&format!("/graph/instrumental%20variables?depth=1&{big}"))
        .await;
    assert_eq!(s, 200, "{d1}");
    assert_eq!(d1["center"]["id"], "instrumental-variable");
    let n1 = ids(&d1["nodes"]);
    // Mentioned together in two sources: the strongest kind of neighbour.
    assert!(n1.contains("exclusion-restriction"), "{n1:?}");
    assert!(
        !n1.contains("trail-cairn"),
        "hiking is not a neighbour: {n1:?}"
    );
    for e in d1["edges"].as_array().unwrap() {
        assert!(
            e["source"] == "instrumental-variable" || e["target"] == "instrumental-variable",
            "depth 1 has only the centre's edges: {e}"
        );
        assert!(e["weight"].as_f64().unwrap() > 0.0);
        assert!(e["kind"] == "co_occurs" || e["kind"] == "similar_to");
    }
    // Depth 2 = depth 1 plus the depth-1 neighbourhoods of its nodes.
    let (_, d2) = app
        .get(&format!("/graph/instrumental-variable?depth=2&{big}"))
        .await;
    let n2 = ids(&d2["nodes"]);
    let mut expect = n1.clone();
    for n in &n1 {
        let (_, sub) = app.get(&format!("/graph/{n}?depth=1&{big}")).await;
        expect.extend(ids(&sub["nodes"]));
    }
    expect.remove("instrumental-variable");
    assert_eq!(n2, expect);
    assert!(n2.len() > n1.len(), "depth 2 reaches further: {n2:?}");
    // `limit` bounds the nodes; `min_weight` drops weak edges.
    let (_, small) = app
        .get("/graph/instrumental-variable?depth=2&limit=2")
        .await;
    assert_eq!(small["nodes"].as_array().unwrap().len(), 2);
    let (_, strong) = app
        .get("/graph/instrumental-variable?min_weight=0.99")
        .await;
    assert!(ids(&strong["nodes"]).len() < n1.len());
}

#[tokio::test]
async fn unknown_concepts_and_bad_parameters() {
    let app = seeded().await;
    let (s, b) = app.get("/graph/instrumental%20variabels").await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["error"]["code"], "concept_not_found");
    let sugg = b["error"]["suggestions"].as_array().expect("suggestions");
    assert!(!sugg.is_empty(), "{b}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("did you mean"));
    for bad in [
        "/graph/instrumental-variable?depth=0",
        "/graph/instrumental-variable?depth=4",
        "/graph/instrumental-variable?limit=0",
        "/graph/instrumental-variable?min_weight=2",
        "/graph/instrumental-variable?colour=red",
    ] {
        let (s, b) = app.get(bad).await;
        assert_eq!(s, 422, "{bad}: {b}");
        assert_eq!(b["error"]["code"], "invalid_request", "{bad}");
    }
}

#[tokio::test]
async fn updates_and_deletes_keep_the_graph_consistent() {
    let app = seeded().await;
    let (_, body) = app.upload(&[("iv.txt", IV.as_bytes().to_vec())]).await;
    let iv_id = source_id(&body, "iv.txt");
    let (_, st) = app.get("/stats").await;
    let before = st["graph"]["concepts"].as_u64().unwrap();
    assert!(
        before > 0 && st["graph"]["edges"].as_u64().unwrap() > 0,
        "{st}"
    );

    // Re-ingest iv.txt without the exclusion restriction: its mention goes, tsls.txt's stays.
    let new_iv =
        "Instrumental variables (IV) estimation addresses endogeneity in observational data.";
    let (s, b) = app.upload(&[("iv.txt", new_iv.as_bytes().to_vec())]).await;
    assert_eq!(s, 201, "{b}");
    let (_, c) = app.get("/concepts/exclusion%20restriction").await;
    assert_eq!(c[0]["id"], "exclusion-restriction");
    let srcs: Vec<&str> = c[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(!srcs.contains(&iv_id.as_str()), "{c}");
    assert_eq!(srcs.len(), 1);

    // Delete tsls.txt: concepts only it mentioned disappear, with their edges.
    let (_, list) = app.get("/sources").await;
    let tsls = list["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["external_id"] == "tsls.txt")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.get("/graph/two-stage-least-square").await.0, 200);
    assert_eq!(app.delete(&format!("/sources/{tsls}")).await, 204);
    let (s, b) = app.get("/graph/two-stage-least-square").await;
    assert_eq!(s, 404, "no orphan concept: {b}");
    let (s, b) = app.get("/graph/exclusion-restriction").await;
    assert_eq!(s, 404, "its last mention went with tsls.txt: {b}");
    let (_, st) = app.get("/stats").await;
    assert!(st["graph"]["concepts"].as_u64().unwrap() < before);

    // The stored tables agree with the graph: no orphan or dangling rows.
    let cairn = app.cairn.as_ref().unwrap();
    let report = cairn.store.check().await.unwrap();
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!(
        cairn.store.count_concepts().await.unwrap() as u64,
        st["graph"]["concepts"].as_u64().unwrap()
    );
    // Deleting the rest empties the graph.
    for s in list["sources"].as_array().unwrap() {
        app.delete(&format!("/sources/{}", s["id"].as_str().unwrap()))
            .await;
    }
    let (_, st) = app.get("/stats").await;
    assert_eq!(
        st["graph"],
        json!({"concepts": 0, "edges": 0, "mentions": 0})
    );
    assert_eq!(cairn.store.count_concepts().await.unwrap(), 0);
}

#[tokio::test]
async fn a_data_dir_without_concepts_is_backfilled_on_open() {
    let mut app = seeded().await;
    let (_, st) = app.get("/stats").await;
    let cfg = app.cfg();
    let tmp = app.stop().await;
    // What a data dir written before the concept graph looks like.
    for t in ["mentions.lance", "concepts.lance"] {
        std::fs::remove_dir_all(cfg.data_dir.join("lance").join(t)).unwrap();
    }
    let app = start(cfg).await;
    let (_, st2) = app.get("/stats").await;
    assert_eq!(st2["graph"], st["graph"], "the same graph again");
    assert!(app
        .cairn
        .as_ref()
        .unwrap()
        .store
        .check()
        .await
        .unwrap()
        .is_consistent());
    drop(tmp);
}

#[tokio::test]
async fn use_graph_expands_the_query_and_explains_it() {
    let app = seeded().await;
    let (s, b) = app
        .post_json(
            "/search",
            &json!({"query": "IV", "use_graph": true, "explain": true, "limit": 4}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let concepts = b["concepts"].as_array().expect("the expansion is shown");
    let iv = concepts
        .iter()
        .find(|c| c["id"] == "instrumental-variable")
        .expect("the acronym names the concept");
    assert_eq!(iv["via"], "exact");
    assert!(
        concepts.iter().any(|c| c["via"] == "neighbour"),
        "neighbours join: {concepts:?}"
    );
    let hits = b["results"].as_array().unwrap();
    assert!(hits
        .iter()
        .any(|h| h["scores"]["graph_rank"].as_u64() == Some(1)));
    // tsls.txt never says "IV" but mentions the concept: the graph finds it.
    let tsls = hits
        .iter()
        .find(|h| h["external_id"] == "tsls.txt")
        .expect("tsls.txt");
    assert!(tsls["scores"]["graph_rank"].is_number(), "{tsls}");
    let cairns = hits.iter().find(|h| h["external_id"] == "cairns.txt");
    assert!(
        cairns.is_none_or(|h| h["scores"]["graph_rank"].is_null()),
        "{b}"
    );
    // Without the graph there is no expansion.
    let (_, plain) = app.post_json("/search", &json!({"query": "IV"})).await;
    assert!(plain.get("concepts").is_none());
    assert_eq!(plain["context_type"], "balanced");
    // The graph is a hybrid list.
    let (s, b) = app
        .post_json(
            "/search",
            &json!({"query": "IV", "use_graph": true, "mode": "keyword"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
}

#[tokio::test]
async fn presets_change_the_ranking_and_are_overridable() {
    let app = seeded().await;
    let q = |body: Value| {
        let app = &app;
        async move {
            let (s, b) = app.post_json("/search", &body).await;
            assert_eq!(s, 200, "{b}");
            b
        }
    };
    // auditing: the exact phrase ranks first and says so.
    let b = q(json!({"query": "\"exclusion restriction\" instrument", "context_type": "auditing", "explain": true})).await;
    assert_eq!(b["context_type"], "auditing");
    let top = &b["results"][0];
    assert!(
        top["text"]
            .as_str()
            .unwrap()
            .contains("exclusion restriction"),
        "{top}"
    );
    assert_eq!(top["scores"]["phrase_rank"], 1, "{top}");
    assert!(b.get("concepts").is_none(), "auditing does not expand");
    // building: the graph is on by default, and MMR diversifies.
    let b = q(json!({"query": "estimating causal effects", "context_type": "building", "explain": true, "limit": 4})).await;
    assert_eq!(b["context_type"], "building");
    assert!(b["concepts"].is_array());
    // ...unless the request turns it off, or overrides its weights.
    let b = q(json!({"query": "estimating causal effects", "context_type": "building", "use_graph": false})).await;
    assert!(b.get("concepts").is_none());
    let b = q(json!({"query": "trail cairns", "context_type": "building", "weights": {"vector": 0.0, "graph": 0.0}, "explain": true})).await;
    let hits = b["results"].as_array().unwrap();
    assert!(!hits.is_empty());
    assert!(
        hits.iter().all(|h| h["scores"]["vector_rank"].is_null()),
        "{b}"
    );
    let (s, e) = app
        .post_json(
            "/search",
            &json!({"query": "x", "context_type": "exploring"}),
        )
        .await;
    assert_eq!(s, 422);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("auditing") && msg.contains("building") && msg.contains("balanced"),
        "{msg}"
    );
}

/// The cross-encoder built by `scripts/build-reranker` (cached outside the clone).
fn reranker_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("CAIRN_TEST_RERANKER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/cairn/models/minilm-l6-scifact-reranker")
        });
    assert!(
        dir.join("model.onnx").is_file(),
        "no reranker at {}: run scripts/build-reranker (scripts/test does)",
        dir.display()
    );
    dir
}

#[tokio::test]
async fn rerank_rescored_the_top_with_the_cross_encoder() {
    let dir = reranker_dir();
    let app = seeded_with(|c| {
        c.models.reranker = Some(dir);
        c.search.rerank_candidates = 3;
    })
    .await;
    let (s, b) = app
        .post_json(
            "/search",
            &json!({"query": "should hikers build new cairns on a trail?", "rerank": true, "explain": true}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["reranked"], true);
    let hits = b["results"].as_array().unwrap();
    assert_eq!(hits[0]["external_id"], "cairns.txt", "{b}");
    // The top 3 carry a cross-encoder probability and rank by it blended with the fused
    // order; the rest keep their fused order below them.
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for (i, h) in hits.iter().enumerate() {
        let p = h["scores"]["rerank"].as_f64();
        if i < 3 {
            let p = p.expect("re-ranked");
            assert!((0.0..=1.0).contains(&p), "{p}");
        } else {
            assert!(p.is_none());
        }
    }
    // With the cross-encoder's order alone, the score is its probability.
    let app2 = seeded_with(|c| {
        c.models.reranker = app.cfg().models.reranker;
        c.search.rerank_fused_weight = 0.0;
    })
    .await;
    let (_, b2) = app2
        .post_json(
            "/search",
            &json!({"query": "should hikers build new cairns on a trail?", "rerank": true, "explain": true, "limit": 3}),
        )
        .await;
    for h in b2["results"].as_array().unwrap() {
        let p = h["scores"]["rerank"].as_f64().unwrap();
        assert!((p - h["score"].as_f64().unwrap()).abs() < 1e-6, "{h}");
    }
    let (_, st) = app.get("/stats").await;
    let name = app.cfg().models.reranker.unwrap();
    assert_eq!(st["reranker"], name.file_name().unwrap().to_str().unwrap());
}
