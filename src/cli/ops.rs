//! `cairn check`, `cairn eval` and `cairn bench`: consistency, retrieval quality and speed.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn::config::Config;
use cairn::error::Error;
use cairn::search::Mode;
use cairn::service::{Cairn, IngestReport, IngestStatus};

use super::args::{BenchArgs, EvalArgs};

pub async fn check(config: Config, repair: bool, json: bool) -> Result<ExitCode, Error> {
    let cairn = Cairn::open_with(config, repair).await?;
    let (report, removed) = if repair {
        cairn.store.repair().await?
    } else {
        (cairn.store.check().await?, Vec::new())
    };
    let after = if repair {
        Some(cairn.store.check().await?)
    } else {
        None
    };
    if json {
        say!(
            "{}",
            serde_json::json!({
                "consistent": report.is_consistent(),
                "report": report,
                "repaired": repair,
                "removed_half_written": removed,
                "after_repair": after,
            })
        );
    } else {
        say!(
            "sources {}, chunks: vector {}, keyword {}",
            report.sources,
            report.chunks_vector,
            report.chunks_keyword
        );
        let show = |name: &str, v: &Vec<String>| -> Result<(), Error> {
            if !v.is_empty() {
                let head: Vec<&String> = v.iter().take(10).collect();
                say!(
                    "{name}: {} {:?}{}",
                    v.len(),
                    head,
                    if v.len() > 10 { " …" } else { "" }
                );
            }
            Ok(())
        };
        show("orphan vector chunks", &report.orphan_vector_chunks)?;
        show("orphan keyword chunks", &report.orphan_keyword_chunks)?;
        show(
            "chunks missing from keyword index",
            &report.missing_keyword_chunks,
        )?;
        show("duplicate chunk ids", &report.duplicate_chunks)?;
        show("half-written sources", &report.half_written_sources)?;
        show("concepts with no mention", &report.orphan_concepts)?;
        if report.orphan_mentions > 0 {
            say!("mentions of uncommitted chunks: {}", report.orphan_mentions);
        }
        if report.dangling_mentions > 0 {
            say!(
                "mentions of concepts without a row: {}",
                report.dangling_mentions
            );
        }
        if report.pending_journal > 0 {
            say!("interrupted writes pending: {}", report.pending_journal);
        }
        if report.is_consistent() {
            say!("consistent");
        } else if let Some(a) = &after {
            show("removed half-written sources (re-ingest them)", &removed)?;
            say!(
                "{}",
                if a.is_consistent() {
                    "repaired: consistent now"
                } else {
                    "repair incomplete"
                }
            );
        } else {
            say!("inconsistent: run `cairn check --repair`");
        }
    }
    let ok = after
        .as_ref()
        .map(|a| a.is_consistent())
        .unwrap_or(report.is_consistent());
    Ok(if ok && (repair || report.is_consistent()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cairn eval --answers`: the claims asked and scored (`cairn::eval::answers`).
async fn eval_answers(cairn: &Cairn, a: &EvalArgs) -> Result<ExitCode, Error> {
    let progress = |n: usize, total: usize| {
        if n.is_multiple_of(10) || n == total {
            eprintln!("eval: {n}/{total} claims answered");
        }
    };
    let r = cairn::eval::answers::run(cairn, &a.dataset, a.limit, a.max_tokens, &progress).await?;
    if a.json {
        say!("{}", serde_json::to_string(&r)?);
    } else {
        say!(
            "{} claims ({} with evidence) with {}, max_tokens {}:\n  labels: accuracy {:.4}, macro-F1 {:.4}, predicted {:?}\n  citations: precision {:.4}, recall {:.4}; verdicts citing nothing {:.4}; refused by the relevance gate {}\n  time to first token p50 {:.0} ms, p95 {:.0} ms; decode p50 {:.1} tokens/s",
            r.claims, r.with_evidence, r.generator, r.max_tokens,
            r.label_accuracy, r.macro_f1, r.predicted,
            r.citation_precision, r.citation_recall, r.uncited_verdicts, r.refused_by_relevance_gate,
            r.ttft_ms_p50, r.ttft_ms_p95, r.decode_tokens_per_s_p50
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn eval`; `reuse`: ingest into the configured data dir (kept) instead of a scratch one.
pub async fn eval(config: Config, reuse: bool, a: EvalArgs) -> Result<ExitCode, Error> {
    let opts = cairn::eval::EvalOptions {
        mode: Default::default(),
        rerank: a.rerank,
        use_graph: a.use_graph,
        context_type: a.context_type.clone(),
        group_by: a.group_by.clone(),
    };
    let (dataset, split, mode, json) = (
        a.dataset.as_path(),
        a.split.as_str(),
        a.mode.as_str(),
        a.json,
    );
    let (report, run) = (a.report.as_deref(), a.run.as_deref());
    let modes: Vec<Mode> = if mode == "all" {
        vec![Mode::Hybrid, Mode::Keyword, Mode::Vector]
    } else {
        vec![mode.parse::<Mode>().map_err(Error::InvalidInput)?]
    };
    if run.is_some() && modes.len() > 1 {
        return Err(Error::InvalidInput(
            "--run writes one run: give a single --mode".into(),
        ));
    }
    let mut config = config;
    // Each mode runs the same queries: cached query vectors would hide the embedding time in
    // the latency figures of the later modes.
    config.search.query_cache_size = 0;
    if a.answers {
        config.answer.system_prompt = cairn::eval::answers::VERDICT_PROMPT.into();
    }
    let _scratch = ScratchDir::unless(reuse, &mut config)?;
    let mut cairn = Cairn::open(config).await?;
    let corpus = cairn::eval::load_corpus(dataset)?;
    let total = corpus.len();
    eprintln!(
        "eval: ingesting {total} documents into {}",
        cairn.config.data_dir.display()
    );
    let started = std::time::Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let reports = cairn
        .ingest_docs(corpus, &|_| {
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n.is_multiple_of(500) {
                eprintln!("eval: {n}/{total} documents");
            }
        })
        .await?;
    cairn.optimize().await?;
    let secs = started.elapsed().as_secs_f64();
    let written: Vec<&IngestReport> = reports
        .iter()
        .filter(|r| matches!(r.status, IngestStatus::Created | IngestStatus::Updated))
        .collect();
    let chunks: u64 = written.iter().map(|r| r.chunks as u64).sum();
    if !written.is_empty() {
        eprintln!(
            "eval: ingested {} documents ({chunks} chunks) in {secs:.1} s: {:.1} docs/s, {:.1} chunks/s",
            written.len(),
            written.len() as f64 / secs,
            chunks as f64 / secs
        );
    } else {
        eprintln!("eval: corpus already ingested (unchanged)");
    }
    if a.answers {
        cairn.load_generator().await?;
        return eval_answers(&cairn, &a).await;
    }
    let mut results = Vec::new();
    let mut run_file = match run {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    for m in modes {
        let o = cairn::eval::EvalOptions {
            mode: m,
            ..opts.clone()
        };
        let out = run_file.as_mut().map(|w| w as &mut dyn std::io::Write);
        let r = cairn::eval::run(&cairn, dataset, split, &o, out).await?;
        results.push(r.clone());
        if json {
            say!("{}", serde_json::to_string(&r)?);
        } else {
            say!(
                "{:<8} queries {}  nDCG@10 {:.4}  R@10 {:.4}  R@100 {:.4}  MRR@10 {:.4}  documents in the top 10 (median) {}  latency p50 {:.1} ms p95 {:.1} ms",
                o.label(),
                r.queries,
                r.ndcg_at_10,
                r.recall_at_10,
                r.recall_at_100,
                r.mrr_at_10,
                r.distinct_docs_at_10,
                r.latency_ms.p50,
                r.latency_ms.p95
            );
        }
    }
    if let Some(mut w) = run_file {
        use std::io::Write as _;
        w.flush()?;
    }
    if let Some(path) = report {
        let finished_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = dataset
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dataset.display().to_string());
        cairn::telemetry::QualityReport {
            dataset: name,
            split: split.to_string(),
            finished_at,
            results,
        }
        .write(path)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A scratch data dir removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Points `config` at a fresh scratch data dir, unless the command reuses the configured
    /// one (`--data-dir` given).
    fn unless(reuse: bool, config: &mut Config) -> Result<Option<Self>, Error> {
        if reuse {
            return Ok(None);
        }
        let t = tempfile_dir()?;
        config.data_dir = t.clone();
        Ok(Some(ScratchDir(t)))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<PathBuf, Error> {
    let p = std::env::temp_dir().join(format!("cairn-eval-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

/// `cairn bench`; `reuse`: run in the configured data dir instead of a scratch one.
pub async fn bench(config: Config, reuse: bool, a: BenchArgs) -> Result<ExitCode, Error> {
    if a.what == "extract" {
        let rounds = a.limit.unwrap_or(20);
        let r = cairn::bench::extract(&a.dataset, rounds, config.ingest.extract_limits()).await?;
        if a.json {
            say!("{}", serde_json::to_string(&r)?);
        } else {
            say!(
                "{} files x {} rounds: in-process p50 {:.3} ms, sandboxed p50 {:.2} ms, \
                 overhead p50 {:.2} ms a file",
                r.files,
                r.rounds,
                r.in_process_ms_p50,
                r.sandbox_ms_p50,
                r.overhead_ms_p50
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.what == "embed" {
        let r = cairn::bench::embed(config, &a.dataset).await?;
        if a.json {
            say!("{}", serde_json::to_string(&r)?);
        } else {
            say!(
                "{} queries embedded one by one in {:.1} s: {:.1} queries/s, p50 {:.2} ms; \
                 in groups of {} split by the query batcher's plan: {:.1} queries/s",
                r.queries,
                r.seconds,
                r.queries_per_s,
                r.ms_p50,
                cairn::bench::EMBED_BATCH,
                r.batched_queries_per_s
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = config;
    let _scratch = ScratchDir::unless(reuse, &mut config)?;
    if a.what == "query" {
        return bench_query(config, a).await;
    }
    let docs = cairn::bench::corpus(&a.dataset, a.limit)?;
    let r = cairn::bench::ingest(config, docs).await?;
    if a.json {
        say!("{}", serde_json::to_string(&r)?);
    } else {
        say!(
            "{} docs, {} chunks (batch {}): onnx {:.1} s ({:.1} chunks/s), tokenize {:.2} s, pipeline {:.1} s ({:.1} chunks/s, {:.1} docs/s), pipeline/onnx {:.3}",
            r.docs, r.chunks, r.batch_size, r.onnx_s, r.onnx_chunks_per_s, r.tokenize_s, r.pipeline_s,
            r.pipeline_chunks_per_s, r.pipeline_docs_per_s, r.overhead_ratio
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench_query(config: Config, a: BenchArgs) -> Result<ExitCode, Error> {
    let r = cairn::bench::query(config, &a.dataset, a.limit, a.questions, a.max_tokens).await?;
    if a.json {
        say!("{}", serde_json::to_string(&r)?);
    } else {
        say!(
            "{} questions over {} docs ({} without relevant context) with {}, max_tokens {}:\n  search p50 {:.1} ms; ttft p50 {:.1} ms, generator's own ttft p50 {:.1} ms\n  overhead (ttft - generator ttft) p50 {:.1} ms = {:.2}x search (median ratio); prompt p50 {:.0} tokens; decode p50 {:.1} tokens/s",
            r.questions, r.docs, r.no_context, r.generator, r.max_tokens,
            r.search_ms_p50, r.ttft_ms_p50, r.generator_ttft_ms_p50,
            r.overhead_ms_p50, r.overhead_over_search_p50, r.prompt_tokens_p50,
            r.decode_tokens_per_s_p50
        );
    }
    Ok(ExitCode::SUCCESS)
}
