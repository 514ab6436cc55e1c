//! The core services: ingest, search, sources, stats and health, over the store and the
//! embedder. Nothing here knows about HTTP; handlers and CLI commands call one function each.
//!
//! CPU-heavy work (parsing, tokenising, embedding) runs on blocking threads with the caller's
//! tracing span, and embedding is bounded by a semaphore so a burst of uploads cannot starve
//! searches of memory or threads.

use std::collections::HashMap;

use crate::blocking;
use crate::rerank::Reranker as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::embed::{Embedder, OnnxEmbedder};
use crate::error::{Error, Result};
use crate::store::{SourceRecord, Store, StoreStats};

mod ingest;
mod ops;
mod sources;

/// A file handed to ingest: its name (the source's external id) and bytes.
#[derive(Debug, Clone)]
pub struct IngestFile {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Merged into every source's metadata (record metadata wins on conflicts).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IngestStatus {
    Created,
    Updated,
    Unchanged,
    Failed,
}

impl IngestStatus {
    /// The wire name (`created`, `updated`, `unchanged`, `failed`).
    pub fn as_str(&self) -> &'static str {
        match self {
            IngestStatus::Created => "created",
            IngestStatus::Updated => "updated",
            IngestStatus::Unchanged => "unchanged",
            IngestStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    /// Close matches for an unknown name (`concept_not_found` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestions: Option<Vec<String>>,
}

impl From<&Error> for ErrorBody {
    fn from(e: &Error) -> Self {
        let message = if e.is_internal() {
            "internal error".to_string()
        } else {
            e.to_string()
        };
        Self {
            code: e.code().to_string(),
            message,
            suggestions: None,
        }
    }
}

/// The outcome for one source (or one file that failed before yielding sources).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IngestReport {
    /// The file (or `file#Lline` for a JSONL record) this came from.
    pub file: String,
    pub status: IngestStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub chunks: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl IngestReport {
    fn failed(file: &str, e: &Error) -> Self {
        Self::failure(file, e.into())
    }

    /// The report of a file that failed with `error`.
    pub fn failure(file: &str, error: ErrorBody) -> Self {
        Self {
            file: file.to_string(),
            status: IngestStatus::Failed,
            source_id: None,
            external_id: None,
            title: None,
            chunks: 0,
            error: Some(error),
        }
    }
}

/// A source with its stats, as returned by the sources API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceInfo {
    pub id: String,
    pub external_id: String,
    pub title: String,
    pub file_type: String,
    pub content_hash: String,
    pub chunk_count: u32,
    pub size_bytes: u64,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
}

impl From<SourceRecord> for SourceInfo {
    fn from(r: SourceRecord) -> Self {
        let ts = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
        };
        Self {
            id: r.id,
            external_id: r.external_id,
            title: r.title,
            file_type: r.file_type,
            content_hash: r.content_hash,
            chunk_count: r.chunk_count,
            size_bytes: r.size_bytes,
            metadata: r.metadata,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourcePage {
    pub sources: Vec<SourceInfo>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page of one source's chunks in reading order: `GET /sources/{id}/chunks`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceChunks {
    pub source: SourceInfo,
    /// Chunks of the source's stored version.
    pub total: usize,
    pub offset: usize,
    /// Pass as `offset` for the next page; `null` on the last.
    pub next_offset: Option<usize>,
    pub chunks: Vec<SourceChunk>,
}

/// One chunk of a source, with the concepts it mentions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceChunk {
    pub chunk_id: String,
    /// Position in the source, from 0.
    pub ordinal: u32,
    /// PDF page, from 1.
    pub page: Option<u32>,
    /// Heading path (`A > B`), or `null` outside headings.
    pub section: Option<String>,
    pub text: String,
    pub concepts: Vec<crate::graph::ConceptNode>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub sources: usize,
    /// Chunks in the LanceDB table (equal to `chunks_vector`).
    pub chunks: usize,
    pub chunks_vector: usize,
    pub chunks_keyword: usize,
    pub index_bytes: IndexBytes,
    pub embedding_model: String,
    pub embedding_dim: usize,
    pub ann_index: AnnInfo,
    /// The concept graph: concepts, co-occurrence edges (distinct pairs) and mentions.
    pub graph: GraphStats,
    /// The cross-encoder reranker, when one is installed.
    pub reranker: Option<String>,
    /// The answer generator and its counters since start.
    pub generator: GeneratorStats,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GraphStats {
    pub concepts: usize,
    pub edges: usize,
    pub mentions: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GeneratorStats {
    /// `none`, `llama` or `openai`.
    pub backend: &'static str,
    pub model: Option<String>,
    pub context_tokens: Option<usize>,
    /// llama: the CPU kernels answering (variant and instruction-set features).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_kernels: Option<crate::generate::CpuKernels>,
    #[serde(flatten)]
    pub counters: crate::generate::GenStats,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IndexBytes {
    pub vector: u64,
    pub keyword: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AnnInfo {
    /// `exact` below the threshold, else the index kind (e.g. `IVF_PQ`).
    pub state: String,
    pub min_rows: usize,
    pub indexed_rows: usize,
    pub unindexed_rows: usize,
    /// Chunks the exact in-memory copy holds, which answers vector searches instead of
    /// LanceDB (`index.memory_max_rows`); `null` when searches read LanceDB.
    pub memory_rows: Option<usize>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub ok: bool,
    pub components: HashMap<&'static str, ComponentHealth>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ComponentHealth {
    pub status: &'static str,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the component runs on, where it says something (the generator's CPU kernels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The knowledge base: configuration, store and models.
/// The models a [`Cairn`] is built from.
pub struct Parts {
    pub embedder: Arc<dyn Embedder>,
    pub reranker: Option<Arc<dyn crate::rerank::Reranker>>,
}

pub struct Cairn {
    pub config: Config,
    pub store: Arc<Store>,
    pub embedder: Arc<dyn Embedder>,
    /// The cross-encoder for `rerank`; `None` when none is installed.
    pub reranker: Option<Arc<dyn crate::rerank::Reranker>>,
    /// The answer generator; `None` = retrieval-only answers.
    pub generator: Option<Arc<dyn crate::generate::Generator>>,
    /// API keys and JWT verification.
    pub auth: Arc<crate::auth::Auth>,
    /// Per-tier rate and concurrency limits.
    pub limits: Arc<crate::auth::limits::Limits>,
    /// When this instance was opened (Unix seconds).
    pub started_at: i64,
    embed_permits: Semaphore,
    /// Recent query embeddings (`search.query_cache_size`); `None` when off.
    query_cache: Option<quick_cache::sync::Cache<String, Arc<Vec<f32>>>>,
}

fn sha_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Stable source id of an external id.
pub fn source_id_of(external_id: &str) -> String {
    format!("src_{}", &sha_hex(&[external_id.as_bytes()])[..24])
}

impl Cairn {
    /// Loads the embedder and opens the store as configured (writable).
    pub async fn open(config: Config) -> Result<Self> {
        Self::open_with(config, true).await
    }

    /// Like [`Cairn::open`]; a read-only instance takes no writer lock (for CLI reads while a
    /// server holds the data dir).
    pub async fn open_with(config: Config, writable: bool) -> Result<Self> {
        let models = config.models.clone();
        let embedder: Arc<dyn Embedder> =
            Arc::new(blocking(move || OnnxEmbedder::load(&models)).await??);
        let models = config.models.clone();
        let reranker: Option<Arc<dyn crate::rerank::Reranker>> =
            match blocking(move || crate::rerank::OnnxReranker::load(&models)).await?? {
                Some(r) => {
                    tracing::info!(model = r.name(), "cross-encoder reranker loaded");
                    Some(Arc::new(r))
                }
                None => None,
            };
        Self::open_with_parts(config, Parts { embedder, reranker }, writable).await
    }

    /// Opens the data dir with the given models: the seam that lets tests run the core with
    /// a deterministic embedder (`testdata::HashEmbedder`) instead of the ONNX model.
    pub async fn open_with_parts(config: Config, parts: Parts, writable: bool) -> Result<Self> {
        let Parts { embedder, reranker } = parts;
        let store = Arc::new(
            Store::open(
                &config.data_dir,
                embedder.dim(),
                writable,
                config.search.snippet_chars,
                config.index.memory_max_rows,
                config.index.doc_cache_blocks,
                crate::store::CacheSizes {
                    index_bytes: config.index.cache_mb << 20,
                    metadata_bytes: config.index.metadata_cache_mb << 20,
                },
            )
            .await?,
        );
        let permits = Semaphore::new(config.server.max_concurrent_embeds.max(1));
        let auth = Arc::new(crate::auth::Auth::open(&config.auth, &config.data_dir).await?);
        let limits = Arc::new(crate::auth::limits::Limits::open(
            &config.auth,
            &config.data_dir,
        )?);
        let cairn = Self {
            store,
            embedder,
            reranker,
            generator: None,
            auth,
            limits,
            started_at: chrono::Utc::now().timestamp(),
            embed_permits: permits,
            query_cache: (config.search.query_cache_size > 0)
                .then(|| quick_cache::sync::Cache::new(config.search.query_cache_size)),
            config,
        };
        if writable && cairn.store.concepts_created() && cairn.config.graph.concepts_per_chunk > 0 {
            cairn.backfill_concepts().await?;
        }
        Ok(cairn)
    }

    /// Loads the configured answer generator (`generator.backend`; `none` loads nothing).
    pub async fn load_generator(&mut self) -> Result<()> {
        self.generator = crate::generate::load(&self.config.generator).await?;
        Ok(())
    }

    pub(crate) async fn embed_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        match tokio::time::timeout(Duration::from_secs(30), self.embed_permits.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Error::internal("embedder closed")),
            Err(_) => Err(Error::Busy { retry_after_s: 5 }),
        }
    }

    /// The embedding of a search query, from the query cache when it was seen recently.
    pub(crate) async fn embed_query(&self, query: &str) -> Result<Arc<Vec<f32>>> {
        let cache = self.query_cache.as_ref();
        if let Some(v) = cache.and_then(|c| c.get(query)) {
            metrics::counter!("cairn_query_cache_total", "result" => "hit").increment(1);
            return Ok(v);
        }
        let v = {
            let _permit = self.embed_permit().await?;
            let t = Instant::now();
            let v = match self.embedder.submit_query(query) {
                // A batching model: its worker's reply is awaited here, with no blocking
                // thread in between (that hand-off cost more than it carried).
                Some(pending) => {
                    let mut v = pending?
                        .await
                        .unwrap_or_else(|_| Err(Error::internal("embedding worker stopped")))?;
                    crate::embed::normalize(&mut v);
                    v
                }
                None => {
                    let (e, q) = (self.embedder.clone(), query.to_string());
                    blocking(move || e.embed_query(&q)).await??
                }
            };
            metrics::histogram!("cairn_embed_seconds").record(t.elapsed().as_secs_f64());
            metrics::counter!("cairn_embed_texts_total").increment(1);
            Arc::new(v)
        };
        if let Some(c) = cache {
            metrics::counter!("cairn_query_cache_total", "result" => "miss").increment(1);
            c.insert(query.to_string(), v.clone());
        }
        Ok(v)
    }

    /// Embeds texts on a blocking thread under an embedding permit.
    ///
    /// When the caller is dropped (a 504, a client that left), the model stops at its next
    /// batch instead of embedding the rest for nobody.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let _permit = self.embed_permit().await?;
        let e = self.embedder.clone();
        let n = texts.len();
        let t = Instant::now();
        let cancel = CancelOnDrop::default();
        let flag = cancel.0.clone();
        let out = blocking(move || e.embed_until(&texts, &flag)).await?;
        drop(cancel);
        metrics::histogram!("cairn_embed_seconds").record(t.elapsed().as_secs_f64());
        metrics::histogram!("cairn_embed_batch_size").record(n as f64);
        metrics::counter!("cairn_embed_texts_total").increment(n as u64);
        out
    }
}

/// Sets its flag when dropped: blocking work polls it to stop once its caller is gone.
#[derive(Default)]
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The text embedded for a chunk: title and section give short chunks their context.
pub fn embed_input(title: &str, section: &[String], text: &str) -> String {
    let mut s = String::with_capacity(title.len() + text.len() + 16);
    if !title.is_empty() {
        s.push_str(title);
        s.push('\n');
    }
    if !section.is_empty() {
        let joined = section.join(" > ");
        if joined != title {
            s.push_str(&joined);
            s.push('\n');
        }
    }
    s.push_str(text);
    s
}
