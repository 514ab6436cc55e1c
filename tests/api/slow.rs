//! Slow clients and floods (issue 25): a connection that never finishes its headers is closed
//! at `server.header_read_timeout_s`, a body that trickles ends in 408 `body_timeout` at
//! `server.body_read_timeout_s` and frees its request slot, and many idle connections do not
//! keep real requests out. Raw sockets: the point is what a misbehaving client does.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, TestApp};

/// A bound on waits that must end much sooner; never what a test measures.
const PATIENCE: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn connections_that_do_not_send_their_headers_are_closed_and_others_are_served() {
    let app = spawn_app_with(|c| c.server.header_read_timeout_s = 1).await;
    // 200 connections that say nothing, and one that stops in the middle of its headers.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(app.connect_raw().await);
    }
    let mut partial = app.connect_raw().await;
    partial
        .write_all(b"GET /stats HTTP/1.1\r\nHost: cairn\r\n")
        .await
        .unwrap();
    // A real request is served while they are open.
    let (status, body) = app.get("/stats").await;
    assert_eq!(status, 200, "{body}");
    // Each is closed by the server (EOF), without a response to a request it never made.
    for s in idle.iter_mut().take(3) {
        assert_eq!(read_to_close(s).await, "");
    }
    let sent = read_to_close(&mut partial).await;
    assert!(!sent.contains(" 200 "), "{sent}");
    // A keep-alive connection idle after its response is closed too.
    let mut kept = app.connect_raw().await;
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: cairn\r\n\r\n")
        .await
        .unwrap();
    let sent = read_to_close(&mut kept).await;
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
}

/// Starts a JSON upload that announces `announced` bytes and sends only its beginning.
async fn stalled_upload(app: &TestApp) -> TcpStream {
    let mut s = app.connect_raw().await;
    let head = "POST /sources HTTP/1.1\r\nHost: cairn\r\nContent-Type: application/json\r\n\
                Content-Length: 1000\r\n\r\n{\"text\": \"Cairns mark";
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// The status and JSON body of a raw HTTP/1.1 response.
fn parse(raw: &str) -> (u16, Value) {
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_trickling_body_gets_408_and_frees_its_slot() {
    let app = spawn_app_with(|c| {
        c.server.body_read_timeout_s = 1;
        c.server.max_in_flight = 2;
    })
    .await;
    let mut a = stalled_upload(&app).await;
    let mut b = stalled_upload(&app).await;
    // Both slots are held until the deadline; their answers are 408 `body_timeout`.
    for s in [&mut a, &mut b] {
        let (status, body) = parse(&read_to_close(s).await);
        assert_eq!(status, 408, "{body}");
        assert_eq!(body["error"]["code"], "body_timeout", "{body}");
    }
    // The slots are free again and nothing was stored.
    let (status, body) = app.get("/sources").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sources"].as_array().map(Vec::len), Some(0), "{body}");
    let (status, body) = app
        .post_json(
            "/sources",
            &serde_json::json!({"id": "a", "text": "Cairns mark trails."}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_slow_body_within_its_deadline_is_served_past_the_header_deadline() {
    let app = spawn_app_with(|c| {
        c.server.header_read_timeout_s = 1;
        c.server.body_read_timeout_s = 10;
    })
    .await;
    // The body comes in two parts, 1.5 s apart: past the header deadline (which is for
    // headers only) and within the body's.
    let mut s = app.connect_raw().await;
    let text = r#"{"id": "slow", "text": "Cairns are stacks of stones on a trail."}"#;
    let head = format!(
        "POST /sources HTTP/1.1\r\nHost: cairn\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&text.as_bytes()[..10]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(&text.as_bytes()[10..]).await.unwrap();
    let (status, body) = parse(&read_to_close(&mut s).await);
    assert_eq!(status, 201, "{body}");
}
