//! `/query`, `/v1/chat/completions` and `cairn ask` with the real local model
//! (SmolLM2-135M-Instruct GGUF through llama.cpp, fetched by `scripts/setup`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{assert_error, read_sse, spawn_app_with, use_llama, TestApp};

/// An app with the local model and the sample documents ingested.
async fn llama_app(tweak: impl FnOnce(&mut cairn::config::Config)) -> TestApp {
    let app = spawn_app_with(|c| {
        use_llama(c);
        tweak(c);
    })
    .await;
    let mut files = Vec::new();
    for name in ["trail-cairns.txt", "hybrid-search.md", "getting-started.md"] {
        let bytes = std::fs::read(format!("data/samples/{name}")).unwrap();
        files.push((name, bytes));
    }
    let (s, v) = app.upload(&files).await;
    assert_eq!(s, 201, "{v}");
    app
}

/// Citation numbers written in an answer: `[1]`, `[2, 3]`.
fn cited(text: &str) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find('[') {
        rest = &rest[i + 1..];
        if let Some(j) = rest.find(']') {
            let inner = &rest[..j];
            if inner
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
            {
                out.extend(
                    inner
                        .split(',')
                        .filter_map(|p| p.trim().parse::<u64>().ok()),
                );
            }
        }
    }
    out
}

const QUESTION: &str = "What are trail cairns and how should hikers treat them?";

#[tokio::test]
async fn answers_cite_real_chunks_within_the_context_budget() {
    let app = llama_app(|_| {}).await;
    let (s, r) = app
        .post_json("/query", &json!({"query": QUESTION, "max_tokens": 48}))
        .await;
    assert_eq!(s, 200, "{r}");
    let answer = r["answer"].as_str().expect("an answer");
    assert!(!answer.trim().is_empty());
    assert_eq!(r["generator"]["backend"], "llama");
    let citations = r["citations"].as_array().unwrap();
    assert!(!citations.is_empty());
    // Every citation is a real stored chunk of a real source, numbered 1..=n.
    let hits = app
        .search(json!({"query": QUESTION, "limit": 50, "group_by": "none"}))
        .await
        .into_iter()
        .map(|h| h["chunk_id"].as_str().unwrap().to_string())
        .collect::<BTreeSet<_>>();
    for (i, c) in citations.iter().enumerate() {
        assert_eq!(c["n"], i as u64 + 1);
        assert!(hits.contains(c["chunk_id"].as_str().unwrap()), "{c}");
        let (s, src) = app
            .get(&format!("/sources/{}", c["source_id"].as_str().unwrap()))
            .await;
        assert_eq!(s, 200);
        assert_eq!(src["title"], c["title"]);
    }
    // `used` marks exactly the citations the text uses.
    let in_text = cited(answer);
    for c in citations {
        assert_eq!(
            c["used"].as_bool().unwrap(),
            in_text.contains(&c["n"].as_u64().unwrap()),
            "{c} vs {answer:?}"
        );
    }
    let usage = &r["usage"];
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=48).contains(&completion), "{usage}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() + 48 <= 2048);
    let t = &r["timing"];
    for k in [
        "embed_ms",
        "retrieve_ms",
        "generate_ms",
        "ttft_ms",
        "total_ms",
    ] {
        assert!(t[k].as_f64().unwrap() > 0.0, "{k}: {t}");
    }
    assert!(t["total_ms"].as_f64() >= t["retrieve_ms"].as_f64());
}

#[tokio::test]
async fn streamed_answer_matches_the_json_one_event_by_event() {
    let app = llama_app(|_| {}).await;
    let body = json!({"query": QUESTION, "max_tokens": 40});
    let (s, whole) = app.post_json("/query", &body).await;
    assert_eq!(s, 200, "{whole}");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = app.post_stream("/query", &streamed).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = read_sse(resp).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"sources"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    assert!(names[1..names.len() - 1]
        .iter()
        .all(|n| *n == "token" || *n == "citation"));
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (0..events.len() as u64).collect::<Vec<_>>());
    // Greedy decoding: the stream spells out the same answer as the JSON response.
    let text: String = events
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, whole["answer"].as_str().unwrap());
    let sources = events[0].data["citations"].as_array().unwrap();
    assert_eq!(sources.len(), whole["citations"].as_array().unwrap().len());
    let done = &events.last().unwrap().data;
    assert_eq!(done["usage"], whole["usage"]);
    // Citation events: each used number once, after its marker, pointing at a listed source.
    let cited_events: Vec<u64> = events
        .iter()
        .filter(|e| e.event == "citation")
        .map(|e| e.data["n"].as_u64().unwrap())
        .collect();
    let mut sorted = cited_events.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        serde_json::from_value::<Vec<u64>>(done["used"].clone()).unwrap()
    );
    assert_eq!(
        sorted.iter().copied().collect::<BTreeSet<_>>(),
        cited(&text)
    );
    for e in events.iter().filter(|e| e.event == "citation") {
        let n = e.data["n"].as_u64().unwrap() as usize;
        assert_eq!(e.data["chunk_id"], sources[n - 1]["chunk_id"]);
    }

    // `Accept: text/event-stream` asks for the same stream.
    let resp = app
        .client
        .post(format!("{}/query", app.addr))
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    let again = read_sse(resp).await;
    assert_eq!(again.first().unwrap().event, "sources");
    assert_eq!(again.last().unwrap().data["usage"], whole["usage"]);
}

#[tokio::test]
async fn the_prompt_never_exceeds_a_small_context() {
    let app = llama_app(|c| c.generator.context_tokens = 512).await;
    let (s, r) = app
        .post_json(
            "/query",
            &json!({"query": QUESTION, "max_tokens": 128, "limit": 10}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let prompt = r["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt + 128 <= 512, "prompt {prompt} + 128 > 512");
    let kept = r["citations"].as_array().unwrap().len();
    assert!(
        (1..10).contains(&kept),
        "lowest-ranked chunks dropped: kept {kept}"
    );
    // The kept ones are the best-ranked.
    let top = app
        .search(json!({"query": QUESTION, "limit": kept, "group_by": "none"}))
        .await;
    for (c, h) in r["citations"].as_array().unwrap().iter().zip(&top) {
        assert_eq!(c["chunk_id"], h["chunk_id"]);
    }
    assert_error(
        app.post_json("/query", &json!({"query": QUESTION, "max_tokens": 500}))
            .await,
        422,
        "invalid_request",
    );
}

#[tokio::test]
async fn an_unrelated_question_is_not_sent_to_the_model() {
    let app = llama_app(|_| {}).await;
    let gen = app.generator();
    let before = gen.stats();
    let (s, r) = app
        .post_json(
            "/query",
            &json!({"query": "What is the boiling point of liquid nitrogen in kelvin?"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["finish_reason"], "no_context");
    assert_eq!(r["answer"], cairn::answer::NO_CONTEXT_ANSWER);
    assert_eq!(r["citations"], json!([]));
    assert_eq!(gen.stats().generations, before.generations);
    let stats = app.stats().await;
    assert_eq!(stats["generator"]["backend"], "llama");
    assert_eq!(stats["generator"]["generations"], before.generations);
    assert_eq!(stats["generator"]["active"], 0);
}

/// Waits until no generation is running (a condition, with a deadline; no fixed sleeps).
async fn until_idle(app: &TestApp) {
    let gen = app.generator();
    let deadline = Instant::now() + Duration::from_secs(60);
    while gen.stats().active > 0 {
        assert!(Instant::now() < deadline, "generation never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_dropped_stream_stops_the_model_within_a_token() {
    let app = llama_app(|_| {}).await;
    let cairn = app.cairn.clone().unwrap();
    let gen = app.generator();
    let long = "Write a long, detailed essay about everything these passages say about cairns.";
    let req = |stream| {
        let mut r = cairn::answer::QueryRequest::new(long);
        r.options.max_tokens = Some(160);
        r.options.stream = stream;
        r
    };
    // The full answer runs to max_tokens (greedy decoding is deterministic).
    let full = cairn.answer(req(false), Vec::new()).await.unwrap();
    assert_eq!(full.finish_reason, "length", "{full:?}");

    // Core: drop the stream after the first token.
    let before = gen.stats().tokens_generated;
    let mut s = cairn.answer_stream(req(true), Vec::new()).await.unwrap();
    let mut seen = 0;
    while let Some(ev) = s.next().await {
        if let cairn::answer::AnswerEvent::Token(_) = ev {
            seen += 1;
            break;
        }
    }
    assert_eq!(seen, 1);
    drop(s);
    until_idle(&app).await;
    let produced = gen.stats().tokens_generated - before;
    // One token read, at most one buffered in the channel, at most one being decoded.
    assert!(produced <= 3, "model kept going: {produced} tokens");

    // HTTP: a client that disconnects mid-stream stops the model long before max_tokens.
    let before = gen.stats().tokens_generated;
    let resp = app
        .post_stream(
            "/query",
            &json!({"query": long, "max_tokens": 160, "stream": true}),
        )
        .await;
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: token") {
        text.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    until_idle(&app).await;
    let produced = gen.stats().tokens_generated - before;
    assert!(
        produced < full.usage.completion_tokens as u64 / 2,
        "disconnect did not stop generation: {produced} of {}",
        full.usage.completion_tokens
    );
}

#[tokio::test]
async fn chat_completions_speak_openai_over_the_local_model() {
    let app = llama_app(|_| {}).await;
    let model = app.generator().model().to_string();
    let (s, models) = app.get("/v1/models").await;
    assert_eq!(s, 200);
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == model.as_str()));
    let body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": QUESTION}]}
        ],
        "max_tokens": 32,
        "temperature": 0
    });
    let (s, r) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(r["model"], model.as_str());
    let content = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.is_empty());
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    let u = &r["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = app.post_stream("/v1/chat/completions", &streamed).await;
    assert_eq!(resp.status(), 200);
    let events = read_sse(resp).await;
    assert_eq!(events.last().unwrap().data, Value::String("[DONE]".into()));
    let chunks = &events[..events.len() - 1];
    assert!(chunks
        .iter()
        .all(|e| e.event == "message" && e.data["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0].data["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|e| e.data["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, content, "stream and JSON agree (greedy)");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk.data["choices"], json!([]));
    assert_eq!(usage_chunk.data["usage"], r["usage"]);
    assert!(chunks[chunks.len() - 2].data["choices"][0]["finish_reason"].is_string());

    // OpenAI-shaped errors.
    let (s, e) = app
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["code"], "model_not_found");
    let (s, e) = app
        .post_json(
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "assistant", "content": "x"}]}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["param"], "messages");
}

#[tokio::test]
async fn cairn_ask_streams_an_answer_from_a_server() {
    let app = llama_app(|_| {}).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["ask", QUESTION, "--max-tokens", "32", "--server", &app.addr])
        .output()
        .await
        .unwrap();
    let stdout = succeeded(&out);
    let (answer, sources) = stdout.split_once("\nSources:\n").expect("a sources list");
    assert!(!answer.trim().is_empty());
    assert!(sources.contains("[1] "), "{sources}");
    assert!(sources.contains("trail-cairns.txt"), "{sources}");
}

/// The instruction-set features ggml reports for its CPU kernels (`/stats`).
fn kernel_features(stats: &Value) -> Vec<String> {
    stats["generator"]["cpu_kernels"]["features"]
        .as_array()
        .unwrap_or_else(|| panic!("no cpu_kernels: {stats}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

/// Whether /proc/cpuinfo lists a CPU flag.
fn cpu_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .split_whitespace()
        .any(|w| w == flag)
}

#[tokio::test]
async fn stats_and_readiness_name_the_cpu_kernels_in_use() {
    let app = spawn_app_with(use_llama).await;
    let (s, stats) = app.get("/stats").await;
    assert_eq!(s, 200, "{stats}");
    let variant = stats["generator"]["cpu_kernels"]["variant"]
        .as_str()
        .unwrap()
        .to_string();
    let features = kernel_features(&stats);
    let has = |f: &str| features.iter().any(|x| x == f);
    if cfg!(feature = "llama-cpu-variants") {
        // The best variant for this CPU: AVX2 kernels exactly when the CPU has AVX2, AVX-512
        // ones when it has AVX-512.
        assert_ne!(variant, "static");
        assert_eq!(has("AVX2"), cpu_has("avx2"), "{variant}: {features:?}");
        assert_eq!(has("AVX512"), cpu_has("avx512f"), "{variant}: {features:?}");
    } else {
        // One set, compiled in. Which features depends on the build target and on llama.cpp's
        // CMake cache (kept between builds), so only that there is a list.
        assert_eq!(variant, "static");
        assert!(!features.is_empty());
    }
    let (s, ready) = app.get("/health/ready").await;
    assert_eq!(s, 200, "{ready}");
    let detail = ready["components"]["generator"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("CPU kernels {variant}:")),
        "{detail}"
    );
}

/// `cairn serve` with the local model and `generator.cpu_variant`; its first stdout line.
fn serve_with_cpu_variant(data: &std::path::Path, variant: &str) -> std::process::Child {
    crate::crash::cairn_cmd(data)
        .env("CAIRN_GENERATOR__BACKEND", "llama")
        .env("CAIRN_GENERATOR__CONTEXT_TOKENS", "2048")
        .env("CAIRN_GENERATOR__CPU_VARIANT", variant)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_cpu_variant_this_binary_cannot_run_stops_the_server_with_the_choices() {
    let tmp = tempfile::tempdir().unwrap();
    // A static build has no variants to choose from; a variants build has none by that name.
    let out = serve_with_cpu_variant(&tmp.path().join("d"), "pentium-pro")
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"pentium-pro\""), "{err}");
    if cfg!(feature = "llama-cpu-variants") {
        assert!(
            err.contains("it can run: auto, ") && err.contains("x64"),
            "{err}"
        );
    } else {
        assert!(err.contains("llama-cpu-variants"), "{err}");
    }
}

/// The baseline kernels, chosen by name on a CPU that could run better ones, still answer.
#[cfg(feature = "llama-cpu-variants")]
#[tokio::test]
async fn the_baseline_x64_kernels_answer_when_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let ingest = crate::crash::cairn_cmd(&data)
        .args(["ingest", "data/samples/trail-cairns.txt"])
        .output()
        .unwrap();
    assert!(ingest.status.success(), "{ingest:?}");
    let mut child = serve_with_cpu_variant(&data, "x64");
    let url = crate::cli::listening_url(&mut child);
    let client = reqwest::Client::new();
    let stats = crate::helpers::json_of(client.get(format!("{url}/stats"))).await;
    let query = json!({"query": QUESTION, "max_tokens": 16});
    let r = crate::helpers::json_of(client.post(format!("{url}/query")).json(&query)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        stats["generator"]["cpu_kernels"]["variant"], "x64",
        "{stats}"
    );
    let features = kernel_features(&stats);
    assert!(
        !features.iter().any(|f| f.starts_with("AVX")),
        "{features:?}"
    );
    assert!(!r["answer"].as_str().unwrap_or("").trim().is_empty(), "{r}");
}

/// The stdout of a command that must have succeeded (both streams in the failure message).
fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout} {stderr}");
    stdout
}

/// A SciFact-shaped folder: three abstracts, a claim the first one supports, one the second
/// contradicts, and one nothing bears on.
fn tiny_scifact(dir: &std::path::Path) {
    let abstracts = [
        (
            "11",
            "Cairns",
            [
                "Trail cairns are piles of stones that mark a route across open ground.",
                "Hikers should never add stones to them.",
            ],
        ),
        (
            "12",
            "Lakes",
            [
                "Mountain lakes freeze from the top down in winter.",
                "Fish survive under the ice.",
            ],
        ),
        (
            "13",
            "Maps",
            [
                "Topographic maps show elevation with contour lines.",
                "Each line joins points of equal height.",
            ],
        ),
    ];
    let mut corpus = String::new();
    let mut sentences = String::new();
    for (id, title, s) in abstracts {
        corpus += &format!(
            "{}\n",
            json!({"_id": id, "title": title, "text": s.join(" ")})
        );
        sentences += &format!(
            "{}\n",
            json!({"doc_id": id.parse::<u64>().unwrap(), "title": title, "abstract": s})
        );
    }
    let claims = [
        json!({"id": 1, "claim": "Trail cairns are piles of stones that mark a route.", "evidence": {"11": [{"sentences": [0], "label": "SUPPORT"}]}, "cited_doc_ids": [11]}),
        json!({"id": 2, "claim": "Mountain lakes freeze from the bottom up.", "evidence": {"12": [{"sentences": [0], "label": "CONTRADICT"}]}, "cited_doc_ids": [12]}),
        json!({"id": 3, "claim": "Volcanoes on Mars are taller than Everest.", "evidence": {}, "cited_doc_ids": []}),
    ];
    std::fs::create_dir_all(dir.join("claims")).unwrap();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("claims/corpus_sentences.jsonl"), sentences).unwrap();
    let lines: Vec<String> = claims.iter().map(|c| c.to_string()).collect();
    std::fs::write(dir.join("claims/claims_dev.jsonl"), lines.join("\n")).unwrap();
}

#[tokio::test]
async fn eval_answers_scores_labels_and_citations_of_the_local_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("scifact");
    tiny_scifact(&dataset);
    let out = crate::crash::cairn_cmd(&tmp.path().join("d"))
        .args([
            "eval",
            "--answers",
            "--generator",
            "llama",
            "--max-tokens",
            "24",
            "--json",
        ])
        .arg("--dataset")
        .arg(&dataset)
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["claims"], 3, "{r}");
    assert_eq!(r["with_evidence"], 2, "{r}");
    let predicted: u64 = r["predicted"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        predicted, 3,
        "every claim is answered and counted once: {r}"
    );
    for k in [
        "label_accuracy",
        "macro_f1",
        "citation_precision",
        "citation_recall",
        "uncited_verdicts",
    ] {
        let x = r[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{k}: {r}");
    }
    // The model ran (the unrelated claim may be refused by the relevance gate; the others not).
    assert!(r["ttft_ms_p50"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["refused_by_relevance_gate"].as_u64().unwrap() <= 1, "{r}");
    assert!(r["generator"].as_str().unwrap().starts_with("llama"), "{r}");
}
