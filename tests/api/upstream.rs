//! The `openai` generator backend against OpenAI-wire-compatible servers: a scripted one
//! started here (streamed chunks, 429s, stalls, malformed events) and, with the `llama`
//! feature, Cairn's own `/v1/chat/completions` over the local model. Plus the retrieval-only
//! `none` backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::helpers::{assert_error, read_sse, spawn_app_with, TestApp};

/// What the scripted upstream does with each request, in order (the last repeats).
#[derive(Clone)]
pub enum Step {
    /// Answer with these content deltas, then usage and `[DONE]`.
    Stream(Vec<&'static str>),
    /// An HTTP error status with an OpenAI error body (and `Retry-After: 0`).
    Status(u16),
    /// Send the response headers, then nothing until released.
    Stall,
    /// A stream whose second event is not JSON.
    Malformed,
}

#[derive(Clone)]
pub struct Upstream {
    steps: Arc<Vec<Step>>,
    calls: Arc<AtomicUsize>,
    auth: Arc<Mutex<Vec<String>>>,
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Signalled when a request arrives; released to end stalls.
    pub arrived: Arc<Notify>,
    pub release: Arc<Notify>,
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let v = json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

async fn completions(State(up): State<Upstream>, headers: HeaderMap, body: String) -> Response {
    let i = up.calls.fetch_add(1, Ordering::SeqCst);
    if let Some(a) = headers.get("authorization") {
        up.auth
            .lock()
            .unwrap()
            .push(a.to_str().unwrap().to_string());
    }
    up.bodies
        .lock()
        .unwrap()
        .push(serde_json::from_str(&body).unwrap());
    up.arrived.notify_one();
    let step = up.steps[i.min(up.steps.len() - 1)].clone();
    let sse = |body: axum::body::Body| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    };
    match step {
        Step::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", "0")],
            axum::Json(
                json!({"error": {"message": "slow down", "type": "rate_limit", "code": null}}),
            ),
        )
            .into_response(),
        Step::Stream(parts) => {
            let mut s = chunk(json!({"role": "assistant", "content": ""}), None);
            for p in &parts {
                s.push_str(&chunk(json!({ "content": p }), None));
            }
            s.push_str(&chunk(json!({}), Some("stop")));
            s.push_str(&format!(
                "data: {}\n\n",
                json!({"id": "x", "object": "chat.completion.chunk", "choices": [],
                    "usage": {"prompt_tokens": 111, "completion_tokens": parts.len(), "total_tokens": 111 + parts.len()}})
            ));
            s.push_str("data: [DONE]\n\n");
            sse(s.into())
        }
        Step::Malformed => {
            let s = format!(
                "{}data: {{\"choices\": [oops\n\n",
                chunk(json!({"content": "Partial"}), None)
            );
            sse(s.into())
        }
        Step::Stall => {
            let release = up.release.clone();
            let stream = futures::stream::once(async move {
                release.notified().await;
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"data: [DONE]\n\n"))
            });
            sse(axum::body::Body::from_stream(stream))
        }
    }
}

/// Starts the scripted upstream; returns it and its `/v1` base URL.
pub async fn upstream(steps: Vec<Step>) -> (Upstream, String) {
    let up = Upstream {
        steps: Arc::new(steps),
        calls: Default::default(),
        auth: Default::default(),
        bodies: Default::default(),
        arrived: Default::default(),
        release: Default::default(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (up, url)
}

/// A Cairn whose generator is the `openai` backend pointed at `url`, with one sample ingested.
pub async fn cairn_over(url: &str, tweak: impl FnOnce(&mut cairn::config::Config)) -> TestApp {
    let url = url.to_string();
    let app = spawn_app_with(move |c| {
        c.generator.backend = cairn::config::Backend::Openai;
        c.generator.base_url = url;
        c.generator.model = Some("up-model".into());
        c.generator.api_key = cairn::config::Secret::new("sk-test-123");
        c.generator.read_timeout_s = 1;
        tweak(c);
    })
    .await;
    let bytes = std::fs::read("data/samples/trail-cairns.txt").unwrap();
    let (s, v) = app.upload(&[("trail-cairns.txt", bytes)]).await;
    assert_eq!(s, 201, "{v}");
    app
}

const Q: &str = "What are trail cairns?";

#[tokio::test]
async fn streams_from_the_upstream_after_retrying_429s() {
    let (up, url) = upstream(vec![
        Step::Status(429),
        Step::Status(503),
        Step::Stream(vec!["Cairns ", "mark trails ", "[1]."]),
    ])
    .await;
    let app = cairn_over(&url, |_| {}).await;
    let (s, r) = app.post_json("/query", &json!({"query": Q})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["answer"], "Cairns mark trails [1].");
    assert_eq!(
        up.calls.load(Ordering::SeqCst),
        3,
        "two retries, then success"
    );
    assert_eq!(r["usage"]["prompt_tokens"], 111, "the upstream's own usage");
    assert_eq!(r["usage"]["completion_tokens"], 3);
    assert_eq!(r["citations"][0]["used"], true);
    assert_eq!(
        r["generator"],
        json!({"backend": "openai", "model": "up-model"})
    );
    // The key went upstream as a bearer token; the request was a streamed chat completion
    // with Cairn's numbered context.
    assert!(up
        .auth
        .lock()
        .unwrap()
        .iter()
        .all(|a| a == "Bearer sk-test-123"));
    let sent = up.bodies.lock().unwrap()[2].clone();
    assert_eq!(sent["model"], "up-model");
    assert_eq!(sent["stream"], true);
    let user = sent["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(user.contains("[1] ") && user.contains(Q), "{user}");
    // The key never shows up in what the server reports about itself.
    let stats = app.stats().await;
    assert!(!stats.to_string().contains("sk-test-123"));
}

#[tokio::test]
async fn upstream_failures_become_clear_errors() {
    // Rate limited for good: retries exhausted → 502 upstream_error.
    let (up, url) = upstream(vec![Step::Status(429)]).await;
    let app = cairn_over(&url, |c| c.generator.retries = 1).await;
    assert_error(
        app.post_json("/query", &json!({"query": Q})).await,
        502,
        "upstream_error",
    );
    assert_eq!(up.calls.load(Ordering::SeqCst), 2);

    // A client error is not retried.
    let (up, url) = upstream(vec![Step::Status(400)]).await;
    let app = cairn_over(&url, |_| {}).await;
    assert_error(
        app.post_json("/query", &json!({"query": Q})).await,
        502,
        "upstream_error",
    );
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);

    // Silence after the headers → 504, and as an `error` event when streaming.
    let (up, url) = upstream(vec![Step::Stall]).await;
    let app = cairn_over(&url, |c| c.generator.retries = 0).await;
    assert_error(
        app.post_json("/query", &json!({"query": Q})).await,
        504,
        "upstream_timeout",
    );
    let resp = app
        .post_stream("/query", &json!({"query": Q, "stream": true}))
        .await;
    let events = read_sse(resp).await;
    assert_eq!(events[0].event, "sources");
    let last = events.last().unwrap();
    assert_eq!(last.event, "error", "{events:?}");
    assert_eq!(last.data["code"], "upstream_timeout");
    up.release.notify_waiters();

    // A malformed event mid-stream: the tokens so far, then an `error` event; no panic.
    let (_up, url) = upstream(vec![Step::Malformed]).await;
    let app = cairn_over(&url, |_| {}).await;
    let resp = app
        .post_stream("/query", &json!({"query": Q, "stream": true}))
        .await;
    let events = read_sse(resp).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["sources", "token", "error"], "{events:?}");
    assert_eq!(events[1].data["delta"], "Partial");
    assert_eq!(events[2].data["code"], "upstream_error");
    assert!(events[2].data["message"]
        .as_str()
        .unwrap()
        .contains("malformed"));
    let (s, _) = app.get("/health").await;
    assert_eq!(s, 200, "the server is still up");
}

#[tokio::test]
async fn long_silences_get_keep_alive_comments() {
    let (up, url) = upstream(vec![Step::Stall]).await;
    let app = cairn_over(&url, |c| {
        c.answer.keepalive_s = 1;
        c.generator.read_timeout_s = 3;
        c.generator.retries = 0;
    })
    .await;
    let resp = app
        .post_stream("/query", &json!({"query": Q, "stream": true}))
        .await;
    let raw = resp.text().await.unwrap();
    up.release.notify_waiters();
    // sources, then at least one comment while the upstream is silent, then the timeout.
    let sources = raw.find("event: sources").unwrap();
    let comment = raw.find(": keep-alive").expect(&raw);
    let error = raw.find("event: error").unwrap();
    assert!(sources < comment && comment < error, "{raw}");
}

#[tokio::test]
async fn a_full_generation_queue_answers_503_with_retry_after() {
    let (up, url) = upstream(vec![Step::Stall]).await;
    let app = cairn_over(&url, |c| {
        c.generator.max_concurrent = 1;
        c.generator.queue_timeout_ms = 0;
        c.generator.read_timeout_s = 30;
    })
    .await;
    let first = {
        let client = app.client.clone();
        let url = format!("{}/query", app.addr);
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"query": Q}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // The first request holds the only slot once it reaches the upstream.
    up.arrived.notified().await;
    let r = app
        .client
        .post(format!("{}/query", app.addr))
        .json(&json!({"query": Q}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    up.release.notify_waiters();
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn without_a_generator_answers_are_the_sources() {
    let app = spawn_app_with(|_| {}).await;
    let bytes = std::fs::read("data/samples/trail-cairns.txt").unwrap();
    app.upload(&[("trail-cairns.txt", bytes)]).await;
    let (s, r) = app
        .post_json("/query", &json!({"query": Q, "limit": 3}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["answer"], Value::Null);
    assert_eq!(r["finish_reason"], "retrieval_only");
    assert_eq!(r["generator"]["backend"], "none");
    let hits = app
        .search(json!({"query": Q, "limit": 3, "group_by": "none"}))
        .await;
    let cited: Vec<&Value> = r["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["chunk_id"])
        .collect();
    let found: Vec<&Value> = hits.iter().map(|h| &h["chunk_id"]).collect();
    assert_eq!(cited, found);
    assert_error(
        app.post_json("/query", &json!({"query": Q, "generator": "llama"}))
            .await,
        422,
        "generator_unavailable",
    );
    assert_error(
        app.post_json("/query", &json!({"query": Q, "max_tokens": 0}))
            .await,
        422,
        "invalid_request",
    );
    let (s, e) = app
        .post_json("/query", &json!({"query": Q, "stream": false, "bogus": 1}))
        .await;
    assert_eq!(s, 422);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("bogus"),
        "{e}"
    );
    // Search options apply to retrieval: a filter that matches nothing retrieves nothing.
    let (s, r) = app
        .post_json(
            "/query",
            &json!({"query": Q, "filters": {"source_ids": ["src_none"]}}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["citations"], json!([]));
    assert_error(
        app.post_json("/query", &json!({"query": Q, "stream": "yes"}))
            .await,
        422,
        "invalid_request",
    );
    let (s, e) = app
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "anything", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["code"], "model_not_found");
}

/// The backend against a real OpenAI-compatible server: Cairn's own chat endpoint over the
/// local model.
#[cfg(feature = "llama")]
#[tokio::test]
async fn openai_backend_against_cairns_own_chat_endpoint() {
    let local = spawn_app_with(crate::helpers::use_llama).await;
    let bytes = std::fs::read("data/samples/trail-cairns.txt").unwrap();
    local.upload(&[("trail-cairns.txt", bytes)]).await;
    let model = local.generator().model().to_string();
    let app = cairn_over(&format!("{}/v1", local.addr), |c| {
        c.generator.model = Some(model.clone());
        c.generator.read_timeout_s = 60;
        c.generator.max_tokens = 32;
    })
    .await;
    let (s, r) = app.post_json("/query", &json!({"query": Q})).await;
    assert_eq!(s, 200, "{r}");
    assert!(!r["answer"].as_str().unwrap().is_empty());
    let u = &r["usage"];
    assert!(u["completion_tokens"].as_u64().unwrap() >= 1);
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    let resp = app
        .post_stream("/query", &json!({"query": Q, "stream": true}))
        .await;
    let events = read_sse(resp).await;
    let text: String = events
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(
        text,
        r["answer"].as_str().unwrap(),
        "greedy upstream: same text"
    );
    assert_eq!(events.last().unwrap().event, "done");
}
