//! The `cairn` command line: serve, ingest, search, ask, sources, delete, stats, check, bench,
//! eval.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use cairn::answer::{AnswerEvent, Citation, QueryRequest};
use cairn::config::{Backend, Config, Overrides};
use cairn::error::Error;
use cairn::extract::FileType;
use cairn::search::{Mode, SearchRequest};
use cairn::service::{Cairn, IngestFile, IngestReport, IngestStatus};

/// mimalloc instead of glibc malloc: a search allocates many small strings and vectors on
/// several threads, where glibc's arenas cost about an eighth of a keyword search's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "A self-contained search and RAG server over your documents"
)]
struct Cli {
    /// Configuration file (default: ./cairn.toml when it exists).
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (default: ./data/store).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which generator answers questions (overrides `[generator]` in the config).
#[derive(Args, Default, Clone)]
struct GenArgs {
    /// `none` (retrieval only), `llama` (local GGUF) or `openai` (any compatible API; key from
    /// CAIRN_OPENAI_API_KEY).
    #[arg(long)]
    generator: Option<Backend>,
    /// llama: path of the GGUF file; openai: the model name.
    #[arg(long)]
    llm_model: Option<String>,
    /// openai: base URL, e.g. https://api.openai.com/v1 or http://localhost:8080/v1.
    #[arg(long)]
    llm_base_url: Option<String>,
}

/// Credentials for `--server` (a server with `--auth api_key` or `jwt`).
#[derive(Args, Default, Clone)]
struct RemoteArgs {
    /// API key (or JWT) sent as `Authorization: Bearer` to the `--server`.
    #[arg(long, env = "CAIRN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl RemoteArgs {
    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(k) => req.bearer_auth(k.trim()),
            None => req,
        }
    }
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key; it is printed once and never stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "standard")]
        tier: String,
        /// Comma-separated: search, query, ingest, admin.
        #[arg(long, default_value = "search,query")]
        scopes: String,
        /// Expire after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a key for good.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP server.
    Serve {
        /// Address to bind (default 127.0.0.1:8000).
        #[arg(long)]
        addr: Option<SocketAddr>,
        #[command(flatten)]
        gen: GenArgs,
        /// disabled, api_key, jwt or api_key+jwt (default from config: disabled).
        #[arg(long)]
        auth: Option<cairn::config::AuthMode>,
        /// Allow auth disabled on a non-loopback address.
        #[arg(long)]
        insecure: bool,
    },
    /// Manage API keys (in the data dir; a running server sees changes on its next request).
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Answer a question from the knowledge base, streaming the answer and its sources.
    Ask {
        question: String,
        /// Ask a running server instead of opening the data dir.
        #[arg(long)]
        server: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Chunks retrieved for the context.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value = "hybrid")]
        mode: Mode,
        #[arg(long)]
        max_tokens: Option<u32>,
        #[arg(long)]
        temperature: Option<f32>,
        /// Print the whole answer as JSON at the end instead of streaming text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gen: GenArgs,
    },
    /// Ingest files and folders (recursively).
    Ingest {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Upload to a running server instead of writing the data dir.
        #[arg(long)]
        server: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        json: bool,
    },
    /// Search the knowledge base.
    Search {
        query: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long, default_value = "hybrid")]
        mode: Mode,
        /// Show each hit's BM25 and vector ranks.
        #[arg(long)]
        explain: bool,
        #[arg(long)]
        json: bool,
        /// Retrieval preset: balanced, building, auditing (or one from search.presets).
        #[arg(long, value_name = "T")]
        context_type: Option<String>,
        /// Expand the query through the concept graph.
        #[arg(long)]
        use_graph: bool,
        /// Re-rank the top hits with the cross-encoder (models.reranker).
        #[arg(long)]
        rerank: bool,
    },
    /// Concepts matching a text (the concept graph's names, aliases and embeddings).
    Concepts {
        query: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The neighbourhood of a concept in the concept graph, as JSON.
    Graph {
        concept: String,
        #[arg(long, default_value_t = 1)]
        depth: usize,
        #[arg(long, default_value_t = 25)]
        limit: usize,
        #[arg(long, default_value_t = 0.0)]
        min_weight: f32,
    },
    /// List sources.
    Sources {
        #[arg(long)]
        json: bool,
    },
    /// Delete a source by id or by the path/external id it was ingested under.
    Delete { source: String },
    /// Counts, sizes and index state.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Verify that the sources table, vector index and keyword index agree.
    Check {
        /// Fix differences from the source of truth (sources table + LanceDB chunks).
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks: `ingest` times the pipeline against bare ONNX Runtime on the same batches;
    /// `query` times what /query adds before the first token, against search latency; `embed`
    /// is the bare query-embedding ceiling (one query at a time, in-process).
    Bench {
        /// What to measure.
        #[arg(value_parser = ["ingest", "query", "embed"])]
        what: String,
        /// A BEIR-format folder whose corpus is ingested.
        #[arg(long)]
        dataset: PathBuf,
        /// Use only the first N documents.
        #[arg(long)]
        limit: Option<usize>,
        /// query: how many test questions to answer.
        #[arg(long, default_value_t = 30)]
        questions: usize,
        /// query: answer length.
        #[arg(long, default_value_t = 32)]
        max_tokens: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gen: GenArgs,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API (what a server serves at `/openapi.json`).
    Openapi,
    /// Retrieval evaluation on a BEIR-format folder.
    Eval {
        #[arg(long)]
        dataset: PathBuf,
        #[arg(long, default_value = "test")]
        split: String,
        /// hybrid, vector, keyword, or all.
        #[arg(long, default_value = "hybrid")]
        mode: String,
        #[arg(long)]
        json: bool,
        /// Also write the results to this JSON file (what `telemetry.quality_report` reads to
        /// export the `cairn_search_quality` gauges).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Re-rank each search's candidates with the cross-encoder (`"rerank": true`).
        #[arg(long)]
        rerank: bool,
        /// Expand each search through the concept graph (`"use_graph": true`).
        #[arg(long)]
        use_graph: bool,
        /// Retrieval preset for each search (`building`, `auditing`, `balanced`, or one from the
        /// config's `search.presets`).
        #[arg(long, value_name = "T")]
        context_type: Option<String>,
        /// Also write the top 100 documents of every query to this file as a TREC run
        /// (`qid Q0 doc rank score tag`); needs a single `--mode`.
        #[arg(long, value_name = "FILE")]
        run: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (addr, gen, auth) = match &cli.cmd {
        Cmd::Serve {
            addr, gen, auth, ..
        } => (*addr, gen.clone(), *auth),
        Cmd::Ask { gen, .. } | Cmd::Bench { gen, .. } => (None, gen.clone(), None),
        _ => (None, GenArgs::default(), None),
    };
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        addr,
        generator: gen.generator,
        llm_model: gen.llm_model,
        llm_base_url: gen.llm_base_url,
        auth,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match cairn::telemetry::init(&config, matches!(cli.cmd, Cmd::Serve { .. })) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Config) -> Result<ExitCode, Error> {
    match cli.cmd {
        Cmd::Serve { insecure, .. } => serve(config, insecure).await,
        Cmd::Keys { cmd } => keys(&config, cmd),
        Cmd::Openapi => {
            println!(
                "{}",
                cairn::http::openapi::document(&cairn::http::openapi_spec())
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ask {
            question,
            server,
            remote,
            limit,
            mode,
            max_tokens,
            temperature,
            json,
            gen: _,
        } => {
            let mut req = QueryRequest::new(question);
            req.search.limit = limit;
            req.search.mode = mode;
            req.options.max_tokens = max_tokens;
            req.options.temperature = temperature;
            req.options.stream = !json;
            match server {
                Some(url) => ask_remote(&url, &remote, req, json).await,
                None => ask_local(config, req, json).await,
            }
        }
        Cmd::Ingest {
            paths,
            server,
            remote,
            json,
        } => match server {
            Some(url) => ingest_remote(&config, &paths, &url, &remote, json).await,
            None => ingest_local(config, &paths, json).await,
        },
        Cmd::Concepts { query, limit } => {
            let cairn = Cairn::open_with(config, false).await?;
            let found = cairn.concepts(&query, limit).await?;
            println!("{}", serde_json::to_string_pretty(&found)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Graph {
            concept,
            depth,
            limit,
            min_weight,
        } => {
            let cairn = Cairn::open_with(config, false).await?;
            let n = cairn.graph(&concept, depth, limit, min_weight).await?;
            println!("{}", serde_json::to_string_pretty(&n)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Search {
            query,
            limit,
            mode,
            explain,
            json,
            context_type,
            use_graph,
            rerank,
        } => {
            let cairn = Cairn::open_with(config, false).await?;
            let req = SearchRequest {
                query,
                limit: Some(limit),
                mode,
                explain,
                context_type,
                use_graph: use_graph.then_some(true),
                rerank,
                ..Default::default()
            };
            let resp = cairn.search(req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&resp)?);
            } else {
                if resp.results.is_empty() {
                    println!("no results");
                }
                for (i, h) in resp.results.iter().enumerate() {
                    let mut loc = String::new();
                    if let Some(p) = h.page {
                        loc.push_str(&format!(" p.{p}"));
                    }
                    if let Some(s) = &h.section {
                        loc.push_str(&format!(" § {s}"));
                    }
                    println!(
                        "{:>2}. [{:.4}] {}{}  ({})",
                        i + 1,
                        h.score,
                        h.title,
                        loc,
                        h.external_id
                    );
                    println!("    {}", plain_snippet(&h.snippet));
                    if let Some(e) = &h.scores {
                        println!(
                            "    bm25 {:?} (rank {:?}), vector distance {:?} (rank {:?})",
                            e.bm25, e.bm25_rank, e.vector_distance, e.vector_rank
                        );
                    }
                }
                println!("{} results in {:.1} ms", resp.results.len(), resp.took_ms);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sources { json } => {
            let cairn = Cairn::open_with(config, false).await?;
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = cairn.list_sources(1000, cursor.as_deref()).await?;
                all.extend(page.sources);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for s in &all {
                    println!(
                        "{}  {:>4} chunks  {:<5} {}  ({})",
                        s.id, s.chunk_count, s.file_type, s.title, s.external_id
                    );
                }
                println!("{} sources", all.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Delete { source } => {
            let cairn = Cairn::open(config).await?;
            let found = cairn.resolve_source(&source).await?;
            cairn.delete_source(&found.id).await?;
            println!("deleted {} ({})", found.id, found.external_id);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stats { json } => {
            let cairn = Cairn::open_with(config, false).await?;
            let s = cairn.stats().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("sources          {}", s.sources);
                println!("chunks (vector)  {}", s.chunks_vector);
                println!("chunks (keyword) {}", s.chunks_keyword);
                println!("vector bytes     {}", s.index_bytes.vector);
                println!("keyword bytes    {}", s.index_bytes.keyword);
                println!(
                    "embedding model  {} ({} dims)",
                    s.embedding_model, s.embedding_dim
                );
                println!(
                    "vector index     {} (ann from {} chunks)",
                    s.ann_index.state, s.ann_index.min_rows
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { repair, json } => check(config, repair, json).await,
        Cmd::Bench {
            what,
            dataset,
            limit,
            questions,
            max_tokens,
            json,
            gen: _,
        } => {
            if what == "embed" {
                let r = cairn::bench::embed(config, &dataset).await?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
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
            let _scratch = if cli.data_dir.is_some() {
                None
            } else {
                let t = tempfile_dir()?;
                config.data_dir = t.clone();
                Some(ScratchDir(t))
            };
            if what == "query" {
                let r = cairn::bench::query(config, &dataset, limit, questions, max_tokens).await?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{} questions over {} docs ({} without relevant context) with {}, max_tokens {}:\n  search p50 {:.1} ms; ttft p50 {:.1} ms, generator's own ttft p50 {:.1} ms\n  overhead (ttft - generator ttft) p50 {:.1} ms = {:.2}x search (median ratio); prompt p50 {:.0} tokens; decode p50 {:.1} tokens/s",
                        r.questions, r.docs, r.no_context, r.generator, r.max_tokens,
                        r.search_ms_p50, r.ttft_ms_p50, r.generator_ttft_ms_p50,
                        r.overhead_ms_p50, r.overhead_over_search_p50, r.prompt_tokens_p50,
                        r.decode_tokens_per_s_p50
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let docs = cairn::bench::corpus(&dataset, limit)?;
            let r = cairn::bench::ingest(config, docs).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} docs, {} chunks (batch {}): onnx {:.1} s ({:.1} chunks/s), tokenize {:.2} s, pipeline {:.1} s ({:.1} chunks/s, {:.1} docs/s), pipeline/onnx {:.3}",
                    r.docs, r.chunks, r.batch_size, r.onnx_s, r.onnx_chunks_per_s, r.tokenize_s, r.pipeline_s,
                    r.pipeline_chunks_per_s, r.pipeline_docs_per_s, r.overhead_ratio
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Eval {
            dataset,
            split,
            mode,
            json,
            report,
            rerank,
            use_graph,
            context_type,
            run,
        } => {
            let opts = cairn::eval::EvalOptions {
                mode: Default::default(),
                rerank,
                use_graph,
                context_type,
            };
            eval(
                config,
                cli.data_dir.is_some(),
                &dataset,
                &split,
                &mode,
                opts,
                json,
                report.as_deref(),
                run.as_deref(),
            )
            .await
        }
    }
}

fn plain_snippet(s: &str) -> String {
    let tty = std::io::stdout().is_terminal();
    let (on, off) = if tty {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    let s = s.replace("<mark>", on).replace("</mark>", off);
    html_unescape(&s)
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

fn keys(config: &Config, cmd: KeysCmd) -> Result<ExitCode, Error> {
    let store = cairn::auth::keys::KeyStore::open(&config.data_dir)?;
    match cmd {
        KeysCmd::Create {
            name,
            tier,
            scopes,
            expires_in_days,
            json,
        } => {
            if !config.auth.tiers.contains_key(&tier) {
                let known: Vec<&String> = config.auth.tiers.keys().collect();
                return Err(Error::InvalidInput(format!(
                    "unknown tier `{tier}` (configured: {known:?})"
                )));
            }
            let scopes = scopes
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.parse().map_err(Error::InvalidInput))
                .collect::<Result<Vec<cairn::auth::Scope>, Error>>()?;
            let expires_at =
                expires_in_days.map(|d| chrono::Utc::now().timestamp() + i64::from(d) * 86_400);
            let k = store.create(&name, &tier, scopes, expires_at)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&k)?);
            } else {
                println!("{}", k.key);
                eprintln!(
                    "key {} ({}, tier {}): shown once, store it now",
                    k.info.id, k.info.name, k.info.tier
                );
            }
        }
        KeysCmd::List { json } => {
            let keys = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for k in &keys {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    println!(
                        "{}  {:<20} {:<9} {}",
                        k.id,
                        k.name,
                        k.tier,
                        scopes.join(",")
                    );
                }
                println!("{} keys", keys.len());
            }
        }
        KeysCmd::Revoke { id } => {
            store.revoke(&id)?;
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config, insecure: bool) -> Result<ExitCode, Error> {
    let addr = config.server.addr;
    if config.auth.mode == cairn::config::AuthMode::Disabled {
        if !addr.ip().is_loopback() && !insecure {
            return Err(Error::InvalidInput(format!(
                "refusing to serve {addr} without authentication: use --auth api_key (create keys \
                 with `cairn keys create`), bind a loopback address, or pass --insecure"
            )));
        }
        tracing::warn!(addr = %addr, "authentication is disabled: every client has every scope");
    }
    let mut cairn = Cairn::open(config).await?;
    cairn.load_generator().await?;
    let cairn = Arc::new(cairn);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::InvalidInput(format!(
            "cannot listen on {addr}: {e} (is another server using the port? try --addr)"
        ))
    })?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, data_dir = %cairn.config.data_dir.display(), "cairn listening");
    // A machine-readable line for scripts and tests that bind port 0.
    println!("cairn listening on http://{local}");
    cairn::http::serve(cairn.clone(), listener, shutdown_signal()).await?;
    // A write whose client went away runs on in its own task: let it finish before exiting.
    cairn.store.wait_idle().await;
    tracing::info!("shutting down: in-flight requests and writes finished");
    Ok(ExitCode::SUCCESS)
}

/// Prints one answer event as plain text (tokens as they come, sources at the end).
struct AskPrinter {
    citations: Vec<Citation>,
    used: Vec<usize>,
}

impl AskPrinter {
    fn event(&mut self, ev: AskEvent) -> Result<(), Error> {
        match ev {
            AskEvent::Sources(c) => self.citations = c,
            AskEvent::Token(t) => out(&t)?,
            AskEvent::Done {
                finish_reason,
                used,
            } => {
                self.used = used;
                if finish_reason == "retrieval_only" {
                    out("(no generator configured: the sources found are listed below)\n")?;
                } else {
                    out("\n")?;
                }
                if !self.citations.is_empty() {
                    out("\nSources:\n")?;
                }
                for c in &self.citations {
                    let mut loc = String::new();
                    if let Some(p) = c.page {
                        loc.push_str(&format!(" p.{p}"));
                    }
                    if let Some(s) = &c.section {
                        loc.push_str(&format!(" § {s}"));
                    }
                    let mark = if self.used.contains(&c.n) { "*" } else { " " };
                    out(&format!(
                        "{mark}[{}] {}{}  ({})\n",
                        c.n, c.title, loc, c.external_id
                    ))?;
                }
            }
            AskEvent::Error { code, message } => {
                out("\n")?;
                return Err(Error::InvalidInput(format!("{message} ({code})")));
            }
        }
        Ok(())
    }
}

/// Writes and flushes stdout; a closed pipe (`cairn ask ... | head`) ends the command quietly.
fn out(s: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(e.into()),
    }
}

/// What `ask` prints, from the core stream or from a server's SSE.
enum AskEvent {
    Sources(Vec<Citation>),
    Token(String),
    Done {
        finish_reason: String,
        used: Vec<usize>,
    },
    Error {
        code: String,
        message: String,
    },
}

async fn ask_local(config: Config, req: QueryRequest, json: bool) -> Result<ExitCode, Error> {
    use futures::StreamExt;
    let mut cairn = Cairn::open_with(config, false).await?;
    cairn.load_generator().await?;
    if json {
        let r = cairn.answer(req, Vec::new()).await?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut stream = cairn.answer_stream(req, Vec::new()).await?;
    let mut p = AskPrinter {
        citations: Vec::new(),
        used: Vec::new(),
    };
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            AnswerEvent::Sources(c) => AskEvent::Sources(c),
            AnswerEvent::Token(t) => AskEvent::Token(t),
            AnswerEvent::Citation(_) => continue,
            AnswerEvent::Done(d) => AskEvent::Done {
                finish_reason: d.finish_reason,
                used: d.used,
            },
            AnswerEvent::Error(e) => AskEvent::Error {
                code: e.code().to_string(),
                message: e.to_string(),
            },
        };
        p.event(ev)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn ask_remote(
    url: &str,
    remote: &RemoteArgs,
    req: QueryRequest,
    json: bool,
) -> Result<ExitCode, Error> {
    use futures::StreamExt;
    let url = format!("{}/query", url.trim_end_matches('/'));
    let resp = remote
        .authorize(reqwest::Client::new().post(&url))
        .json(&req)
        .send()
        .await
        .map_err(|e| Error::InvalidInput(format!("cannot reach {url}: {e}")))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or("request failed");
        return Err(Error::InvalidInput(format!(
            "server answered {status}: {msg}"
        )));
    }
    if json {
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::InvalidInput(format!("bad response from {url}: {e}")))?;
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut p = AskPrinter {
        citations: Vec::new(),
        used: Vec::new(),
    };
    let mut decoder = cairn::sse::SseDecoder::default();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::InvalidInput(format!("reading {url}: {e}")))?;
        for ev in decoder.push(&chunk) {
            let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
            let ev = match ev.event.as_str() {
                "sources" => AskEvent::Sources(
                    serde_json::from_value(v["citations"].clone()).unwrap_or_default(),
                ),
                "token" => AskEvent::Token(v["delta"].as_str().unwrap_or_default().to_string()),
                "done" => AskEvent::Done {
                    finish_reason: v["finish_reason"].as_str().unwrap_or_default().to_string(),
                    used: serde_json::from_value(v["used"].clone()).unwrap_or_default(),
                },
                "error" => AskEvent::Error {
                    code: v["code"].as_str().unwrap_or("error").to_string(),
                    message: v["message"].as_str().unwrap_or("stream failed").to_string(),
                },
                _ => continue,
            };
            let done = matches!(ev, AskEvent::Done { .. });
            p.event(ev)?;
            if done {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    Err(Error::InvalidInput(
        "the server closed the stream before the answer finished".into(),
    ))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Files to ingest: named files as given; folders walked recursively, keeping supported types.
fn collect_files(paths: &[PathBuf]) -> (Vec<PathBuf>, usize, Vec<(String, String)>) {
    let mut files = Vec::new();
    let mut skipped = 0;
    let mut missing = Vec::new();
    for p in paths {
        if p.is_dir() {
            for e in walkdir::WalkDir::new(p)
                .sort_by_file_name()
                .into_iter()
                .filter_map(|e| e.ok())
            {
                if !e.file_type().is_file() {
                    continue;
                }
                let hidden = e.file_name().to_string_lossy().starts_with('.');
                if !hidden && FileType::from_name(&e.file_name().to_string_lossy()).is_some() {
                    files.push(e.into_path());
                } else {
                    skipped += 1;
                }
            }
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            missing.push((
                p.display().to_string(),
                "no such file or directory".to_string(),
            ));
        }
    }
    (files, skipped, missing)
}

fn external_name(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

struct Progress {
    bar: Option<ProgressBar>,
    json: bool,
}

impl Progress {
    fn new(total: usize, json: bool) -> Self {
        let bar = if !json && std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} files {msg} [{elapsed_precise}, eta {eta}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Some(b)
        } else {
            None
        };
        Self { bar, json }
    }

    fn report(&self, r: &IngestReport) {
        let line = match (&r.error, r.status) {
            (Some(e), _) => format!("failed     {}: {} ({})", r.file, e.message, e.code),
            (None, s) => format!("{:<10} {} ({} chunks)", s.as_str(), r.file, r.chunks),
        };
        match &self.bar {
            Some(b) => {
                if r.error.is_some() {
                    b.println(line);
                }
                b.set_message(r.file.rsplit('/').next().unwrap_or_default().to_string());
            }
            None if self.json => {}
            None => eprintln!("{line}"),
        }
    }

    fn file_done(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn summarize(reports: &[IngestReport], skipped: usize, json: bool) -> ExitCode {
    let count = |s: IngestStatus| reports.iter().filter(|r| r.status == s).count();
    let failed = count(IngestStatus::Failed);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "created": count(IngestStatus::Created),
                "updated": count(IngestStatus::Updated),
                "unchanged": count(IngestStatus::Unchanged),
                "failed": failed,
                "skipped": skipped,
                "chunks": reports.iter().map(|r| r.chunks as u64).sum::<u64>(),
                "sources": reports,
            })
        );
    } else {
        println!(
            "{} created, {} updated, {} unchanged, {} failed, {} skipped (unsupported or hidden)",
            count(IngestStatus::Created),
            count(IngestStatus::Updated),
            count(IngestStatus::Unchanged),
            failed,
            skipped
        );
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn ingest_local(config: Config, paths: &[PathBuf], json: bool) -> Result<ExitCode, Error> {
    let (files, skipped, missing) = collect_files(paths);
    let max = config.ingest.max_file_bytes;
    let group = config.ingest.batch_sources;
    let max_batch_bytes = config.ingest.max_batch_bytes;
    let cairn = Cairn::open(config).await?;
    let progress = Progress::new(files.len(), json);
    let mut reports: Vec<IngestReport> = Vec::new();
    for (name, why) in missing {
        let r = failed_report(&name, "not_found", &why);
        progress.report(&r);
        reports.push(r);
    }
    // Files are read in groups bounded by count and by bytes, so a folder of large PDFs never
    // sits in memory all at once.
    let mut batch: Vec<IngestFile> = Vec::new();
    let mut batch_bytes = 0u64;
    for (i, p) in files.iter().enumerate() {
        let name = external_name(p);
        match std::fs::metadata(p).map(|m| m.len()) {
            Ok(n) if n > max => {
                let r = failed_report(
                    &name,
                    "payload_too_large",
                    &format!("file is {n} bytes; ingest.max_file_bytes is {max}"),
                );
                progress.report(&r);
                progress.file_done();
                reports.push(r);
            }
            _ => match std::fs::read(p) {
                Ok(bytes) => {
                    batch_bytes += bytes.len() as u64;
                    batch.push(IngestFile {
                        name,
                        bytes,
                        metadata: Default::default(),
                    });
                }
                Err(e) => {
                    let r = failed_report(&name, "unreadable_document", &e.to_string());
                    progress.report(&r);
                    progress.file_done();
                    reports.push(r);
                }
            },
        }
        let last = i + 1 == files.len();
        if !batch.is_empty() && (last || batch.len() >= group || batch_bytes >= max_batch_bytes) {
            let n = batch.len();
            let out = cairn
                .ingest_files(std::mem::take(&mut batch), &|r| progress.report(r))
                .await?;
            batch_bytes = 0;
            for _ in 0..n {
                progress.file_done();
            }
            reports.extend(out);
        }
    }
    progress.finish();
    cairn.optimize().await?;
    Ok(summarize(&reports, skipped, json))
}

fn failed_report(file: &str, code: &str, message: &str) -> IngestReport {
    IngestReport {
        file: file.to_string(),
        status: IngestStatus::Failed,
        source_id: None,
        external_id: None,
        title: None,
        chunks: 0,
        error: Some(cairn::service::ErrorBody {
            code: code.into(),
            message: message.into(),
            suggestions: None,
        }),
    }
}

async fn ingest_remote(
    config: &Config,
    paths: &[PathBuf],
    url: &str,
    remote: &RemoteArgs,
    json: bool,
) -> Result<ExitCode, Error> {
    let (files, skipped, missing) = collect_files(paths);
    let client = reqwest::Client::new();
    let endpoint = format!("{}/sources", url.trim_end_matches('/'));
    let progress = Progress::new(files.len(), json);
    let mut reports: Vec<IngestReport> = Vec::new();
    for (name, why) in missing {
        let r = failed_report(&name, "not_found", &why);
        progress.report(&r);
        reports.push(r);
    }
    // Keep each request under the server's default upload limit.
    let budget = (config.server.max_upload_bytes / 2).max(1);
    let mut i = 0;
    while i < files.len() {
        let mut form = reqwest::multipart::Form::new();
        let mut size = 0usize;
        let mut n = 0;
        while i < files.len() && (n == 0 || size < budget) && n < 64 {
            let p = &files[i];
            let bytes = std::fs::read(p)?;
            size += bytes.len();
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(external_name(p)),
            );
            n += 1;
            i += 1;
        }
        let resp = remote
            .authorize(client.post(&endpoint))
            .multipart(form)
            .send()
            .await
            .map_err(|e| Error::InvalidInput(format!("cannot reach {endpoint}: {e}")))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        let list = body
            .get("sources")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default();
        if list.is_empty() && !status.is_success() {
            let msg = body
                .pointer("/error/message")
                .and_then(|m| m.as_str())
                .unwrap_or("request failed")
                .to_string();
            return Err(Error::InvalidInput(format!(
                "server answered {status}: {msg}"
            )));
        }
        for item in list {
            let r = serde_json::from_value::<IngestReport>(item.clone()).unwrap_or_else(|e| {
                failed_report(
                    &item.to_string(),
                    "bad_response",
                    &format!("unexpected report from the server: {e}"),
                )
            });
            progress.report(&r);
            reports.push(r);
        }
        for _ in 0..n {
            progress.file_done();
        }
    }
    progress.finish();
    Ok(summarize(&reports, skipped, json))
}

async fn check(config: Config, repair: bool, json: bool) -> Result<ExitCode, Error> {
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
        println!(
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
        println!(
            "sources {}, chunks: vector {}, keyword {}",
            report.sources, report.chunks_vector, report.chunks_keyword
        );
        let show = |name: &str, v: &Vec<String>| {
            if !v.is_empty() {
                let head: Vec<&String> = v.iter().take(10).collect();
                println!(
                    "{name}: {} {:?}{}",
                    v.len(),
                    head,
                    if v.len() > 10 { " …" } else { "" }
                );
            }
        };
        show("orphan vector chunks", &report.orphan_vector_chunks);
        show("orphan keyword chunks", &report.orphan_keyword_chunks);
        show(
            "chunks missing from keyword index",
            &report.missing_keyword_chunks,
        );
        show("duplicate chunk ids", &report.duplicate_chunks);
        show("half-written sources", &report.half_written_sources);
        show("concepts with no mention", &report.orphan_concepts);
        if report.orphan_mentions > 0 {
            println!("mentions of uncommitted chunks: {}", report.orphan_mentions);
        }
        if report.dangling_mentions > 0 {
            println!(
                "mentions of concepts without a row: {}",
                report.dangling_mentions
            );
        }
        if report.pending_journal > 0 {
            println!("interrupted writes pending: {}", report.pending_journal);
        }
        if report.is_consistent() {
            println!("consistent");
        } else if let Some(a) = &after {
            show("removed half-written sources (re-ingest them)", &removed);
            println!(
                "{}",
                if a.is_consistent() {
                    "repaired: consistent now"
                } else {
                    "repair incomplete"
                }
            );
        } else {
            println!("inconsistent: run `cairn check --repair`");
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

#[allow(clippy::too_many_arguments)] // one per `cairn eval` flag
async fn eval(
    config: Config,
    reuse: bool,
    dataset: &Path,
    split: &str,
    mode: &str,
    opts: cairn::eval::EvalOptions,
    json: bool,
    report: Option<&Path>,
    run: Option<&Path>,
) -> Result<ExitCode, Error> {
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
    let _scratch = if reuse {
        None
    } else {
        let t = tempfile_dir()?;
        config.data_dir = t.clone();
        Some(ScratchDir(t))
    };
    let cairn = Cairn::open(config).await?;
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
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{:<8} queries {}  nDCG@10 {:.4}  R@10 {:.4}  R@100 {:.4}  MRR@10 {:.4}  latency p50 {:.1} ms p95 {:.1} ms",
                o.label(),
                r.queries,
                r.ndcg_at_10,
                r.recall_at_10,
                r.recall_at_100,
                r.mrr_at_10,
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
