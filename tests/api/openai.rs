//! The OpenAI-compatible embeddings API: shapes, encodings and errors.

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn embeddings_match_the_model_in_float_and_base64() {
    let app = spawn_app().await;
    let (s, models) = app.get("/v1/models").await;
    assert_eq!(s, 200);
    let model = models["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(models["object"], "list");

    let (s, r) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": model, "input": ["first text", "second text"]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], model.as_str());
    let data = r["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let v0: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(v0.len(), 384);
    // The same vector the search path uses.
    let direct = app
        .cairn
        .as_ref()
        .unwrap()
        .embed(vec!["first text".into()])
        .await
        .unwrap();
    let cos: f32 = v0.iter().zip(&direct[0]).map(|(a, b)| a * b).sum();
    assert!(cos > 0.9999, "{cos}");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() >= 4);
    assert_eq!(r["usage"]["prompt_tokens"], r["usage"]["total_tokens"]);

    let (s, b) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": model, "input": "first text", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let v: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(v, v0, "base64 carries the same little-endian f32 vector");
}

#[tokio::test]
async fn embeddings_errors_use_the_openai_shape() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"model": "text-embedding-ada-002", "input": "x"}),
            404,
            "model_not_found",
            "model",
        ),
        (
            json!({"model": "default", "input": [1, 2, 3]}),
            400,
            "invalid_request",
            "input",
        ),
        (
            json!({"model": "default", "input": ["ok", ""]}),
            400,
            "invalid_request",
            "input",
        ),
        (
            json!({"model": "default", "input": []}),
            400,
            "invalid_request",
            "input",
        ),
        (
            json!({"model": "default", "input": "x", "dimensions": 128}),
            400,
            "invalid_request",
            "dimensions",
        ),
        (
            json!({"model": "default", "input": "x", "encoding_format": "hex"}),
            400,
            "invalid_request",
            "encoding_format",
        ),
        (json!({"input": "x"}), 400, "invalid_request", "input"),
    ];
    for (body, status, code, param) in cases {
        let (s, b): (u16, Value) = app.post_json("/v1/embeddings", &body).await;
        assert_eq!(s, status, "{body} -> {b}");
        assert_eq!(b["error"]["code"], code, "{b}");
        assert_eq!(b["error"]["param"], param, "{b}");
        assert!(
            b["error"]["type"].as_str().is_some() && b["error"]["message"].as_str().is_some(),
            "{b}"
        );
    }
}
