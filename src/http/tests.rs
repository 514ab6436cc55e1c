//! Fast handler tests: the real router and core on a temp data dir, driven with
//! `tower::ServiceExt::oneshot` (no socket), with the deterministic `testdata::HashEmbedder`
//! instead of the ONNX model, so they need no model or runtime. They pin each handler's
//! status mapping to the error-code table; the real-model tests live in `tests/api`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::config::Config;
use crate::error::Code;
use crate::service::{Cairn, Parts};
use crate::testdata::HashEmbedder;

struct App {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let parts = Parts {
        embedder: Arc::new(HashEmbedder::default()),
        reranker: None,
    };
    let cairn = Cairn::open_with_parts(config, parts, true).await.unwrap();
    App {
        router: super::router(Arc::new(cairn)),
        _dir: dir,
    }
}

impl App {
    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn json(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }
}

/// An error response whose status is its code's, from the table.
#[track_caller]
fn assert_error((status, body): (StatusCode, Value), code: Code) {
    assert_eq!(body["error"]["code"], code.as_str(), "{body}");
    assert_eq!(status.as_u16(), code.status(), "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn each_handler_maps_its_errors_to_the_table() {
    let app = app().await;
    let search = |body: &'static str| app.json("POST", "/search", body);
    assert_error(search(r#"{"query": "  "}"#).await, Code::InvalidRequest);
    assert_error(
        search(r#"{"query": "x", "limit": 0}"#).await,
        Code::InvalidRequest,
    );
    assert_error(
        search(r#"{"query": "x", "nope": 1}"#).await,
        Code::InvalidRequest,
    );
    assert_error(search(r#"{"query": "#).await, Code::MalformedJson);
    assert_error(
        search(r#"{"query": "x", "group_by": "title"}"#).await,
        Code::InvalidRequest,
    );
    assert_error(
        search(r#"{"query": "x", "offset": 995, "limit": 10}"#).await,
        Code::InvalidRequest,
    );
    assert_error(
        search(r#"{"query": "x", "rerank": true}"#).await,
        Code::RerankerUnavailable,
    );
    let q = r#"{"query": "x", "generator": "llama"}"#;
    assert_error(
        app.json("POST", "/query", q).await,
        Code::GeneratorUnavailable,
    );
    assert_error(app.get("/nowhere").await, Code::RouteNotFound);
    assert_error(
        app.json("PUT", "/search", "{}").await,
        Code::MethodNotAllowed,
    );
    assert_error(app.get("/sources/0123456789abcdef").await, Code::NotFound);
    assert_error(app.get("/sources?limit=0").await, Code::InvalidRequest);
    assert_error(app.get("/graph/unheard-of").await, Code::ConceptNotFound);
    let text = Request::post("/sources")
        .header("content-type", "text/plain")
        .body(Body::from("hello"))
        .unwrap();
    assert_error(app.send(text).await, Code::UnsupportedMediaType);
    let empty = r#"{"title": "t", "text": "   "}"#;
    assert_error(
        app.json("POST", "/sources", empty).await,
        Code::InvalidRequest,
    );
    let bad_filter = r#"{"query": "x", "filters": {"metadata": {"team": {"$eq": "a"}}}}"#;
    assert_error(search(bad_filter).await, Code::InvalidRequest);
    assert_error(
        app.json("POST", "/query", r#"{"query": "x", "limit": 0}"#)
            .await,
        Code::InvalidRequest,
    );
}

#[tokio::test]
async fn oversized_names_and_metadata_are_refused_per_source() {
    let app = app().await;
    let long_id = json!({"id": "i".repeat(1025), "text": "Some text."});
    let (status, body) = app.json("POST", "/sources", &long_id.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["sources"][0]["error"]["code"], "invalid_request",
        "{body}"
    );
    let big_meta =
        json!({"id": "m", "text": "Some text.", "metadata": {"blob": "x".repeat(70_000)}});
    let (status, body) = app.json("POST", "/sources", &big_meta.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("metadata"), "{msg}");
    let (_, list) = app.get("/sources").await;
    assert_eq!(
        list["sources"].as_array().map(Vec::len),
        Some(0),
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_json_upload_then_the_same_jsonl_line_is_unchanged() {
    let app = app().await;
    let record = json!({"id": "r-1", "title": " A  title ", "text": "One.\r\n\r\nTwo  words.\n"});
    let (status, body) = app.json("POST", "/sources", &record.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let boundary = "cairn-test-boundary";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.jsonl\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{record}\n\r\n--{boundary}--\r\n"
    );
    let req = Request::post("/sources")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(multipart))
        .unwrap();
    let (status, body) = app.send(req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sources"][0]["status"], "unchanged", "{body}");
}

#[tokio::test]
async fn search_finds_what_was_uploaded_with_the_test_embedder() {
    let app = app().await;
    let doc = r#"{"id": "c", "title": "Cairns", "text": "Stacked stones mark the trail."}"#;
    assert_eq!(
        app.json("POST", "/sources", doc).await.0,
        StatusCode::CREATED
    );
    let (status, body) = app
        .json("POST", "/search", r#"{"query": "stones trail"}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["external_id"], "c", "{body}");
}
