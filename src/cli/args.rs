//! The command line's arguments (clap): the global options, one variant per command, and
//! an `Args` struct for each command with more than a few options.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use cairn::config::Backend;
use cairn::search::{GroupBy, Mode};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "A self-contained search and RAG server over your documents"
)]
pub struct Cli {
    /// Configuration file (default: ./cairn.toml when it exists).
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (default: ./data/store).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Which generator answers questions (overrides `[generator]` in the config).
#[derive(Args, Default, Clone)]
pub struct GenArgs {
    /// `none` (retrieval only), `llama` (local GGUF) or `openai` (any compatible API; key from
    /// CAIRN_OPENAI_API_KEY).
    #[arg(long)]
    pub generator: Option<Backend>,
    /// llama: path of the GGUF file; openai: the model name.
    #[arg(long)]
    pub llm_model: Option<String>,
    /// openai: base URL, e.g. https://api.openai.com/v1 or http://localhost:8080/v1.
    #[arg(long)]
    pub llm_base_url: Option<String>,
}

/// Credentials for `--server` (a server with `--auth api_key` or `jwt`).
#[derive(Args, Default, Clone)]
pub struct RemoteArgs {
    /// API key (or JWT) sent as `Authorization: Bearer` to the `--server`.
    #[arg(long, env = "CAIRN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl RemoteArgs {
    pub fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(k) => req.bearer_auth(k.trim()),
            None => req,
        }
    }
}

#[derive(Subcommand)]
pub enum KeysCmd {
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
pub enum Cmd {
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
    Ask(AskArgs),
    /// Ingest files and folders (recursively).
    Ingest(IngestArgs),
    /// Search the knowledge base.
    Search(SearchArgs),
    /// Concepts matching a text (the concept graph's names, aliases and embeddings).
    Concepts {
        query: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The neighbourhood of a concept in the concept graph, as JSON.
    Graph(GraphArgs),
    /// List sources.
    Sources {
        #[arg(long)]
        json: bool,
    },
    /// Delete a source by id or by the path/external id it was ingested under.
    Delete {
        source: String,
        /// The folder paths are relative to, as given to `cairn ingest --root`.
        #[arg(long)]
        root: Option<PathBuf>,
    },
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
    /// is the bare query-embedding ceiling (one query at a time, in-process); `extract` is
    /// what the extraction sandbox costs per file of a folder (`--limit` rounds, default 20).
    Bench(BenchArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API (what a server serves at `/openapi.json`).
    Openapi,
    /// Retrieval evaluation on a BEIR-format folder.
    Eval(EvalArgs),
}

#[derive(Args)]
pub struct AskArgs {
    pub question: String,
    /// Ask a running server instead of opening the data dir.
    #[arg(long)]
    pub server: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Chunks retrieved for the context.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value = "hybrid")]
    pub mode: Mode,
    #[arg(long)]
    pub max_tokens: Option<u32>,
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Print the whole answer as JSON at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gen: GenArgs,
}

#[derive(Args)]
pub struct SearchArgs {
    pub query: String,
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    #[arg(long, default_value = "hybrid")]
    pub mode: Mode,
    /// Show each hit's BM25 and vector ranks.
    #[arg(long)]
    pub explain: bool,
    #[arg(long)]
    pub json: bool,
    /// Retrieval preset: balanced, building, auditing (or one from search.presets).
    #[arg(long, value_name = "T")]
    pub context_type: Option<String>,
    /// Expand the query through the concept graph.
    #[arg(long)]
    pub use_graph: bool,
    /// Re-rank the top hits with the cross-encoder (models.reranker).
    #[arg(long)]
    pub rerank: bool,
    /// Skip this many results (or groups): the next page.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Collapse the results: none, source (one per document), or metadata.KEY; unset: the
    /// config's `search.group_by`.
    #[arg(long, value_name = "BY")]
    pub group_by: Option<GroupBy>,
    /// Chunks shown per group (1 to 10; default `search.group_size`).
    #[arg(long, value_name = "N")]
    pub group_size: Option<usize>,
}

#[derive(Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_parser = ["ingest", "query", "embed", "extract"])]
    pub what: String,
    /// A BEIR-format folder whose corpus is ingested.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Use only the first N documents.
    #[arg(long)]
    pub limit: Option<usize>,
    /// query: how many test questions to answer.
    #[arg(long, default_value_t = 30)]
    pub questions: usize,
    /// query: answer length.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: u32,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gen: GenArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub dataset: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// hybrid, vector, keyword, or all.
    #[arg(long, default_value = "hybrid")]
    pub mode: String,
    #[arg(long)]
    pub json: bool,
    /// Also write the results to this JSON file (what `telemetry.quality_report` reads to
    /// export the `cairn_search_quality` gauges).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Re-rank each search's candidates with the cross-encoder (`"rerank": true`).
    #[arg(long)]
    pub rerank: bool,
    /// Expand each search through the concept graph (`"use_graph": true`).
    #[arg(long)]
    pub use_graph: bool,
    /// Retrieval preset for each search (`building`, `auditing`, `balanced`, or one from the
    /// config's `search.presets`).
    #[arg(long, value_name = "T")]
    pub context_type: Option<String>,
    /// Collapse each search's results (`"group_by"`): none, source, or metadata.KEY; unset:
    /// the config's `search.group_by`.
    #[arg(long, value_name = "BY")]
    pub group_by: Option<GroupBy>,
    /// Also write the top 100 documents of every query to this file as a TREC run
    /// (`qid Q0 doc rank score tag`); needs a single `--mode`.
    #[arg(long, value_name = "FILE")]
    pub run: Option<PathBuf>,
    /// Score grounded answers on the dataset's claims (`claims/claims_dev.jsonl` and
    /// `corpus_sentences.jsonl.gz`) instead of retrieval: labels, citations, speed. Needs a
    /// generator (`--generator`).
    #[arg(long)]
    pub answers: bool,
    /// --answers: only the first N claims.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// --answers: answer length in tokens.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    #[command(flatten)]
    pub gen: GenArgs,
}

#[derive(Args)]
pub struct IngestArgs {
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Files are named (their external id) by their path relative to this folder; default the
    /// current directory. A file outside it is named by its absolute path.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Upload to a running server instead of writing the data dir.
    #[arg(long)]
    pub server: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct GraphArgs {
    pub concept: String,
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    #[arg(long, default_value_t = 0.0)]
    pub min_weight: f32,
}
