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
        // The ANN index answers only when the in-memory copy is off.
        c.index.memory_max_rows = 0;
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

/// Vector hits with their distances, for one query and filter.
async fn vector_hits(app: &TestApp, query: &str, filters: serde_json::Value) -> Vec<(String, f64)> {
    app.search(
        json!({"query": query, "mode": "vector", "limit": 20, "explain": true, "filters": filters, "group_by": "none"}),
    )
    .await
    .iter()
    .map(|h| {
        (
            h["chunk_id"].as_str().unwrap().to_string(),
            h["scores"]["vector_distance"].as_f64().unwrap(),
        )
    })
    .collect()
}

#[tokio::test]
async fn in_memory_vectors_rank_like_lancedb_and_follow_writes() {
    let mut app = seeded().await;
    let (s, b) = app
        .upload(&[(
            "birds.txt",
            b"Swallows migrate south in autumn.\n\nOwls hunt mice at night with silent wings."
                .to_vec(),
        )])
        .await;
    assert_eq!(s, 201, "{b}");
    let chunks = app.stats().await["chunks"].as_u64().unwrap();
    assert_eq!(app.stats().await["ann_index"]["memory_rows"], chunks);
    let queries = [
        ("felines napping", json!({})),
        ("night hunters", json!({"metadata": {"team": "pets"}})),
        ("machines and fuel", json!({"file_types": ["txt"]})),
    ];
    let mut from_memory = Vec::new();
    for (q, f) in &queries {
        from_memory.push(vector_hits(&app, q, f.clone()).await);
    }
    assert!(
        from_memory[1].len() == 2,
        "the metadata filter keeps the two pet chunks: {:?}",
        from_memory[1]
    );
    // The same data dir with the copy off: LanceDB's exact search gives the same ranking.
    let mut cfg = app.cfg();
    let _tmp = app.stop().await;
    cfg.index.memory_max_rows = 0;
    let mut lance = start(cfg.clone()).await;
    assert!(lance.stats().await["ann_index"]["memory_rows"].is_null());
    for ((q, f), mem) in queries.iter().zip(&from_memory) {
        let got = vector_hits(&lance, q, f.clone()).await;
        let ids = |v: &[(String, f64)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(mem), "{q}");
        for (a, b) in got.iter().zip(mem) {
            assert!((a.1 - b.1).abs() < 1e-4, "{q}: {a:?} vs {b:?}");
        }
    }
    lance.stop().await;
    // Back with the copy: a re-upload replaces a source's vectors, a delete removes them.
    cfg.index.memory_max_rows = 100;
    let app = start(cfg).await;
    let (s, b) = app
        .upload(&[(
            "birds.txt",
            b"Penguins cannot fly but swim fast in icy water.".to_vec(),
        )])
        .await;
    assert_eq!(s, 201, "{b}");
    let r = app
        .search(json!({"query": "owls hunting mice", "mode": "vector", "limit": 50}))
        .await;
    assert!(
        r.iter()
            .all(|h| !h["text"].as_str().unwrap().contains("Owls")),
        "{r:?}"
    );
    let r = app
        .search(json!({"query": "flightless seabirds swimming", "mode": "vector"}))
        .await;
    assert!(r[0]["text"].as_str().unwrap().contains("Penguins"), "{r:?}");
    let birds = r[0]["source_id"].as_str().unwrap().to_string();
    assert_eq!(app.delete(&format!("/sources/{birds}")).await, 204);
    let r = app
        .search(json!({"query": "flightless seabirds swimming", "mode": "vector", "limit": 50}))
        .await;
    assert!(r.iter().all(|h| h["source_id"] != birds.as_str()), "{r:?}");
    let st = app.stats().await;
    assert_eq!(st["ann_index"]["memory_rows"], st["chunks"]);
    app.assert_consistent().await;
}

#[tokio::test]
async fn a_store_past_memory_max_rows_searches_lancedb() {
    let app = spawn_app_with(|c| c.index.memory_max_rows = 3).await;
    let (s, b) = app
        .upload(&[("a.txt", b"Cats purr when they are content.".to_vec())])
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(app.stats().await["ann_index"]["memory_rows"], 1);
    let mut lines = String::new();
    for i in 0..5 {
        lines.push_str(&format!("{{\"id\":\"n{i}\",\"title\":\"Note {i}\",\"text\":\"Rivers carry sediment number {i}.\"}}\n"));
    }
    let (s, b) = app.upload(&[("notes.jsonl", lines.into_bytes())]).await;
    assert_eq!(s, 201, "{b}");
    let st = app.stats().await;
    assert_eq!(st["chunks"], 6);
    assert!(st["ann_index"]["memory_rows"].is_null(), "{st}");
    let r = app
        .search(json!({"query": "purring felines", "mode": "vector"}))
        .await;
    assert_eq!(r.len(), 6);
    assert!(r[0]["text"].as_str().unwrap().contains("Cats"), "{r:?}");
}
