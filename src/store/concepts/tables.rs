//! The concept tables in LanceDB: `mentions` (which chunk of which source version mentions
//! which concept) and `concepts` (id, name, aliases, frequency and the name's embedding).
//!
//! Mentions follow their chunks through the store's write protocol: they are written with the
//! chunks, keyed by `(source_id, content_hash)`, and deleted or reconciled with them, so a
//! mention never outlives its chunk. Concept rows are derived from the mentions (frequency,
//! aliases) except for the embedding, which is stored once when a concept first appears. A new
//! concept's row is written *before* its first mention, and a row is deleted once no mention is
//! left, so a crash can leave at worst a row with no mention, which the next start removes.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, RecordBatchIterator, StringArray,
    UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lancedb::query::{QueryBase, Select};
use lancedb::Table;

use crate::error::{Error, Result};
use crate::graph::{ConceptRow, MentionRow};
use crate::store::rows::{id_vectors, read, read_each, string_list_field, strings, vector_field};
use crate::store::vector::sql_in;

const CONCEPTS: &str = "concepts";
const MENTIONS: &str = "mentions";

pub struct ConceptTables {
    concepts: Table,
    mentions: Table,
    dim: usize,
    /// The mentions table did not exist when the store was opened (a data dir from before the
    /// concept graph): its chunks have no mentions until they are backfilled.
    pub created: bool,
}

fn concepts_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        string_list_field("aliases"),
        Field::new("frequency", DataType::UInt32, false),
        Field::new("source_count", DataType::UInt32, false),
        vector_field(dim),
    ]))
}

fn mentions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("concept_id", DataType::Utf8, false),
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("source_id", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new("surface", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]))
}

fn reader(batch: RecordBatch) -> Box<dyn arrow_array::RecordBatchReader + Send> {
    let schema = batch.schema();
    Box::new(RecordBatchIterator::new(vec![Ok(batch)], schema))
}

impl ConceptTables {
    pub async fn open(dir: &Path, dim: usize, session: &Arc<lancedb::Session>) -> Result<Self> {
        let uri = dir.to_string_lossy().into_owned();
        let db = lancedb::connect(&uri)
            .session(session.clone())
            .execute()
            .await?;
        let names = db.table_names().execute().await?;
        let concepts = if names.iter().any(|n| n == CONCEPTS) {
            db.open_table(CONCEPTS).execute().await?
        } else {
            db.create_empty_table(CONCEPTS, concepts_schema(dim))
                .execute()
                .await?
        };
        let created = !names.iter().any(|n| n == MENTIONS);
        let mentions = if created {
            db.create_empty_table(MENTIONS, mentions_schema())
                .execute()
                .await?
        } else {
            db.open_table(MENTIONS).execute().await?
        };
        Ok(Self {
            concepts,
            mentions,
            dim,
            created,
        })
    }

    pub async fn add_mentions(&self, rows: &[MentionRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let s = |f: fn(&MentionRow) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let batch = RecordBatch::try_new(
            mentions_schema(),
            vec![
                s(|m| &m.concept_id),
                s(|m| &m.chunk_id),
                s(|m| &m.source_id),
                s(|m| &m.content_hash),
                s(|m| &m.surface),
                Arc::new(Float32Array::from_iter_values(rows.iter().map(|m| m.score))),
            ],
        )?;
        self.mentions.add(reader(batch)).execute().await?;
        Ok(())
    }

    pub async fn delete_mentions(&self, predicate: &str) -> Result<()> {
        self.mentions.delete(predicate).await?;
        Ok(())
    }

    /// Mention rows matching `filter` (all when `None`).
    pub async fn mentions_where(&self, filter: Option<String>) -> Result<Vec<MentionRow>> {
        let mut q = self.mentions.query();
        if let Some(f) = filter {
            q = q.only_if(f);
        }
        read(q).await
    }

    pub async fn count_mentions(&self) -> Result<usize> {
        Ok(self.mentions.count_rows(None).await?)
    }

    /// Inserts or replaces concept rows (by id).
    pub async fn upsert_concepts(&self, rows: &[ConceptRow]) -> Result<()> {
        for part in rows.chunks(2000) {
            self.upsert_part(part).await?;
        }
        Ok(())
    }

    async fn upsert_part(&self, rows: &[ConceptRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut aliases = ListBuilder::new(StringBuilder::new());
        let mut flat = Vec::with_capacity(rows.len() * self.dim);
        for r in rows {
            for a in &r.aliases {
                aliases.values().append_value(a);
            }
            aliases.append(true);
            if r.vector.len() != self.dim {
                return Err(Error::internal(format!(
                    "concept vector of {} dims for a {}-dim table",
                    r.vector.len(),
                    self.dim
                )));
            }
            flat.extend_from_slice(&r.vector);
        }
        let vectors = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            self.dim as i32,
            Arc::new(Float32Array::from(flat)),
            None,
        )?;
        let batch = RecordBatch::try_new(
            concepts_schema(self.dim),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.id))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.name))),
                Arc::new(aliases.finish()),
                Arc::new(UInt32Array::from_iter_values(
                    rows.iter().map(|r| r.frequency),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    rows.iter().map(|r| r.source_count),
                )),
                Arc::new(vectors),
            ],
        )?;
        let mut merge = self.concepts.merge_insert(&["id"]);
        merge
            .when_matched_update_all(None)
            .when_not_matched_insert_all();
        merge.execute(reader(batch)).await?;
        Ok(())
    }

    pub async fn delete_concepts(&self, ids: &[String]) -> Result<()> {
        for part in ids.chunks(500) {
            self.concepts.delete(sql_in("id", part).as_str()).await?;
        }
        Ok(())
    }

    /// Every concept row; the vectors (most of the bytes) only when asked for, else empty.
    pub async fn all_concepts(&self, with_vectors: bool) -> Result<Vec<ConceptRow>> {
        let columns = [
            "id",
            "name",
            "aliases",
            "frequency",
            "source_count",
            "vector",
        ];
        let n = if with_vectors { 6 } else { 5 };
        read(self.concepts.query().select(Select::columns(&columns[..n]))).await
    }

    /// The ids of every concept row (without reading the vectors).
    pub async fn concept_ids(&self) -> Result<std::collections::HashSet<String>> {
        let q = self.concepts.query().select(Select::columns(&["id"]));
        Ok(read_each(q, |b| strings(b, "id"))
            .await?
            .into_iter()
            .collect())
    }

    /// The stored vectors of the given concepts.
    pub async fn vectors_of(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<f32>>> {
        let mut out = std::collections::HashMap::new();
        for part in ids.chunks(500) {
            let q = self
                .concepts
                .query()
                .select(Select::columns(&["id", "vector"]))
                .only_if(sql_in("id", part));
            out.extend(read_each(q, |b| id_vectors(b, "id")).await?);
        }
        Ok(out)
    }

    /// Compacts small fragments left by many small writes, and drops old versions.
    pub async fn compact(&self) -> Result<()> {
        for t in [&self.concepts, &self.mentions] {
            crate::store::vector::compact_table(t).await?;
        }
        Ok(())
    }

    pub async fn count_concepts(&self) -> Result<usize> {
        Ok(self.concepts.count_rows(None).await?)
    }
}
