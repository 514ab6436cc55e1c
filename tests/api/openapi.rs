//! The OpenAPI document: it describes every route the router serves (and nothing else), it is
//! served at `/openapi.json` with an offline Swagger UI at `/docs`, and both stay public when
//! auth is on.

use std::collections::BTreeSet;

use cairn::config::AuthMode;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with};

async fn spec(app: &crate::helpers::TestApp) -> Value {
    let resp = app
        .client
        .get(format!("{}/openapi.json", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

/// Every `(METHOD, path)` of the document.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Routes are only ever added through `utoipa_axum::routes!` (which takes the route from the
/// handler's `#[utoipa::path]` and adds its operation to the document), except for the Swagger
/// UI's own files and the console's (`http/console.rs`: static files, not API operations): no
/// `.route(`/`.nest(` call may appear elsewhere in the HTTP layer.
#[test]
fn routes_are_only_added_with_their_openapi_operation() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "console.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if [".route(", ".route_service(", ".nest(", ".nest_service("]
                .iter()
                .any(|c| code.contains(c))
            {
                offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes added without an OpenAPI operation (use routes!): {offenders:#?}"
    );
}

#[tokio::test]
async fn every_route_is_in_the_spec_and_every_operation_is_served() {
    let app = spawn_app().await;
    let doc = spec(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    // The document the server serves is the one `cairn openapi` prints.
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(
            &cairn::http::openapi::document(&cairn::http::openapi_spec())
        )
        .unwrap()
    );
    let ops = operations(&doc);
    // Each operation is routed: the router's own 404/405 fallbacks never answer it.
    for (method, path) in &ops {
        let url = format!("{}{}", app.addr, path.replace("{id}", "no-such-id"));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app
            .client
            .request(m, url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            code != "route_not_found" && code != "method_not_allowed",
            "{method} {path} is in the spec but not routed ({status} {code})"
        );
    }
    // Every operation documents a success and its error shape; guarded ones their auth errors.
    for (method, path) in &ops {
        let op = &doc["paths"][path][method.to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} documents no success"
        );
        if op.get("security").is_some() {
            for s in ["401", "403", "429", "503", "504"] {
                assert!(responses.contains_key(s), "{method} {path} lacks {s}");
            }
        }
        assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()));
    }
    // A path outside the spec is not routed.
    let resp = app
        .client
        .get(format!("{}/no/such/route", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Schemas the operations reference exist.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in text.split("\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    // /query takes every /search field plus the generation settings, and nothing else.
    let q = &schemas["QueryRequest"];
    assert_eq!(q["additionalProperties"], false);
    for field in ["query", "limit", "mode", "filters", "stream", "max_tokens"] {
        assert!(q["properties"].get(field).is_some(), "QueryRequest.{field}");
    }
    assert_eq!(q["required"], serde_json::json!(["query"]));
}

#[tokio::test]
async fn swagger_ui_is_embedded_and_public_when_auth_is_on() {
    let app = spawn_app_with(|c| c.auth.mode = AuthMode::ApiKey).await;
    let get = |path: &str| app.client.get(format!("{}{path}", app.addr)).send();
    let page = get("/docs").await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("/docs/swagger-ui-bundle.js") && html.contains("/openapi.json"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the UI loads nothing from elsewhere: {html}"
    );
    let js = get("/docs/swagger-ui-bundle.js").await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.bytes().await.unwrap().len() > 100_000);
    assert_eq!(get("/docs/swagger-ui.css").await.unwrap().status(), 200);
    // The document is public too, and carries both credential schemes.
    let doc = spec(&app).await;
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    // `/docs/*` is a prefix rule, not a string prefix: `/docsx` and the API still need a key.
    assert_eq!(get("/docsx").await.unwrap().status(), 401);
    assert_eq!(get("/stats").await.unwrap().status(), 401);
}

/// The error body's `code` is the enum of the one error-code table.
#[test]
fn the_error_code_enum_is_the_code_table() {
    let spec: Value =
        serde_json::from_str(&cairn::http::openapi::document(&cairn::http::openapi_spec()))
            .unwrap();
    let listed: Vec<&str> = spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]
        ["enum"]
        .as_array()
        .expect("an enum of codes")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let table: Vec<&str> = cairn::error::Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, table);
}
