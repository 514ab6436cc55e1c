//! One configuration struct for the whole process.
//!
//! Precedence, lowest to highest: compiled-in defaults < `cairn.toml` (or `--config FILE`) <
//! `CAIRN_*` environment variables < command-line flags. Nested keys use a double underscore in
//! the environment (`CAIRN_SERVER__ADDR`, `CAIRN_CHUNKING__MAX_TOKENS`). Every option is listed
//! in `docs/configuration.md`; a test below proves the defaults load on their own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod auth;
mod generator;

pub use auth::{AuthConfig, AuthMode, JwtConfig, TierLimits};
pub use generator::{AnswerConfig, Backend, GeneratorConfig, Secret, DEFAULT_SYSTEM_PROMPT};

/// Everything Cairn can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where sources, chunks, vectors and the keyword index live.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub models: ModelsConfig,
    pub chunking: ChunkingConfig,
    pub ingest: IngestConfig,
    pub search: SearchConfig,
    pub graph: GraphConfig,
    pub index: IndexConfig,
    pub log: LogConfig,
    pub generator: GeneratorConfig,
    pub answer: AnswerConfig,
    pub auth: AuthConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address `cairn serve` binds to.
    pub addr: SocketAddr,
    /// Largest JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// Largest multipart upload (all files of one request together), in bytes.
    pub max_upload_bytes: usize,
    /// Concurrent embedding jobs (searches and uploads) before callers get 503 + Retry-After.
    pub max_concurrent_embeds: usize,
    /// Requests in flight across the server before new ones get 503 + Retry-After.
    pub max_in_flight: usize,
    /// Seconds before `/search` (and other reads) answer 504.
    pub search_timeout_s: u64,
    /// Seconds before `/query` and `/v1/chat/completions` answer 504 (until the first byte of
    /// a stream; a stream that has started is bounded by `generator.read_timeout_s`).
    pub query_timeout_s: u64,
    /// Seconds before an upload answers 504 (the write itself still completes consistently).
    pub ingest_timeout_s: u64,
    /// Seconds a client has to send a request's whole body; past it the request answers 408
    /// `body_timeout` (a client trickling an upload cannot hold a request slot for longer).
    pub body_read_timeout_s: u64,
    /// Seconds a connection has to send a request's headers, counted from when the
    /// connection opens or its previous response was sent; past it the connection is closed
    /// (idle and trickling connections cost nothing for longer).
    pub header_read_timeout_s: u64,
    /// Origins allowed by CORS: empty = CORS off, `["*"]` = any origin.
    pub cors_origins: Vec<String>,
    /// The web console at `/` (assets compiled into the binary; they need no credentials,
    /// the API calls they make do).
    pub console: bool,
    /// Transparent huge pages for the process. Off by default: a huge page stays resident
    /// while any 4 KiB of it is in use, and under steady writes RSS kept growing with them
    /// (docs/benchmarks.md, "Reliability"); on, searches cost ~7% less CPU.
    pub huge_pages: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Path of `libonnxruntime.so`; when unset: `ORT_DYLIB_PATH`, then `models/onnxruntime/`
    /// beside the working directory or the executable.
    pub onnxruntime: Option<PathBuf>,
    /// Folder of the embedding model (model.onnx, tokenizer.json, config.json,
    /// special_tokens_map.json, tokenizer_config.json). When unset:
    /// `models/all-minilm-l6-v2-int8` beside the working directory or the executable.
    pub embedding: Option<PathBuf>,
    /// `mean` or `cls`; when unset it is read from the model folder's `1_Pooling/config.json`
    /// (mean when that file is absent).
    pub pooling: Option<String>,
    /// Texts per ONNX batch.
    pub batch_size: usize,
    /// Longest input the embedder sees, in tokens (longer inputs are truncated).
    pub max_length: usize,
    /// Embedding model sessions (copies of the model) that run side by side, so concurrent
    /// searches do not queue on one (0 = one per core).
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session (0 = cores ÷ sessions, at least 1).
    pub threads: usize,
    /// Let ONNX Runtime's idle intra-op threads spin (lower latency for one request at a time;
    /// under concurrent load the spinning takes CPU that other requests need).
    pub spin_threads: bool,
    /// Most search queries embedded in one model call. Queries that wait for a session together
    /// are grouped by length and share calls (fewer, larger matrix products); 1 embeds every
    /// query alone.
    pub query_batch: usize,
    /// Folder of a cross-encoder reranker (model.onnx with a `logits` output + tokenizer
    /// files), used by `"rerank": true`. When unset: `models/reranker` beside the working
    /// directory or the executable, if present. `scripts/build-reranker` builds one.
    pub reranker: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkingConfig {
    /// Largest chunk, in tokens of the embedding model's tokenizer.
    pub max_tokens: usize,
    /// Tokens repeated between consecutive chunks of one section.
    pub overlap_tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Sources written to the store in one atomic batch.
    pub batch_sources: usize,
    /// Largest single file accepted by `cairn ingest`, in bytes.
    pub max_file_bytes: u64,
    /// File bytes `cairn ingest` holds in memory at once (files are read in groups).
    pub max_batch_bytes: u64,
    /// Longest extraction of one file, in seconds; past it the worker is killed and the file
    /// fails with `extract_timeout` (`crate::sandbox`).
    pub extract_timeout_s: u64,
    /// Memory one file's extraction worker may allocate, in MiB; past it the file fails with
    /// `document_too_large`.
    pub extract_memory_mb: u64,
}

impl IngestConfig {
    /// What one file's extraction may spend.
    pub fn extract_limits(&self) -> crate::sandbox::Limits {
        crate::sandbox::Limits {
            timeout: std::time::Duration::from_secs(self.extract_timeout_s.max(1)),
            memory_bytes: self.extract_memory_mb.max(64) * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Results returned when a request gives no `limit`.
    pub default_limit: usize,
    /// Candidates each retriever contributes to the first fusion tier. Deeper pages and groups
    /// fetch `2×`, `4×`, … this, up to `max_candidates`, and append what the deeper lists add.
    pub candidates: usize,
    /// The deepest a retriever fetches to fill a page or find `limit` groups.
    pub max_candidates: usize,
    /// What a search collapses its ranking by when the request does not say: `none` (ranked
    /// chunks), `source` (one result per document) or `metadata.<key>`.
    pub group_by: crate::search::GroupBy,
    /// Chunks per group when a request groups and does not say `group_size` (1 to 10).
    pub group_size: usize,
    /// Reciprocal-rank-fusion constant.
    pub rrf_k: f32,
    /// Default weight of the BM25 list in hybrid fusion.
    pub keyword_weight: f32,
    /// Default weight of the vector list in hybrid fusion.
    pub vector_weight: f32,
    /// Extra BM25 weight of title matches (the title is also part of the scored body); 0 = off,
    /// the default: on SciFact a boost of 0.25 adds 0.002 nDCG@10 to keyword search but costs
    /// hybrid 0.003, and its clauses double BM25's scorers (~18% of a keyword search's CPU).
    pub title_boost: f32,
    /// Longest snippet, in characters.
    pub snippet_chars: usize,
    /// Query embeddings kept in memory (a repeated query skips the model); 0 = no cache.
    pub query_cache_size: usize,
    /// Fused candidates the cross-encoder re-scores when a search asks for `rerank`.
    pub rerank_candidates: usize,
    /// Weight of the fused order beside the cross-encoder's when re-ranking (RRF of the two
    /// orders); 0 = the cross-encoder's order alone.
    pub rerank_fused_weight: f32,
    /// Named retrieval presets for `context_type` (`balanced` is the default). Each request
    /// can still override the weights it sets.
    pub presets: std::collections::BTreeMap<String, Preset>,
}

/// A retrieval preset (`context_type`): fusion weights and what the search does beyond
/// plain hybrid retrieval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Preset {
    /// Weight of the BM25 list; unset = `search.keyword_weight`.
    pub keyword_weight: Option<f32>,
    /// Weight of the vector list; unset = `search.vector_weight`.
    pub vector_weight: Option<f32>,
    /// Weight of the concept-graph list (when the graph is used).
    pub graph_weight: f32,
    /// Weight of the exact-phrase list: BM25 hits containing a phrase of the query verbatim
    /// (0 = off).
    pub phrase_weight: f32,
    /// Whether a request that does not say `use_graph` uses the graph.
    pub use_graph: bool,
    /// Graph expansion beyond the concepts the query names exactly (similar concepts and
    /// co-occurring neighbours).
    pub expand: bool,
    /// MMR trade-off between relevance and diversity: 1 = plain ranking, lower = more diverse.
    pub mmr_lambda: f32,
}

impl Default for Preset {
    fn default() -> Self {
        Self {
            keyword_weight: None,
            vector_weight: None,
            graph_weight: 0.1,
            phrase_weight: 0.0,
            use_graph: false,
            expand: true,
            mmr_lambda: 1.0,
        }
    }
}

/// The built-in presets.
pub fn default_presets() -> std::collections::BTreeMap<String, Preset> {
    let mut m = std::collections::BTreeMap::new();
    m.insert("balanced".to_string(), Preset::default());
    // Breadth: meaning over wording, the graph on, diverse results.
    m.insert(
        "building".to_string(),
        Preset {
            keyword_weight: Some(0.7),
            vector_weight: Some(1.0),
            graph_weight: 0.3,
            use_graph: true,
            mmr_lambda: 0.7,
            ..Preset::default()
        },
    );
    // Precision: wording over meaning, exact phrases first, no expansion.
    m.insert(
        "auditing".to_string(),
        Preset {
            keyword_weight: Some(1.0),
            vector_weight: Some(0.5),
            graph_weight: 0.1,
            phrase_weight: 1.0,
            expand: false,
            ..Preset::default()
        },
    );
    m
}

/// The concept graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GraphConfig {
    /// Concepts kept per chunk at ingest (0 = no concept extraction).
    pub concepts_per_chunk: usize,
    /// Cosine similarity of two concept names' embeddings from which they are `similar_to`.
    pub similar_min: f32,
    /// Cosine similarity of a concept name to a query from which the concept joins the
    /// query's graph expansion.
    pub match_min_similarity: f32,
    /// Strongest co-occurring neighbours added per matched concept.
    pub expand_neighbours: usize,
    /// Smallest co-occurrence weight (damped normalised PMI) of an expansion edge.
    pub expand_min_weight: f32,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            concepts_per_chunk: 8,
            similar_min: 0.8,
            match_min_similarity: 0.7,
            expand_neighbours: 3,
            expand_min_weight: 0.2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Chunk count from which an ANN (IVF-PQ) vector index is built; exact search below it.
    pub ann_min_rows: usize,
    /// Rows added since the last ANN build after which the index is rebuilt.
    pub ann_rebuild_rows: usize,
    /// Up to this many chunks, vector search scans an exact in-memory copy of the vectors
    /// (rows × dimension × 5 bytes of RAM: floats and an int8 copy) instead of querying
    /// LanceDB; 0 turns it off.
    pub memory_max_rows: usize,
    /// Decompressed 16 KiB blocks of stored chunk text that the keyword index keeps in memory,
    /// per index segment (search results read their text from these blocks).
    pub doc_cache_blocks: usize,
    /// LanceDB's index cache in MiB: ANN index partitions and scalar indexes, shared by all
    /// of the store's tables.
    pub cache_mb: usize,
    /// LanceDB's metadata cache in MiB: manifests, file footers and deletion files. Reads use
    /// only the latest table versions, whose metadata is a few MB; every write makes new
    /// versions, so whatever the cap is, it fills.
    pub metadata_cache_mb: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `auto` (pretty on a terminal, JSON otherwise), `json` or `pretty`.
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `cairn=debug,lance=warn`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data/store"),
            server: ServerConfig::default(),
            models: ModelsConfig::default(),
            chunking: ChunkingConfig::default(),
            ingest: IngestConfig::default(),
            search: SearchConfig::default(),
            graph: GraphConfig::default(),
            index: IndexConfig::default(),
            log: LogConfig::default(),
            generator: GeneratorConfig::default(),
            answer: AnswerConfig::default(),
            auth: AuthConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            max_json_bytes: 2 * 1024 * 1024,
            max_upload_bytes: 64 * 1024 * 1024,
            max_concurrent_embeds: 8,
            max_in_flight: 1024,
            search_timeout_s: 30,
            query_timeout_s: 300,
            ingest_timeout_s: 900,
            body_read_timeout_s: 60,
            header_read_timeout_s: 30,
            cors_origins: Vec::new(),
            console: true,
            huge_pages: false,
        }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            onnxruntime: None,
            embedding: None,
            pooling: None,
            batch_size: 32,
            max_length: 512,
            sessions: 0,
            threads: 0,
            spin_threads: true,
            query_batch: 16,
            reranker: None,
        }
    }
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_sources: 256,
            max_file_bytes: 256 * 1024 * 1024,
            max_batch_bytes: 256 * 1024 * 1024,
            extract_timeout_s: 60,
            extract_memory_mb: 2048,
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            default_limit: 10,
            candidates: 200,
            max_candidates: 1600,
            group_by: crate::search::GroupBy::Source,
            group_size: 3,
            rrf_k: 60.0,
            keyword_weight: 1.0,
            vector_weight: 1.0,
            title_boost: 0.0,
            snippet_chars: 240,
            query_cache_size: 4096,
            rerank_candidates: 50,
            rerank_fused_weight: 1.0,
            presets: default_presets(),
        }
    }
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            ann_min_rows: 100_000,
            ann_rebuild_rows: 50_000,
            memory_max_rows: 100_000,
            doc_cache_blocks: 1000,
            cache_mb: 1024,
            metadata_cache_mb: 32,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "auto".into(),
            // LanceDB logs every table load at info; keep the server's log about requests.
            level: "info,lance=warn,lance_index=warn,lance_io=warn,lance_file=warn,lance_table=warn,lancedb=warn".into(),
        }
    }
}

/// Traces, error reporting and the search-quality gauge. Everything here is off by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP traces endpoint, e.g. `http://collector:4318/v1/traces` (JSON encoding).
    /// Empty = no trace export. Needs a binary built with the `otel` feature.
    pub otlp_endpoint: String,
    /// Fraction of new traces sampled (0..=1); a sampled parent's children always are.
    pub otlp_sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Sentry DSN for error events and panics (or `CAIRN_SENTRY_DSN`). Empty = off. Needs a
    /// binary built with the `sentry` feature. Never logged.
    pub sentry_dsn: Secret,
    /// A `cairn eval --report FILE` result, exported as `cairn_search_quality` gauges.
    pub quality_report: Option<PathBuf>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            otlp_sample_ratio: 1.0,
            service_name: "cairn".into(),
            sentry_dsn: Secret::default(),
            quality_report: None,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub addr: Option<SocketAddr>,
    pub generator: Option<Backend>,
    pub llm_model: Option<String>,
    pub llm_base_url: Option<String>,
    pub auth: Option<AuthMode>,
}

/// Errors while assembling the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults < `cairn.toml` (or `file`) < `CAIRN_*` env < `overrides`.
    ///
    /// Without `file`, `./cairn.toml` is read when it exists. A `file` that does not exist is an
    /// error: a typo in `--config` must not silently fall back to defaults.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) if !f.exists() => return Err(ConfigError::Missing(f.to_path_buf())),
            Some(f) => fig = fig.merge(Toml::file(f)),
            None if Path::new("cairn.toml").exists() => fig = fig.merge(Toml::file("cairn.toml")),
            None => {}
        }
        // Only CAIRN_* variables that name a key; ORT/CUDA-style variables are left alone.
        fig = fig.merge(Env::prefixed("CAIRN_").split("__").filter(|k| {
            // Depending on the provider's order of operations the key is `a__b` or `a.b`.
            let key = k.as_str().to_ascii_lowercase();
            let (top, nested) = match key.split_once("__").or_else(|| key.split_once('.')) {
                Some((top, _)) => (top, true),
                None => (key.as_str(), false),
            };
            // A table is only set key by key: `CAIRN_LOG` is the log filter (read by
            // `telemetry::init`), not a replacement for the `[log]` table.
            if !nested {
                return top == "data_dir";
            }
            matches!(
                top,
                "server"
                    | "models"
                    | "chunking"
                    | "ingest"
                    | "search"
                    | "graph"
                    | "index"
                    | "log"
                    | "generator"
                    | "answer"
                    | "auth"
                    | "telemetry"
            )
        }));
        let mut cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(d) = &overrides.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(a) = overrides.addr {
            cfg.server.addr = a;
        }
        if let Some(b) = overrides.generator {
            cfg.generator.backend = b;
        }
        if let Some(m) = &overrides.llm_model {
            cfg.generator.model = Some(m.clone());
        }
        if let Some(u) = &overrides.llm_base_url {
            cfg.generator.base_url = u.clone();
        }
        if let Some(m) = overrides.auth {
            cfg.auth.mode = m;
        }
        if cfg.auth.jwt.hs256_secret.expose().is_empty() {
            if let Ok(s) = std::env::var("CAIRN_JWT_SECRET") {
                cfg.auth.jwt.hs256_secret = Secret::new(s.trim());
            }
        }
        if cfg.telemetry.sentry_dsn.expose().is_empty() {
            if let Ok(s) = std::env::var("CAIRN_SENTRY_DSN") {
                cfg.telemetry.sentry_dsn = Secret::new(s.trim());
            }
        }
        if cfg.generator.api_key.expose().is_empty() {
            if let Some(f) = &cfg.generator.api_key_file {
                let key = std::fs::read_to_string(f).map_err(|e| {
                    ConfigError::Invalid(format!("generator.api_key_file {}: {e}", f.display()))
                })?;
                cfg.generator.api_key = Secret::new(key.trim());
            } else if let Ok(key) = std::env::var("CAIRN_OPENAI_API_KEY") {
                cfg.generator.api_key = Secret::new(key.trim());
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects combinations that would make the server misbehave later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.chunking.max_tokens < 16 {
            return bad("chunking.max_tokens must be at least 16");
        }
        if self.chunking.overlap_tokens >= self.chunking.max_tokens {
            return bad("chunking.overlap_tokens must be smaller than chunking.max_tokens");
        }
        if self.models.batch_size == 0 || self.ingest.batch_sources == 0 {
            return bad("models.batch_size and ingest.batch_sources must be positive");
        }
        if self.models.max_length < 16 {
            return bad("models.max_length must be at least 16");
        }
        if let Some(p) = &self.models.pooling {
            if p != "mean" && p != "cls" {
                return bad("models.pooling must be `mean` or `cls`");
            }
        }
        if self.search.rrf_k <= 0.0 || self.search.candidates == 0 {
            return bad("search.rrf_k and search.candidates must be positive");
        }
        if self.search.max_candidates < self.search.candidates {
            return bad("search.max_candidates must be at least search.candidates");
        }
        if !(1..=crate::search::plan::MAX_GROUP_SIZE).contains(&self.search.group_size) {
            return bad("search.group_size must be between 1 and 10");
        }
        let g = &self.generator;
        if g.context_tokens < 256 || g.max_concurrent == 0 || g.max_tokens == 0 {
            return bad("generator.context_tokens must be at least 256, and generator.max_concurrent and generator.max_tokens positive");
        }
        if !(0.0..=2.0).contains(&g.temperature) {
            return bad("generator.temperature must be between 0 and 2");
        }
        if g.backend == Backend::Openai && g.model.as_deref().unwrap_or("").is_empty() {
            return bad("the openai generator needs a model name (generator.model or --llm-model)");
        }
        if self.answer.context_chunks == 0 || self.answer.context_chunks > 50 {
            return bad("answer.context_chunks must be between 1 and 50");
        }
        if !(-1.0..=1.0).contains(&self.answer.min_similarity) {
            return bad("answer.min_similarity must be between -1 and 1");
        }
        for (name, t) in self
            .auth
            .tiers
            .iter()
            .chain([(&"anonymous".to_string(), &self.auth.anonymous)])
        {
            if t.requests_per_hour == 0 || t.concurrent == 0 {
                return Err(ConfigError::Invalid(format!(
                    "auth tier `{name}`: requests_per_hour and concurrent must be positive"
                )));
            }
        }
        if self.auth.mode.jwt() {
            let j = &self.auth.jwt;
            if j.hs256_secret.expose().is_empty() && j.jwks_file.is_none() && j.jwks_url.is_none() {
                return bad("auth mode jwt needs auth.jwt.hs256_secret (or CAIRN_JWT_SECRET), jwks_file or jwks_url");
            }
            if !self.auth.tiers.contains_key(&j.default_tier) {
                return bad("auth.jwt.default_tier must name a tier in auth.tiers");
            }
        }
        if !self.search.presets.contains_key("balanced") {
            return bad("search.presets must keep a `balanced` preset (the default context_type)");
        }
        for (name, p) in &self.search.presets {
            let weights = [
                p.keyword_weight.unwrap_or(0.0),
                p.vector_weight.unwrap_or(0.0),
                p.graph_weight,
                p.phrase_weight,
            ];
            if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "search.presets.{name}: weights must be finite and non-negative"
                )));
            }
            if !(0.0..=1.0).contains(&p.mmr_lambda) {
                return Err(ConfigError::Invalid(format!(
                    "search.presets.{name}.mmr_lambda must be between 0 and 1"
                )));
            }
        }
        let rf = self.search.rerank_fused_weight;
        if !rf.is_finite() || rf < 0.0 {
            return bad("search.rerank_fused_weight must be finite and non-negative");
        }
        if self.search.rerank_candidates == 0 || self.search.rerank_candidates > 1000 {
            return bad("search.rerank_candidates must be between 1 and 1000");
        }
        let g = &self.graph;
        if !(0.0..=1.0).contains(&g.similar_min) || !(0.0..=1.0).contains(&g.match_min_similarity) {
            return bad("graph.similar_min and graph.match_min_similarity must be between 0 and 1");
        }
        if g.concepts_per_chunk > 64 {
            return bad("graph.concepts_per_chunk must be at most 64");
        }
        if !matches!(self.log.format.as_str(), "auto" | "json" | "pretty") {
            return bad("log.format must be auto, json or pretty");
        }
        let t = &self.telemetry;
        if !(0.0..=1.0).contains(&t.otlp_sample_ratio) {
            return bad("telemetry.otlp_sample_ratio must be between 0 and 1");
        }
        if !t.otlp_endpoint.is_empty() {
            if !(t.otlp_endpoint.starts_with("http://") || t.otlp_endpoint.starts_with("https://"))
            {
                return bad(
                    "telemetry.otlp_endpoint must be an http:// or https:// URL (OTLP/HTTP)",
                );
            }
            if !cfg!(feature = "otel") {
                return bad("telemetry.otlp_endpoint is set but this binary was built without the `otel` feature (cargo build --features otel)");
            }
        }
        if !t.sentry_dsn.expose().is_empty() && !cfg!(feature = "sentry") {
            return bad("telemetry.sentry_dsn is set but this binary was built without the `sentry` feature (cargo build --features sentry)");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use super::*;

    #[test]
    fn presets_are_data_and_validated() {
        let c = Config::default();
        let names: Vec<&str> = c.search.presets.keys().map(String::as_str).collect();
        assert_eq!(names, ["auditing", "balanced", "building"]);
        assert!(c.search.presets["building"].use_graph);
        assert!(c.search.presets["building"].mmr_lambda < 1.0);
        assert!(c.search.presets["auditing"].phrase_weight > 0.0);
        assert!(!c.search.presets["auditing"].expand);
        let mut bad = c.clone();
        bad.search.presets.remove("balanced");
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.search.presets.get_mut("building").unwrap().mmr_lambda = 1.5;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.search.presets.get_mut("auditing").unwrap().graph_weight = -1.0;
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.graph.similar_min = 2.0;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn defaults_load_and_validate() {
        // The jail runs in an empty temp dir (no cairn.toml) with no CAIRN_* variables.
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let cfg = Config::load(None, &Overrides::default()).expect("defaults load");
            assert_eq!(cfg, Config::default());
            assert_eq!(cfg.data_dir, PathBuf::from("data/store"));
            assert_eq!(cfg.server.addr.to_string(), "127.0.0.1:8000");
            assert_eq!(cfg.chunking.max_tokens, 256);
            assert_eq!(cfg.search.rrf_k, 60.0);
            Ok(())
        });
    }

    #[test]
    fn file_then_flags_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cairn.toml");
        std::fs::write(&f, "data_dir = \"/tmp/x\"\n[chunking]\nmax_tokens = 128\n").unwrap();
        let cfg = Config::load(Some(&f), &Overrides::default()).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.chunking.max_tokens, 128);
        assert_eq!(cfg.chunking.overlap_tokens, 32, "unset keys keep defaults");
        let o = Overrides {
            data_dir: Some("/tmp/y".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::load(Some(&f), &o).unwrap().data_dir,
            PathBuf::from("/tmp/y")
        );
    }

    #[test]
    fn nested_env_keys_apply() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CAIRN_INGEST__BATCH_SOURCES", "7");
            jail.set_env("CAIRN_DATA_DIR", "/tmp/from-env");
            jail.set_env("CAIRN_CRASH_AT", "ignored: not a config key");
            // The log filter variable shares its name with the `[log]` table; alone it must
            // neither replace the table nor fail the load.
            jail.set_env("CAIRN_LOG", "error");
            let cfg = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(cfg.log, LogConfig::default());
            assert_eq!(cfg.ingest.batch_sources, 7);
            assert_eq!(cfg.data_dir, PathBuf::from("/tmp/from-env"));
            jail.set_env("CAIRN_INGEST__BATCH_SOURCES", "0");
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[chunking]\nmax_tokenz = 5\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(&f, "[chunking]\nmax_tokens = 64\noverlap_tokens = 64\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        let missing = dir.path().join("nope.toml");
        assert!(matches!(
            Config::load(Some(&missing), &Overrides::default()),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    fn telemetry_needs_its_features_and_keeps_the_dsn_secret() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CAIRN_SENTRY_DSN", "https://secretkey@sentry.example/7");
            match (
                cfg!(feature = "sentry"),
                Config::load(None, &Overrides::default()),
            ) {
                (true, Ok(cfg)) => {
                    assert_eq!(
                        cfg.telemetry.sentry_dsn.expose(),
                        "https://secretkey@sentry.example/7"
                    );
                    let shown = format!("{cfg:?} {}", toml::to_string(&cfg).unwrap());
                    assert!(!shown.contains("secretkey"), "{shown}");
                }
                (false, Err(e)) => {
                    assert!(e.to_string().contains("`sentry` feature"), "{e}");
                }
                (built_with_sentry, r) => {
                    panic!(
                        "sentry feature {built_with_sentry}, load gave {:?}",
                        r.map(|_| ())
                    )
                }
            }
            jail.clear_env();
            jail.set_env("CAIRN_TELEMETRY__OTLP_ENDPOINT", "collector:4318");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("http://"), "{e}");
            jail.set_env(
                "CAIRN_TELEMETRY__OTLP_ENDPOINT",
                "http://collector:4318/v1/traces",
            );
            assert_eq!(
                Config::load(None, &Overrides::default()).is_ok(),
                cfg!(feature = "otel")
            );
            jail.set_env("CAIRN_TELEMETRY__OTLP_SAMPLE_RATIO", "1.5");
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn generator_layers_and_secrets_never_print() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CAIRN_GENERATOR__BACKEND", "openai");
            jail.set_env("CAIRN_GENERATOR__MODEL", "gpt-test");
            jail.set_env("CAIRN_OPENAI_API_KEY", "sk-very-secret");
            let cfg = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(cfg.generator.backend, Backend::Openai);
            assert_eq!(cfg.generator.api_key.expose(), "sk-very-secret");
            let shown = format!("{cfg:?} {}", toml::to_string(&cfg).unwrap());
            assert!(!shown.contains("sk-very-secret"), "{shown}");
            // Flags beat the environment.
            let o = Overrides {
                generator: Some(Backend::None),
                ..Default::default()
            };
            assert_eq!(
                Config::load(None, &o).unwrap().generator.backend,
                Backend::None
            );
            // A key file beats the environment variable.
            jail.create_file("key.txt", "sk-from-file\n")?;
            jail.set_env("CAIRN_GENERATOR__API_KEY_FILE", "key.txt");
            let cfg = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(cfg.generator.api_key.expose(), "sk-from-file");
            // The openai backend without a model name is refused up front.
            jail.set_env("CAIRN_GENERATOR__MODEL", "");
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
    }
}
