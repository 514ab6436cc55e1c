//! The core services: ingest, search, sources, stats and health, over the store and the
//! embedder. Nothing here knows about HTTP; handlers and CLI commands call one function each.
//!
//! CPU-heavy work (parsing, tokenising, embedding) runs on blocking threads with the caller's
//! tracing span, and embedding is bounded by a semaphore so a burst of uploads cannot starve
//! searches of memory or threads.

use std::collections::{HashMap, HashSet};

use crate::blocking;
use crate::rerank::Reranker as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::chunk::{self, ChunkConfig};
use crate::config::Config;
use crate::embed::{Embedder, OnnxEmbedder};
use crate::error::{Error, Result};
use crate::extract::{self, ExtractedDoc};
use crate::search::{rrf, Explain, Mode, SearchHit, SearchRequest, SearchResponse, SearchTiming};
use crate::store::{meta_terms, ChunkRecord, SourceRecord, Store, StoreStats};

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
        Self {
            file: file.to_string(),
            status: IngestStatus::Failed,
            source_id: None,
            external_id: None,
            title: None,
            chunks: 0,
            error: Some(e.into()),
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
}

/// The knowledge base: configuration, store and models.
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
    batches_written: std::sync::atomic::AtomicUsize,
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

/// A parsed source ready to be chunked and embedded.
struct Prepared {
    file: String,
    doc: ExtractedDoc,
    external_id: String,
    source_id: String,
    content_hash: String,
    size_bytes: u64,
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
        let store = Arc::new(
            Store::open(
                &config.data_dir,
                embedder.dim(),
                writable,
                config.search.snippet_chars,
                config.index.memory_max_rows,
                config.index.doc_cache_blocks,
            )
            .await?,
        );
        let models = config.models.clone();
        let reranker: Option<Arc<dyn crate::rerank::Reranker>> =
            match blocking(move || crate::rerank::OnnxReranker::load(&models)).await?? {
                Some(r) => {
                    tracing::info!(model = r.name(), "cross-encoder reranker loaded");
                    Some(Arc::new(r))
                }
                None => None,
            };
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
            batches_written: Default::default(),
            query_cache: (config.search.query_cache_size > 0)
                .then(|| quick_cache::sync::Cache::new(config.search.query_cache_size)),
            config,
        };
        if writable && cairn.store.concepts.created && cairn.config.graph.concepts_per_chunk > 0 {
            cairn.backfill_concepts().await?;
        }
        Ok(cairn)
    }

    /// Extracts the concepts of every stored chunk: a data dir written before the concept
    /// graph existed gets its graph on first open.
    async fn backfill_concepts(&self) -> Result<()> {
        let sources = self.store.vectors.sources_where(None).await?;
        if sources.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            sources = sources.len(),
            "data dir predates the concept graph: extracting concepts from the stored chunks"
        );
        for part in sources.chunks(200) {
            let ids: Vec<String> = part.iter().map(|s| s.id.clone()).collect();
            let chunks = self
                .store
                .vectors
                .chunks_where(crate::store::vector::sql_in("source_id", &ids))
                .await?;
            let mut by_source: std::collections::BTreeMap<&str, Vec<&ChunkRecord>> =
                Default::default();
            for c in &chunks {
                by_source.entry(c.source_id.as_str()).or_default().push(c);
            }
            let mut mentions = Vec::new();
            for (_, mut cs) in by_source {
                cs.sort_by_key(|c| c.ordinal);
                mentions.extend(self.source_mentions(cs.into_iter()));
            }
            let write = self.concept_write(mentions).await?;
            self.store.add_concepts(write).await?;
        }
        Ok(())
    }

    /// The mention rows of one source's chunks (in order): acronyms are defined once per
    /// source and recognised in all its chunks.
    fn source_mentions<'a>(
        &self,
        chunks: impl Iterator<Item = &'a ChunkRecord> + Clone,
    ) -> Vec<crate::graph::MentionRow> {
        let whole: String = chunks
            .clone()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let acr = crate::concepts::acronyms(&whole);
        chunks.flat_map(|c| self.mentions_of(c, &acr)).collect()
    }

    /// The mention rows of one chunk (the first chunk of a source also reads its title).
    fn mentions_of(
        &self,
        c: &ChunkRecord,
        acr: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Vec<crate::graph::MentionRow> {
        let per_chunk = self.config.graph.concepts_per_chunk;
        let text = if c.ordinal == 0 && !c.title.is_empty() {
            format!("{}.\n{}", c.title, c.text)
        } else {
            c.text.clone()
        };
        crate::concepts::extract(&text, per_chunk, acr)
            .into_iter()
            .map(|m| crate::graph::MentionRow {
                concept_id: crate::concepts::slug(&m.key),
                chunk_id: c.chunk_id.clone(),
                source_id: c.source_id.clone(),
                content_hash: c.content_hash.clone(),
                surface: m.surfaces_joined(),
                score: m.score,
            })
            .collect()
    }

    /// Mentions plus the name embeddings of the concepts the store does not know yet.
    async fn concept_write(
        &self,
        mentions: Vec<crate::graph::MentionRow>,
    ) -> Result<crate::store::ConceptWrite> {
        let mut names: std::collections::BTreeMap<String, String> = Default::default();
        {
            let g = self.store.graph_read();
            for m in &mentions {
                if !g.contains(&m.concept_id) {
                    let main = m.surface.split('|').next().unwrap_or_default().to_string();
                    names.entry(m.concept_id.clone()).or_insert(main);
                }
            }
        }
        let (ids, texts): (Vec<String>, Vec<String>) = names.into_iter().unzip();
        let vectors = if texts.is_empty() {
            Vec::new()
        } else {
            self.embed(texts).await?
        };
        Ok(crate::store::ConceptWrite {
            mentions,
            vectors: ids.into_iter().zip(vectors).collect(),
        })
    }

    /// Creates an API key (shown once in the result).
    pub fn create_key(
        &self,
        name: &str,
        tier: &str,
        scopes: Vec<crate::auth::Scope>,
        expires_at: Option<i64>,
    ) -> Result<crate::auth::keys::NewKey> {
        self.auth.check_tier(tier)?;
        self.auth.keys.create(name, tier, scopes, expires_at)
    }

    pub fn list_keys(&self) -> Result<Vec<crate::auth::keys::KeyInfo>> {
        self.auth.keys.list()
    }

    pub fn revoke_key(&self, id: &str) -> Result<()> {
        self.auth.keys.revoke(id)
    }

    /// Loads the configured answer generator (`generator.backend`; `none` loads nothing).
    pub async fn load_generator(&mut self) -> Result<()> {
        self.generator = crate::generate::load(&self.config.generator).await?;
        Ok(())
    }

    fn chunk_config(&self) -> ChunkConfig {
        ChunkConfig {
            max_tokens: self.config.chunking.max_tokens,
            overlap_tokens: self.config.chunking.overlap_tokens,
        }
    }

    /// Everything that changes the stored chunks: a change re-ingests unchanged files too.
    fn pipeline_signature(&self) -> String {
        // `c1`: the concept extractor's version, so a changed extractor re-ingests.
        format!(
            "v1|{}|{}|{}|{}|c1:{}",
            self.embedder.name(),
            self.embedder.dim(),
            self.config.chunking.max_tokens,
            self.config.chunking.overlap_tokens,
            self.config.graph.concepts_per_chunk
        )
    }

    async fn embed_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        match tokio::time::timeout(Duration::from_secs(30), self.embed_permits.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Error::internal("embedder closed")),
            Err(_) => Err(Error::Busy { retry_after_s: 5 }),
        }
    }

    /// The embedding of a search query, from the query cache when it was seen recently.
    async fn embed_query(&self, query: &str) -> Result<Arc<Vec<f32>>> {
        let cache = self.query_cache.as_ref();
        if let Some(v) = cache.and_then(|c| c.get(query)) {
            metrics::counter!("cairn_query_cache_total", "result" => "hit").increment(1);
            return Ok(v);
        }
        let v = {
            let _permit = self.embed_permit().await?;
            let (e, q) = (self.embedder.clone(), query.to_string());
            let t = Instant::now();
            let v = blocking(move || e.embed_query(&q)).await??;
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
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let _permit = self.embed_permit().await?;
        let e = self.embedder.clone();
        let n = texts.len();
        let t = Instant::now();
        let out = blocking(move || e.embed(&texts)).await?;
        metrics::histogram!("cairn_embed_seconds").record(t.elapsed().as_secs_f64());
        metrics::histogram!("cairn_embed_batch_size").record(n as f64);
        metrics::counter!("cairn_embed_texts_total").increment(n as u64);
        out
    }

    /// Ingests files: each yields one source (a JSONL file one per record). A file that cannot
    /// be read gets a `failed` report and the rest go on. `progress` sees every report.
    pub async fn ingest_files(
        &self,
        files: Vec<IngestFile>,
        progress: &(dyn Fn(&IngestReport) + Sync),
    ) -> Result<Vec<IngestReport>> {
        let span = tracing::info_span!("ingest", files = files.len());
        async move {
            let mut reports = Vec::new();
            let mut pending: Vec<Prepared> = Vec::new();
            for file in files {
                let name = file.name.clone();
                let size = file.bytes.len() as u64;
                let file_meta = file.metadata.clone();
                let jsonl = extract::FileType::from_name(&name) == Some(extract::FileType::Jsonl);
                // A JSONL file gives one result per non-blank line, in order: their line numbers
                // label the records (and identify those without an `id`).
                let lines: Vec<usize> = if jsonl {
                    file.bytes
                        .split(|&b| b == b'\n')
                        .enumerate()
                        .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
                        .map(|(i, _)| i + 1)
                        .collect()
                } else {
                    Vec::new()
                };
                let results = blocking(move || extract::extract(&file.name, &file.bytes)).await?;
                for (i, r) in results.into_iter().enumerate() {
                    let label = match lines.get(i) {
                        Some(line) => format!("{name}#L{line}"),
                        None => name.clone(),
                    };
                    match r {
                        Ok(mut doc) => {
                            for (k, v) in &file_meta {
                                doc.metadata.entry(k.clone()).or_insert_with(|| v.clone());
                            }
                            let external_id =
                                doc.external_id.clone().unwrap_or_else(|| label.clone());
                            // A record's size is its own text, not the whole file's.
                            let size = if jsonl {
                                doc.blocks.iter().map(|b| b.text.len() as u64).sum()
                            } else {
                                size
                            };
                            pending.push(self.prepare(label, doc, external_id, size));
                        }
                        Err(e) => {
                            let label = match &e {
                                extract::ExtractError::BadRecord { line, .. } => {
                                    format!("{name}#L{line}")
                                }
                                _ => label,
                            };
                            let rep = IngestReport::failed(&label, &Error::from(e));
                            progress(&rep);
                            reports.push(rep);
                        }
                    }
                    if pending.len() >= self.config.ingest.batch_sources {
                        let batch = std::mem::take(&mut pending);
                        self.write_batch(batch, &mut reports, progress).await?;
                    }
                }
            }
            self.write_batch(pending, &mut reports, progress).await?;
            Ok(reports)
        }
        .instrument(span)
        .await
    }

    /// Ingests already-parsed documents (used by `cairn eval` and JSON uploads).
    pub async fn ingest_docs(
        &self,
        docs: Vec<(String, ExtractedDoc)>,
        progress: &(dyn Fn(&IngestReport) + Sync),
    ) -> Result<Vec<IngestReport>> {
        let mut reports = Vec::new();
        let mut pending = Vec::new();
        for (label, doc) in docs {
            let external_id = doc.external_id.clone().unwrap_or_else(|| label.clone());
            let size: u64 = doc.blocks.iter().map(|b| b.text.len() as u64).sum();
            pending.push(self.prepare(label, doc, external_id, size));
            if pending.len() >= self.config.ingest.batch_sources {
                let batch = std::mem::take(&mut pending);
                self.write_batch(batch, &mut reports, progress).await?;
            }
        }
        self.write_batch(pending, &mut reports, progress).await?;
        Ok(reports)
    }

    fn prepare(
        &self,
        file: String,
        doc: ExtractedDoc,
        external_id: String,
        size_bytes: u64,
    ) -> Prepared {
        let mut h = Sha256::new();
        h.update(self.pipeline_signature());
        h.update([0]);
        h.update(doc.title.as_bytes());
        h.update([0]);
        h.update(doc.file_type.as_str());
        for b in &doc.blocks {
            h.update([1]);
            h.update(b.text.as_bytes());
            h.update(b.page.unwrap_or(0).to_le_bytes());
            h.update(b.section.join("\u{1f}").as_bytes());
        }
        h.update(serde_json::Value::Object(doc.metadata.clone()).to_string());
        let content_hash = hex::encode(&h.finalize()[..16]);
        Prepared {
            file,
            source_id: source_id_of(&external_id),
            external_id,
            doc,
            content_hash,
            size_bytes,
        }
    }

    /// Chunks, embeds and stores one batch; unchanged sources are skipped.
    async fn write_batch(
        &self,
        mut batch: Vec<Prepared>,
        reports: &mut Vec<IngestReport>,
        progress: &(dyn Fn(&IngestReport) + Sync),
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let _queued = QueueDepth::new(batch.len());
        // The last occurrence of a source id in a batch wins.
        let mut seen = HashSet::new();
        batch.reverse();
        batch.retain(|p| seen.insert(p.source_id.clone()));
        batch.reverse();
        let ids: Vec<String> = batch.iter().map(|p| p.source_id.clone()).collect();
        let existing: HashMap<String, SourceRecord> = self
            .store
            .vectors
            .get_sources(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut todo = Vec::new();
        for p in batch {
            match existing.get(&p.source_id) {
                Some(r) if r.content_hash == p.content_hash => {
                    let rep = IngestReport {
                        file: p.file,
                        status: IngestStatus::Unchanged,
                        source_id: Some(p.source_id),
                        external_id: Some(p.external_id),
                        title: Some(r.title.clone()),
                        chunks: r.chunk_count,
                        error: None,
                    };
                    progress(&rep);
                    reports.push(rep);
                }
                _ => todo.push(p),
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        // Chunk on a blocking thread with the model's tokenizer.
        let cfg = self.chunk_config();
        let embedder = self.embedder.clone();
        let (todo, chunked) = blocking(move || {
            let chunked: Vec<Vec<chunk::Chunk>> = todo
                .iter()
                .map(|p| chunk::chunk_blocks(&p.doc.blocks, &cfg, embedder.tokenizer()))
                .collect();
            (todo, chunked)
        })
        .await?;
        let mut inputs = Vec::new();
        for (p, chunks) in todo.iter().zip(&chunked) {
            for c in chunks {
                inputs.push(embed_input(&p.doc.title, &c.section, &c.text));
            }
        }
        let t = Instant::now();
        let n_inputs = inputs.len();
        let vectors = self.embed(inputs).await?;
        tracing::debug!(
            chunks = n_inputs,
            ms = t.elapsed().as_millis() as u64,
            "embedded batch"
        );
        let now = chrono::Utc::now().timestamp_millis();
        let mut vec_iter = vectors.into_iter();
        let mut sources = Vec::new();
        let mut records = Vec::new();
        let mut done: Vec<IngestReport> = Vec::new();
        for (p, chunks) in todo.into_iter().zip(chunked) {
            let meta = meta_terms(&p.doc.metadata);
            let old = existing.get(&p.source_id);
            for c in &chunks {
                records.push(ChunkRecord {
                    chunk_id: format!("{}-{}-{:05}", p.source_id, &p.content_hash[..12], c.ordinal),
                    source_id: p.source_id.clone(),
                    content_hash: p.content_hash.clone(),
                    ordinal: c.ordinal,
                    text: c.text.clone(),
                    title: p.doc.title.clone(),
                    section: c.section.join(" > "),
                    page: c.page,
                    char_start: c.char_start as u32,
                    char_end: c.char_end as u32,
                    file_type: p.doc.file_type.as_str().to_string(),
                    meta: meta.clone(),
                    external_id: p.external_id.clone(),
                    vector: vec_iter.next().unwrap_or_default(),
                });
            }
            sources.push(SourceRecord {
                id: p.source_id.clone(),
                external_id: p.external_id.clone(),
                title: p.doc.title.clone(),
                file_type: p.doc.file_type.as_str().to_string(),
                content_hash: p.content_hash.clone(),
                chunk_count: chunks.len() as u32,
                metadata: p.doc.metadata.clone(),
                size_bytes: p.size_bytes,
                created_at: old.map(|o| o.created_at).unwrap_or(now),
                updated_at: now,
            });
            done.push(IngestReport {
                file: p.file,
                status: if old.is_some() {
                    IngestStatus::Updated
                } else {
                    IngestStatus::Created
                },
                source_id: Some(p.source_id),
                external_id: Some(p.external_id),
                title: Some(p.doc.title),
                chunks: chunks.len() as u32,
                error: None,
            });
        }
        // Concepts: acronyms are defined once per source and recognised in all its chunks.
        let mut mentions = Vec::new();
        if self.config.graph.concepts_per_chunk > 0 {
            let mut start = 0;
            for s in &sources {
                let n = s.chunk_count as usize;
                mentions.extend(self.source_mentions(records[start..start + n].iter()));
                start += n;
            }
        }
        let concepts = self.concept_write(mentions).await?;
        // The store skips sources that another request stored with the same content meanwhile.
        let written: HashSet<String> = self
            .store
            .upsert(sources, records, concepts)
            .await?
            .into_iter()
            .collect();
        for rep in done.iter_mut() {
            if !rep
                .source_id
                .as_ref()
                .is_some_and(|id| written.contains(id))
            {
                rep.status = IngestStatus::Unchanged;
            }
        }
        for rep in done {
            metrics::counter!("cairn_ingest_sources_total", "status" => rep.status.as_str())
                .increment(1);
            metrics::counter!("cairn_ingest_chunks_total").increment(rep.chunks as u64);
            progress(&rep);
            reports.push(rep);
        }
        let n = self
            .batches_written
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.store
            .maintain(
                self.config.index.ann_min_rows,
                self.config.index.ann_rebuild_rows,
                n.is_multiple_of(16),
            )
            .await?;
        Ok(())
    }

    /// Compacts storage and refreshes the ANN index (end of a bulk ingest).
    pub async fn optimize(&self) -> Result<()> {
        self.store
            .maintain(
                self.config.index.ann_min_rows,
                self.config.index.ann_rebuild_rows,
                true,
            )
            .await
    }

    /// Hybrid, vector or keyword search.
    pub async fn search(&self, req: SearchRequest) -> Result<SearchResponse> {
        self.search_with_max(req, 100).await
    }

    /// Search allowing up to `max_limit` results (evaluation needs more than the API's 100).
    pub async fn search_with_max(
        &self,
        req: SearchRequest,
        max_limit: usize,
    ) -> Result<SearchResponse> {
        let started = Instant::now();
        let query = req.query.trim().to_string();
        if query.is_empty() {
            return Err(Error::InvalidInput("query must not be empty".into()));
        }
        if query.chars().count() > 4096 {
            return Err(Error::InvalidInput(
                "query is longer than 4096 characters".into(),
            ));
        }
        let limit = req.limit.unwrap_or(self.config.search.default_limit);
        if limit == 0 || limit > max_limit {
            return Err(Error::InvalidInput(format!(
                "limit must be between 1 and {max_limit}"
            )));
        }
        let plan = self.plan(&req)?;
        let k = self.config.search.candidates.max(limit * 2);
        // Ranked hits that need their rows: the results, and what rerank or MMR looks at.
        let need = limit
            .max(if plan.reranker.is_some() {
                self.config.search.rerank_candidates
            } else {
                0
            })
            .max(if plan.mmr_lambda < 1.0 {
                mmr_window(limit)
            } else {
                0
            });
        // Without fusion a retriever's own top `need` is the answer.
        let k_single = need.min(k);
        let span = tracing::info_span!(
            "search",
            mode = req.mode.as_str(),
            limit,
            context_type = %plan.preset,
            use_graph = plan.use_graph,
            rerank = req.rerank
        );
        async move {
            let (wk, wv) = (plan.keyword, plan.vector);
            let run_kw = req.mode != Mode::Vector && (req.mode == Mode::Keyword || wk > 0.0);
            let run_vec = req.mode != Mode::Keyword && (req.mode == Mode::Vector || wv > 0.0);
            let need_vec = run_vec || (plan.use_graph && plan.expand);
            // BM25 and embedding + vector search + graph run concurrently.
            let kw = self.store.keywords.clone();
            let (kq, kf, boost) = (
                query.clone(),
                req.filters.clone(),
                self.config.search.title_boost,
            );
            let kw_k = if req.mode == Mode::Keyword {
                k_single
            } else {
                k
            };
            let keyword = async move {
                let t = Instant::now();
                let r = if run_kw {
                    // A light search runs here: the hand-off to a blocking thread and back
                    // would cost more than the search.
                    match kw.prepare(&kq, &kf, boost) {
                        None => Ok((Vec::new(), None)),
                        Some(s) if s.is_light() => kw.run(s, kw_k),
                        Some(s) => blocking(move || kw.run(s, kw_k)).await?,
                    }
                } else {
                    let gen = kw.snippets(&kq, boost);
                    Ok((Vec::new(), gen))
                };
                r.map(|(hits, gen)| (hits, gen, ms_since(t)))
            }
            .instrument(tracing::info_span!("keyword"));
            let vector = async {
                let t = Instant::now();
                let v = if need_vec {
                    Some(
                        self.embed_query(&query)
                            .instrument(tracing::info_span!("embed"))
                            .await?,
                    )
                } else {
                    None
                };
                let embed_ms = if need_vec { ms_since(t) } else { 0.0 };
                let vec_search = async {
                    let t = Instant::now();
                    match (&v, run_vec) {
                        (Some(v), true) => {
                            let (hits, rows) = self
                                .store
                                .vector_search(
                                    v.clone(),
                                    if req.mode == Mode::Vector {
                                        k_single
                                    } else {
                                        k
                                    },
                                    &req.filters,
                                )
                                .instrument(tracing::info_span!("vector"))
                                .await?;
                            Ok::<_, Error>((hits, rows, ms_since(t)))
                        }
                        _ => Ok((Vec::new(), Vec::new(), 0.0)),
                    }
                };
                let graph = async {
                    if !plan.use_graph {
                        return Ok::<_, Error>((None, Vec::new(), 0.0));
                    }
                    let t = Instant::now();
                    let (expansion, scored) = self
                        .graph_candidates(&query, v.clone(), &plan, &req.filters, k)
                        .instrument(tracing::info_span!("graph"))
                        .await?;
                    Ok((Some(expansion), scored, ms_since(t)))
                };
                let (vs, gr) = tokio::join!(vec_search, graph);
                let (hits, rows, vector_ms) = vs?;
                let (expansion, graph_hits, graph_ms) = gr?;
                Ok::<_, Error>((
                    hits, rows, embed_ms, vector_ms, expansion, graph_hits, graph_ms,
                ))
            };
            // The vector side first: its first poll hands the query to the embedder, which
            // then works while a light keyword search runs here.
            let (vector, keyword) = tokio::join!(vector, keyword);
            let (kw_hits, snippets, keyword_ms) = keyword?;
            let (vec_hits, vec_rows, embed_ms, vector_ms, expansion, graph_hits, graph_ms) =
                vector?;
            let fusion_started = Instant::now();
            let fusion_span = tracing::info_span!("fusion").entered();
            let mut chunks: HashMap<String, ChunkRecord> = HashMap::new();
            let mut explain: HashMap<String, Explain> = HashMap::new();
            let kw_ids: Vec<String> = kw_hits.iter().map(|h| h.chunk.chunk_id.clone()).collect();
            let vec_ids: Vec<String> = vec_hits.iter().map(|(id, _)| id.clone()).collect();
            let graph_ids: Vec<String> = graph_hits.iter().map(|(c, _)| c.clone()).collect();
            let phrase_ids: Vec<String> = if plan.phrase > 0.0 {
                phrase_list(&query, kw_hits.iter().map(|h| &h.chunk))
            } else {
                Vec::new()
            };
            for (i, id) in phrase_ids.iter().enumerate() {
                explain.entry(id.clone()).or_default().phrase_rank = Some(i + 1);
            }
            for (i, h) in kw_hits.into_iter().enumerate() {
                let e = explain.entry(h.chunk.chunk_id.clone()).or_default();
                e.bm25 = Some(h.score);
                e.bm25_rank = Some(i + 1);
                chunks.entry(h.chunk.chunk_id.clone()).or_insert(h.chunk);
            }
            for (i, (id, d)) in vec_hits.into_iter().enumerate() {
                let e = explain.entry(id).or_default();
                e.vector_distance = Some(d);
                e.vector_rank = Some(i + 1);
            }
            for c in vec_rows {
                chunks.entry(c.chunk_id.clone()).or_insert(c);
            }
            for (i, (c, score)) in graph_hits.into_iter().enumerate() {
                let e = explain.entry(c).or_default();
                e.graph = Some((score * 1e4).round() / 1e4);
                e.graph_rank = Some(i + 1);
            }
            let mut ranked: Vec<(String, f32)> = match req.mode {
                Mode::Hybrid => rrf(
                    &[
                        (&kw_ids, wk),
                        (&vec_ids, wv),
                        (&graph_ids, plan.graph),
                        (&phrase_ids, plan.phrase),
                    ],
                    self.config.search.rrf_k,
                ),
                Mode::Keyword => kw_ids
                    .iter()
                    .map(|id| (id.clone(), explain[id].bm25.unwrap_or(0.0)))
                    .collect(),
                Mode::Vector => vec_ids
                    .iter()
                    .map(|id| (id.clone(), 1.0 - explain[id].vector_distance.unwrap_or(1.0)))
                    .collect(),
            };
            for (id, score) in &ranked {
                if let Some(e) = explain.get_mut(id) {
                    e.fused = *score;
                }
            }
            drop(fusion_span);
            // Rows the retrievers did not return (vector hits from the in-memory index, graph
            // hits) are read, with the filters, only if they rank high enough.
            self.fetch_missing(&mut ranked, &mut chunks, need, &req.filters)
                .await?;
            let mut rerank_ms = 0.0;
            if let Some(rr) = plan.reranker.clone() {
                let t = Instant::now();
                ranked = self
                    .rerank(rr, &query, ranked, &chunks, &mut explain)
                    .instrument(tracing::info_span!("rerank"))
                    .await?;
                rerank_ms = ms_since(t);
            }
            if plan.mmr_lambda < 1.0 {
                ranked = self
                    .diversify(ranked, plan.mmr_lambda, limit, &mut explain)
                    .await?;
            }
            let max_chars = self.config.search.snippet_chars;
            let results: Vec<SearchHit> = ranked
                .into_iter()
                .take(limit)
                .filter_map(|(id, score)| {
                    let c = chunks.remove(&id)?;
                    let e = explain.remove(&id).unwrap_or_default();
                    let snippet = make_snippet(snippets.as_ref(), &c.text, max_chars);
                    Some(SearchHit {
                        chunk_id: c.chunk_id,
                        source_id: c.source_id,
                        external_id: c.external_id,
                        title: c.title,
                        text: c.text,
                        snippet,
                        score,
                        page: c.page,
                        section: if c.section.is_empty() {
                            None
                        } else {
                            Some(c.section)
                        },
                        ordinal: c.ordinal,
                        char_start: c.char_start,
                        char_end: c.char_end,
                        scores: if req.explain { Some(e) } else { None },
                    })
                })
                .collect();
            let timing = record_stages(SearchTiming {
                embed_ms,
                keyword_ms,
                vector_ms,
                fusion_ms: ms_since(fusion_started) - rerank_ms,
                graph_ms,
                rerank_ms,
            });
            let took_ms = ms_since(started);
            tracing::info!(
                results = results.len(),
                took_ms,
                embed_ms = timing.embed_ms,
                keyword_ms = timing.keyword_ms,
                vector_ms = timing.vector_ms,
                graph_ms = timing.graph_ms,
                rerank_ms = timing.rerank_ms,
                fusion_ms = timing.fusion_ms,
                "search finished"
            );
            Ok(SearchResponse {
                results,
                mode: req.mode,
                context_type: plan.preset.clone(),
                concepts: expansion,
                reranked: req.rerank,
                took_ms,
                timing,
            })
        }
        .instrument(span)
        .await
    }

    /// Resolves a request's preset, weights and options, refusing what cannot run.
    fn plan(&self, req: &SearchRequest) -> Result<SearchPlan> {
        let presets = &self.config.search.presets;
        let name = req.context_type.as_deref().unwrap_or("balanced");
        let preset = presets.get(name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown context_type `{name}` (available: {})",
                presets.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let w = req.weights.unwrap_or_default();
        let s = &self.config.search;
        let mut plan = SearchPlan {
            preset: name.to_string(),
            keyword: w
                .keyword
                .or(preset.keyword_weight)
                .unwrap_or(s.keyword_weight),
            vector: w.vector.or(preset.vector_weight).unwrap_or(s.vector_weight),
            graph: w.graph.unwrap_or(preset.graph_weight),
            phrase: if req.mode == Mode::Hybrid {
                w.phrase.unwrap_or(preset.phrase_weight)
            } else {
                0.0
            },
            use_graph: match req.use_graph {
                Some(true) if req.mode != Mode::Hybrid => {
                    return Err(Error::InvalidInput(
                        "use_graph adds a list to hybrid fusion: it needs mode `hybrid`".into(),
                    ))
                }
                Some(u) => u,
                None => preset.use_graph && req.mode == Mode::Hybrid,
            },
            expand: preset.expand,
            mmr_lambda: preset.mmr_lambda,
            reranker: None,
        };
        for x in [plan.keyword, plan.vector, plan.graph, plan.phrase] {
            if !x.is_finite() || x < 0.0 {
                return Err(Error::InvalidInput(
                    "weights must be finite and non-negative".into(),
                ));
            }
        }
        if req.mode == Mode::Hybrid && plan.keyword == 0.0 && plan.vector == 0.0 {
            return Err(Error::InvalidInput(
                "at least one of the keyword and vector weights must be positive".into(),
            ));
        }
        if plan.use_graph && self.config.graph.concepts_per_chunk == 0 {
            return Err(Error::Unavailable {
                code: "graph_unavailable",
                message: "use_graph needs the concept graph, and concept extraction is off \
                          (graph.concepts_per_chunk = 0)"
                    .into(),
            });
        }
        if req.rerank {
            plan.reranker = Some(self.reranker.clone().ok_or_else(|| Error::Unavailable {
                code: "reranker_unavailable",
                message: crate::rerank::install_hint(),
            })?);
        }
        Ok(plan)
    }

    /// The graph's list for a search: the query's expansion and the chunk ids it scores
    /// (already restricted to `filters.source_ids`; the other filters apply when a graph-only
    /// hit is fetched, see [`Cairn::fetch_missing`]).
    async fn graph_candidates(
        &self,
        query: &str,
        qvec: Option<Arc<Vec<f32>>>,
        plan: &SearchPlan,
        filters: &crate::store::Filters,
        k: usize,
    ) -> Result<(Vec<crate::graph::Expansion>, Vec<(String, f32)>)> {
        let g = self.store.graph.clone();
        let opts = crate::graph::ExpandOptions {
            min_similarity: if plan.expand {
                self.config.graph.match_min_similarity
            } else {
                f32::INFINITY
            },
            neighbours: if plan.expand {
                self.config.graph.expand_neighbours
            } else {
                0
            },
            min_weight: self.config.graph.expand_min_weight,
        };
        let q = query.to_string();
        let sources: Option<HashSet<String>> =
            (!filters.source_ids.is_empty()).then(|| filters.source_ids.iter().cloned().collect());
        blocking(move || {
            let g = g.read().unwrap_or_else(|e| e.into_inner());
            let e = g.expand(&q, qvec.as_deref().map(|v| v.as_slice()), opts);
            let s = g.score_chunks(&e, sources.as_ref(), k);
            (e, s)
        })
        .await
    }

    /// Makes sure the first `need` ranked ids have their chunk rows: the missing ones (hits
    /// only the in-memory vector index or the graph found) are read by id with the request's
    /// filters, and those the filters reject (or no index holds any more) leave the ranking.
    async fn fetch_missing(
        &self,
        ranked: &mut Vec<(String, f32)>,
        chunks: &mut HashMap<String, ChunkRecord>,
        need: usize,
        filters: &crate::store::Filters,
    ) -> Result<()> {
        for _ in 0..4 {
            let missing: Vec<String> = ranked
                .iter()
                .take(need)
                .filter(|(id, _)| !chunks.contains_key(id))
                .map(|(id, _)| id.clone())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            for c in self.store.chunks_by_id(missing.clone(), filters).await? {
                chunks.insert(c.chunk_id.clone(), c);
            }
            let rejected: HashSet<String> = missing
                .into_iter()
                .filter(|id| !chunks.contains_key(id))
                .collect();
            ranked.retain(|(id, _)| !rejected.contains(id));
        }
        Ok(())
    }

    /// Re-scores the top `search.rerank_candidates` with the cross-encoder. With
    /// `search.rerank_fused_weight` 0 they are ordered and scored by its probability; above 0
    /// by RRF over the cross-encoder's order and the fused order. The rest keep their fused
    /// order, scaled below the last re-ranked score.
    async fn rerank(
        &self,
        rr: Arc<dyn crate::rerank::Reranker>,
        query: &str,
        ranked: Vec<(String, f32)>,
        chunks: &HashMap<String, ChunkRecord>,
        explain: &mut HashMap<String, Explain>,
    ) -> Result<Vec<(String, f32)>> {
        let n = self.config.search.rerank_candidates.min(ranked.len());
        let (head, tail) = ranked.split_at(n);
        let passages: Vec<String> = head
            .iter()
            .map(|(id, _)| {
                chunks
                    .get(id)
                    .map(|c| rerank_input(&c.title, &c.text))
                    .unwrap_or_default()
            })
            .collect();
        let q = query.to_string();
        let _permit = self.embed_permit().await?;
        let logits = blocking(move || rr.score(&q, &passages)).await??;
        let probs: Vec<f32> = logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
        for ((id, _), p) in head.iter().zip(&probs) {
            if let Some(e) = explain.get_mut(id) {
                e.rerank = Some(*p);
            }
        }
        let mut out: Vec<(String, f32)> = head
            .iter()
            .zip(&probs)
            .map(|((id, _), p)| (id.clone(), *p))
            .collect();
        let blend = self.config.search.rerank_fused_weight;
        if blend > 0.0 {
            // The cross-encoder's order and the fused order, fused again by RRF: a small
            // cross-encoder corrects the fused ranking instead of replacing it.
            let ce_order: Vec<String> = {
                let mut v = out.clone();
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                v.into_iter().map(|(id, _)| id).collect()
            };
            let fused_order: Vec<String> = head.iter().map(|(id, _)| id.clone()).collect();
            out = rrf(
                &[(&ce_order, 1.0), (&fused_order, blend)],
                self.config.search.rrf_k,
            );
        } else {
            out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        let floor = out.last().map_or(1.0, |x| x.1);
        let top_tail = tail.first().map_or(1.0, |x| x.1).max(f32::MIN_POSITIVE);
        out.extend(
            tail.iter()
                .map(|(id, s)| (id.clone(), floor * 0.999 * (s / top_tail))),
        );
        Ok(out)
    }

    /// MMR over the top [`mmr_window`] hits with the chunks' stored vectors.
    async fn diversify(
        &self,
        ranked: Vec<(String, f32)>,
        lambda: f32,
        limit: usize,
        explain: &mut HashMap<String, Explain>,
    ) -> Result<Vec<(String, f32)>> {
        let m = mmr_window(limit).min(ranked.len());
        if m < 2 {
            return Ok(ranked);
        }
        let (head, tail) = ranked.split_at(m);
        let ids: Vec<String> = head.iter().map(|(id, _)| id.clone()).collect();
        let vecs = self.store.vectors_of(&ids).await?;
        let rel: Vec<f32> = head.iter().map(|(_, s)| *s).collect();
        let refs: Vec<Option<&[f32]>> = ids
            .iter()
            .map(|id| vecs.get(id).map(|v| v.as_slice()))
            .collect();
        let order = crate::search::mmr(&rel, &refs, lambda, m);
        let mut out: Vec<(String, f32)> = Vec::with_capacity(ranked.len());
        for (new_rank, &i) in order.iter().enumerate() {
            if new_rank != i {
                if let Some(e) = explain.get_mut(&head[i].0) {
                    e.pre_mmr_rank = Some(i + 1);
                }
            }
            out.push(head[i].clone());
        }
        // Scores follow the new order (non-increasing), keeping each hit's own where it can.
        let mut cap = f32::INFINITY;
        for x in out.iter_mut() {
            x.1 = x.1.min(cap);
            cap = x.1;
        }
        out.extend(tail.iter().cloned().map(|(id, s)| (id, s.min(cap))));
        Ok(out)
    }

    /// Concepts matching a text: exact name or alias, then lexical overlap, then embedding
    /// similarity.
    pub async fn concepts(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<crate::graph::ConceptMatch>> {
        let q = query.trim().to_string();
        if q.is_empty() || q.chars().count() > 200 {
            return Err(Error::InvalidInput(
                "the concept query must be 1 to 200 characters".into(),
            ));
        }
        if limit == 0 || limit > 100 {
            return Err(Error::InvalidInput(
                "limit must be between 1 and 100".into(),
            ));
        }
        let v = self.embed_query(&q).await?;
        let g = self.store.graph.clone();
        blocking(move || {
            let g = g.read().unwrap_or_else(|e| e.into_inner());
            g.find(&q, Some(&v), limit)
        })
        .await
    }

    /// The neighbourhood of a concept (by id, name or alias). An unknown concept is a 404
    /// whose message suggests the closest known ones.
    pub async fn graph(
        &self,
        concept: &str,
        depth: usize,
        limit: usize,
        min_weight: f32,
    ) -> Result<crate::graph::Neighbourhood> {
        if !(1..=3).contains(&depth) {
            return Err(Error::InvalidInput("depth must be 1, 2 or 3".into()));
        }
        if limit == 0 || limit > 200 {
            return Err(Error::InvalidInput(
                "limit must be between 1 and 200".into(),
            ));
        }
        if !min_weight.is_finite() || !(0.0..=1.0).contains(&min_weight) {
            return Err(Error::InvalidInput(
                "min_weight must be between 0 and 1".into(),
            ));
        }
        let c = concept.trim().to_string();
        if c.is_empty() || c.chars().count() > 200 {
            return Err(Error::InvalidInput(
                "the concept must be 1 to 200 characters".into(),
            ));
        }
        let g = self.store.graph.clone();
        let similar = self.config.graph.similar_min;
        let c2 = c.clone();
        let found = blocking(move || {
            let g = g.read().unwrap_or_else(|e| e.into_inner());
            g.resolve(&c2)
                .map(|i| g.neighbourhood(i, depth, limit, min_weight, Some(similar)))
        })
        .await?;
        if let Some(n) = found {
            return Ok(n);
        }
        let v = self.embed_query(&c).await?;
        let g = self.store.graph.clone();
        let c2 = c.clone();
        let suggestions = blocking(move || {
            let g = g.read().unwrap_or_else(|e| e.into_inner());
            g.suggest(&c2, Some(&v), 5)
        })
        .await?;
        Err(Error::UnknownConcept {
            name: c,
            suggestions,
        })
    }

    pub async fn list_sources(&self, limit: usize, cursor: Option<&str>) -> Result<SourcePage> {
        if limit == 0 || limit > 1000 {
            return Err(Error::InvalidInput(
                "limit must be between 1 and 1000".into(),
            ));
        }
        let ids = self
            .store
            .vectors
            .source_ids_after(cursor, limit + 1)
            .await?;
        let more = ids.len() > limit;
        let ids: Vec<String> = ids.into_iter().take(limit).collect();
        let mut rows = self.store.vectors.get_sources(&ids).await?;
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        let next_cursor = if more {
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(SourcePage {
            sources: rows.into_iter().map(SourceInfo::from).collect(),
            next_cursor,
        })
    }

    pub async fn get_source(&self, id: &str) -> Result<SourceInfo> {
        self.store
            .vectors
            .get_sources(&[id.to_string()])
            .await?
            .into_iter()
            .next()
            .map(SourceInfo::from)
            .ok_or_else(|| Error::not_found(format!("source `{id}`")))
    }

    /// Finds a source by id or by external id (e.g. the file path it was ingested from).
    pub async fn resolve_source(&self, id_or_external: &str) -> Result<SourceInfo> {
        match self.get_source(id_or_external).await {
            Err(Error::NotFound { .. }) => self.get_source(&source_id_of(id_or_external)).await,
            other => other,
        }
    }

    pub async fn delete_source(&self, id: &str) -> Result<()> {
        let deleted = self.store.delete(&[id.to_string()]).await?;
        if deleted.is_empty() {
            return Err(Error::not_found(format!("source `{id}`")));
        }
        Ok(())
    }

    /// Sets the gauges read at scrape time: store sizes, process RSS and, when
    /// `telemetry.quality_report` is set, the last evaluation's retrieval quality.
    pub async fn refresh_gauges(&self) {
        if let Ok(s) = self.stats().await {
            metrics::gauge!("cairn_sources").set(s.sources as f64);
            metrics::gauge!("cairn_chunks", "index" => "vector").set(s.chunks_vector as f64);
            metrics::gauge!("cairn_chunks", "index" => "keyword").set(s.chunks_keyword as f64);
            metrics::gauge!("cairn_store_bytes", "index" => "vector")
                .set(s.index_bytes.vector as f64);
            metrics::gauge!("cairn_store_bytes", "index" => "keyword")
                .set(s.index_bytes.keyword as f64);
        }
        metrics::gauge!("cairn_process_resident_memory_bytes")
            .set(crate::telemetry::process_rss_bytes() as f64);
        if let Some(path) = &self.config.telemetry.quality_report {
            match crate::telemetry::QualityReport::read(path) {
                Ok(r) => r.record(),
                // Not written yet: no gauge until the first `cairn eval --report`.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    path = %path.display(),
                    "cannot read telemetry.quality_report"
                ),
            }
        }
    }

    pub async fn stats(&self) -> Result<Stats> {
        let s: StoreStats = self.store.stats().await?;
        let ann = match s.ann_index {
            Some(a) => AnnInfo {
                state: a.kind,
                min_rows: self.config.index.ann_min_rows,
                indexed_rows: a.indexed_rows,
                unindexed_rows: a.unindexed_rows,
                memory_rows: s.memory_index_rows,
            },
            None => AnnInfo {
                state: "exact".into(),
                min_rows: self.config.index.ann_min_rows,
                indexed_rows: 0,
                unindexed_rows: s.chunks_vector,
                memory_rows: s.memory_index_rows,
            },
        };
        Ok(Stats {
            sources: s.sources,
            chunks: s.chunks_vector,
            chunks_vector: s.chunks_vector,
            chunks_keyword: s.chunks_keyword,
            index_bytes: IndexBytes {
                vector: s.vector_bytes,
                keyword: s.keyword_bytes,
            },
            embedding_model: self.embedder.name().to_string(),
            embedding_dim: self.embedder.dim(),
            ann_index: ann,
            graph: GraphStats {
                concepts: s.concepts,
                edges: s.concept_edges,
                mentions: s.mentions,
            },
            reranker: self.reranker.as_ref().map(|r| r.name().to_string()),
            generator: GeneratorStats {
                backend: self
                    .generator
                    .as_ref()
                    .map_or("none", |g| g.backend().as_str()),
                model: self.generator.as_ref().map(|g| g.model().to_string()),
                context_tokens: self.generator.as_ref().map(|g| g.context_tokens()),
                counters: self
                    .generator
                    .as_ref()
                    .map(|g| g.stats())
                    .unwrap_or_default(),
            },
        })
    }

    /// Probes each component: the store (a count), the keyword index (a search) and the
    /// embedder (an embedding).
    /// Readiness: every component answers within its deadline. Each is timed.
    pub async fn health(&self) -> Health {
        let deadline = Duration::from_secs(5);
        let timed = |name: &'static str, r: std::result::Result<(), String>, t: Instant| {
            let latency_ms = t.elapsed().as_secs_f64() * 1e3;
            (
                name,
                match r {
                    Ok(()) => ComponentHealth {
                        status: "ok",
                        latency_ms,
                        error: None,
                    },
                    Err(e) => ComponentHealth {
                        status: "error",
                        latency_ms,
                        error: Some(e),
                    },
                },
            )
        };
        let within =
            |what: &str, r: std::result::Result<Result<()>, tokio::time::error::Elapsed>| match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "{what} did not answer within {} s",
                    deadline.as_secs()
                )),
            };
        let mut components = HashMap::new();
        let t = Instant::now();
        let r = tokio::time::timeout(deadline, async {
            self.store.vectors.count_sources().await.map(|_| ())
        })
        .await;
        let (n, c) = timed("store", within("the store", r), t);
        components.insert(n, c);
        let t = Instant::now();
        let kw = self.store.keywords.clone();
        let r = tokio::time::timeout(deadline, async move {
            blocking(move || kw.search("health", 1, &Default::default(), 1.0).map(|_| ())).await?
        })
        .await;
        let (n, c) = timed("keyword_index", within("the keyword index", r), t);
        components.insert(n, c);
        let t = Instant::now();
        let r = tokio::time::timeout(deadline, async {
            let v = self.embed(vec!["health".into()]).await?;
            if v.first().is_some_and(|x| x.len() == self.embedder.dim()) {
                Ok(())
            } else {
                Err(Error::internal("embedder returned a wrong-sized vector"))
            }
        })
        .await;
        let (n, c) = timed("embedder", within("the embedder", r), t);
        components.insert(n, c);
        if let Some(g) = &self.generator {
            let t = Instant::now();
            let r = tokio::time::timeout(deadline, g.ready()).await;
            let (n, c) = timed("generator", within("the generator", r), t);
            components.insert(n, c);
        }
        Health {
            ok: components.values().all(|c| c.status == "ok"),
            components,
        }
    }
}

/// `cairn_ingest_queue_depth`: sources parsed and waiting to be embedded and written.
struct QueueDepth(f64);

impl QueueDepth {
    fn new(n: usize) -> Self {
        metrics::gauge!("cairn_ingest_queue_depth").increment(n as f64);
        Self(n as f64)
    }
}

impl Drop for QueueDepth {
    fn drop(&mut self) {
        metrics::gauge!("cairn_ingest_queue_depth").decrement(self.0);
    }
}

/// The hits MMR re-orders: the top `3 × limit`, at most 100.
fn mmr_window(limit: usize) -> usize {
    (3 * limit).min(100)
}

/// What a search request resolves to once its preset and overrides are applied.
struct SearchPlan {
    preset: String,
    keyword: f32,
    vector: f32,
    graph: f32,
    phrase: f32,
    use_graph: bool,
    expand: bool,
    mmr_lambda: f32,
    /// The cross-encoder, when the request asks for `rerank` (the plan fails without one).
    reranker: Option<Arc<dyn crate::rerank::Reranker>>,
}

/// The text a cross-encoder reads for a chunk (as `scripts/build-reranker` trained it).
pub fn rerank_input(title: &str, text: &str) -> String {
    if title.is_empty() {
        text.to_string()
    } else {
        format!("{title} {text}")
    }
}

/// The exact-phrase list: keyword hits that contain a phrase of the query verbatim (after
/// normalising case, punctuation and plurals), most phrases first, then in BM25 order. The
/// phrases are the query's quoted parts, or else its multi-word key phrases.
fn phrase_list<'a>(query: &str, hits: impl Iterator<Item = &'a ChunkRecord>) -> Vec<String> {
    let quoted: Vec<&str> = query.split('"').skip(1).step_by(2).collect();
    let mut phrases: Vec<String> = quoted
        .iter()
        .filter_map(|q| crate::concepts::normalise(q))
        .collect();
    if phrases.is_empty() {
        phrases = crate::concepts::extract(query, 16, &Default::default())
            .into_iter()
            .filter(|m| m.key.contains(' '))
            .map(|m| m.key)
            .collect();
    }
    if phrases.is_empty() {
        return Vec::new();
    }
    let padded: Vec<String> = phrases.iter().map(|p| format!(" {p} ")).collect();
    let mut matched: Vec<(usize, usize, String)> = hits
        .enumerate()
        .filter_map(|(rank, c)| {
            let text = format!(
                " {} ",
                crate::concepts::normalise(&c.text).unwrap_or_default()
            );
            let n = padded.iter().filter(|p| text.contains(p.as_str())).count();
            (n > 0).then(|| (n, rank, c.chunk_id.clone()))
        })
        .collect();
    matched.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    matched.into_iter().map(|(_, _, id)| id).collect()
}

/// Records the stages that ran in `cairn_search_stage_seconds{stage}`.
fn record_stages(t: SearchTiming) -> SearchTiming {
    for (stage, ms) in [
        ("embed", t.embed_ms),
        ("keyword", t.keyword_ms),
        ("vector", t.vector_ms),
        ("graph", t.graph_ms),
        ("rerank", t.rerank_ms),
        ("fusion", t.fusion_ms),
    ] {
        if ms > 0.0 {
            metrics::histogram!("cairn_search_stage_seconds", "stage" => stage).record(ms / 1e3);
        }
    }
    t
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
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

fn make_snippet(
    gen: Option<&crate::store::snippet::Snippets>,
    text: &str,
    max_chars: usize,
) -> String {
    if let Some(html) = gen.and_then(|g| g.html(text)) {
        return html;
    }
    let head: String = text.chars().take(max_chars).collect();
    html_escape::encode_text(&head).into_owned()
}
