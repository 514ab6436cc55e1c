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
//! 5. deletes the sources' chunks whose hash is not the committed one from LanceDB (for the
//!    sources that replace a committed version: a new source has no other chunks);
//! 6. removes the journal file.
//!
//! A delete journals, removes the `sources` row (commit point), then the chunks from both.
//! After a crash at any step, [`Store::open`] replays every journal file with
//! [`Store::reconcile`]: for each named source, LanceDB chunks that do not match the committed
//! row are deleted, and tantivy is rewritten from the surviving LanceDB chunks. So a chunk is
//! never in one index and not the other, and an acknowledged source is never lost.
//! `cairn check` verifies the invariant over the whole store; `--repair` reconciles everything.

mod check;
mod concepts;
pub mod flat;
mod group;
mod journal;
pub mod keyword;
mod records;
mod rows;
pub mod snippet;
pub mod stem;
pub mod vector;

pub use check::CheckReport;
pub use journal::free_bytes;
use journal::{crash_point, sync_fs, Laps};
pub use records::{meta_terms, meta_values, ChunkRecord, Filters, SourceRecord};
pub use vector::CacheSizes;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::graph::{ConceptGraph, MentionRow};
use concepts::{ConceptStore, Staged};
use flat::{FlatEntry, FlatIndex};
use keyword::KeywordIndex;
use vector::{sql_in, sql_str, VectorStore};

/// Embeds concept names, for a write that finds concepts new which its caller saw in the
/// graph (a concurrent delete removed their last mention meanwhile).
pub type NameEmbedder = Arc<
    dyn Fn(Vec<String>) -> futures::future::BoxFuture<'static, Result<Vec<Vec<f32>>>> + Send + Sync,
>;

/// The concept half of an upsert: the batch's mentions, and the name embeddings of the
/// concepts they mention (needed only for concepts the store does not hold yet).
#[derive(Default)]
pub struct ConceptWrite {
    pub mentions: Vec<MentionRow>,
    pub vectors: HashMap<String, Vec<f32>>,
    /// Embeds the names of new concepts that `vectors` lacks; without it such a write fails.
    pub embed_names: Option<NameEmbedder>,
}

/// Commits between two compactions of the tables (each write appends small fragments and
/// a table version to each).
const COMPACT_EVERY_COMMITS: usize = 16;

/// Free space under which a failed write counts as a full disk.
const LOW_SPACE_BYTES: u64 = 4 << 20;

/// What an upsert writes once its journal entry exists (the batch less what was unchanged).
struct Written<'a> {
    ids: &'a [String],
    sources: Vec<SourceRecord>,
    /// Those of `sources` that replace a committed version (the others have no chunks yet:
    /// a failed write's are removed before the next write starts).
    replacing: Vec<SourceRecord>,
    chunks: Vec<ChunkRecord>,
    concepts: Staged,
}

/// The combined store.
pub struct Store {
    dir: PathBuf,
    /// LanceDB: the `sources` table (every write's commit point) and the chunks with their
    /// vectors (the source of truth for chunk content).
    vectors: VectorStore,
    /// tantivy: BM25 over the same chunks, derived from LanceDB's.
    keywords: Arc<KeywordIndex>,
    /// The concept tables and the graph of the committed mentions: every concept write goes
    /// through it (see `concepts.rs`).
    concepts: ConceptStore,
    /// LanceDB's caches, shared by both connections (bounded: see `vector::session`).
    session: Arc<lancedb::Session>,
    /// The committed chunk vectors in memory (see `flat`), `None` when the store is larger
    /// than `memory_max_rows` or the copy is off.
    memory: Arc<std::sync::RwLock<Option<FlatIndex>>>,
    memory_max_rows: usize,
    writable: bool,
    /// Serialises writes: one batch at a time goes through the protocol above.
    write_lock: Mutex<()>,
    /// Writes waiting for `write_lock`, committed together by the next holder (`group.rs`).
    queue: group::WriteQueue,
    /// Commits since the store was opened, and their number at the last compaction.
    commits: std::sync::atomic::AtomicUsize,
    compacted_at: std::sync::atomic::AtomicUsize,
    /// An after-write upkeep is waiting for the write lock (the others leave it the work).
    upkeep_waiting: AtomicBool,
    /// A failed write's roll-back failed too: its journal waits for the next write.
    interrupted: AtomicBool,
    /// The last write failed for lack of space (readiness and `/metrics` report it).
    out_of_space: AtomicBool,
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

/// Read access for the services: the store's parts stay private, so every write goes
/// through the protocol above.
impl Store {
    /// The BM25 index (searches and snippets read it directly, on the runtime or a blocking
    /// thread).
    pub fn keywords(&self) -> &Arc<KeywordIndex> {
        &self.keywords
    }

    /// The in-memory concept graph, for readers on blocking threads.
    pub fn graph(&self) -> Arc<std::sync::RwLock<ConceptGraph>> {
        self.concepts.graph()
    }

    /// The in-memory concept graph, for a short read on the runtime.
    pub fn graph_read(&self) -> std::sync::RwLockReadGuard<'_, ConceptGraph> {
        self.concepts.graph_read()
    }

    /// Whether this open created the concept tables (a data dir from before the graph).
    pub fn concepts_created(&self) -> bool {
        self.concepts.created()
    }

    /// Concepts stored.
    pub async fn count_concepts(&self) -> Result<usize> {
        self.concepts.count_concepts().await
    }

    /// Committed sources by id (those that exist).
    pub async fn get_sources(&self, ids: &[String]) -> Result<Vec<SourceRecord>> {
        self.vectors.get_sources(ids).await
    }

    /// Up to `limit` committed source ids after `after`, in id order (a page of `/sources`).
    pub async fn source_ids_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.vectors.source_ids_after(after, limit).await
    }

    /// Every committed source.
    pub async fn all_sources(&self) -> Result<Vec<SourceRecord>> {
        self.vectors.sources_where(None).await
    }

    /// Every chunk of the given sources.
    pub async fn chunks_of_sources(&self, ids: &[String]) -> Result<Vec<ChunkRecord>> {
        self.vectors.chunks_where(sql_in("source_id", ids)).await
    }

    /// Committed sources (a cheap read: the health check's probe of LanceDB).
    pub async fn count_sources(&self) -> Result<usize> {
        self.vectors.count_sources().await
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
        caches: vector::CacheSizes,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir.join("journal"))?;
        let keywords = Arc::new(KeywordIndex::open(
            &dir.join("tantivy"),
            writable,
            snippet_chars,
            doc_cache_blocks,
        )?);
        let session = vector::session(caches);
        let vectors = VectorStore::open(&dir.join("lance"), dim, &session).await?;
        let concepts = ConceptStore::open(&dir.join("lance"), dim, &session).await?;
        let store = Self {
            dir: dir.to_path_buf(),
            vectors,
            keywords,
            concepts,
            session,
            memory: Default::default(),
            memory_max_rows,
            writable,
            write_lock: Mutex::new(()),
            queue: Default::default(),
            commits: Default::default(),
            compacted_at: Default::default(),
            upkeep_waiting: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            out_of_space: AtomicBool::new(false),
        };
        // The graph and the vector copy first: replaying the journal updates them like any write.
        let committed = store.committed_hashes().await?;
        store.concepts.load(&committed).await?;
        store.load_memory(&committed).await?;
        if writable {
            store.replay_journal().await?;
            store.concepts.resync().await?;
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

    /// The committed content hashes of those of `ids` that have a `sources` row.
    async fn committed_of(&self, ids: &[String]) -> Result<HashMap<String, String>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.vectors.get_sources(ids).await?;
        Ok(rows.into_iter().map(|r| (r.id, r.content_hash)).collect())
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

    /// For the chunks among `ids` that the in-memory vector copy holds: their source when they
    /// pass `filters`, `None` when not (no I/O; empty without the copy).
    pub fn memory_sources(
        &self,
        ids: &[String],
        filters: &Filters,
    ) -> HashMap<String, Option<String>> {
        let m = self.memory_read();
        m.as_ref()
            .map(|ix| ix.sources_passing(ids, filters))
            .unwrap_or_default()
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

    pub fn dir(&self) -> &Path {
        &self.dir
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
    /// race) is skipped. Writes queued meanwhile are committed with it (`group.rs`).
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
        self.submit(group::Op::Upsert {
            sources,
            chunks,
            concepts,
        })
        .await
    }

    /// Whether the last write failed for lack of space (and none has succeeded since).
    pub fn out_of_space(&self) -> bool {
        self.out_of_space.load(Ordering::Relaxed)
    }

    fn note_space<T>(&self, r: &Result<T>) {
        match r {
            Ok(_) => self.out_of_space.store(false, Ordering::Relaxed),
            Err(Error::NoSpace(_)) => self.out_of_space.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
    }

    /// An upsert with the write lock held.
    async fn upsert_now(
        &self,
        mut sources: Vec<SourceRecord>,
        mut chunks: Vec<ChunkRecord>,
        concepts: ConceptWrite,
    ) -> Result<Vec<String>> {
        self.finish_interrupted().await?;
        let ids: Vec<String> = sources.iter().map(|s| s.id.clone()).collect();
        let stored = self.committed_of(&ids).await?;
        let same = |id: &str, hash: &str| stored.get(id).is_some_and(|h| h == hash);
        sources.retain(|s| !same(&s.id, &s.content_hash));
        chunks.retain(|c| !same(&c.source_id, &c.content_hash));
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let mut laps = Laps::new("upsert");
        let changed = |m: &MentionRow| !same(&m.source_id, &m.content_hash);
        let concepts = self.concepts.prepare(concepts, &changed).await?;
        let ids: Vec<String> = sources.iter().map(|s| s.id.clone()).collect();
        laps.lap("prepare");
        let journal = self.journal_begin("upsert", &ids)?;
        crash_point("after_journal");
        laps.lap("journal");
        let replacing = sources
            .iter()
            .filter(|s| stored.contains_key(&s.id))
            .cloned()
            .collect();
        let written = Written {
            ids: &ids,
            sources,
            replacing,
            chunks,
            concepts,
        };
        let r = self.upsert_journaled(written, &mut laps).await;
        self.settle(&journal, &ids, r).await?;
        laps.lap("settle");
        laps.log(ids.len());
        Ok(ids)
    }

    /// The steps of an upsert between its journal's creation and removal.
    async fn upsert_journaled(&self, w: Written<'_>, laps: &mut Laps) -> Result<()> {
        let Written {
            ids,
            sources,
            replacing,
            chunks,
            concepts,
        } = w;
        self.vectors.add_chunks(&chunks).await?;
        laps.lap("chunks");
        self.concepts.stage(&concepts).await?;
        crash_point("after_vectors");
        laps.lap("mentions");
        self.keywords.replace(ids, &chunks)?;
        crash_point("after_keywords");
        laps.lap("tantivy");
        // New chunks reach the disk before the row that commits them, and the row before the ack.
        sync_fs(&self.dir);
        laps.lap("sync");
        self.vectors.commit_sources(&sources).await?;
        laps.lap("commit");
        sync_fs(&self.dir);
        crash_point("after_commit");
        laps.lap("sync");
        self.delete_stale_vector_chunks(&replacing).await?;
        laps.lap("stale");
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
            self.memory_replace(ids, add);
        }
        let committed: HashMap<String, String> = sources
            .iter()
            .map(|s| (s.id.clone(), s.content_hash.clone()))
            .collect();
        self.concepts.apply(concepts, ids, &committed).await?;
        laps.lap("graph");
        Ok(())
    }

    /// Ends a journaled write. When it failed part-way (a full disk, an I/O error), its
    /// sources are reconciled at once — rolled back to their last committed version, or
    /// forward when the commit point was passed — so nothing half-written stays and no
    /// restart is needed. If that fails too (the disk is still full), the journal stays and
    /// the next write finishes it first ([`Store::finish_interrupted`]). Returns the write's
    /// own error.
    async fn settle(&self, journal: &Path, ids: &[String], r: Result<()>) -> Result<()> {
        let Err(e) = r else {
            return self.journal_end(journal);
        };
        // A failure that names no cause (a writer thread that died) on a disk with next to no
        // space left is the full disk.
        let e = if free_bytes(&self.dir).is_some_and(|b| b < LOW_SPACE_BYTES) {
            e.into_no_space()
        } else {
            e
        };
        tracing::warn!(error = %e.chain(), sources = ids.len(), "write failed; rolling it back");
        // As at start-up: the sources' chunks, indexes and graph, then the concept rows a
        // failed first step may have added with no mention yet.
        let rolled_back = async {
            self.reconcile(ids).await?;
            self.concepts.resync().await
        };
        match rolled_back.await {
            Ok(()) => {
                if let Err(e2) = self.journal_end(journal) {
                    tracing::warn!(error = %e2.chain(), "could not remove the journal entry");
                    self.interrupted.store(true, Ordering::SeqCst);
                }
            }
            Err(e2) => {
                tracing::warn!(error = %e2.chain(), "roll-back failed; the next write retries it");
                self.interrupted.store(true, Ordering::SeqCst);
            }
        }
        Err(e)
    }

    /// Finishes writes whose roll-back failed (their journal files are still there), before a
    /// new write starts. Call with the write lock held.
    async fn finish_interrupted(&self) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            self.replay_journal().await?;
            self.concepts.resync().await?;
            self.interrupted.store(false, Ordering::SeqCst);
            tracing::info!("interrupted writes finished");
        }
        Ok(())
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
            let sources = this.concepts.add(write).await?;
            let committed = this.committed_of(&sources).await?;
            this.concepts.refresh(&sources, &committed).await
        })
        .await
    }

    /// Deletes sources from both indexes. Returns the ids that existed. Like `upsert`, the
    /// write finishes even if the caller is dropped, and is committed with the deletes queued
    /// beside it.
    pub async fn delete(self: &Arc<Self>, ids: &[String]) -> Result<Vec<String>> {
        self.require_writable()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(group::Op::Delete { ids: ids.to_vec() }).await
    }

    /// A delete with the write lock held.
    async fn delete_now(&self, ids: &[String]) -> Result<Vec<String>> {
        self.finish_interrupted().await?;
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
        let mut laps = Laps::new("delete");
        let journal = self.journal_begin("delete", &existing)?;
        let r = self.delete_journaled(&existing).await;
        self.settle(&journal, &existing, r).await?;
        laps.lap("delete");
        laps.log(existing.len());
        Ok(existing)
    }

    /// The steps of a delete between its journal's creation and removal.
    async fn delete_journaled(&self, existing: &[String]) -> Result<()> {
        self.vectors.retract_sources(existing).await?;
        sync_fs(&self.dir);
        crash_point("after_delete_commit");
        self.keywords.replace(existing, &[])?;
        self.memory_replace(existing, Vec::new());
        for part in existing.chunks(500) {
            self.delete_chunks(&sql_in("source_id", part)).await?;
        }
        self.concepts.remove(existing).await
    }

    pub async fn stats(&self) -> Result<StoreStats> {
        let memory_index_rows = self.memory_read().as_ref().map(FlatIndex::len);
        let (concepts, concept_edges) = {
            let g = self.concepts.graph_read();
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

    /// Waits until no write is in progress, and brings the concept rows in line (for tests
    /// and orderly shutdown).
    pub async fn wait_idle(&self) {
        let _g = self.write_lock.lock().await;
        if self.writable {
            if let Err(e) = self.concepts.flush().await {
                tracing::warn!(error = %e.chain(), "could not write the concept rows; the next open does");
            }
        }
    }

    /// Holds every write back until the guard drops: they queue, and are then committed
    /// together (the group-commit tests; a pause for maintenance).
    pub async fn hold_writes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().await
    }

    /// Writes waiting for the writer.
    pub fn queued_writes(&self) -> usize {
        self.queue.len()
    }

    /// What LanceDB's two caches hold now: `(index, metadata)` bytes (`/metrics` reports them).
    pub async fn cache_bytes(&self) -> (usize, usize) {
        let index = self.session.index_cache_stats().await.size_bytes;
        let metadata = self.session.metadata_cache_stats().await.size_bytes;
        (index, metadata)
    }

    /// Commits (groups of writes through the protocol) since the store was opened.
    pub fn commits(&self) -> usize {
        self.commits.load(Ordering::Relaxed)
    }

    /// Upkeep after a write (the ingest service's, after each batch): the ANN index, and
    /// compaction with old-version pruning once [`COMPACT_EVERY_COMMITS`] commits have
    /// happened since the last. Writes that finish together share one upkeep: a caller that
    /// finds one waiting for the write lock leaves the work to it.
    pub async fn after_write(&self, ann_min_rows: usize, ann_rebuild_rows: usize) -> Result<()> {
        self.require_writable()?;
        if self.upkeep_waiting.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let _g = self.write_lock.lock().await;
        self.upkeep_waiting.store(false, Ordering::SeqCst);
        let since = self.commits() - self.compacted_at.load(Ordering::Relaxed);
        let compact = since >= COMPACT_EVERY_COMMITS;
        self.upkeep(ann_min_rows, ann_rebuild_rows, compact).await
    }

    /// Compaction, version pruning and the ANN index now (the end of a bulk ingest, `cairn
    /// optimize`).
    pub async fn maintain(&self, ann_min_rows: usize, ann_rebuild_rows: usize) -> Result<()> {
        self.require_writable()?;
        let _g = self.write_lock.lock().await;
        self.upkeep(ann_min_rows, ann_rebuild_rows, true).await
    }

    /// With the write lock held.
    async fn upkeep(
        &self,
        ann_min_rows: usize,
        ann_rebuild_rows: usize,
        compact: bool,
    ) -> Result<()> {
        if compact {
            let t = std::time::Instant::now();
            self.compacted_at.store(self.commits(), Ordering::Relaxed);
            self.concepts.flush().await?;
            self.vectors.compact().await?;
            self.concepts.compact().await?;
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "compacted the tables");
        }
        self.vectors
            .maintain_ann(ann_min_rows, ann_rebuild_rows)
            .await?;
        Ok(())
    }
}
