//! `GET /metrics`: valid Prometheus text exposition whose counters and histograms move.

use serde_json::json;

use crate::helpers::*;

pub async fn scrape(app: &TestApp) -> String {
    let r = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

/// Checks the exposition format line by line: `# HELP`/`# TYPE` comments, or
/// `name{label="value",...} number`.
fn assert_valid_exposition(text: &str) {
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN",
            "bad value: {line}"
        );
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
            let labels = &series[name_end + 1..series.len() - 1];
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name: {line}"
                );
                assert!(v.starts_with('"'), "unquoted label value: {line}");
            }
        }
    }
}

/// The value of the first series whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_and_move() {
    let app = spawn_app().await;
    assert_eq!(
        app.upload(&[("m.txt", b"metrics make the quokka count visible".to_vec())])
            .await
            .0,
        201
    );
    let search_count =
        r#"cairn_http_request_duration_seconds_count{method="POST",route="/search",status="200"}"#;
    let before = scrape(&app).await;
    assert_valid_exposition(&before);
    let n0 = value(&before, search_count);
    for q in ["quokka", "quokka count", "visible quokka"] {
        app.search(json!({"query": q})).await;
    }
    let cached = scrape(&app).await;
    for _ in 0..2 {
        app.search(json!({"query": "quokka"})).await;
    }
    let after = scrape(&app).await;
    assert_valid_exposition(&after);
    // Other tests in this process also search, so the count grows by at least 3.
    assert!(value(&after, search_count) >= n0 + 3.0, "{after}");
    assert!(
        after.contains(r#"cairn_search_stage_seconds_bucket{stage="embed",le="0.005"}"#),
        "fine buckets: {after}"
    );
    assert!(value(&after, "cairn_embed_texts_total") >= 4.0);
    // Three new queries were embedded; the repeated one came from the query cache.
    let hits = r#"cairn_query_cache_total{result="hit"}"#;
    let misses = r#"cairn_query_cache_total{result="miss"}"#;
    assert!(value(&cached, misses) >= value(&before, misses) + 3.0);
    assert!(value(&after, hits) >= value(&cached, hits) + 2.0, "{after}");
    assert!(value(&after, "cairn_process_resident_memory_bytes") > 1e6);
    // LanceDB's metadata cache holds the tables' manifests, within its bound.
    let metadata = value(&after, r#"cairn_store_cache_bytes{cache="metadata"}"#);
    let bound = test_config(std::path::Path::new("."))
        .index
        .metadata_cache_mb
        << 20;
    assert!(metadata > 0.0 && metadata <= bound as f64, "{after}");
    assert!(after.contains("cairn_sources "), "{after}");
    // Ids never become labels: the route template is used.
    app.get("/sources/src_unknown").await;
    let text = scrape(&app).await;
    assert!(text.contains(r#"route="/sources/{id}""#), "{text}");
    assert!(!text.contains("src_unknown"));
}
