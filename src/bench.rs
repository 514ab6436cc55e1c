//! `cairn bench ingest`: ingest throughput of the whole pipeline (parse → chunk → embed →
//! LanceDB + tantivy) against the bare ONNX Runtime time of the same model on the same
//! batches, so pipeline overhead is a measured ratio rather than a guess.
//!
//! `cairn bench query`: what `/query` adds before the first token. For each question it times
//! the search `/query` runs, then a streamed answer; the overhead is the answer's
//! time-to-first-token minus the generator's own (prompt processing and first decode), and is
//! reported against the search latency. Also the generator's decode speed in tokens/s.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::chunk::{self, ChunkConfig};
use crate::config::Config;
use crate::embed::{init_runtime, locate_model, locate_runtime};
use crate::error::{Error, Result};
use crate::extract::ExtractedDoc;
use crate::service::{embed_input, Cairn, IngestStatus};

#[derive(Debug, Serialize)]
pub struct IngestBench {
    pub docs: usize,
    pub chunks: usize,
    pub batch_size: usize,
    pub threads: usize,
    /// Tokenising the batches (bare tokenizer, no ONNX).
    pub tokenize_s: f64,
    /// `session.run` alone over the same batches, in the same order.
    pub onnx_s: f64,
    pub onnx_chunks_per_s: f64,
    /// The full ingest into an empty data dir.
    pub pipeline_s: f64,
    pub pipeline_chunks_per_s: f64,
    pub pipeline_docs_per_s: f64,
    /// `pipeline_s / onnx_s`: the whole pipeline against the model alone.
    pub overhead_ratio: f64,
    /// `pipeline_s / (tokenize_s + onnx_s)`: against model plus tokenizer.
    pub overhead_ratio_vs_tokenize_and_onnx: f64,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Embedding(e.to_string())
}

/// Times bare ONNX Runtime over `texts` in batches (sorted by length, as the pipeline does).
/// Returns (tokenize seconds, session seconds).
pub fn bare_onnx(config: &Config, texts: &[String]) -> Result<(f64, f64)> {
    let env = init_runtime(&locate_runtime(&config.models)?)?;
    let dir = locate_model(&config.models)?;
    let threads = if config.models.threads > 0 {
        config.models.threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    };
    let mut session = ort::session::Session::builder(&env)
        .map_err(err)?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
        .map_err(err)?
        .with_intra_threads(threads)
        .map_err(err)?
        .commit_from_file(dir.join("model.onnx"))
        .map_err(err)?;
    let wants_types = session
        .inputs()
        .iter()
        .any(|i| i.name() == "token_type_ids");
    let mut tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(err)?;
    tok.with_padding(Some(tokenizers::PaddingParams {
        strategy: tokenizers::PaddingStrategy::BatchLongest,
        ..Default::default()
    }));
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: config.models.max_length,
        ..Default::default()
    }))
    .map_err(err)?;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    let (mut tok_s, mut run_s) = (0.0, 0.0);
    for batch in order.chunks(config.models.batch_size) {
        let t = Instant::now();
        let inputs: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
        let enc = tok.encode_batch(inputs, true).map_err(err)?;
        let (b, s) = (enc.len(), enc[0].get_ids().len());
        let ids: Vec<i64> = enc
            .iter()
            .flat_map(|e| e.get_ids().iter().map(|&x| x as i64))
            .collect();
        let mask: Vec<i64> = enc
            .iter()
            .flat_map(|e| e.get_attention_mask().iter().map(|&x| x as i64))
            .collect();
        let types = vec![0i64; b * s];
        tok_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let shape = [b as i64, s as i64];
        let ids = ort::value::Tensor::from_array((shape, ids)).map_err(err)?;
        let mask = ort::value::Tensor::from_array((shape, mask)).map_err(err)?;
        let out = if wants_types {
            let types = ort::value::Tensor::from_array((shape, types)).map_err(err)?;
            session
                .run(ort::inputs!["input_ids" => ids, "attention_mask" => mask, "token_type_ids" => types])
                .map_err(err)?
        } else {
            session
                .run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
                .map_err(err)?
        };
        let (shape, data) = out[0].try_extract_tensor::<f32>().map_err(err)?;
        std::hint::black_box((shape.len(), data.len()));
        run_s += t.elapsed().as_secs_f64();
    }
    Ok((tok_s, run_s))
}

/// Runs the ingest benchmark over `docs` into the (empty) data dir of `config`.
pub async fn ingest(config: Config, docs: Vec<(String, ExtractedDoc)>) -> Result<IngestBench> {
    if std::fs::read_dir(&config.data_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(Error::InvalidInput(format!(
            "bench needs an empty data dir; {} is not empty",
            config.data_dir.display()
        )));
    }
    let cairn = Cairn::open(config.clone()).await?;
    // The exact texts the pipeline will embed.
    let cfg = ChunkConfig {
        max_tokens: config.chunking.max_tokens,
        overlap_tokens: config.chunking.overlap_tokens,
    };
    let mut texts = Vec::new();
    for (_, d) in &docs {
        for c in chunk::chunk_blocks(&d.blocks, &cfg, cairn.embedder.tokenizer()) {
            texts.push(embed_input(&d.title, &c.section, &c.text));
        }
    }
    let (tokenize_s, onnx_s) = {
        let c = config.clone();
        let t = texts.clone();
        tokio::task::spawn_blocking(move || bare_onnx(&c, &t))
            .await
            .map_err(Error::internal)??
    };
    let n_docs = docs.len();
    let t = Instant::now();
    let reports = cairn.ingest_docs(docs, &|_| {}).await?;
    let pipeline_s = t.elapsed().as_secs_f64();
    let chunks: usize = reports
        .iter()
        .filter(|r| r.status == IngestStatus::Created)
        .map(|r| r.chunks as usize)
        .sum();
    Ok(IngestBench {
        docs: n_docs,
        chunks,
        batch_size: config.models.batch_size,
        threads: config.models.threads,
        tokenize_s,
        onnx_s,
        onnx_chunks_per_s: texts.len() as f64 / onnx_s,
        pipeline_s,
        pipeline_chunks_per_s: chunks as f64 / pipeline_s,
        pipeline_docs_per_s: n_docs as f64 / pipeline_s,
        overhead_ratio: pipeline_s / onnx_s,
        overhead_ratio_vs_tokenize_and_onnx: pipeline_s / (tokenize_s + onnx_s),
    })
}

/// Loads at most `limit` documents of a BEIR corpus.
pub fn corpus(dir: &Path, limit: Option<usize>) -> Result<Vec<(String, ExtractedDoc)>> {
    let mut docs = crate::eval::load_corpus(dir)?;
    if let Some(l) = limit {
        docs.truncate(l);
    }
    Ok(docs)
}

/// Result of `cairn bench query` (all times in milliseconds, medians over the questions).
#[derive(Debug, Serialize)]
pub struct QueryBench {
    pub docs: usize,
    pub questions: usize,
    /// Questions answered "nothing relevant" (no generation, not in the medians).
    pub no_context: usize,
    pub generator: String,
    pub max_tokens: u32,
    pub search_ms_p50: f64,
    pub ttft_ms_p50: f64,
    pub generator_ttft_ms_p50: f64,
    /// `ttft - generator_ttft`: retrieval, prompt packing and hand-off.
    pub overhead_ms_p50: f64,
    /// Median over questions of `overhead / search`; the target is below 1.2.
    pub overhead_over_search_p50: f64,
    pub prompt_tokens_p50: f64,
    /// Completion tokens per second of decoding (after the first token).
    pub decode_tokens_per_s_p50: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    crate::eval::percentile(&v, 0.5)
}

/// Ingests up to `limit` documents of a BEIR set into the empty data dir of `config`, then
/// answers up to `questions` of its test queries whose relevant documents were ingested.
pub async fn query(
    config: Config,
    dataset: &Path,
    limit: Option<usize>,
    questions: usize,
    max_tokens: u32,
) -> Result<QueryBench> {
    use futures::StreamExt;
    // Search and answer run the same question: a cached query vector would make the answer
    // path look cheaper than it is.
    let mut config = config;
    config.search.query_cache_size = 0;
    let docs = corpus(dataset, limit)?;
    let ids: std::collections::HashSet<String> = docs
        .iter()
        .filter_map(|(_, d)| d.external_id.clone())
        .collect();
    let mut cairn = Cairn::open(config.clone()).await?;
    cairn.load_generator().await?;
    let Some(gen) = cairn.generator.clone() else {
        return Err(Error::InvalidInput(
            "bench query needs a generator: pass --generator llama or --generator openai".into(),
        ));
    };
    let n_docs = docs.len();
    cairn.ingest_docs(docs, &|_| {}).await?;
    let qs: Vec<String> = crate::eval::load_queries(dataset, "test")?
        .into_iter()
        .filter(|(_, _, rel)| rel.iter().any(|r| ids.contains(r)))
        .map(|(_, q, _)| q)
        .take(questions)
        .collect();
    let req = |q: &str| {
        let mut r = crate::answer::QueryRequest::new(q);
        r.options.max_tokens = Some(max_tokens);
        r.options.stream = true;
        r
    };
    // Warm-up: first-use costs (model pages, caches) are not what this measures.
    if let Some(q) = qs.first() {
        cairn.answer(req(q), Vec::new()).await?;
    }
    let (mut search, mut ttft, mut gen_ttft, mut overhead, mut ratio, mut prompt, mut tps) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut no_context = 0;
    for q in &qs {
        let sreq = crate::search::SearchRequest {
            query: q.clone(),
            limit: Some(config.answer.context_chunks),
            explain: true,
            ..Default::default()
        };
        let t = Instant::now();
        cairn.search(sreq).await?;
        let search_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let mut stream = cairn.answer_stream(req(q), Vec::new()).await?;
        let mut first: Option<f64> = None;
        let mut done = None;
        while let Some(ev) = stream.next().await {
            match ev {
                crate::answer::AnswerEvent::Token(_) if first.is_none() => {
                    first = Some(t.elapsed().as_secs_f64() * 1e3)
                }
                crate::answer::AnswerEvent::Done(d) => done = Some(d),
                crate::answer::AnswerEvent::Error(e) => return Err(e),
                _ => {}
            }
        }
        let done = done.ok_or_else(|| Error::internal("answer without done"))?;
        if done.finish_reason == "no_context" {
            no_context += 1;
            continue;
        }
        let Some(first) = first else { continue };
        let g = done.timing.generator_ttft_ms;
        search.push(search_ms);
        ttft.push(first);
        gen_ttft.push(g);
        overhead.push(first - g);
        ratio.push((first - g) / search_ms);
        prompt.push(done.usage.prompt_tokens as f64);
        tps.extend(crate::answer::decode_tokens_per_s(
            &done.usage,
            &done.timing,
        ));
    }
    Ok(QueryBench {
        docs: n_docs,
        questions: qs.len(),
        no_context,
        generator: format!("{} ({})", gen.backend().as_str(), gen.model()),
        max_tokens,
        search_ms_p50: median(search),
        ttft_ms_p50: median(ttft),
        generator_ttft_ms_p50: median(gen_ttft),
        overhead_ms_p50: median(overhead),
        overhead_over_search_p50: median(ratio),
        prompt_tokens_p50: median(prompt),
        decode_tokens_per_s_p50: median(tps),
    })
}

/// Result of `cairn bench embed`: the bare embedding ceiling for search (one query at a time,
/// in-process, no HTTP, no retrieval).
#[derive(Debug, Serialize)]
pub struct EmbedBench {
    pub queries: usize,
    pub seconds: f64,
    pub queries_per_s: f64,
    pub ms_p50: f64,
    /// The same queries in groups of [`EMBED_BATCH`] (in query order), each run as the search
    /// query batcher runs the queries that wait together: sorted by length and split into
    /// calls by its plan.
    pub batched_queries_per_s: f64,
}

/// Group size of [`EmbedBench::batched_queries_per_s`].
pub const EMBED_BATCH: usize = 8;

/// Embeds every test query of a BEIR set one by one (after one warm-up).
pub async fn embed(config: Config, dataset: &Path) -> Result<EmbedBench> {
    let queries: Vec<String> = crate::eval::load_queries(dataset, "test")?
        .into_iter()
        .map(|(_, q, _)| q)
        .collect();
    // The ceiling is one query stream: one session, with every core unless configured.
    let mut models = config.models.clone();
    models.sessions = 1;
    tokio::task::spawn_blocking(move || {
        let e = crate::embed::OnnxEmbedder::load(&models)?;
        use crate::embed::batch::{split, CALL_OVERHEAD_TOKENS};
        use crate::embed::Embedder;
        if let Some(q) = queries.first() {
            e.embed(std::slice::from_ref(q))?;
        }
        let mut each = Vec::with_capacity(queries.len());
        let t = Instant::now();
        for q in &queries {
            let t1 = Instant::now();
            e.embed(std::slice::from_ref(q))?;
            each.push(t1.elapsed().as_secs_f64() * 1e3);
        }
        let seconds = t.elapsed().as_secs_f64();
        // Each group as the query batcher would run it: sorted by length, split by its plan.
        let t = Instant::now();
        for group in queries.chunks(EMBED_BATCH) {
            let group: Vec<(usize, &String)> =
                group.iter().map(|q| (e.model_tokens(q), q)).collect();
            for call in split(group, |g| g.0, CALL_OVERHEAD_TOKENS, EMBED_BATCH) {
                let texts: Vec<String> = call.into_iter().map(|g| g.1.clone()).collect();
                e.embed(&texts)?;
            }
        }
        let batched = t.elapsed().as_secs_f64();
        Ok(EmbedBench {
            queries: queries.len(),
            seconds,
            queries_per_s: queries.len() as f64 / seconds,
            ms_p50: median(each),
            batched_queries_per_s: queries.len() as f64 / batched,
        })
    })
    .await
    .map_err(Error::internal)?
}

/// What the extraction sandbox costs on ordinary files: each file extracted in-process and in
/// a worker process (`crate::sandbox`), interleaved, `rounds` times.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractBench {
    pub files: usize,
    pub rounds: usize,
    /// Median milliseconds per file, in-process.
    pub in_process_ms_p50: f64,
    /// Median milliseconds per file, in a worker process (spawn, pipe, extract, JSON back).
    pub sandbox_ms_p50: f64,
    /// Median of the per-file differences.
    pub overhead_ms_p50: f64,
}

/// Extracts every supported file of `dir` (not recursive) both ways; see [`ExtractBench`].
pub async fn extract(
    dir: &Path,
    rounds: usize,
    limits: crate::sandbox::Limits,
) -> Result<ExtractBench> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if crate::extract::FileType::from_name(&name).is_some() {
            files.push((name, std::fs::read(&path)?));
        }
    }
    if files.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no supported files in {}",
            dir.display()
        )));
    }
    let (mut inproc, mut sandboxed, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        for (name, bytes) in &files {
            let t = Instant::now();
            std::hint::black_box(crate::extract::extract(name, bytes));
            let a = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            crate::sandbox::extract(name.clone(), bytes.clone(), limits).await?;
            let b = t.elapsed().as_secs_f64() * 1e3;
            inproc.push(a);
            sandboxed.push(b);
            diff.push(b - a);
        }
    }
    Ok(ExtractBench {
        files: files.len(),
        rounds: rounds.max(1),
        in_process_ms_p50: median(inproc),
        sandbox_ms_p50: median(sandboxed),
        overhead_ms_p50: median(diff),
    })
}
