//! Search modes, fusion, filters, explain, snippets and the ANN index.

use serde_json::json;

use crate::helpers::*;

async fn seeded() -> TestApp {
    let app = spawn_app().await;
    let (s, b) = app
        .upload_with_meta(
            &[
                (
                    "cats.txt",
                    b"Domestic cats sleep for most of the day and hunt small rodents at night."
                        .to_vec(),
                ),
                (
                    "dogs.md",
                    b"# Dogs\n\nDogs are loyal companions that enjoy long walks in the park."
                        .to_vec(),
                ),
            ],
            Some(json!({"team": "pets", "year": 2024})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app
        .upload_with_meta(
            &[("engines.txt", b"Diesel engines compress air until the injected fuel ignites; the glowplug helps cold starts.".to_vec())],
            Some(json!({"team": "mech"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    app
}

#[tokio::test]
async fn modes_rank_the_right_document() {
    let app = seeded().await;
    // Keyword: an exact rare term.
    let r = app
        .search(json!({"query": "glowplug", "mode": "keyword"}))
        .await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["title"], "engines");
    // Vector: a paraphrase with no shared content words.
    let r = app
        .search(json!({"query": "felines napping", "mode": "vector"}))
        .await;
    assert_eq!(r[0]["title"], "cats", "{r:?}");
    assert!(
        r.len() >= 3,
        "vector search returns every chunk it can rank"
    );
    // Hybrid finds both kinds.
    let r = app
        .search(json!({"query": "feline animals that hunt rodents"}))
        .await;
    assert_eq!(r[0]["title"], "cats");
    let r = app.search(json!({"query": "glowplug", "limit": 1})).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["title"], "engines");
    // Keyword mode with only stop words finds nothing rather than failing.
    assert!(app
        .search(json!({"query": "the and of", "mode": "keyword"}))
        .await
        .is_empty());
}

#[tokio::test]
async fn explain_snippets_and_weights() {
    let app = seeded().await;
    let r = app
        .search(json!({"query": "loyal dogs walks", "explain": true}))
        .await;
    let top = &r[0];
    assert_eq!(top["title"], "Dogs");
    let e = &top["scores"];
    assert_eq!(e["bm25_rank"], 1, "{e}");
    assert!(e["bm25"].as_f64().unwrap() > 0.0);
    assert!(e["vector_distance"].as_f64().is_some(), "{e}");
    assert!(e["vector_rank"].as_u64().is_some());
    let fused = e["fused"].as_f64().unwrap();
    let expect = 1.0 / (60.0 + e["bm25_rank"].as_f64().unwrap())
        + 1.0 / (60.0 + e["vector_rank"].as_f64().unwrap());
    assert!(
        (fused - expect).abs() < 1e-5,
        "rrf k=60: {fused} vs {expect}"
    );
    assert!(
        top["snippet"]
            .as_str()
            .unwrap()
            .contains("<mark>loyal</mark>"),
        "{top}"
    );
    // Per-stage timings: hybrid runs every stage; keyword mode embeds nothing.
    let (_, full) = app
        .post_json("/search", &json!({"query": "loyal dogs"}))
        .await;
    let t = &full["timing"];
    for stage in ["embed_ms", "keyword_ms", "vector_ms", "fusion_ms"] {
        assert!(t[stage].as_f64().unwrap() > 0.0, "{stage}: {full}");
    }
    assert!(
        full["took_ms"].as_f64().unwrap()
            >= t["embed_ms"].as_f64().unwrap() + t["vector_ms"].as_f64().unwrap()
    );
    let (_, kw) = app
        .post_json(
            "/search",
            &json!({"query": "loyal dogs", "mode": "keyword"}),
        )
        .await;
    assert_eq!(kw["timing"]["embed_ms"], 0.0);
    assert_eq!(kw["timing"]["vector_ms"], 0.0);
    // Without explain, no scores.
    let r = app.search(json!({"query": "loyal dogs"})).await;
    assert!(r[0].get("scores").is_none());
    // Weights: keyword-only fusion equals keyword ranking.
    let r = app
        .search(json!({"query": "glowplug engines", "weights": {"vector": 0.0}, "explain": true}))
        .await;
    assert!(
        r.iter().all(|h| h["scores"]["bm25_rank"].is_u64()),
        "only BM25 hits with vector weight 0"
    );
}

#[tokio::test]
async fn filters_apply_to_both_retrievers() {
    let app = seeded().await;
    for mode in ["hybrid", "vector", "keyword"] {
        let r = app
            .search(json!({"query": "animals and engines", "mode": mode, "filters": {"metadata": {"team": "mech"}}}))
            .await;
        assert!(!r.is_empty() || mode == "keyword", "{mode}");
        assert!(r.iter().all(|h| h["title"] == "engines"), "{mode}: {r:?}");
        let r = app.search(json!({"query": "dogs cats engines", "mode": mode, "filters": {"file_types": ["md"]}})).await;
        assert!(!r.is_empty(), "{mode}");
        assert!(r.iter().all(|h| h["title"] == "Dogs"), "{mode}: {r:?}");
        let r = app.search(json!({"query": "dogs cats", "mode": mode, "filters": {"metadata": {"year": 2024}}})).await;
        assert!(!r.is_empty(), "{mode}");
        assert!(
            r.iter()
                .all(|h| h["title"] == "cats" || h["title"] == "Dogs"),
            "{mode}: {r:?}"
        );
    }
    let all = app
        .search(json!({"query": "cats", "mode": "keyword"}))
        .await;
    let cat_id = all[0]["source_id"].as_str().unwrap();
    let r = app
        .search(json!({"query": "dogs cats engines", "filters": {"source_ids": [cat_id]}}))
        .await;
    assert_eq!(source_ids(&r), vec![cat_id.to_string()]);
    let r = app
        .search(json!({"query": "cats", "filters": {"metadata": {"team": "nobody"}}}))
        .await;
    assert!(r.is_empty());
    // Quotes and backslashes in filter values are data, not syntax.
    for v in ["o'brien", "a\\b", "x\" OR 1=1 --", "' OR ''='"] {
        for mode in ["hybrid", "vector", "keyword"] {
            let body = json!({"query": "cats", "mode": mode,
                "filters": {"metadata": {"team": v}, "source_ids": [v], "file_types": [v]}});
            let r = app.search(body).await;
            assert!(r.is_empty(), "{mode} {v}: {r:?}");
        }
    }
}

#[tokio::test]
async fn ann_index_is_built_past_the_threshold() {
    let app = spawn_app_with(|c| {
        c.index.ann_min_rows = 300;
        c.ingest.batch_sources = 400;
    })
    .await;
    assert_eq!(app.stats().await["ann_index"]["state"], "exact");
    let mut lines = String::new();
    let words = [
        "river", "mountain", "forest", "desert", "ocean", "valley", "glacier", "meadow",
    ];
    for i in 0..320 {
        lines.push_str(&format!(
            "{{\"id\":\"n{i}\",\"title\":\"Note {i}\",\"text\":\"Note {i} is about the {} number {i}.\"}}\n",
            words[i % words.len()]
        ));
    }
    let (s, b) = app.upload(&[("notes.jsonl", lines.into_bytes())]).await;
    assert_eq!(s, 201, "{b}");
    let st = app.stats().await;
    assert_eq!(st["chunks"], 320);
    assert_eq!(st["ann_index"]["state"], "IVF_PQ", "{st}");
    let r = app
        .search(json!({"query": "glacier", "mode": "vector", "limit": 5}))
        .await;
    assert_eq!(r.len(), 5);
    assert!(
        r.iter()
            .any(|h| h["text"].as_str().unwrap().contains("glacier")),
        "{r:?}"
    );
}
