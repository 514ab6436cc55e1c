//! One consistent store over two indexes: LanceDB (sources + chunks with vectors) and tantivy
//! (BM25 over the same chunks), under one data dir.
//!
//! ## Consistency protocol
//! The `sources` row is the commit point of every write; LanceDB's chunks table is the source of
//! truth for chunk content; tantivy is derived from it. A write of a batch of sources:
//! 1. writes a journal file naming the sources (fsynced) — `journal/<uuid>.json`;
//! 2. appends the new chunks to LanceDB (new chunk ids: they embed the content hash);
//! 3. in one tantivy commit, deletes the sources' old chunks and adds the new ones;
//! 4. upserts the `sources` rows (commit point: the write is now acknowledged);
//! 5. deletes the sources' chunks whose hash is not the committed one from LanceDB;
//! 6. removes the journal file.
//!
//! A delete journals, removes the `sources` row (commit point), then the chunks from both.
//! After a crash at any step, [`Store::open`] replays every journal file with
//! [`Store::reconcile`]: for each named source, LanceDB chunks that do not match the committed
//! row are deleted, and tantivy is rewritten from the surviving LanceDB chunks. So a chunk is
//! never in one index and not the other, and an acknowledged source is never lost.
//! `cairn check` verifies the invariant over the whole store; `--repair` reconciles everything.

pub mod concepts;
pub mod flat;
pub mod keyword;
pub mod snippet;
pub mod stem;
pub mod vector;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::graph::{ConceptGraph, MentionRow};
use concepts::ConceptTables;
use flat::{FlatEntry, FlatIndex};
use keyword::KeywordIndex;
use vector::{sql_in, sql_str, VectorStore};

/// A source (a file, an uploaded text, a JSONL record) as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceRecord {
    pub id: String,
    pub external_id: String,
    pub title: String,
    pub file_type: String,
    pub content_hash: String,
    pub chunk_count: u32,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub size_bytes: u64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A chunk as stored. `vector` is empty when read back for search results.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    pub chunk_id: String,
    pub source_id: String,
    pub content_hash: String,
    pub ordinal: u32,
    pub text: String,
    pub title: String,
    /// Heading path joined with " > ".
    pub section: String,
    pub page: Option<u32>,
    pub char_start: u32,
    pub char_end: u32,
    pub file_type: String,
    /// Metadata as `key=value` filter terms.
    pub meta: Vec<String>,
    pub external_id: String,
    pub vector: Vec<f32>,
}

/// Restrictions applied to both retrievers before ranking.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default)]
    pub source_ids: Vec<String>,
    #[serde(default)]
    pub file_types: Vec<String>,
    /// Metadata key = value (values compared as strings; numbers and booleans as printed).
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Metadata values as filter terms: top-level scalars, and each scalar of a top-level array.
pub fn meta_terms(meta: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in meta {
        match v {
            serde_json::Value::Array(items) => {
                out.extend(items.iter().filter_map(scalar).map(|s| format!("{k}={s}")))
            }
            other => out.extend(scalar(other).map(|s| format!("{k}={s}"))),
        }
    }
    out
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.source_ids.is_empty() && self.file_types.is_empty() && self.metadata.is_empty()
    }

    /// The metadata conditions as `key=value` terms.
    pub fn meta_terms(&self) -> Vec<String> {
        let m: serde_json::Map<_, _> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        meta_terms(&m)
    }

    /// The same restriction as a Lance SQL predicate.
    pub fn to_sql(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.source_ids.is_empty() {
            parts.push(sql_in("source_id", &self.source_ids));
        }
        if !self.file_types.is_empty() {
            parts.push(sql_in("file_type", &self.file_types));
        }
        for t in self.meta_terms() {
            parts.push(format!("array_has(meta, {})", sql_str(&t)));
        }
        if parts.is_empty() {
            None
        } else {
            Some(parts.join(" AND "))
        }
    }
}

/// What `check` found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub sources: usize,
    pub chunks_vector: usize,
    pub chunks_keyword: usize,
    /// LanceDB chunks whose source row is missing or has another content hash.
    pub orphan_vector_chunks: Vec<String>,
    /// Tantivy documents with no matching committed LanceDB chunk.
    pub orphan_keyword_chunks: Vec<String>,
    /// Committed LanceDB chunks missing from tantivy.
    pub missing_keyword_chunks: Vec<String>,
    /// Chunk ids present more than once in either index.
    pub duplicate_chunks: Vec<String>,
    /// Sources whose stored chunk count differs from their row's `chunk_count`.
    pub half_written_sources: Vec<String>,
    /// Journal entries left by an interrupted write.
    pub pending_journal: usize,
    /// Concept rows that no committed mention refers to.
    pub orphan_concepts: Vec<String>,
    /// Mentions of a chunk that is not a committed chunk.
    pub orphan_mentions: usize,
    /// Mentions of a concept that has no row.
    pub dangling_mentions: usize,
}

impl CheckReport {
    pub fn is_consistent(&self) -> bool {
        self.orphan_vector_chunks.is_empty()
            && self.orphan_keyword_chunks.is_empty()
            && self.missing_keyword_chunks.is_empty()
            && self.duplicate_chunks.is_empty()
            && self.half_written_sources.is_empty()
            && self.pending_journal == 0
            && self.orphan_concepts.is_empty()
            && self.orphan_mentions == 0
            && self.dangling_mentions == 0
    }

    /// Source ids that a repair must reconcile.
    fn affected_sources(
        &self,
        keys_v: &[(String, String, String)],
        keys_k: &[(String, String, String)],
    ) -> BTreeSet<String> {
        let bad: HashSet<&str> = self
            .orphan_vector_chunks
            .iter()
            .chain(&self.orphan_keyword_chunks)
            .chain(&self.missing_keyword_chunks)
            .chain(&self.duplicate_chunks)
            .map(String::as_str)
            .collect();
        let mut out: BTreeSet<String> = self.half_written_sources.iter().cloned().collect();
        for (c, s, _) in keys_v.iter().chain(keys_k) {
            if bad.contains(c.as_str()) {
                out.insert(s.clone());
            }
        }
        out
    }
}

/// The concept half of an upsert: the batch's mentions, and the name embeddings of the
/// concepts they mention (needed only for concepts the store does not hold yet).
#[derive(Debug, Default)]
pub struct ConceptWrite {
    pub mentions: Vec<MentionRow>,
    pub vectors: HashMap<String, Vec<f32>>,
}

#[derive(Serialize, Deserialize)]
struct JournalEntry {
    op: String,
    sources: Vec<String>,
}

/// The combined store.
pub struct Store {
    dir: PathBuf,
    pub vectors: VectorStore,
    pub keywords: Arc<KeywordIndex>,
    pub concepts: ConceptTables,
    /// The concept graph of the committed mentions (see `crate::graph`).
    pub graph: Arc<std::sync::RwLock<ConceptGraph>>,
    /// The committed chunk vectors in memory (see `flat`), `None` when the store is larger
    /// than `memory_max_rows` or the copy is off.
    memory: Arc<std::sync::RwLock<Option<FlatIndex>>>,
    memory_max_rows: usize,
    writable: bool,
    /// Serialises writes: one batch at a time goes through the protocol above.
    write_lock: Mutex<()>,
}

/// Stats about the stored data.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStats {
    pub sources: usize,
    pub chunks_vector: usize,
    pub chunks_keyword: usize,
    pub vector_bytes: u64,
    pub keyword_bytes: u64,
    pub ann_index: Option<AnnState>,
    /// Chunks the in-memory vector index holds (`None`: vector search reads LanceDB).
    pub memory_index_rows: Option<usize>,
    pub concepts: usize,
    pub concept_edges: usize,
    pub mentions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnnState {
    pub kind: String,
    pub indexed_rows: usize,
    pub unindexed_rows: usize,
}

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Runs a store write in its own task (with the caller's span) and waits for it: dropping the
/// caller does not cancel the write halfway.
async fn run_to_completion<T: Send + 'static>(
    write: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(write.instrument(tracing::Span::current()))
        .await
        .map_err(|e| Error::internal(format!("store write task failed: {e}")))?
}

/// Flushes the data dir's filesystem. LanceDB's local writes are not fsynced on their own, so
/// without this an acknowledged write would survive a process crash but not a power cut.
fn sync_fs(dir: &Path) {
    #[cfg(target_os = "linux")]
    if let Ok(f) = std::fs::File::open(dir) {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which stays open for the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "syncfs failed");
        }
    }
    #[cfg(not(target_os = "linux"))]
    fsync_dir(dir);
}

fn fsync_dir(p: &Path) {
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.sync_all();
    }
}

impl Store {
    /// Opens the store in `dir` (creating it). A writable store takes the keyword index's
    /// writer lock and replays any journal left by an interrupted write.
    pub async fn open(
        dir: &Path,
        dim: usize,
        writable: bool,
        snippet_chars: usize,
        memory_max_rows: usize,
        doc_cache_blocks: usize,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir.join("journal"))?;
        let keywords = Arc::new(KeywordIndex::open(
            &dir.join("tantivy"),
            writable,
            snippet_chars,
            doc_cache_blocks,
        )?);
        let vectors = VectorStore::open(&dir.join("lance"), dim).await?;
        let concepts = ConceptTables::open(&dir.join("lance"), dim).await?;
        let store = Self {
            dir: dir.to_path_buf(),
            vectors,
            keywords,
            concepts,
            graph: Default::default(),
            memory: Default::default(),
            memory_max_rows,
            writable,
            write_lock: Mutex::new(()),
        };
        // The graph and the vector copy first: replaying the journal updates them like any write.
        let committed = store.committed_hashes().await?;
        store.load_graph(&committed).await?;
        store.load_memory(&committed).await?;
        if writable {
            store.replay_journal().await?;
            store.sync_all_concepts().await?;
        }
        Ok(store)
    }

    fn memory_read(&self) -> std::sync::RwLockReadGuard<'_, Option<FlatIndex>> {
        self.memory.read().unwrap_or_else(|e| e.into_inner())
    }

    fn memory_write(&self) -> std::sync::RwLockWriteGuard<'_, Option<FlatIndex>> {
        self.memory.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every committed source's content hash (its row in `sources`).
    async fn committed_hashes(&self) -> Result<HashMap<String, String>> {
        Ok(self
            .vectors
            .sources_where(None)
            .await?
            .into_iter()
            .map(|r| (r.id, r.content_hash))
            .collect())
    }

    /// Loads the committed chunk vectors into memory when the store is small enough.
    async fn load_memory(&self, committed: &HashMap<String, String>) -> Result<()> {
        let rows = self.vectors.count_chunks().await?;
        if self.memory_max_rows == 0 || rows > self.memory_max_rows {
            if self.memory_max_rows > 0 {
                tracing::info!(
                    rows,
                    max = self.memory_max_rows,
                    "store is larger than index.memory_max_rows; vector search reads lancedb"
                );
            }
            *self.memory_write() = None;
            return Ok(());
        }
        let t = std::time::Instant::now();
        let mut ix = FlatIndex::new(self.vectors.dim());
        for (e, hash) in self.vectors.memory_rows(None).await? {
            if committed.get(&e.source_id) == Some(&hash) {
                ix.insert(e);
            }
        }
        tracing::info!(
            rows = ix.len(),
            bytes = ix.vector_bytes(),
            ms = t.elapsed().as_millis() as u64,
            "loaded the in-memory vector index"
        );
        *self.memory_write() = Some(ix);
        Ok(())
    }

    /// Makes the in-memory copy hold exactly `add` for `sources` (after a committed write);
    /// drops the copy when the store outgrows `memory_max_rows`.
    fn memory_replace(&self, sources: &[String], add: Vec<FlatEntry>) {
        let mut m = self.memory_write();
        if let Some(ix) = m.as_mut() {
            ix.replace_sources(sources, add);
            if ix.len() > self.memory_max_rows {
                tracing::warn!(
                    rows = ix.len(),
                    max = self.memory_max_rows,
                    "store outgrew index.memory_max_rows: in-memory vector index dropped, vector \
                     search reads lancedb until restart"
                );
                *m = None;
            }
        }
    }

    fn has_memory(&self) -> bool {
        self.memory_read().is_some()
    }

    /// The `k` chunks nearest to `vector` that pass `filters`, as `(chunk_id, cosine
    /// distance)`, nearest first, and the rows of those that came with their row (LanceDB's
    /// answer carries them; the in-memory index's does not).
    pub async fn vector_search(
        &self,
        vector: Arc<Vec<f32>>,
        k: usize,
        filters: &Filters,
    ) -> Result<(Vec<(String, f32)>, Vec<ChunkRecord>)> {
        if self.has_memory() {
            let (m, f, v) = (self.memory.clone(), filters.clone(), vector.clone());
            let hits = crate::blocking(move || {
                let m = m.read().unwrap_or_else(|e| e.into_inner());
                m.as_ref().map(|ix| ix.search(&v, k, &f))
            })
            .await?;
            if let Some(hits) = hits {
                return Ok((hits, Vec::new()));
            }
        }
        let rows = self.vectors.search(&vector, k, filters.to_sql()).await?;
        let hits = rows.iter().map(|(c, d)| (c.chunk_id.clone(), *d)).collect();
        Ok((hits, rows.into_iter().map(|(c, _)| c).collect()))
    }

    /// The stored vectors of the given chunks (from memory when the copy is there).
    pub async fn vectors_of(&self, ids: &[String]) -> Result<HashMap<String, Vec<f32>>> {
        {
            let m = self.memory_read();
            if let Some(ix) = m.as_ref() {
                return Ok(ids
                    .iter()
                    .filter_map(|id| ix.vector(id).map(|v| (id.clone(), v.to_vec())))
                    .collect());
            }
        }
        self.vectors.vectors_of(ids).await
    }

    /// The rows of the given chunks that pass `filters`, read from the keyword index's stored
    /// fields (a term lookup per id; `meta` is not stored there and comes back empty).
    pub async fn chunks_by_id(
        &self,
        ids: Vec<String>,
        filters: &Filters,
    ) -> Result<Vec<ChunkRecord>> {
        let kw = self.keywords.clone();
        let f = filters.clone();
        crate::blocking(move || kw.chunks_by_id(&ids, &f)).await?
    }

    fn graph_write(&self) -> std::sync::RwLockWriteGuard<'_, ConceptGraph> {
        self.graph.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn graph_read(&self) -> std::sync::RwLockReadGuard<'_, ConceptGraph> {
        self.graph.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the in-memory graph from the committed mentions and the concept rows' vectors.
    async fn load_graph(&self, committed: &HashMap<String, String>) -> Result<()> {
        let rows = self.concepts.all_concepts(true).await?;
        let vectors: HashMap<String, Vec<f32>> =
            rows.into_iter().map(|r| (r.id, r.vector)).collect();
        let mentions = self.concepts.mentions_where(None).await?;
        let mut g = ConceptGraph::default();
        let skipped = add_committed_mentions(
            &mut g,
            &mentions,
            committed,
            &|id| vectors.get(id).cloned(),
            &mut BTreeSet::new(),
        );
        if skipped > 0 {
            tracing::warn!(
                mentions = skipped,
                "mentions of concepts without a row were skipped"
            );
        }
        *self.graph_write() = g;
        Ok(())
    }

    /// Makes the `concepts` table equal to the graph: rows for every live concept (frequency,
    /// aliases), none for the others.
    async fn sync_all_concepts(&self) -> Result<()> {
        let stored: HashMap<String, RowKey> = self
            .concepts
            .all_concepts(false)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), row_key(&r)))
            .collect();
        let (upsert, delete) = {
            let g = self.graph_read();
            let mut upsert = Vec::new();
            for id in g.ids() {
                let row = g.row(&id).expect("live concept");
                if stored.get(&id) != Some(&row_key(&row)) {
                    upsert.push(row);
                }
            }
            let delete: Vec<String> = stored
                .keys()
                .filter(|id| !g.contains(id))
                .cloned()
                .collect();
            (upsert, delete)
        };
        if !upsert.is_empty() || !delete.is_empty() {
            tracing::info!(
                updated = upsert.len(),
                removed = delete.len(),
                "concept rows brought in line with the mentions"
            );
        }
        self.concepts.upsert_concepts(&upsert).await?;
        self.concepts.delete_concepts(&delete).await?;
        Ok(())
    }

    /// Writes the rows of the concepts a write touched, and deletes those no longer mentioned.
    async fn sync_concepts(&self, touched: BTreeSet<String>) -> Result<()> {
        let (upsert, delete) = {
            let g = self.graph_read();
            let mut upsert = Vec::new();
            let mut delete = Vec::new();
            for id in touched {
                match g.row(&id) {
                    Some(r) => upsert.push(r),
                    None => delete.push(id),
                }
            }
            (upsert, delete)
        };
        self.concepts.upsert_concepts(&upsert).await?;
        self.concepts.delete_concepts(&delete).await?;
        Ok(())
    }

    /// Replaces the graph's mentions of `sources` with their committed mentions in LanceDB.
    async fn refresh_graph(&self, sources: &[String]) -> Result<BTreeSet<String>> {
        let mut touched = BTreeSet::new();
        let rows = if sources.is_empty() {
            Vec::new()
        } else {
            self.vectors.get_sources(sources).await?
        };
        let committed: HashMap<String, String> =
            rows.into_iter().map(|r| (r.id, r.content_hash)).collect();
        let mut mentions = Vec::new();
        for part in sources.chunks(200) {
            mentions.extend(
                self.concepts
                    .mentions_where(Some(sql_in("source_id", part)))
                    .await?,
            );
        }
        let mut ids: Vec<String> = mentions.iter().map(|m| m.concept_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let stored = self.concepts.vectors_of(&ids).await?;
        let mut g = self.graph_write();
        g.remove_sources(sources, &mut touched);
        let skipped = add_committed_mentions(
            &mut g,
            &mentions,
            &committed,
            &|id| stored.get(id).cloned(),
            &mut touched,
        );
        if skipped > 0 {
            tracing::warn!(
                mentions = skipped,
                "mentions of concepts without a row were skipped"
            );
        }
        Ok(touched)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn journal_files(&self) -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.join("journal"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        v.sort();
        Ok(v)
    }

    async fn replay_journal(&self) -> Result<()> {
        for f in self.journal_files()? {
            let entry: Option<JournalEntry> = std::fs::read(&f)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match entry {
                Some(e) => {
                    tracing::warn!(op = %e.op, sources = e.sources.len(), "replaying interrupted write");
                    self.reconcile(&e.sources).await?;
                }
                // A journal file torn before its fsync means nothing was written after it.
                None => tracing::warn!(file = %f.display(), "dropping unreadable journal entry"),
            }
            std::fs::remove_file(&f)?;
        }
        fsync_dir(&self.dir.join("journal"));
        Ok(())
    }

    fn journal_begin(&self, op: &str, sources: &[String]) -> Result<PathBuf> {
        let path = self
            .dir
            .join("journal")
            .join(format!("{}.json", uuid::Uuid::now_v7()));
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&JournalEntry {
            op: op.into(),
            sources: sources.to_vec(),
        })?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        fsync_dir(&self.dir.join("journal"));
        Ok(path)
    }

    fn journal_end(&self, path: &Path) -> Result<()> {
        std::fs::remove_file(path)?;
        Ok(())
    }

    fn require_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::internal("store opened read-only"))
        }
    }

    /// Writes a batch of sources (replacing earlier versions) with their chunks, atomically per
    /// the protocol in the module docs. Returns once both indexes are durable, with the ids that
    /// were written: a source already stored with the same content hash (another request won the
    /// race) is skipped.
    ///
    /// The write runs in its own task: if the caller is dropped (a client disconnects, a timeout
    /// fires) the write still finishes, so a live server never holds a half-done write.
    pub async fn upsert(
        self: &Arc<Self>,
        sources: Vec<SourceRecord>,
        chunks: Vec<ChunkRecord>,
        concepts: ConceptWrite,
    ) -> Result<Vec<String>> {
        self.require_writable()?;
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let this = self.clone();
        run_to_completion(async move { this.upsert_locked(sources, chunks, concepts).await }).await
    }

    async fn upsert_locked(
        &self,
        mut sources: Vec<SourceRecord>,
        mut chunks: Vec<ChunkRecord>,
        concepts: ConceptWrite,
    ) -> Result<Vec<String>> {
        let ConceptWrite {
            mut mentions,
            vectors,
        } = concepts;
        let _g = self.write_lock.lock().await;
        let ids: Vec<String> = sources.iter().map(|s| s.id.clone()).collect();
        let stored: HashMap<String, String> = self
            .vectors
            .get_sources(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r.content_hash))
            .collect();
        let same = |id: &str, hash: &str| stored.get(id).is_some_and(|h| h == hash);
        sources.retain(|s| !same(&s.id, &s.content_hash));
        chunks.retain(|c| !same(&c.source_id, &c.content_hash));
        mentions.retain(|m| !same(&m.source_id, &m.content_hash));
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = sources.iter().map(|s| s.id.clone()).collect();
        // Vectors of every concept mentioned: the graph's for known ones, else the caller's.
        let known: HashMap<String, Vec<f32>> = {
            let g = self.graph_read();
            mentions
                .iter()
                .filter_map(|m| {
                    g.vector_of(&m.concept_id)
                        .map(|v| (m.concept_id.clone(), v))
                })
                .collect()
        };
        let new_rows = new_concept_rows(&mentions, &|id| known.contains_key(id), &vectors)?;
        let journal = self.journal_begin("upsert", &ids)?;
        crash_point("after_journal");
        // A new concept's row exists before any mention of it (see `concepts`).
        self.concepts.upsert_concepts(&new_rows).await?;
        self.vectors.add_chunks(&chunks).await?;
        self.concepts.add_mentions(&mentions).await?;
        crash_point("after_vectors");
        self.keywords.replace(&ids, &chunks)?;
        crash_point("after_keywords");
        // New chunks reach the disk before the row that commits them, and the row before the ack.
        sync_fs(&self.dir);
        self.vectors.upsert_sources(&sources).await?;
        sync_fs(&self.dir);
        crash_point("after_commit");
        self.delete_stale_vector_chunks(&sources).await?;
        if self.has_memory() {
            let add = chunks
                .into_iter()
                .map(|c| FlatEntry {
                    chunk_id: c.chunk_id,
                    source_id: c.source_id,
                    file_type: c.file_type,
                    meta: c.meta,
                    vector: c.vector,
                })
                .collect();
            self.memory_replace(&ids, add);
        }
        let mut touched = BTreeSet::new();
        {
            let committed: HashMap<String, String> = sources
                .iter()
                .map(|s| (s.id.clone(), s.content_hash.clone()))
                .collect();
            let mut g = self.graph_write();
            g.remove_sources(&ids, &mut touched);
            let lookup = |id: &str| known.get(id).or_else(|| vectors.get(id)).cloned();
            add_committed_mentions(&mut g, &mentions, &committed, &lookup, &mut touched);
        }
        self.sync_concepts(touched).await?;
        self.journal_end(&journal)?;
        Ok(ids)
    }

    async fn delete_stale_vector_chunks(&self, committed: &[SourceRecord]) -> Result<()> {
        for part in committed.chunks(200) {
            let pred: Vec<String> = part
                .iter()
                .map(|s| {
                    format!(
                        "(source_id = {} AND content_hash <> {})",
                        sql_str(&s.id),
                        sql_str(&s.content_hash)
                    )
                })
                .collect();
            self.delete_chunks(&pred.join(" OR ")).await?;
        }
        Ok(())
    }

    /// Deletes chunks and, with them, their concept mentions (a mention never outlives its
    /// chunk; `predicate` is over `source_id` / `content_hash`, columns both tables have).
    async fn delete_chunks(&self, predicate: &str) -> Result<()> {
        self.vectors.delete_chunks(predicate).await?;
        self.concepts.delete_mentions(predicate).await
    }

    /// Adds mentions of already committed chunks (the backfill of a data dir written before
    /// the concept graph): new concept rows first, then the mentions, then the graph.
    pub async fn add_concepts(self: &Arc<Self>, write: ConceptWrite) -> Result<()> {
        self.require_writable()?;
        let this = self.clone();
        run_to_completion(async move {
            let _g = this.write_lock.lock().await;
            let ConceptWrite { mentions, vectors } = write;
            let new_rows = {
                let g = this.graph_read();
                new_concept_rows(&mentions, &|id| g.contains(id), &vectors)?
            };
            this.concepts.upsert_concepts(&new_rows).await?;
            this.concepts.add_mentions(&mentions).await?;
            let mut sources: Vec<String> = mentions.iter().map(|m| m.source_id.clone()).collect();
            sources.sort();
            sources.dedup();
            let touched = this.refresh_graph(&sources).await?;
            this.sync_concepts(touched).await
        })
        .await
    }

    /// Deletes sources from both indexes. Returns the ids that existed. Like `upsert`, the
    /// write finishes even if the caller is dropped.
    pub async fn delete(self: &Arc<Self>, ids: &[String]) -> Result<Vec<String>> {
        self.require_writable()?;
        let this = self.clone();
        let ids = ids.to_vec();
        run_to_completion(async move { this.delete_locked(&ids).await }).await
    }

    async fn delete_locked(&self, ids: &[String]) -> Result<Vec<String>> {
        let _g = self.write_lock.lock().await;
        let existing: Vec<String> = self
            .vectors
            .get_sources(ids)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        if existing.is_empty() {
            return Ok(existing);
        }
        let journal = self.journal_begin("delete", &existing)?;
        self.vectors.delete_sources(&existing).await?;
        sync_fs(&self.dir);
        crash_point("after_delete_commit");
        self.keywords.replace(&existing, &[])?;
        self.memory_replace(&existing, Vec::new());
        for part in existing.chunks(500) {
            self.delete_chunks(&sql_in("source_id", part)).await?;
        }
        let mut touched = BTreeSet::new();
        self.graph_write().remove_sources(&existing, &mut touched);
        self.sync_concepts(touched).await?;
        self.journal_end(&journal)?;
        Ok(existing)
    }

    /// Makes both indexes agree with the committed `sources` rows for the given sources:
    /// LanceDB chunks that do not belong to the committed version are deleted, a source whose
    /// committed chunks are incomplete is removed (it must be re-ingested), and tantivy is
    /// rewritten from LanceDB. Returns the sources that were removed as half-written.
    pub async fn reconcile(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for part in ids.chunks(200) {
            let part: Vec<String> = part.to_vec();
            let rows: HashMap<String, SourceRecord> = self
                .vectors
                .get_sources(&part)
                .await?
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect();
            // 1. LanceDB: drop chunks of uncommitted versions (and of sources with no row).
            let orphans: Vec<String> = part
                .iter()
                .filter(|id| !rows.contains_key(*id))
                .cloned()
                .collect();
            if !orphans.is_empty() {
                self.delete_chunks(&sql_in("source_id", &orphans)).await?;
            }
            let committed: Vec<SourceRecord> = rows.values().cloned().collect();
            self.delete_stale_vector_chunks(&committed).await?;
            // 2. Committed sources must have all their chunks; otherwise remove them.
            let keys = self
                .vectors
                .chunk_keys(Some(sql_in("source_id", &part)))
                .await?;
            let mut counts: HashMap<&str, (u32, HashSet<&str>)> = HashMap::new();
            for (c, s, _) in &keys {
                let e = counts.entry(s.as_str()).or_default();
                e.0 += 1;
                e.1.insert(c.as_str());
            }
            let mut broken = Vec::new();
            for r in rows.values() {
                let (n, uniq) = counts.get(r.id.as_str()).cloned().unwrap_or_default();
                if n != r.chunk_count || uniq.len() as u32 != n {
                    broken.push(r.id.clone());
                }
            }
            if !broken.is_empty() {
                tracing::warn!(sources = ?broken, "removing half-written sources; re-ingest them");
                self.vectors.delete_sources(&broken).await?;
                self.delete_chunks(&sql_in("source_id", &broken)).await?;
                removed.extend(broken.iter().cloned());
            }
            // 3. Tantivy: rewrite these sources from LanceDB.
            let good: Vec<String> = rows
                .keys()
                .filter(|id| !broken.contains(id))
                .cloned()
                .collect();
            let chunks = if good.is_empty() {
                Vec::new()
            } else {
                self.vectors
                    .chunks_where(sql_in("source_id", &good))
                    .await?
            };
            self.keywords.replace(&part, &chunks)?;
            if self.has_memory() {
                let add = if good.is_empty() {
                    Vec::new()
                } else {
                    self.vectors
                        .memory_rows(Some(sql_in("source_id", &good)))
                        .await?
                        .into_iter()
                        .filter(|(e, hash)| {
                            rows.get(&e.source_id)
                                .is_some_and(|r| &r.content_hash == hash)
                        })
                        .map(|(e, _)| e)
                        .collect()
                };
                self.memory_replace(&part, add);
            }
            // 4. The graph and the concept rows: from the surviving mentions.
            let touched = self.refresh_graph(&part).await?;
            self.sync_concepts(touched).await?;
        }
        Ok(removed)
    }

    /// Compares the two indexes and the sources table over the whole store.
    pub async fn check(&self) -> Result<CheckReport> {
        let rows = self.vectors.sources_where(None).await?;
        let keys_v = self.vectors.chunk_keys(None).await?;
        let keys_k = self.keywords.all_keys()?;
        let mut rep = self.compare(&rows, &keys_v, &keys_k)?;
        self.check_concepts(&mut rep, &rows, &keys_v).await?;
        Ok(rep)
    }

    /// The concept half of `check`: every mention belongs to a committed chunk and names a
    /// concept with a row; every concept row is mentioned.
    async fn check_concepts(
        &self,
        rep: &mut CheckReport,
        rows: &[SourceRecord],
        keys_v: &[(String, String, String)],
    ) -> Result<Vec<String>> {
        let committed: HashMap<&str, &str> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.content_hash.as_str()))
            .collect();
        let valid: HashSet<&str> = keys_v
            .iter()
            .filter(|(_, s, h)| committed.get(s.as_str()) == Some(&h.as_str()))
            .map(|(c, _, _)| c.as_str())
            .collect();
        let concept_ids = self.concepts.concept_ids().await?;
        let mentions = self.concepts.mentions_where(None).await?;
        let mut mentioned: HashSet<&str> = HashSet::new();
        let mut affected = Vec::new();
        for m in &mentions {
            if !valid.contains(m.chunk_id.as_str()) {
                rep.orphan_mentions += 1;
                affected.push(m.source_id.clone());
            } else if !concept_ids.contains(&m.concept_id) {
                rep.dangling_mentions += 1;
            } else {
                mentioned.insert(m.concept_id.as_str());
            }
        }
        rep.orphan_concepts = concept_ids
            .iter()
            .filter(|id| !mentioned.contains(id.as_str()))
            .cloned()
            .collect();
        rep.orphan_concepts.sort();
        affected.sort();
        affected.dedup();
        Ok(affected)
    }

    fn compare(
        &self,
        rows: &[SourceRecord],
        keys_v: &[(String, String, String)],
        keys_k: &[(String, String, String)],
    ) -> Result<CheckReport> {
        let committed: HashMap<&str, &SourceRecord> =
            rows.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut rep = CheckReport {
            sources: rows.len(),
            chunks_vector: keys_v.len(),
            chunks_keyword: keys_k.len(),
            pending_journal: self.journal_files()?.len(),
            ..Default::default()
        };
        let mut valid: HashSet<&str> = HashSet::new();
        let mut seen_v: HashSet<&str> = HashSet::new();
        let mut per_source: HashMap<&str, u32> = HashMap::new();
        for (c, s, h) in keys_v {
            if !seen_v.insert(c) {
                rep.duplicate_chunks.push(c.clone());
            }
            match committed.get(s.as_str()) {
                Some(r) if r.content_hash == *h => {
                    valid.insert(c);
                    *per_source.entry(s).or_default() += 1;
                }
                _ => rep.orphan_vector_chunks.push(c.clone()),
            }
        }
        let mut seen_k: HashSet<&str> = HashSet::new();
        for (c, _, _) in keys_k {
            if !seen_k.insert(c) {
                rep.duplicate_chunks.push(c.clone());
            }
            if !valid.contains(c.as_str()) {
                rep.orphan_keyword_chunks.push(c.clone());
            }
        }
        for c in &valid {
            if !seen_k.contains(c) {
                rep.missing_keyword_chunks.push(c.to_string());
            }
        }
        for r in rows {
            if per_source.get(r.id.as_str()).copied().unwrap_or(0) != r.chunk_count {
                rep.half_written_sources.push(r.id.clone());
            }
        }
        rep.duplicate_chunks.sort();
        rep.duplicate_chunks.dedup();
        rep.missing_keyword_chunks.sort();
        Ok(rep)
    }

    /// Runs `check`, reconciles every affected source, and returns the report from before the
    /// repair plus the sources removed as half-written.
    pub async fn repair(&self) -> Result<(CheckReport, Vec<String>)> {
        self.require_writable()?;
        let rows = self.vectors.sources_where(None).await?;
        let keys_v = self.vectors.chunk_keys(None).await?;
        let keys_k = self.keywords.all_keys()?;
        let mut rep = self.compare(&rows, &keys_v, &keys_k)?;
        let mention_sources = self.check_concepts(&mut rep, &rows, &keys_v).await?;
        let _g = self.write_lock.lock().await;
        let mut ids: BTreeSet<String> = rep.affected_sources(&keys_v, &keys_k);
        ids.extend(mention_sources);
        let ids: Vec<String> = ids.into_iter().collect();
        let removed = self.reconcile(&ids).await?;
        if rep.dangling_mentions > 0 {
            // Mentions of a concept with no row (and so no vector) cannot be used: drop them.
            let known = self.concepts.concept_ids().await?;
            let mut dangling: Vec<String> = self
                .concepts
                .mentions_where(None)
                .await?
                .into_iter()
                .filter(|m| !known.contains(&m.concept_id))
                .map(|m| m.concept_id)
                .collect();
            dangling.sort();
            dangling.dedup();
            for part in dangling.chunks(500) {
                self.concepts
                    .delete_mentions(&sql_in("concept_id", part))
                    .await?;
            }
        }
        self.load_graph(&self.committed_hashes().await?).await?;
        self.sync_all_concepts().await?;
        for f in self.journal_files()? {
            std::fs::remove_file(f)?;
        }
        Ok((rep, removed))
    }

    pub async fn stats(&self) -> Result<StoreStats> {
        let memory_index_rows = self.memory_read().as_ref().map(FlatIndex::len);
        let (concepts, concept_edges) = {
            let g = self.graph_read();
            (g.concept_count(), g.edge_count())
        };
        let ann = self
            .vectors
            .ann_state()
            .await?
            .map(|(kind, indexed_rows, unindexed_rows)| AnnState {
                kind,
                indexed_rows,
                unindexed_rows,
            });
        Ok(StoreStats {
            sources: self.vectors.count_sources().await?,
            chunks_vector: self.vectors.count_chunks().await?,
            chunks_keyword: self.keywords.num_docs() as usize,
            vector_bytes: dir_size(&self.dir.join("lance")),
            keyword_bytes: dir_size(&self.dir.join("tantivy")),
            ann_index: ann,
            memory_index_rows,
            concepts,
            concept_edges,
            mentions: self.concepts.count_mentions().await?,
        })
    }

    /// Waits until no write is in progress (for tests and orderly shutdown).
    pub async fn wait_idle(&self) {
        drop(self.write_lock.lock().await);
    }

    /// Post-write upkeep: ANN index build/refresh; compaction when `compact`.
    pub async fn maintain(
        &self,
        ann_min_rows: usize,
        ann_rebuild_rows: usize,
        compact: bool,
    ) -> Result<()> {
        self.require_writable()?;
        let _g = self.write_lock.lock().await;
        if compact {
            self.vectors.compact().await?;
            self.concepts.compact().await?;
        }
        self.vectors
            .maintain_ann(ann_min_rows, ann_rebuild_rows)
            .await?;
        Ok(())
    }
}

/// Rows for the concepts the mentions name that the store does not hold yet (`known` says
/// which it does), with their vectors and placeholder counts (the counts are written once the
/// mentions are in).
fn new_concept_rows(
    mentions: &[MentionRow],
    known: &dyn Fn(&str) -> bool,
    vectors: &HashMap<String, Vec<f32>>,
) -> Result<Vec<crate::graph::ConceptRow>> {
    let mut rows: BTreeMap<&str, crate::graph::ConceptRow> = BTreeMap::new();
    for m in mentions {
        if known(&m.concept_id) || rows.contains_key(m.concept_id.as_str()) {
            continue;
        }
        let vector = vectors.get(&m.concept_id).cloned().ok_or_else(|| {
            Error::internal(format!("no vector for the new concept `{}`", m.concept_id))
        })?;
        rows.insert(
            &m.concept_id,
            crate::graph::ConceptRow {
                id: m.concept_id.clone(),
                name: m.surface.split('|').next().unwrap_or_default().to_string(),
                aliases: Vec::new(),
                frequency: 0,
                source_count: 0,
                vector,
            },
        );
    }
    Ok(rows.into_values().collect())
}

/// What of a concept row the mentions determine (everything but the vector).
type RowKey = (String, Vec<String>, u32, u32);

fn row_key(r: &crate::graph::ConceptRow) -> RowKey {
    (
        r.name.clone(),
        r.aliases.clone(),
        r.frequency,
        r.source_count,
    )
}

/// Adds the mentions of committed chunk versions to the graph, chunk by chunk in id order (so
/// the graph does not depend on the order LanceDB returns rows in). Returns the mentions
/// skipped for want of a concept vector.
fn add_committed_mentions(
    g: &mut ConceptGraph,
    mentions: &[MentionRow],
    committed: &HashMap<String, String>,
    vectors: &dyn Fn(&str) -> Option<Vec<f32>>,
    touched: &mut BTreeSet<String>,
) -> usize {
    let mut by_chunk: BTreeMap<&str, (&str, Vec<&MentionRow>)> = BTreeMap::new();
    for m in mentions {
        if committed.get(&m.source_id) != Some(&m.content_hash) {
            continue;
        }
        by_chunk
            .entry(m.chunk_id.as_str())
            .or_insert((m.source_id.as_str(), Vec::new()))
            .1
            .push(m);
    }
    let mut skipped = 0;
    for (chunk, (source, mut ms)) in by_chunk {
        ms.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.concept_id.cmp(&b.concept_id))
        });
        let pairs: Vec<(String, String)> = ms
            .iter()
            .map(|m| (m.concept_id.clone(), m.surface.clone()))
            .collect();
        skipped += g.add_chunk(chunk, source, &pairs, vectors, touched);
    }
    skipped
}

/// Test hook for the crash test: when `CAIRN_CRASH_AT` names this point, the process aborts
/// here (as a kill -9 would). Compiled in always; costs one env lookup per write.
fn crash_point(name: &str) {
    if let Ok(at) = std::env::var("CAIRN_CRASH_AT") {
        if at == name {
            // Count-based: CAIRN_CRASH_AFTER=N lets N writes pass first.
            let n: usize = std::env::var("CAIRN_CRASH_AFTER")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            static HITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            if HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= n {
                eprintln!("cairn: crash point {name} reached, aborting");
                std::process::abort();
            }
        }
    }
}
