//! Every error status: JSON body with a stable code, never a 500 for bad input, nothing stored.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let app = spawn_app_with(|c| {
        c.server.max_json_bytes = 4096;
        c.server.max_upload_bytes = 64 * 1024;
    })
    .await;
    let (s, _) = app
        .upload(&[("a.txt", b"kept safe: the quillion archive".to_vec())])
        .await;
    assert_eq!(s, 201);
    let before = app.stats().await;
    let url = |p: &str| format!("{}{p}", app.addr);
    let send = |rb: reqwest::RequestBuilder| async move {
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json::<serde_json::Value>().await.unwrap_or_default())
    };

    // 400 malformed JSON.
    let r = send(
        app.client
            .post(url("/search"))
            .header("content-type", "application/json")
            .body("{\"query\": "),
    )
    .await;
    assert_error(r, 400, "malformed_json");
    let r = send(
        app.client
            .post(url("/sources"))
            .header("content-type", "application/json")
            .body("{nope"),
    )
    .await;
    assert_error(r, 400, "malformed_json");
    // 404 unknown source and unknown route.
    assert_error(app.get("/sources/src_doesnotexist").await, 404, "not_found");
    assert_error(app.get("/nowhere").await, 404, "route_not_found");
    // 405.
    let r = send(app.client.put(url("/search"))).await;
    assert_error(r, 405, "method_not_allowed");
    // 413 body too large, JSON and upload.
    let big = "x".repeat(10_000);
    assert_error(
        app.post_json("/search", &json!({"query": big})).await,
        413,
        "payload_too_large",
    );
    assert_error(
        app.post_json("/sources", &json!({"text": big})).await,
        413,
        "payload_too_large",
    );
    let (s, b) = app.upload(&[("big.txt", vec![b'a'; 200 * 1024])]).await;
    assert_eq!(s, 413, "{b}");
    assert_eq!(b["error"]["code"], "payload_too_large");
    // 415 unsupported media: wrong content type, and an unsupported file type.
    let r = send(
        app.client
            .post(url("/search"))
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_error(r, 415, "unsupported_media_type");
    let r = send(
        app.client
            .post(url("/sources"))
            .header("content-type", "text/plain")
            .body("hello"),
    )
    .await;
    assert_error(r, 415, "unsupported_media_type");
    let (s, b) = app.upload(&[("tool.exe", vec![0x4d, 0x5a, 0, 1])]).await;
    assert_eq!(s, 415, "{b}");
    assert_eq!(b["error"]["code"], "unsupported_media_type");
    // 422 validation.
    assert_error(
        app.post_json("/search", &json!({"query": "x", "limit": 0}))
            .await,
        422,
        "invalid_request",
    );
    assert_error(
        app.post_json("/search", &json!({"query": "x", "limit": 101}))
            .await,
        422,
        "invalid_request",
    );
    assert_error(
        app.post_json("/search", &json!({"query": "   "})).await,
        422,
        "invalid_request",
    );
    assert_error(
        app.post_json("/search", &json!({"query": "x", "mode": "fuzzy"}))
            .await,
        422,
        "invalid_request",
    );
    let r = app
        .post_json("/search", &json!({"query": "x", "colour": "red"}))
        .await;
    assert!(
        r.1["error"]["message"].as_str().unwrap().contains("colour"),
        "names the unknown field: {}",
        r.1
    );
    assert_error(r, 422, "invalid_request");
    assert_error(
        app.post_json(
            "/search",
            &json!({"query": "x", "weights": {"keyword": -1.0}}),
        )
        .await,
        422,
        "invalid_request",
    );
    assert_error(
        app.post_json("/search", &json!({"query": "x", "rerank": true}))
            .await,
        422,
        "reranker_unavailable",
    );
    assert_error(
        app.post_json("/sources", &json!({"text": ""})).await,
        422,
        "invalid_request",
    );
    assert_error(app.get("/sources?limit=0").await, 422, "invalid_request");
    assert_error(app.get("/sources?limit=abc").await, 422, "invalid_request");
    // 422 unreadable documents: corrupt PDF and DOCX, empty text, binary .txt.
    for (name, bytes) in [
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf".to_vec()),
        ("broken.docx", b"not a zip".to_vec()),
        ("empty.md", b"   \n\n  ".to_vec()),
        ("binary.txt", vec![0u8, 159, 146, 150, 0, 0]),
    ] {
        let (s, b) = app.upload(&[(name, bytes)]).await;
        assert_eq!(s, 422, "{name}: {b}");
        assert_eq!(b["error"]["code"], "unreadable_document", "{name}: {b}");
    }
    // A bad file does not stop the good one beside it.
    let (s, b) = app
        .upload(&[
            ("bad.pdf", b"garbage".to_vec()),
            ("good.txt", b"the zephyrine valley".to_vec()),
        ])
        .await;
    assert_eq!(s, 201, "{b}");
    let statuses: Vec<&str> = b["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "created"]);

    // Nothing stored was harmed.
    let after = app.stats().await;
    assert_eq!(
        after["sources"].as_u64().unwrap(),
        before["sources"].as_u64().unwrap() + 1
    );
    assert_eq!(after["chunks_vector"], after["chunks_keyword"]);
    assert_eq!(
        app.search(json!({"query": "quillion"})).await[0]["external_id"],
        "a.txt"
    );
    app.assert_consistent().await;
}
