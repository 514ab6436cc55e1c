//! The `cairn` command line against real data dirs: ingest, search, ask, stats, sources, delete,
//! check/repair, eval, and serve with graceful shutdown and `ingest --server`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;

use crate::crash::cairn_cmd;
use crate::helpers::test_config;

pub fn run_json(cmd: &mut std::process::Command) -> (i32, Value) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// The ids of `cairn ingest`'s reports, by status, sorted.
fn ids_by_status(v: &Value, status: &str) -> Vec<String> {
    let mut ids: Vec<String> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["external_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// `cairn` run from `dir`, with the models named by absolute path.
fn cairn_in(data: &std::path::Path, dir: &std::path::Path) -> std::process::Command {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut c = cairn_cmd(data);
    c.current_dir(dir)
        .env(
            "CAIRN_MODELS__ONNXRUNTIME",
            models.join("onnxruntime/libonnxruntime.so"),
        )
        .env(
            "CAIRN_MODELS__EMBEDDING",
            models.join("all-minilm-l6-v2-int8"),
        );
    c
}

/// Files are named by their path under the root (the current directory or `--root`), never
/// by a server path; a data dir from before keeps its absolute ids instead of doubling.
#[tokio::test]
async fn ingest_names_files_relative_to_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let top = std::fs::canonicalize(tmp.path()).unwrap();
    let docs = top.join("docs");
    let data = top.join("data");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("a.md"), "# Alpha\n\nThe quince hedge.").unwrap();
    std::fs::write(docs.join("sub/b.txt"), "Beta: the slate roof.").unwrap();
    std::fs::write(docs.join("sub/c.txt"), "Gamma: the flint wall.").unwrap();
    // An older CLI ingested c.txt under its absolute path.
    let old = docs.join("sub/c.txt").display().to_string();
    {
        let cairn = cairn::service::Cairn::open(test_config(&data))
            .await
            .unwrap();
        let file = cairn::service::IngestFile {
            name: old.clone(),
            bytes: std::fs::read(docs.join("sub/c.txt")).unwrap(),
            metadata: Default::default(),
        };
        let r = cairn.ingest_files(vec![file], &|_| {}).await.unwrap();
        assert_eq!(r[0].status, cairn::service::IngestStatus::Created);
    }
    let (code, v) = run_json(cairn_in(&data, &top).args(["ingest", "--json", "docs"]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        ids_by_status(&v, "created"),
        ["docs/a.md", "docs/sub/b.txt"]
    );
    assert_eq!(ids_by_status(&v, "unchanged"), [old.as_str()], "{v}");
    // From elsewhere, with --root naming the same folder: the same ids.
    let (code, v) = run_json(
        cairn_in(&data, &docs.join("sub"))
            .args(["ingest", "--json", "--root"])
            .arg(&top)
            .arg("b.txt"),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(ids_by_status(&v, "unchanged"), ["docs/sub/b.txt"], "{v}");
    // Delete by the path as ingested, relative to the current directory.
    let out = cairn_in(&data, &docs.join("sub"))
        .args(["delete", "--root"])
        .arg(&top)
        .arg("b.txt")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("(docs/sub/b.txt)"),
        "{said}"
    );
    let (_, list) = run_json(cairn_cmd(&data).args(["sources", "--json"]));
    let mut left: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["external_id"].as_str().unwrap())
        .collect();
    left.sort();
    let mut want = vec!["docs/a.md", old.as_str()];
    want.sort();
    assert_eq!(left, want);
}

#[tokio::test]
async fn ingest_search_stats_sources_delete_check() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(
        docs.join("a.md"),
        "# Alpha\n\nThe heliotrope orchard blooms in May.",
    )
    .unwrap();
    std::fs::write(
        docs.join("sub/b.txt"),
        "Beta text about the cobblestone bridge.",
    )
    .unwrap();
    std::fs::write(docs.join("image.png"), [0x89, b'P', b'N', b'G']).unwrap();

    let (code, v) = run_json(cairn_cmd(&data).args(["ingest", "--json"]).arg(&docs));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["created"], 2);
    assert_eq!(v["skipped"], 1, "unsupported files in folders are skipped");
    // Re-ingest: no-op.
    let (code, v) = run_json(cairn_cmd(&data).args(["ingest", "--json"]).arg(&docs));
    assert_eq!(code, 0);
    assert_eq!(v["unchanged"], 2);
    assert_eq!(v["created"], 0);
    // A named unsupported file is an error with a non-zero exit, and the rest still goes in.
    let (code, v) = run_json(
        cairn_cmd(&data)
            .args(["ingest", "--json"])
            .arg(docs.join("image.png"))
            .arg(docs.join("a.md")),
    );
    assert_eq!(code, 1);
    assert_eq!(v["failed"], 1);
    assert_eq!(v["sources"][0]["error"]["code"], "unsupported_media_type");

    let (code, v) =
        run_json(cairn_cmd(&data).args(["search", "heliotrope orchard", "--json", "--limit", "3"]));
    assert_eq!(code, 0);
    assert_eq!(v["results"][0]["title"], "Alpha");
    let (_, v) =
        run_json(cairn_cmd(&data).args(["search", "cobblestone", "--mode", "keyword", "--json"]));
    assert_eq!(v["results"].as_array().unwrap().len(), 1);

    // `ask` on the data dir with no generator: the sources, no text; the same as JSON.
    let out = cairn_cmd(&data)
        .args([
            "ask",
            "where is the heliotrope orchard?",
            "--generator",
            "none",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("no generator configured") && text.contains("[1] Alpha"),
        "{text}"
    );
    let (code, v) = run_json(cairn_cmd(&data).args([
        "ask",
        "where is the heliotrope orchard?",
        "--json",
        "--generator",
        "none",
    ]));
    assert_eq!(code, 0);
    assert_eq!(v["finish_reason"], "retrieval_only");
    assert_eq!(v["citations"][0]["title"], "Alpha");

    let (code, st) = run_json(cairn_cmd(&data).args(["stats", "--json"]));
    assert_eq!(code, 0);
    assert_eq!(st["sources"], 2);
    assert_eq!(st["chunks_vector"], st["chunks_keyword"]);
    assert_eq!(st["chunks"], st["chunks_vector"]);

    let (_, list) = run_json(cairn_cmd(&data).args(["sources", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 2);

    let (code, v) = run_json(cairn_cmd(&data).args(["check", "--json"]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["consistent"], true);

    // Break the keyword index behind the store's back: check notices, repair fixes.
    {
        let cairn = cairn::service::Cairn::open(test_config(&data))
            .await
            .unwrap();
        let keys = cairn.store.keywords().all_keys().unwrap();
        cairn
            .store
            .keywords()
            .delete_chunks(&[keys[0].0.clone()])
            .unwrap();
    }
    let (code, v) = run_json(cairn_cmd(&data).args(["check", "--json"]));
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        v["report"]["missing_keyword_chunks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (code, v) = run_json(cairn_cmd(&data).args(["check", "--repair", "--json"]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["after_repair"]["missing_keyword_chunks"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (code, _) = run_json(cairn_cmd(&data).args(["check", "--json"]));
    assert_eq!(code, 0);

    // Delete by path.
    let out = cairn_cmd(&data)
        .arg("delete")
        .arg(std::fs::canonicalize(docs.join("a.md")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, st) = run_json(cairn_cmd(&data).args(["stats", "--json"]));
    assert_eq!(st["sources"], 1);
    let out = cairn_cmd(&data)
        .args(["delete", "src_nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[tokio::test]
async fn eval_reports_metrics_on_a_beir_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("ds");
    std::fs::create_dir_all(ds.join("qrels")).unwrap();
    let corpus = [
        (
            "d1",
            "Volcanoes",
            "Magma rises through the crust and erupts as lava from volcanoes.",
        ),
        (
            "d2",
            "Tides",
            "The moon's gravity pulls the oceans and causes tides twice a day.",
        ),
        (
            "d3",
            "Bread",
            "Yeast ferments sugar and makes bread dough rise in the oven.",
        ),
    ];
    let lines: Vec<String> = corpus
        .iter()
        .map(|(id, t, x)| serde_json::json!({"_id": id, "title": t, "text": x}).to_string())
        .collect();
    std::fs::write(ds.join("corpus.jsonl"), lines.join("\n")).unwrap();
    std::fs::write(
        ds.join("queries.jsonl"),
        "{\"_id\":\"q1\",\"text\":\"what causes ocean tides\"}\n{\"_id\":\"q2\",\"text\":\"how does lava erupt\"}\n",
    )
    .unwrap();
    std::fs::write(
        ds.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td1\t1\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let report = tmp.path().join("quality.json");
    let out = cairn_cmd(&data)
        .args(["eval", "--json", "--mode", "all", "--dataset"])
        .arg(&ds)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r["queries"], 2);
        for k in ["ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"] {
            assert_eq!(r[k], 1.0, "{k} on an easy set: {r}");
        }
        assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
        assert!(
            r["latency_ms"]["p95"].as_f64().unwrap() >= r["latency_ms"]["p50"].as_f64().unwrap()
        );
    }
    assert_eq!(rows[0]["mode"], "hybrid");
    // The report holds the same rows, and a server configured with it exports them.
    let saved: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(saved["results"], Value::Array(rows.clone()));
    assert_eq!(saved["dataset"], "ds");
    let app = crate::helpers::spawn_app_with(|c| {
        c.telemetry.quality_report = Some(report.clone());
    })
    .await;
    let text = crate::metrics::scrape(&app).await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("cairn_search_quality{") && l.contains("dataset=\"ds\""))
        .collect();
    assert_eq!(series.len(), 3 * 4, "3 modes x 4 metrics: {text}");
    assert!(series.iter().all(|l| l.ends_with(" 1")), "{series:?}");
    assert!(series
        .iter()
        .any(|l| l.contains("mode=\"vector\"") && l.contains("metric=\"ndcg_at_10\"")));
    // Reusing a data dir: the second run ingests nothing.
    let out = cairn_cmd(&data)
        .args(["eval", "--json", "--dataset"])
        .arg(&ds)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out2 = cairn_cmd(&data)
        .args(["eval", "--json", "--dataset"])
        .arg(&ds)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out2.stderr).contains("already ingested"),
        "{}",
        String::from_utf8_lossy(&out2.stderr)
    );
}

/// The URL a spawned `cairn serve` prints once it listens.
pub fn listening_url(child: &mut std::process::Child) -> String {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix("cairn listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string()
}

#[tokio::test]
async fn serve_accepts_uploads_and_exits_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let docs = tmp.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(
        docs.join("remote.txt"),
        "Uploaded through the server: the wolframite key.",
    )
    .unwrap();
    let mut child = cairn_cmd(&data)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = listening_url(&mut child);

    // The data dir is locked by the server: a local write is refused with a clear message.
    let o = cairn_cmd(&data).arg("ingest").arg(&docs).output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--server"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let (code, v) = run_json(
        cairn_cmd(&data)
            .args(["ingest", "--json", "--server", &url])
            .arg(&docs),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["created"], 1);
    // `--server` applies the same per-file size rule as a local ingest (it used to ignore
    // ingest.max_file_bytes): the big file fails alone, unsent.
    let big = tmp.path().join("big.txt");
    std::fs::write(&big, "x ".repeat(200)).unwrap();
    let (code, v) = run_json(
        cairn_cmd(&data)
            .env("CAIRN_INGEST__MAX_FILE_BYTES", "100")
            .args(["ingest", "--json", "--server", &url])
            .arg(&big)
            .arg(docs.join("remote.txt")),
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        (v["failed"].as_u64(), v["unchanged"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let failed = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "failed");
    assert_eq!(failed.unwrap()["error"]["code"], "payload_too_large", "{v}");
    let client = reqwest::Client::new();
    let search = serde_json::json!({"query": "wolframite"});
    let r = crate::helpers::json_of(client.post(format!("{url}/search")).json(&search)).await;
    assert_eq!(r["results"][0]["title"], "remote");
    let h = client
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    let h: Value = h.json().await.unwrap();
    for c in ["store", "keyword_index", "embedder"] {
        assert_eq!(h["components"][c]["status"], "ok", "{h}");
    }

    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    // Everything written is there after the shutdown.
    let (_, st) = run_json(cairn_cmd(&data).args(["stats", "--json"]));
    assert_eq!(st["sources"], 1);
    assert_eq!(st["chunks_vector"], st["chunks_keyword"]);
}

/// `THP_enabled` of a running process (Linux): 0 once it has turned huge pages off.
#[cfg(target_os = "linux")]
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"));
    line.expect("THP_enabled in /proc/<pid>/status")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_server_turns_transparent_huge_pages_off_unless_configured() {
    let tmp = tempfile::tempdir().unwrap();
    for (setting, expected) in [("false", "0"), ("true", "1")] {
        let mut child = cairn_cmd(&tmp.path().join("data"))
            .env("CAIRN_SERVER__HUGE_PAGES", setting)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        listening_url(&mut child);
        let got = thp_enabled(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(got, expected, "server.huge_pages = {setting}");
    }
}

#[tokio::test]
async fn missing_runtime_or_model_says_what_and_how_to_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("cairn.toml");
    // `cairn stats` with a config file; returns its stderr after asserting it failed.
    let stats_fails_with = |toml: &str| {
        std::fs::write(&cfg, toml).unwrap();
        let out = cairn_cmd(&tmp.path().join("d"))
            .arg("--config")
            .arg(&cfg)
            .arg("stats")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = stats_fails_with("[models]\nonnxruntime = \"/nonexistent/libonnxruntime.so\"\n");
    assert!(
        err.contains("ONNX Runtime library not found")
            && err.contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(err.contains("scripts/setup"), "{err}");
    let err = stats_fails_with("[models]\nembedding = \"/nonexistent/model-dir\"\n");
    assert!(
        err.contains("/nonexistent/model-dir/model.onnx") && err.contains("scripts/setup"),
        "{err}"
    );

    // A typo in --config is an error, not a silent fallback to defaults.
    let out = cairn_cmd(&tmp.path().join("d"))
        .arg("--config")
        .arg(tmp.path().join("nope.toml"))
        .arg("stats")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[tokio::test]
async fn a_user_model_folder_with_cls_pooling_is_used() {
    // A copy of the default model under another name, declaring CLS pooling: the store records
    // the model's name and its dimension read from the model, and CLS vectors differ from mean.
    let tmp = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-minilm-l6-v2-int8");
    let dst = tmp.path().join("my-cls-model");
    std::fs::create_dir_all(dst.join("1_Pooling")).unwrap();
    for f in [
        "model.onnx",
        "tokenizer.json",
        "config.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    std::fs::write(
        dst.join("1_Pooling/config.json"),
        "{\"pooling_mode_cls_token\": true, \"pooling_mode_mean_tokens\": false}",
    )
    .unwrap();
    let mut cfg = test_config(&tmp.path().join("data"));
    cfg.models.embedding = Some(dst.clone());
    let cls = cairn::service::Cairn::open(cfg.clone()).await.unwrap();
    let st = cls.stats().await.unwrap();
    assert_eq!(st.embedding_model, "my-cls-model");
    assert_eq!(st.embedding_dim, 384);
    let v_cls = cls
        .embed(vec!["a sentence about rivers".into()])
        .await
        .unwrap();
    drop(cls);
    let mut mean_cfg = test_config(&tmp.path().join("data2"));
    mean_cfg.models.embedding = Some(dst);
    mean_cfg.models.pooling = Some("mean".into());
    let mean = cairn::service::Cairn::open(mean_cfg).await.unwrap();
    let v_mean = mean
        .embed(vec!["a sentence about rivers".into()])
        .await
        .unwrap();
    let dot: f32 = v_cls[0].iter().zip(&v_mean[0]).map(|(a, b)| a * b).sum();
    assert!(
        dot < 0.999,
        "CLS and mean pooling give different vectors (cos {dot})"
    );
    let norm: f32 = v_cls[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "vectors are unit length");
}

#[tokio::test]
async fn serve_logs_json_with_the_request_id_on_every_line_and_refuses_open_binds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Auth disabled on a public address: refused unless --insecure.
    let out = cairn_cmd(&data)
        .args(["serve", "--addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure"));

    let log = tmp.path().join("serve.log");
    let mut child = cairn_cmd(&data)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("CAIRN_LOG__FORMAT", "json")
        .env("CAIRN_LOG", "info,lance=warn,lancedb=warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = listening_url(&mut child);
    let r = reqwest::Client::new()
        .post(format!("{url}/search"))
        .header("x-request-id", "rid-test-42")
        .json(&serde_json::json!({"query": "anything at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "rid-test-42");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["request_id"] == "rid-test-42"))
        })
        .collect();
    let msgs: Vec<&str> = ours.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(msgs.contains(&"search finished"), "{msgs:?}\n{text}");
    let access = ours
        .iter()
        .find(|l| l["message"] == "request finished")
        .expect("an access line");
    assert_eq!(access["status"], 200);
    assert_eq!(access["route"], "/search");
    assert_eq!(access["caller"], "anonymous");
    // The inner line was logged inside the search span, below the request span.
    let inner = ours
        .iter()
        .find(|l| l["message"] == "search finished")
        .unwrap();
    assert!(inner["spans"].as_array().unwrap().len() >= 2, "{inner}");
    assert!(
        inner["embed_ms"].as_f64().is_some(),
        "stage timings: {inner}"
    );
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (code, k) = run_json(cairn_cmd(&data).args([
        "keys",
        "create",
        "--name",
        "laptop",
        "--tier",
        "free",
        "--scopes",
        "search,ingest",
        "--json",
    ]));
    assert_eq!(code, 0, "{k}");
    let key = k["key"].as_str().unwrap();
    let id = k["id"].as_str().unwrap();
    assert!(key.starts_with(&format!("cairn_{id}_")));
    assert_eq!(k["scopes"], serde_json::json!(["search", "ingest"]));
    let (_, list) = run_json(cairn_cmd(&data).args(["keys", "list", "--json"]));
    assert_eq!(list[0]["name"], "laptop");
    assert!(!list.to_string().contains(key.rsplit('_').next().unwrap()));
    let bad = cairn_cmd(&data)
        .args(["keys", "create", "--name", "x", "--tier", "gold"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown tier"));
    assert!(cairn_cmd(&data)
        .args(["keys", "revoke", id])
        .status()
        .unwrap()
        .success());
    let (_, list) = run_json(cairn_cmd(&data).args(["keys", "list", "--json"]));
    assert_eq!(list, serde_json::json!([]));
}

/// `cairn search --json | grep -q x` closes the pipe early: the command ends quietly with 0
/// (it panicked with "failed printing to stdout: Broken pipe" and exited 101).
#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let (docs, data) = (tmp.path().join("docs"), tmp.path().join("data"));
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), "Broken pipes are a reader's choice.").unwrap();
    let (code, _) = run_json(cairn_cmd(&data).args(["ingest", "--json"]).arg(&docs));
    assert_eq!(code, 0);
    let mut child = cairn_cmd(&data)
        .args(["search", "broken pipes", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the command has anything to write.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
