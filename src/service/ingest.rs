//! Ingest: extracted documents → content hash (unchanged sources are skipped) → chunks →
//! embeddings → one journaled store write per batch, with the chunks' concept mentions.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::*;
use crate::chunk::{self, ChunkConfig};
use crate::extract::{self, ExtractedDoc};
use crate::store::{meta_terms, ChunkRecord};

/// A parsed source ready to be chunked and embedded.
struct Prepared {
    file: String,
    doc: ExtractedDoc,
    external_id: String,
    source_id: String,
    content_hash: String,
    size_bytes: u64,
}

/// One source of a file: ready to write, or the report of why not.
enum FileSource {
    Ready(Prepared),
    Failed(IngestReport),
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

impl Cairn {
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
                for source in self.extract_file(file).await? {
                    self.queue(source, &mut pending, &mut reports, progress)
                        .await?;
                }
            }
            self.write_batch(pending, &mut reports, progress).await?;
            Ok(reports)
        }
        .instrument(span)
        .await
    }

    /// One file's sources, extracted in the sandbox (`crate::sandbox`) and prepared, or the
    /// report of each one that failed. A JSONL file gives one result per non-blank line, in
    /// order: their line numbers label the records (and identify those without an `id`).
    async fn extract_file(&self, file: IngestFile) -> Result<Vec<FileSource>> {
        let name = file.name.clone();
        let size = file.bytes.len() as u64;
        let jsonl = extract::FileType::from_name(&name) == Some(extract::FileType::Jsonl);
        let lines = if jsonl {
            record_lines(&file.bytes)
        } else {
            Vec::new()
        };
        let limits = self.config.ingest.extract_limits();
        let results = crate::sandbox::extract(file.name, file.bytes, limits).await?;
        let label_of = |i: usize| match lines.get(i) {
            Some(line) => format!("{name}#L{line}"),
            None => name.clone(),
        };
        let out = results.into_iter().enumerate().map(|(i, r)| match r {
            Ok(mut doc) => {
                for (k, v) in &file.metadata {
                    doc.metadata.entry(k.clone()).or_insert_with(|| v.clone());
                }
                let label = label_of(i);
                let external_id = doc.external_id.clone().unwrap_or_else(|| label.clone());
                // A record's size is its own text, not the whole file's.
                let size = if jsonl { text_bytes(&doc) } else { size };
                match self.prepare(label.clone(), doc, external_id, size) {
                    Ok(p) => FileSource::Ready(p),
                    Err(e) => FileSource::Failed(IngestReport::failed(&label, &e)),
                }
            }
            Err(e) => {
                let label = match &e {
                    extract::ExtractError::BadRecord { line, .. } => format!("{name}#L{line}"),
                    _ => label_of(i),
                };
                FileSource::Failed(IngestReport::failed(&label, &Error::from(e)))
            }
        });
        Ok(out.collect())
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
            let size = text_bytes(&doc);
            let source = match self.prepare(label.clone(), doc, external_id, size) {
                Ok(p) => FileSource::Ready(p),
                Err(e) => FileSource::Failed(IngestReport::failed(&label, &e)),
            };
            self.queue(source, &mut pending, &mut reports, progress)
                .await?;
        }
        self.write_batch(pending, &mut reports, progress).await?;
        Ok(reports)
    }

    /// Queues a prepared source (or reports a failed one), writing a batch once
    /// `ingest.batch_sources` are waiting.
    async fn queue(
        &self,
        source: FileSource,
        pending: &mut Vec<Prepared>,
        reports: &mut Vec<IngestReport>,
        progress: &(dyn Fn(&IngestReport) + Sync),
    ) -> Result<()> {
        match source {
            FileSource::Ready(p) => pending.push(p),
            FileSource::Failed(rep) => {
                progress(&rep);
                reports.push(rep);
            }
        }
        if pending.len() >= self.config.ingest.batch_sources {
            let batch = std::mem::take(pending);
            self.write_batch(batch, reports, progress).await?;
        }
        Ok(())
    }

    fn prepare(
        &self,
        file: String,
        doc: ExtractedDoc,
        external_id: String,
        size_bytes: u64,
    ) -> Result<Prepared> {
        // Serialised once: its size is capped and its text is hashed.
        let metadata = serde_json::Value::Object(doc.metadata.clone()).to_string();
        check_caps(&external_id, &metadata)?;
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
        h.update(metadata);
        let content_hash = hex::encode(&h.finalize()[..16]);
        Ok(Prepared {
            file,
            source_id: source_id_of(&external_id),
            external_id,
            doc,
            content_hash,
            size_bytes,
        })
    }

    /// Chunks, embeds and stores one batch; unchanged sources are skipped.
    async fn write_batch(
        &self,
        batch: Vec<Prepared>,
        reports: &mut Vec<IngestReport>,
        progress: &(dyn Fn(&IngestReport) + Sync),
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let _queued = QueueDepth::new(batch.len());
        let batch = last_occurrence_wins(batch);
        let ids: Vec<String> = batch.iter().map(|p| p.source_id.clone()).collect();
        let existing: HashMap<String, SourceRecord> = self
            .store
            .get_sources(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let (todo, unchanged) = split_unchanged(batch, &existing);
        for rep in unchanged {
            progress(&rep);
            reports.push(rep);
        }
        if todo.is_empty() {
            return Ok(());
        }
        let (todo, chunked) = self.chunk_all(todo).await?;
        let vectors = self.embed_chunks(&todo, &chunked).await?;
        let rows = Rows::build(todo, chunked, vectors, &existing);
        let concepts = self.concept_write(self.batch_mentions(&rows)).await?;
        // The store skips sources that another request stored with the same content meanwhile.
        let written: HashSet<String> = self
            .store
            .upsert(rows.sources, rows.records, concepts)
            .await?
            .into_iter()
            .collect();
        for mut rep in rows.reports {
            if !rep
                .source_id
                .as_ref()
                .is_some_and(|id| written.contains(id))
            {
                rep.status = IngestStatus::Unchanged;
            }
            metrics::counter!("cairn_ingest_sources_total", "status" => rep.status.as_str())
                .increment(1);
            metrics::counter!("cairn_ingest_chunks_total").increment(rep.chunks as u64);
            progress(&rep);
            reports.push(rep);
        }
        self.after_batch().await
    }

    /// Chunks every document on a blocking thread with the model's tokenizer.
    async fn chunk_all(
        &self,
        todo: Vec<Prepared>,
    ) -> Result<(Vec<Prepared>, Vec<Vec<chunk::Chunk>>)> {
        let cfg = self.chunk_config();
        let embedder = self.embedder.clone();
        blocking(move || {
            let chunked: Vec<Vec<chunk::Chunk>> = todo
                .iter()
                .map(|p| chunk::chunk_blocks(&p.doc.blocks, &cfg, embedder.tokenizer()))
                .collect();
            (todo, chunked)
        })
        .await
    }

    /// One vector per chunk, in order.
    async fn embed_chunks(
        &self,
        todo: &[Prepared],
        chunked: &[Vec<chunk::Chunk>],
    ) -> Result<Vec<Vec<f32>>> {
        let mut inputs = Vec::new();
        for (p, chunks) in todo.iter().zip(chunked) {
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
        Ok(vectors)
    }

    /// The concept mentions of a batch: acronyms are defined once per source and recognised
    /// in all its chunks.
    fn batch_mentions(&self, rows: &Rows) -> Vec<crate::graph::MentionRow> {
        let mut mentions = Vec::new();
        if self.config.graph.concepts_per_chunk == 0 {
            return mentions;
        }
        let mut start = 0;
        for s in &rows.sources {
            let n = s.chunk_count as usize;
            mentions.extend(self.source_mentions(rows.records[start..start + n].iter()));
            start += n;
        }
        mentions
    }

    /// Store upkeep after a committed batch: the ANN index, and compaction now and then
    /// (`Store::after_write`). The batch is committed whatever happens here: a failure is
    /// logged, and the next batch's upkeep tries again.
    async fn after_batch(&self) -> Result<()> {
        let index = &self.config.index;
        let upkeep = self
            .store
            .after_write(index.ann_min_rows, index.ann_rebuild_rows);
        if let Err(e) = upkeep.await {
            tracing::warn!(error = %e.chain(), "store upkeep after a write failed");
        }
        Ok(())
    }

    /// Compacts storage and refreshes the ANN index (end of a bulk ingest).
    pub async fn optimize(&self) -> Result<()> {
        let index = &self.config.index;
        self.store
            .maintain(index.ann_min_rows, index.ann_rebuild_rows)
            .await
    }

    /// Extracts the concepts of every stored chunk: a data dir written before the concept
    /// graph existed gets its graph on first open.
    pub(super) async fn backfill_concepts(&self) -> Result<()> {
        let sources = self.store.all_sources().await?;
        if sources.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            sources = sources.len(),
            "data dir predates the concept graph: extracting concepts from the stored chunks"
        );
        for part in sources.chunks(200) {
            let ids: Vec<String> = part.iter().map(|s| s.id.clone()).collect();
            let chunks = self.store.chunks_of_sources(&ids).await?;
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
                    let main = m.main_surface().to_string();
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
        let embedder = self.embedder.clone();
        let embed_names: crate::store::NameEmbedder = Arc::new(move |names: Vec<String>| {
            let e = embedder.clone();
            Box::pin(async move { blocking(move || e.embed(&names)).await? })
        });
        Ok(crate::store::ConceptWrite {
            mentions,
            vectors: ids.into_iter().zip(vectors).collect(),
            embed_names: Some(embed_names),
        })
    }
}

/// The line numbers (1-based) of a JSONL file's non-blank lines.
fn record_lines(bytes: &[u8]) -> Vec<usize> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
        .map(|(i, _)| i + 1)
        .collect()
}

/// A document's text size: a record's size is its own text.
fn text_bytes(doc: &ExtractedDoc) -> u64 {
    doc.blocks.iter().map(|b| b.text.len() as u64).sum()
}

/// The batch with only the last occurrence of each source id (the last one wins).
fn last_occurrence_wins(mut batch: Vec<Prepared>) -> Vec<Prepared> {
    let mut seen = HashSet::new();
    batch.reverse();
    batch.retain(|p| seen.insert(p.source_id.clone()));
    batch.reverse();
    batch
}

/// The sources to write, and the reports of those stored with the same content already.
fn split_unchanged(
    batch: Vec<Prepared>,
    existing: &HashMap<String, SourceRecord>,
) -> (Vec<Prepared>, Vec<IngestReport>) {
    let mut todo = Vec::new();
    let mut unchanged = Vec::new();
    for p in batch {
        match existing.get(&p.source_id) {
            Some(r) if r.content_hash == p.content_hash => unchanged.push(IngestReport {
                file: p.file,
                status: IngestStatus::Unchanged,
                source_id: Some(p.source_id),
                external_id: Some(p.external_id),
                title: Some(r.title.clone()),
                chunks: r.chunk_count,
                error: None,
            }),
            _ => todo.push(p),
        }
    }
    (todo, unchanged)
}

/// The rows of one batch's write and the report of each source in it.
struct Rows {
    sources: Vec<SourceRecord>,
    records: Vec<ChunkRecord>,
    reports: Vec<IngestReport>,
}

impl Rows {
    fn build(
        todo: Vec<Prepared>,
        chunked: Vec<Vec<chunk::Chunk>>,
        vectors: Vec<Vec<f32>>,
        existing: &HashMap<String, SourceRecord>,
    ) -> Self {
        let now = chrono::Utc::now().timestamp_millis();
        let mut vec_iter = vectors.into_iter();
        let mut rows = Rows {
            sources: Vec::new(),
            records: Vec::new(),
            reports: Vec::new(),
        };
        for (p, chunks) in todo.into_iter().zip(chunked) {
            let old = existing.get(&p.source_id);
            let meta = meta_terms(&p.doc.metadata);
            for c in &chunks {
                let vector = vec_iter.next().unwrap_or_default();
                rows.records.push(chunk_record(&p, c, &meta, vector));
            }
            rows.sources.push(SourceRecord {
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
            rows.reports.push(IngestReport {
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
        rows
    }
}

fn chunk_record(p: &Prepared, c: &chunk::Chunk, meta: &[String], vector: Vec<f32>) -> ChunkRecord {
    ChunkRecord {
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
        meta: meta.to_vec(),
        external_id: p.external_id.clone(),
        vector,
    }
}

/// Longest external id (a file name or path, a record's `id`), in characters: it is returned
/// in every `/sources` listing and search hit.
pub const MAX_EXTERNAL_ID_CHARS: usize = 1024;
/// Largest metadata object of one source, as JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Refuses a source whose id or metadata would bloat every listing that returns it.
fn check_caps(external_id: &str, metadata_json: &str) -> Result<()> {
    let chars = external_id.chars().count();
    if chars > MAX_EXTERNAL_ID_CHARS {
        return Err(Error::InvalidInput(format!(
            "the source's name or id is {chars} characters long; at most {MAX_EXTERNAL_ID_CHARS}"
        )));
    }
    let meta = metadata_json.len();
    if meta > MAX_METADATA_BYTES {
        return Err(Error::InvalidInput(format!(
            "the source's metadata is {meta} bytes as JSON; at most {MAX_METADATA_BYTES}"
        )));
    }
    Ok(())
}
