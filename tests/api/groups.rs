//! Grouped search (`group_by`) and pages (`offset`) with the real model: groups never repeat
//! a source, respect filters, and page without duplicates or gaps.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::*;

const TOPICS: [&str; 6] = [
    "Cairns are stacked stones that mark hiking trails above the tree line.",
    "Trail markers painted on rocks guide walkers through fog on the ridge.",
    "Rangers rebuild fallen stone piles after winter storms on mountain paths.",
    "Hikers should never add stones to a cairn because it confuses route finding.",
    "Glaciers leave moraines of loose stones that look like trail cairns.",
    "Mountain huts keep maps of the marked trails and the cairn lines between them.",
];

/// Six sources of four short chunks each, every one about trails and stones; teams a and b
/// alternate and the last source has no team.
async fn library() -> TestApp {
    library_with(|_| {}).await
}

async fn library_with(tweak: impl FnOnce(&mut cairn::config::Config)) -> TestApp {
    let app = spawn_app_with(|c| {
        c.chunking.max_tokens = 24;
        c.chunking.overlap_tokens = 0;
        tweak(c);
    })
    .await;
    for i in 0..6 {
        let text: Vec<&str> = (0..4).map(|j| TOPICS[(i + j) % 6]).collect();
        let meta = match i {
            5 => json!({"year": 2024}),
            _ => json!({"team": if i % 2 == 0 { "a" } else { "b" }}),
        };
        let (s, b) = app
            .upload_with_meta(
                &[(&format!("trail{i}.txt"), text.join("\n\n").into_bytes())],
                Some(meta),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    app
}

async fn search(app: &TestApp, body: Value) -> Value {
    let (s, v) = app.post_json("/search", &body).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn ids(v: &Value, field: &str) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[field].as_str().unwrap().to_string())
        .collect()
}

/// Every page of `body` at `limit`, following `next_offset`, concatenated.
async fn all_pages(app: &TestApp, body: Value, limit: usize) -> (Vec<Value>, usize) {
    let (mut out, mut offset, mut pages) = (Vec::new(), Some(0), 0);
    while let Some(o) = offset {
        let mut b = body.clone();
        b["limit"] = json!(limit);
        b["offset"] = json!(o);
        let v = search(app, b).await;
        assert_eq!(v["offset"], o);
        let page = v["results"].as_array().unwrap().clone();
        assert!(!page.is_empty(), "page at {o} is empty though announced");
        out.extend(page);
        offset = v["next_offset"].as_u64().map(|n| n as usize);
        pages += 1;
    }
    (out, pages)
}

#[tokio::test]
async fn groups_hold_one_source_each_ranked_by_their_best_chunk() {
    let app = library().await;
    let chunks = search(
        &app,
        json!({"query": "stones on trails", "group_by": "none", "limit": 50}),
    )
    .await;
    let chunk_sources = ids(&chunks, "source_id");
    assert!(chunk_sources.len() >= 20, "{chunks}");
    assert!(chunks.get("groups").is_none());
    // The default groups by source: one result per source, in the order of each source's
    // first chunk in the ungrouped ranking.
    let v = search(&app, json!({"query": "stones on trails", "group_size": 2})).await;
    let groups = v["groups"].as_array().unwrap();
    let sources = ids(&v, "source_id");
    let mut firsts: Vec<String> = Vec::new();
    for s in &chunk_sources {
        if !firsts.contains(s) {
            firsts.push(s.clone());
        }
    }
    assert_eq!(sources, firsts);
    assert_eq!(sources.len(), 6);
    for (g, r) in groups.iter().zip(v["results"].as_array().unwrap()) {
        let hits = g["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 2, "{g}");
        assert_eq!(&hits[0], r);
        assert_eq!(g["key"], r["source_id"]);
        assert_eq!(g["score"], r["score"]);
        assert!(hits.iter().all(|h| h["source_id"] == r["source_id"]));
        assert!(hits[0]["score"].as_f64() >= hits[1]["score"].as_f64());
    }
    // `limit` counts groups.
    let two = search(&app, json!({"query": "stones on trails", "limit": 2})).await;
    assert_eq!(ids(&two, "source_id"), sources[..2]);
    assert_eq!(two["next_offset"], 2);
}

#[tokio::test]
async fn pages_neither_repeat_nor_skip() {
    let app = library().await;
    for group_by in ["none", "source", "metadata.team"] {
        let body = json!({"query": "marked mountain trails", "group_by": group_by});
        let mut whole = body.clone();
        whole["limit"] = json!(100);
        let whole = search(&app, whole).await;
        assert_eq!(whole["next_offset"], Value::Null);
        let (paged, pages) = all_pages(&app, body, 2).await;
        let got: Vec<&Value> = paged.iter().map(|h| &h["chunk_id"]).collect();
        let want: Vec<&Value> = whole["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| &h["chunk_id"])
            .collect();
        assert_eq!(got, want, "group_by {group_by}");
        assert!(pages >= 2, "group_by {group_by}: {pages} pages");
        let uniq: HashSet<&&Value> = got.iter().collect();
        assert_eq!(uniq.len(), got.len());
    }
    // Teams a and b, and the source without a team as one `null` group.
    let v = search(
        &app,
        json!({"query": "marked mountain trails", "group_by": "metadata.team", "group_size": 10}),
    )
    .await;
    let keys: HashSet<String> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap_or("null").to_string())
        .collect();
    assert_eq!(keys, HashSet::from(["a".into(), "b".into(), "null".into()]));
}

#[tokio::test]
async fn filters_apply_before_grouping() {
    let app = library().await;
    let all = search(&app, json!({"query": "stones", "limit": 100})).await;
    let a_sources: HashSet<String> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["source_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(a_sources.len(), 6);
    for mode in ["hybrid", "keyword", "vector"] {
        let v = search(
            &app,
            json!({"query": "stones", "mode": mode, "limit": 100, "group_size": 10,
                   "filters": {"metadata": {"team": "a"}}}),
        )
        .await;
        let groups = v["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 3, "mode {mode}: {v}");
        for g in groups {
            for h in g["hits"].as_array().unwrap() {
                let (s, src) = app
                    .get(&format!("/sources/{}", h["source_id"].as_str().unwrap()))
                    .await;
                assert_eq!(s, 200);
                assert_eq!(src["metadata"]["team"], "a", "mode {mode}: {h}");
            }
        }
    }
}

#[tokio::test]
async fn bad_groups_and_pages_are_refused() {
    let app = library().await;
    for body in [
        json!({"query": "x", "group_by": "title"}),
        json!({"query": "x", "group_by": "metadata."}),
        json!({"query": "x", "group_size": 0}),
        json!({"query": "x", "group_size": 11}),
        json!({"query": "x", "offset": 901, "limit": 100}),
        json!({"query": "x", "offset": -1}),
    ] {
        assert_error(
            app.post_json("/search", &body).await,
            422,
            "invalid_request",
        );
    }
    // An answer reads the top of the ranking: no pages.
    let (s, v) = app
        .post_json(
            "/query",
            &json!({"query": "x", "offset": 10, "generator": "none"}),
        )
        .await;
    assert_error((s, v), 422, "invalid_request");
    // Past the end: an empty page, no next one.
    let v = search(&app, json!({"query": "stones", "offset": 50})).await;
    assert_eq!(v["results"], json!([]));
    assert_eq!(v["next_offset"], Value::Null);
}

#[tokio::test]
async fn the_depth_grows_until_the_groups_are_found() {
    // Each retriever's first fetch holds 2 chunks: far too few for 6 sources of 4 chunks.
    let app = library_with(|c| {
        c.search.candidates = 2;
        c.search.max_candidates = 64;
    })
    .await;
    for mode in ["hybrid", "keyword", "vector"] {
        let v = search(
            &app,
            json!({"query": "stones trails cairns", "mode": mode, "limit": 6}),
        )
        .await;
        let sources: HashSet<String> = ids(&v, "source_id").into_iter().collect();
        assert_eq!(sources.len(), 6, "mode {mode}: {v}");
        assert_eq!(v["next_offset"], Value::Null);
    }
    // Ungrouped pages past the first fetch reach every chunk, each once.
    let (paged, _) = all_pages(&app, json!({"query": "stones", "group_by": "none"}), 5).await;
    let chunks: HashSet<&Value> = paged.iter().map(|h| &h["chunk_id"]).collect();
    assert_eq!((chunks.len(), paged.len()), (24, 24));
}
