//! Authentication (API keys, JWT), scopes, tier rate and concurrency limits, deadlines,
//! back-pressure and CORS, against a real server.

use std::time::{SystemTime, UNIX_EPOCH};

use cairn::auth::Scope;
use cairn::config::{AuthMode, TierLimits};
use serde_json::{json, Value};

use crate::cli::run_json;
use crate::helpers::{assert_error, spawn_app_with, start, TestApp};
use crate::upstream::{cairn_over, upstream, Step};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let url = format!("{}{path}", app.addr);
    let mut r = match method {
        "GET" => app.client.get(url),
        "DELETE" => app.client.delete(url),
        _ => app.client.post(url),
    };
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

async fn status_code(resp: reqwest::Response) -> (u16, Value) {
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

fn tiny(c: &mut cairn::config::Config, per_hour: u32, concurrent: u32) {
    c.auth.tiers.insert(
        "tiny".into(),
        TierLimits {
            requests_per_hour: per_hour,
            concurrent,
        },
    );
}

#[tokio::test]
async fn api_keys_scopes_admin_and_revocation() {
    let app = spawn_app_with(|c| c.auth.mode = AuthMode::ApiKey).await;
    let cairn = app.cairn.clone().unwrap();
    let admin = cairn
        .create_key("ops", "premium", vec![Scope::Admin], None)
        .unwrap();
    let search = json!({"query": "anything"});

    // No credentials: 401 with a challenge; public paths stay open.
    let r = call(&app, "POST", "/search", None, Some(search.clone())).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_error(status_code(r).await, 401, "unauthorized");
    for p in ["/health", "/health/ready", "/metrics"] {
        assert_eq!(call(&app, "GET", p, None, None).await.status(), 200, "{p}");
    }
    assert_error(
        status_code(
            call(
                &app,
                "POST",
                "/search",
                Some("cairn_nope_nope"),
                Some(search.clone()),
            )
            .await,
        )
        .await,
        401,
        "invalid_credentials",
    );

    // The admin endpoint makes a search-only key, shown once.
    let (s, made) = status_code(
        call(
            &app,
            "POST",
            "/admin/keys",
            Some(&admin.key),
            Some(json!({"name": "reader", "tier": "standard", "scopes": ["search"]})),
        )
        .await,
    )
    .await;
    assert_eq!(s, 201, "{made}");
    let reader = made["key"].as_str().unwrap().to_string();
    let reader_id = made["id"].as_str().unwrap().to_string();
    assert!(reader.starts_with("cairn_"));

    // Scopes: search yes (also via X-API-Key), answers and uploads no, admin no.
    let r = call(&app, "POST", "/search", Some(&reader), Some(search.clone())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-limit"], "1000", "standard tier");
    let r = app
        .client
        .post(format!("{}/search", app.addr))
        .header("x-api-key", &reader)
        .json(&search)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_error(
        status_code(call(&app, "POST", "/query", Some(&reader), Some(search.clone())).await).await,
        403,
        "forbidden",
    );
    let r = call(&app, "GET", "/admin/keys", Some(&reader), None).await;
    assert_eq!(r.status(), 403);

    // Listing shows names and tiers, never a secret; nothing in the data dir holds one.
    let r = call(&app, "GET", "/admin/keys", Some(&admin.key), None).await;
    let text = r.text().await.unwrap();
    assert!(text.contains("reader") && text.contains("ops"), "{text}");
    let secret = reader.rsplit('_').next().unwrap();
    assert!(!text.contains(secret));
    for e in walkdir::WalkDir::new(&app.cfg().data_dir) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a key secret",
                e.path().display()
            );
        }
    }

    // Expiry: the key file is edited as if time had passed; the server re-reads it.
    let expiring = cairn
        .create_key("temp", "free", vec![Scope::Search], Some(now() + 3600))
        .unwrap();
    assert_eq!(
        call(
            &app,
            "POST",
            "/search",
            Some(&expiring.key),
            Some(search.clone())
        )
        .await
        .status(),
        200
    );
    let path = app.cfg().data_dir.join("keys.json");
    let mut keys: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for k in keys.as_array_mut().unwrap() {
        if k["id"] == expiring.info.id.as_str() {
            k["expires_at"] = json!(now() - 10);
        }
    }
    std::fs::write(&path, serde_json::to_vec(&keys).unwrap()).unwrap();
    let (s, e) = status_code(
        call(
            &app,
            "POST",
            "/search",
            Some(&expiring.key),
            Some(search.clone()),
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("expired"),
        "{e}"
    );

    // Revocation.
    let r = call(
        &app,
        "DELETE",
        &format!("/admin/keys/{reader_id}"),
        Some(&admin.key),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        call(&app, "POST", "/search", Some(&reader), Some(search))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn tier_quota_is_exact_and_survives_a_restart() {
    let mut app = spawn_app_with(|c| {
        c.auth.mode = AuthMode::ApiKey;
        tiny(c, 3, 5);
    })
    .await;
    let k = app
        .cairn
        .as_ref()
        .unwrap()
        .create_key("t", "tiny", vec![Scope::Search], None)
        .unwrap();
    let body = json!({"query": "x"});
    for remaining in [2, 1, 0] {
        let r = call(&app, "POST", "/search", Some(&k.key), Some(body.clone())).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        assert_eq!(
            r.headers()["ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        assert!(
            r.headers()["ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
    }
    let r = call(&app, "POST", "/search", Some(&k.key), Some(body.clone())).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=1200).contains(&retry),
        "one request refills in 20 min: {retry}"
    );
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_error(status_code(r).await, 429, "rate_limited");
    let metrics = call(&app, "GET", "/metrics", None, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cairn_rate_limited_total{")
                && l.contains("tier=\"tiny\"")
                && l.contains("reason=\"rate\"")),
        "{metrics}"
    );

    // Restart on the same data dir: the spent quota is remembered.
    let cfg = app.cfg();
    let tmp = app.stop().await;
    let app2 = start(cfg).await;
    let r = call(&app2, "POST", "/search", Some(&k.key), Some(body)).await;
    assert_eq!(r.status(), 429, "counters survive a restart");
    drop(tmp);
}

/// An app over a stalling upstream with one answer stream open (it holds its slots while
/// it runs).
async fn holding_a_stream(
    url: &str,
    tweak: impl FnOnce(&mut cairn::config::Config),
) -> (TestApp, reqwest::Response) {
    let app = cairn_over(url, |c| {
        c.generator.read_timeout_s = 30;
        tweak(c);
    })
    .await;
    let held = app
        .post_stream(
            "/query",
            &json!({"query": "What are trail cairns?", "stream": true}),
        )
        .await;
    assert_eq!(held.status(), 200);
    (app, held)
}

#[tokio::test]
async fn concurrency_cap_and_back_pressure_and_deadlines() {
    // Anonymous clients (auth disabled) are limited per IP: one request at a time here.
    let (up, url) = upstream(vec![Step::Stall]).await;
    let (app, held) = holding_a_stream(&url, |c| {
        c.auth.anonymous = TierLimits {
            requests_per_hour: 1000,
            concurrent: 1,
        };
    })
    .await;
    let r = call(&app, "POST", "/search", None, Some(json!({"query": "x"}))).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    drop(held);
    up.release.notify_waiters();

    // Deadline: a non-streamed answer whose upstream stalls → 504 after query_timeout_s.
    let (up, url) = upstream(vec![Step::Stall]).await;
    let app = cairn_over(&url, |c| {
        c.generator.read_timeout_s = 30;
        c.server.query_timeout_s = 1;
    })
    .await;
    let (s, e) = app
        .post_json("/query", &json!({"query": "What are trail cairns?"}))
        .await;
    assert_eq!(s, 504, "{e}");
    assert_eq!(e["error"]["code"], "timeout");
    up.release.notify_waiters();

    // Global back-pressure: one request in flight at most → 503 + Retry-After.
    let (up, url) = upstream(vec![Step::Stall]).await;
    let (app, held) = holding_a_stream(&url, |c| c.server.max_in_flight = 1).await;
    let r = call(&app, "POST", "/search", None, Some(json!({"query": "x"}))).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        call(&app, "GET", "/health", None, None).await.status(),
        200,
        "health is exempt"
    );
    drop(held);
    up.release.notify_waiters();
}

#[tokio::test]
async fn jwt_hs256_and_es256_with_claims_checked() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let jwks = std::path::Path::new("tests/fixtures/jwt/jwks.json")
        .canonicalize()
        .unwrap();
    let app = spawn_app_with(move |c| {
        c.auth.mode = AuthMode::Jwt;
        c.auth.jwt.hs256_secret = cairn::config::Secret::new("test-secret-0123456789");
        c.auth.jwt.jwks_file = Some(jwks);
        c.auth.jwt.audience = Some("cairn".into());
        c.auth.jwt.issuer = Some("https://id.example".into());
        c.auth.jwt.leeway_s = 0;
        tiny(c, 7, 3);
    })
    .await;
    let claims = |over: Value| {
        let mut c = json!({"sub": "alice", "aud": "cairn", "iss": "https://id.example",
            "exp": now() + 600, "nbf": now() - 10, "scope": "search query", "tier": "tiny"});
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let hs = |c: Value, secret: &str| {
        encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let es = |c: Value| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("test-es256".into());
        let pem = std::fs::read("tests/fixtures/jwt/es256-private.pem").unwrap();
        encode(&h, &c, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
    };
    let body = Some(json!({"query": "x"}));
    let good = hs(claims(json!({})), "test-secret-0123456789");
    let r = call(&app, "POST", "/search", Some(&good), body.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-limit"], "7", "tier from the claim");
    let r = call(
        &app,
        "POST",
        "/search",
        Some(&es(claims(json!({})))),
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 200, "ES256 against the JWKS");
    for (why, token) in [
        (
            "bad signature",
            hs(claims(json!({})), "another-secret-xxxxxxx"),
        ),
        (
            "wrong audience",
            hs(claims(json!({"aud": "other"})), "test-secret-0123456789"),
        ),
        (
            "wrong issuer",
            hs(
                claims(json!({"iss": "https://evil"})),
                "test-secret-0123456789",
            ),
        ),
        (
            "expired",
            hs(claims(json!({"exp": now() - 60})), "test-secret-0123456789"),
        ),
        (
            "not yet valid",
            hs(
                claims(json!({"nbf": now() + 600})),
                "test-secret-0123456789",
            ),
        ),
        (
            "unknown tier",
            hs(claims(json!({"tier": "gold"})), "test-secret-0123456789"),
        ),
        ("an API key in jwt mode", "cairn_abc_def".to_string()),
    ] {
        let (s, e) =
            status_code(call(&app, "POST", "/search", Some(&token), body.clone()).await).await;
        assert_eq!(s, 401, "{why}: {e}");
        assert_eq!(e["error"]["code"], "invalid_credentials", "{why}");
    }
    let no_ingest = call(&app, "DELETE", "/sources/src_x", Some(&good), None).await;
    assert_eq!(no_ingest.status(), 403);
}

#[tokio::test]
async fn cors_is_off_by_default_and_follows_the_allow_list() {
    let preflight = |app: &TestApp| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/search", app.addr))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .send()
    };
    let off = spawn_app_with(|_| {}).await;
    let r = preflight(&off).await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let on = spawn_app_with(|c| c.server.cors_origins = vec!["https://app.example".into()]).await;
    let r = preflight(&on).await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn liveness_and_readiness_report_each_component() {
    // A generator API that is not there: alive, not ready.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let app = cairn_over(&dead, |_| {}).await;
    let (s, live) = app.get("/health").await;
    assert_eq!(s, 200);
    assert_eq!(live["status"], "ok");
    let (s, ready) = app.get("/health/ready").await;
    assert_eq!(s, 503, "{ready}");
    assert_eq!(ready["ok"], false);
    assert_eq!(ready["components"]["generator"]["status"], "error");
    assert!(ready["components"]["generator"]["error"]
        .as_str()
        .unwrap()
        .contains("unreachable"));
    for c in ["store", "keyword_index", "embedder"] {
        assert_eq!(ready["components"][c]["status"], "ok", "{ready}");
        assert!(ready["components"][c]["latency_ms"].as_f64().unwrap() >= 0.0);
    }
    // A reachable one: ready.
    let (_up, url) = upstream(vec![Step::Stream(vec!["ok"])]).await;
    let app = cairn_over(&url, |_| {}).await;
    let (s, ready) = app.get("/health/ready").await;
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["components"]["generator"]["status"], "ok");
}

// Multi-threaded: the server keeps serving while the test blocks on the CLI process.
#[tokio::test(flavor = "multi_thread")]
async fn cli_clients_send_their_key_to_a_server_with_auth() {
    let app = spawn_app_with(|c| c.auth.mode = AuthMode::ApiKey).await;
    let key = app
        .cairn
        .clone()
        .unwrap()
        .create_key(
            "laptop",
            "standard",
            vec![Scope::Ingest, Scope::Query],
            None,
        )
        .unwrap()
        .key;
    let tmp = tempfile::tempdir().unwrap();
    let doc = tmp.path().join("remote-auth.txt");
    std::fs::write(&doc, "The obsidian lighthouse guides ships past the reef.").unwrap();
    let cli = || {
        let mut c = crate::crash::cairn_cmd(&tmp.path().join("unused"));
        c.env_remove("CAIRN_API_KEY");
        c
    };
    // No key: the server's 401 is the error.
    let out = cli()
        .args(["ingest", "--json", "--server", &app.addr])
        .arg(&doc)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    // --api-key on the command line.
    let (code, v) = run_json(
        cli()
            .args(["ingest", "--json", "--server", &app.addr, "--api-key", &key])
            .arg(&doc),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["created"], 1, "{v}");
    // CAIRN_API_KEY in the environment, for `ask`.
    let (code, v) = run_json(cli().env("CAIRN_API_KEY", &key).args([
        "ask",
        "what guides ships past the reef?",
        "--json",
        "--server",
        &app.addr,
    ]));
    assert_eq!(code, 0, "{v}");
    assert!(
        v["citations"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("lighthouse"),
        "{v}"
    );
}

/// `GET /me` answers any valid credential, whatever its scopes, and only a valid one; the
/// console's files need none, and `server.console = false` takes them away.
#[tokio::test]
async fn me_names_the_caller_and_the_console_is_public() {
    let app = spawn_app_with(|c| c.auth.mode = AuthMode::ApiKey).await;
    let cairn = app.cairn.clone().unwrap();
    let ingest_only = cairn
        .create_key("uploader", "standard", vec![Scope::Ingest], None)
        .unwrap();
    let (s, me) = status_code(call(&app, "GET", "/me", Some(&ingest_only.key), None).await).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(
        me,
        json!({"name": "uploader", "tier": "standard", "scopes": ["ingest"], "auth": "api_key"})
    );
    // The same key may not search: /me is the one route without a scope.
    let r = call(
        &app,
        "POST",
        "/search",
        Some(&ingest_only.key),
        Some(json!({"query": "x"})),
    )
    .await;
    assert_error(status_code(r).await, 403, "forbidden");
    assert_error(
        status_code(call(&app, "GET", "/me", None, None).await).await,
        401,
        "unauthorized",
    );
    assert_error(
        status_code(call(&app, "GET", "/me", Some("cairn_nope_nope"), None).await).await,
        401,
        "invalid_credentials",
    );

    // The console: public, gzipped on request, with its policy; an unknown file is a 404.
    // Raw HTTP/1.1: the test client would unzip the body and drop the header.
    let raw = raw_get(&app, "/", "accept-encoding: gzip\r\n").await;
    let (head, body) = raw.split_at(raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);
    let head = String::from_utf8_lossy(head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8\r\n"),
        "{head}"
    );
    let csp = format!("content-security-policy: {}\r\n", cairn::http::console::CSP);
    assert!(head.contains(&csp), "{head}");
    assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");
    let js = call(&app, "GET", "/console/app.js", None, None).await;
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().contains("/me"));
    assert_error(
        status_code(call(&app, "GET", "/console/secrets.js", None, None).await).await,
        404,
        "route_not_found",
    );

    let off = spawn_app_with(|c| c.server.console = false).await;
    assert_error(
        status_code(call(&off, "GET", "/", None, None).await).await,
        404,
        "route_not_found",
    );
    let (s, me) = status_code(call(&off, "GET", "/me", None, None).await).await;
    assert_eq!(
        (s, &me["name"], &me["auth"]),
        (200, &json!("anonymous"), &json!("disabled"))
    );
    assert_eq!(me["scopes"].as_array().unwrap().len(), 4);
}

/// One `GET` over a plain TCP connection, as sent (no decoding): the whole response.
async fn raw_get(app: &TestApp, path: &str, extra_headers: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = app.connect_raw().await;
    let req =
        format!("GET {path} HTTP/1.1\r\nhost: cairn\r\n{extra_headers}connection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.unwrap();
    out
}
