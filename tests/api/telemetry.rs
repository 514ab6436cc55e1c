//! Telemetry exporters against receivers started here that speak the real wire protocols:
//! OTLP/HTTP JSON traces (feature `otel`) and Sentry envelopes (feature `sentry`), each fed
//! by a real `cairn serve` process.

#![cfg(any(feature = "otel", feature = "sentry"))]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::crash::cairn_cmd;

/// A receiver that keeps every request body POSTed to `path`; returns them and its base URL.
async fn receiver(path: &str) -> (Arc<Mutex<Vec<Vec<u8>>>>, String) {
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
    let app = Router::new()
        .route(
            path,
            post(
                |State(b): State<Arc<Mutex<Vec<Vec<u8>>>>>, body: axum::body::Bytes| async move {
                    b.lock().unwrap().push(body.to_vec());
                    "{}"
                },
            ),
        )
        .with_state(bodies.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (bodies, url)
}

fn spawn_serve(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = cairn_cmd(data);
    cmd.args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("cairn listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (child, url)
}

/// SIGTERM, then wait: the exporters flush when the process shuts down.
fn stop(mut child: Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[cfg(feature = "otel")]
mod otlp {
    use super::*;
    use crate::upstream::{upstream, Step};

    /// Every exported span, flattened, with its resource attributes.
    fn spans(bodies: &[Vec<u8>]) -> Vec<Value> {
        let mut out = Vec::new();
        for b in bodies {
            let v: Value = serde_json::from_slice(b).expect("OTLP/HTTP JSON body");
            for rs in v["resourceSpans"].as_array().unwrap() {
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    for s in ss["spans"].as_array().unwrap() {
                        let mut s = s.clone();
                        s["resource"] = rs["resource"].clone();
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// An attribute's value as a string (OTLP JSON encodes ints as strings or numbers).
    fn attr(span: &Value, key: &str) -> Option<String> {
        span["attributes"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| {
                let v = &a["value"];
                for k in ["stringValue", "intValue", "doubleValue", "boolValue"] {
                    match &v[k] {
                        Value::String(s) => return s.clone(),
                        Value::Null => {}
                        other => return other.to_string(),
                    }
                }
                v.to_string()
            })
    }

    fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
        spans.iter().filter(|s| s["name"] == name).collect()
    }

    // Multi-threaded: the receivers keep serving while the test blocks on the child process.
    #[tokio::test(flavor = "multi_thread")]
    async fn traces_have_stage_spans_a_remote_parent_and_gen_ai_attributes() {
        let (bodies, collector) = receiver("/v1/traces").await;
        let (_up, llm) =
            upstream(vec![Step::Stream(vec!["Cairns ", "mark trails ", "[1]."])]).await;
        let tmp = tempfile::tempdir().unwrap();
        let endpoint = format!("{collector}/v1/traces");
        let (child, url) = spawn_serve(
            &tmp.path().join("data"),
            &[
                "--generator",
                "openai",
                "--llm-model",
                "up-model",
                "--llm-base-url",
                &llm,
            ],
            &[
                ("CAIRN_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
                ("CAIRN_TELEMETRY__SERVICE_NAME", "cairn-test"),
                // Logs off: the trace export does not depend on the log filter.
                ("CAIRN_LOG", "error"),
            ],
        );
        let client = reqwest::Client::new();
        let text = std::fs::read_to_string("data/samples/trail-cairns.txt").unwrap();
        let r = client
            .post(format!("{url}/sources"))
            .json(&json!({"id": "trail", "title": "Trail cairns", "text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent_id = "00f067aa0ba902b7";
        let r = client
            .post(format!("{url}/search"))
            .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
            .json(&json!({"query": "what are trail cairns?"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = client
            .post(format!("{url}/query"))
            .json(&json!({"query": "What are trail cairns?"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["answer"], "Cairns mark trails [1].");
        stop(child);

        let spans = spans(&bodies.lock().unwrap());
        let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
        // The request joined the caller's trace, under the caller's span.
        let search_req = named(&spans, "POST /search");
        assert_eq!(search_req.len(), 1, "{names:?}");
        let search_req = search_req[0];
        assert_eq!(search_req["traceId"], trace_id);
        assert_eq!(search_req["parentSpanId"], parent_id);
        assert_eq!(search_req["kind"], 2, "server span: {search_req}");
        assert_eq!(
            attr(search_req, "http.response.status_code").as_deref(),
            Some("200")
        );
        let ours: Vec<&Value> = spans.iter().filter(|s| s["traceId"] == trace_id).collect();
        for stage in ["search", "embed", "keyword", "vector", "fusion"] {
            assert!(
                ours.iter().any(|s| s["name"] == stage),
                "stage span {stage} in the request's trace: {names:?}"
            );
        }
        let svc = search_req["resource"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "service.name")
            .unwrap();
        assert_eq!(svc["value"]["stringValue"], "cairn-test");

        // The generation span follows the GenAI semantic conventions.
        let gen = named(&spans, "chat up-model");
        assert_eq!(gen.len(), 1, "{names:?}");
        let gen = gen[0];
        assert_eq!(gen["kind"], 3, "client span: {gen}");
        for (k, v) in [
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "up-model"),
            ("gen_ai.usage.input_tokens", "111"),
            ("gen_ai.usage.output_tokens", "3"),
            ("gen_ai.response.finish_reasons", "stop"),
        ] {
            assert_eq!(attr(gen, k).as_deref(), Some(v), "{k}: {gen}");
        }
        let query_req = named(&spans, "POST /query");
        assert_eq!(query_req.len(), 1);
        assert_eq!(gen["traceId"], query_req[0]["traceId"]);
        assert_ne!(query_req[0]["traceId"], trace_id, "a new trace");
    }
}

#[cfg(feature = "sentry")]
mod sentry_events {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn internal_errors_reach_sentry_and_clients_see_none_of_it() {
        let (bodies, sentry) = receiver("/api/42/envelope/").await;
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let out = cairn_cmd(&data)
            .args(["keys", "create", "--name", "ops", "--scopes", "search"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let dsn = format!("{}/42", sentry.replace("http://", "http://publickey@"));
        let (child, url) = spawn_serve(
            &data,
            &["--auth", "api_key"],
            &[("CAIRN_SENTRY_DSN", dsn.as_str())],
        );
        let client = reqwest::Client::new();
        let search = || {
            client
                .post(format!("{url}/search"))
                .bearer_auth(&key)
                .json(&json!({"query": "anything"}))
                .send()
        };
        assert_eq!(search().await.unwrap().status(), 200);
        // The key file is damaged under the running server: its next request fails inside.
        std::fs::write(data.join("keys.json"), b"{ not json").unwrap();
        let r = search().await.unwrap();
        assert_eq!(r.status(), 500);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "internal", "message": "internal error"}})
        );
        stop(child);

        let got = bodies.lock().unwrap().clone();
        let all: String = got
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        let events: Vec<Value> = all
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            // Event payloads (not the envelope's or an item's header); level error is the
            // default and may be left out.
            .filter(|v| v["platform"].is_string())
            .collect();
        assert_eq!(events.len(), 1, "one error event: {all}");
        assert!(events[0]["level"].is_null() || events[0]["level"] == "error");
        assert_eq!(events[0]["logger"], "cairn::http");
        let e = events[0].to_string();
        assert!(e.contains("internal error"), "{e}");
        assert!(e.contains("is not a valid key file"), "the cause: {e}");
        assert!(!e.contains(&key), "the key never leaves the process");
    }
}
