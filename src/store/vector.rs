//! The LanceDB half of the store: the `sources` table (one row per source, the commit point of
//! every write) and the `chunks` table (text, location, filter columns and the vector).
//!
//! The chunks table is the source of truth for chunk content: the keyword index can always be
//! rebuilt from it (see `store::Store::reconcile`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, RecordBatchIterator,
    StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb::index::Index;
use lancedb::query::{QueryBase, Select};
use lancedb::table::OptimizeAction;
use lancedb::{DistanceType, Table};

use super::rows::{id_vectors, read, read_each, string_list_field, strings, vector_field};
use super::{ChunkRecord, SourceRecord};
use crate::error::{Error, Result};

const SOURCES: &str = "sources";
const CHUNKS: &str = "chunks";

/// Columns of a chunk without its vector: what searches and repairs read.
const CHUNK_COLUMNS: [&str; 13] = [
    "chunk_id",
    "source_id",
    "content_hash",
    "ordinal",
    "text",
    "title",
    "section",
    "page",
    "char_start",
    "char_end",
    "file_type",
    "meta",
    "external_id",
];

pub struct VectorStore {
    /// The commit table (`sources` on disk): one row per committed source version
    /// ([`VectorStore::commit_sources`], [`VectorStore::retract_sources`]).
    sources: Table,
    /// Every chunk with its vector (a write's chunks land before its commit row).
    chunks: Table,
    dim: usize,
}

/// Quotes a string for a Lance SQL filter.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `col IN ('a', 'b')`.
pub fn sql_in(col: &str, values: &[String]) -> String {
    let list: Vec<String> = values.iter().map(|v| sql_str(v)).collect();
    format!("{col} IN ({})", list.join(", "))
}

fn sources_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("external_id", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("file_type", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new("chunk_count", DataType::UInt32, false),
        Field::new("metadata", DataType::Utf8, false),
        Field::new("size_bytes", DataType::UInt64, false),
        Field::new("created_at", DataType::Int64, false),
        Field::new("updated_at", DataType::Int64, false),
    ]))
}

fn chunks_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("source_id", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new("ordinal", DataType::UInt32, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("section", DataType::Utf8, false),
        Field::new("page", DataType::UInt32, true),
        Field::new("char_start", DataType::UInt32, false),
        Field::new("char_end", DataType::UInt32, false),
        Field::new("file_type", DataType::Utf8, false),
        string_list_field("meta"),
        Field::new("external_id", DataType::Utf8, false),
        vector_field(dim),
    ]))
}

/// The bounds of LanceDB's two caches for one store (`index.cache_mb`,
/// `index.metadata_cache_mb`). Lance's defaults are 6 GiB of index cache and 1 GiB of metadata
/// cache per connection, and the metadata cache fills with every table version a writer makes:
/// a server under steady writes grew its RSS by ~250 MB in ten minutes of issue 25's soak.
#[derive(Debug, Clone, Copy)]
pub struct CacheSizes {
    pub index_bytes: usize,
    pub metadata_bytes: usize,
}

/// The caches every LanceDB connection of one store shares, bounded (see above).
pub fn session(caches: CacheSizes) -> Arc<lancedb::Session> {
    Arc::new(lancedb::Session::new(
        caches.index_bytes,
        caches.metadata_bytes,
        Arc::new(lancedb::ObjectStoreRegistry::default()),
    ))
}

impl VectorStore {
    /// Opens (or creates) the tables under `dir`. A chunks table built with another embedding
    /// dimension is refused: its vectors cannot be compared with the configured model's.
    pub async fn open(dir: &Path, dim: usize, session: &Arc<lancedb::Session>) -> Result<Self> {
        let uri = dir.to_string_lossy().into_owned();
        let db = lancedb::connect(&uri)
            .session(session.clone())
            .execute()
            .await?;
        let names = db.table_names().execute().await?;
        let sources = if names.iter().any(|n| n == SOURCES) {
            db.open_table(SOURCES).execute().await?
        } else {
            db.create_empty_table(SOURCES, sources_schema())
                .execute()
                .await?
        };
        let chunks = if names.iter().any(|n| n == CHUNKS) {
            db.open_table(CHUNKS).execute().await?
        } else {
            db.create_empty_table(CHUNKS, chunks_schema(dim))
                .execute()
                .await?
        };
        let schema = chunks.schema().await?;
        let stored_dim = match schema
            .field_with_name("vector")
            .map(|f| f.data_type().clone())
        {
            Ok(DataType::FixedSizeList(_, d)) => d as usize,
            _ => {
                return Err(Error::internal(
                    "lancedb: chunks table has no vector column",
                ))
            }
        };
        if stored_dim != dim {
            return Err(Error::InvalidInput(format!(
                "the data dir {} holds {stored_dim}-dimensional vectors but the configured \
                 embedding model produces {dim}: use the model the data dir was built with, or \
                 a new data dir",
                dir.display()
            )));
        }
        Ok(Self {
            sources,
            chunks,
            dim,
        })
    }

    /// Dimension of the stored vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub async fn add_chunks(&self, chunks: &[ChunkRecord]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let batch = self.chunks_batch(chunks)?;
        let schema = batch.schema();
        let reader = RecordBatchIterator::new(vec![Ok(batch)], schema);
        self.chunks
            .add(Box::new(reader) as Box<dyn arrow_array::RecordBatchReader + Send>)
            .execute()
            .await?;
        Ok(())
    }

    fn chunks_batch(&self, chunks: &[ChunkRecord]) -> Result<RecordBatch> {
        let s = |f: fn(&ChunkRecord) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(chunks.iter().map(f)))
        };
        let mut meta = ListBuilder::new(StringBuilder::new());
        for c in chunks {
            for m in &c.meta {
                meta.values().append_value(m);
            }
            meta.append(true);
        }
        let mut flat = Vec::with_capacity(chunks.len() * self.dim);
        for c in chunks {
            if c.vector.len() != self.dim {
                return Err(Error::internal(format!(
                    "vector of {} dims for a {}-dim table",
                    c.vector.len(),
                    self.dim
                )));
            }
            flat.extend_from_slice(&c.vector);
        }
        let vectors = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            self.dim as i32,
            Arc::new(Float32Array::from(flat)),
            None,
        )?;
        let meta = meta.finish();
        // The builder names its item field "item" and makes it nullable, matching the schema.
        let batch = RecordBatch::try_new(
            chunks_schema(self.dim),
            vec![
                s(|c| &c.chunk_id),
                s(|c| &c.source_id),
                s(|c| &c.content_hash),
                Arc::new(UInt32Array::from_iter_values(
                    chunks.iter().map(|c| c.ordinal),
                )),
                s(|c| &c.text),
                s(|c| &c.title),
                s(|c| &c.section),
                Arc::new(UInt32Array::from(
                    chunks.iter().map(|c| c.page).collect::<Vec<_>>(),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    chunks.iter().map(|c| c.char_start),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    chunks.iter().map(|c| c.char_end),
                )),
                s(|c| &c.file_type),
                Arc::new(meta),
                s(|c| &c.external_id),
                Arc::new(vectors),
            ],
        )?;
        Ok(batch)
    }

    /// Inserts or replaces source rows (by id): the commit point of a write. A source (at a
    /// content hash) exists exactly when its row does; chunks written before it are invisible
    /// until it lands, and are rolled back if it never does (`Store::reconcile`).
    pub async fn commit_sources(&self, rows: &[SourceRecord]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let s = |f: fn(&SourceRecord) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let batch = RecordBatch::try_new(
            sources_schema(),
            vec![
                s(|r| r.id.clone()),
                s(|r| r.external_id.clone()),
                s(|r| r.title.clone()),
                s(|r| r.file_type.clone()),
                s(|r| r.content_hash.clone()),
                Arc::new(UInt32Array::from_iter_values(
                    rows.iter().map(|r| r.chunk_count),
                )),
                s(|r| serde_json::Value::Object(r.metadata.clone()).to_string()),
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.size_bytes),
                )),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.created_at),
                )),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.updated_at),
                )),
            ],
        )?;
        let schema = batch.schema();
        let reader = RecordBatchIterator::new(vec![Ok(batch)], schema);
        let mut merge = self.sources.merge_insert(&["id"]);
        merge
            .when_matched_update_all(None)
            .when_not_matched_insert_all();
        merge.execute(Box::new(reader)).await?;
        Ok(())
    }

    /// Removes source rows: the commit point of a delete (their chunks go after it).
    pub async fn retract_sources(&self, ids: &[String]) -> Result<()> {
        for part in ids.chunks(500) {
            self.sources.delete(sql_in("id", part).as_str()).await?;
        }
        Ok(())
    }

    pub async fn delete_chunks(&self, predicate: &str) -> Result<()> {
        self.chunks.delete(predicate).await?;
        Ok(())
    }

    /// Source rows matching a filter (all rows when `None`).
    pub async fn sources_where(&self, filter: Option<String>) -> Result<Vec<SourceRecord>> {
        let mut q = self.sources.query();
        if let Some(f) = filter {
            q = q.only_if(f);
        }
        read(q).await
    }

    pub async fn get_sources(&self, ids: &[String]) -> Result<Vec<SourceRecord>> {
        let mut out = Vec::new();
        for part in ids.chunks(500) {
            out.extend(self.sources_where(Some(sql_in("id", part))).await?);
        }
        Ok(out)
    }

    /// Sorted source ids greater than `after`, at most `limit` (for cursor pagination).
    pub async fn source_ids_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let mut q = self.sources.query().select(Select::columns(&["id"]));
        if let Some(a) = after {
            q = q.only_if(format!("id > {}", sql_str(a)));
        }
        let mut ids = read_each(q, |b| strings(b, "id")).await?;
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }

    /// `(chunk_id, source_id, content_hash)` of every chunk matching `filter`.
    pub async fn chunk_keys(
        &self,
        filter: Option<String>,
    ) -> Result<Vec<(String, String, String)>> {
        let mut q =
            self.chunks
                .query()
                .select(Select::columns(&["chunk_id", "source_id", "content_hash"]));
        if let Some(f) = filter {
            q = q.only_if(f);
        }
        read_each(q, |b| {
            let (c, s, h) = (
                strings(b, "chunk_id")?,
                strings(b, "source_id")?,
                strings(b, "content_hash")?,
            );
            Ok(c.into_iter()
                .zip(s)
                .zip(h)
                .map(|((c, s), h)| (c, s, h))
                .collect())
        })
        .await
    }

    /// Full chunk rows (without vectors) matching `filter`.
    pub async fn chunks_where(&self, filter: String) -> Result<Vec<ChunkRecord>> {
        let q = self
            .chunks
            .query()
            .select(Select::columns(&CHUNK_COLUMNS))
            .only_if(filter);
        let rows: Vec<(ChunkRecord, f32)> = read(q).await?;
        Ok(rows.into_iter().map(|(c, _)| c).collect())
    }

    /// The stored vectors of the given chunks.
    pub async fn vectors_of(&self, ids: &[String]) -> Result<HashMap<String, Vec<f32>>> {
        let mut out = HashMap::new();
        for part in ids.chunks(500) {
            let q = self
                .chunks
                .query()
                .select(Select::columns(&["chunk_id", "vector"]))
                .only_if(sql_in("chunk_id", part));
            out.extend(read_each(q, |b| id_vectors(b, "chunk_id")).await?);
        }
        Ok(out)
    }

    /// What the in-memory index holds of the chunks matching `filter`, each with its content
    /// hash (the caller keeps only committed versions).
    pub async fn memory_rows(
        &self,
        filter: Option<String>,
    ) -> Result<Vec<(super::flat::FlatEntry, String)>> {
        let mut q = self.chunks.query().select(Select::columns(&[
            "chunk_id",
            "source_id",
            "content_hash",
            "file_type",
            "meta",
            "vector",
        ]));
        if let Some(f) = filter {
            q = q.only_if(f);
        }
        read(q).await
    }

    /// Nearest chunks by cosine distance, optionally pre-filtered.
    pub async fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: Option<String>,
    ) -> Result<Vec<(ChunkRecord, f32)>> {
        let mut q = self
            .chunks
            .query()
            .nearest_to(vector)?
            .distance_type(DistanceType::Cosine)
            .limit(k)
            .nprobes(32)?
            .refine_factor(4)
            // Naming the distance column keeps Lance from adding it implicitly (and warning).
            .select(Select::columns(
                &[&CHUNK_COLUMNS[..], &["_distance"]].concat(),
            ));
        if let Some(f) = filter {
            q = q.only_if(f);
        }
        let mut out: Vec<(ChunkRecord, f32)> = read(q).await?;
        out.sort_by(|a, b| a.1.total_cmp(&b.1));
        Ok(out)
    }

    pub async fn count_chunks(&self) -> Result<usize> {
        Ok(self.chunks.count_rows(None).await?)
    }

    pub async fn count_sources(&self) -> Result<usize> {
        Ok(self.sources.count_rows(None).await?)
    }

    /// Name and coverage of the vector index, if one exists.
    pub async fn ann_state(&self) -> Result<Option<(String, usize, usize)>> {
        for idx in self.chunks.list_indices().await? {
            if idx.columns.iter().any(|c| c == "vector") {
                let stats = self.chunks.index_stats(&idx.name).await?;
                let (indexed, unindexed) = stats
                    .map(|s| (s.num_indexed_rows, s.num_unindexed_rows))
                    .unwrap_or((0, 0));
                return Ok(Some((idx.index_type.to_string(), indexed, unindexed)));
            }
        }
        Ok(None)
    }

    /// Builds the IVF-PQ index once the table reaches `min_rows`, and folds new rows into it
    /// once `rebuild_rows` are unindexed. Below `min_rows` searches stay exact.
    pub async fn maintain_ann(&self, min_rows: usize, rebuild_rows: usize) -> Result<bool> {
        let rows = self.count_chunks().await?;
        match self.ann_state().await? {
            None if rows >= min_rows && rows >= 256 => {
                let partitions = ((rows as f64).sqrt() as u32).clamp(1, 4096);
                let sub_vectors = if self.dim.is_multiple_of(16) {
                    self.dim / 16
                } else {
                    self.dim / 8
                };
                let builder = IvfPqIndexBuilder::default()
                    .distance_type(DistanceType::Cosine)
                    .num_partitions(partitions)
                    .num_sub_vectors(sub_vectors as u32);
                self.chunks
                    .create_index(&["vector"], Index::IvfPq(builder))
                    .execute()
                    .await?;
                tracing::info!(rows, partitions, "built ann vector index");
                Ok(true)
            }
            Some((_, _, unindexed)) if unindexed >= rebuild_rows => {
                self.chunks
                    .optimize(OptimizeAction::Index(Default::default()))
                    .await?;
                tracing::info!(unindexed, "folded new rows into the ann vector index");
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Compacts small fragments left by many small writes, and drops old versions.
    pub async fn compact(&self) -> Result<()> {
        for t in [&self.chunks, &self.sources] {
            compact_table(t).await?;
        }
        Ok(())
    }
}

/// Row count up to which compaction merges a table's fragments. Lance's default (a million)
/// makes every fragment of a smaller table a candidate, so each compaction rewrote the whole
/// table; at this size a compaction rewrites the fragments written since the last one and the
/// last partly filled one, and a table's fragments stay few (a million chunks: ~120).
const FRAGMENT_ROWS: usize = 8_192;

/// Table versions made longer ago than this are pruned (the latest is always kept): a read in
/// flight uses a version for far less. Lance keeps every version (and the files only old
/// versions use) for 7 days by default: at a write a second, gigabytes of dead files a day.
const KEEP_VERSIONS_MIN: i64 = 5;

/// Table upkeep after many small writes: old versions are pruned (first, so that the version
/// the compaction supersedes stays readable until the next upkeep), then small fragments are
/// merged and deletions materialised.
pub(super) async fn compact_table(t: &Table) -> Result<()> {
    t.optimize(OptimizeAction::Prune {
        older_than: chrono::Duration::try_minutes(KEEP_VERSIONS_MIN),
        delete_unverified: Some(false),
        error_if_tagged_old_versions: Some(false),
    })
    .await?;
    t.optimize(OptimizeAction::Compact {
        options: lancedb::table::CompactionOptions {
            target_rows_per_fragment: FRAGMENT_ROWS,
            ..Default::default()
        },
        remap_options: None,
    })
    .await?;
    Ok(())
}

/// Groups `(chunk_id, source_id, hash)` keys by source.
pub fn by_source(keys: &[(String, String, String)]) -> HashMap<&str, Vec<(&str, &str)>> {
    let mut m: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for (c, s, h) in keys {
        m.entry(s.as_str())
            .or_default()
            .push((c.as_str(), h.as_str()));
    }
    m
}
