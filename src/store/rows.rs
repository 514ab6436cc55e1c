//! Reading LanceDB's Arrow answers into structs, one way for every table: a record type says
//! once how a row of a batch becomes a value ([`FromBatch`]), and every query collects through
//! [`read`] (or [`read_each`] for a projection that is no record type: ids, keys, vectors).
//!
//! Why: each query used to repeat execute → collect → downcast every column → loop, and the
//! same record was mapped in several places.

use arrow_array::{
    Array, FixedSizeListArray, Float32Array, Int64Array, ListArray, RecordBatch, StringArray,
    UInt32Array, UInt64Array,
};
use futures::TryStreamExt;
use lancedb::query::ExecutableQuery;

use super::flat::FlatEntry;
use super::{ChunkRecord, SourceRecord};
use crate::error::{Error, Result};
use crate::graph::{ConceptRow, MentionRow};

/// A value made from one row of a record batch.
pub(super) trait FromBatch: Sized {
    /// The values of `b`'s rows, in order (a row that cannot make one, such as a vector of
    /// another item type, is skipped).
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>>;
}

/// Runs `q` and reads every row of its answer as a `T`.
pub(super) async fn read<T: FromBatch>(q: impl ExecutableQuery) -> Result<Vec<T>> {
    read_each(q, T::from_batch).await
}

/// Runs `q` and maps each batch of its answer with `rows`.
pub(super) async fn read_each<T>(
    q: impl ExecutableQuery,
    rows: impl Fn(&RecordBatch) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let batches: Vec<RecordBatch> = q.execute().await?.try_collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(rows(b)?);
    }
    Ok(out)
}

/// A column of string lists (`aliases`, `meta`), as both tables declare it.
pub(super) fn string_list_field(name: &str) -> arrow_schema::Field {
    use arrow_schema::{DataType, Field};
    let item = Field::new("item", DataType::Utf8, true);
    Field::new(name, DataType::List(std::sync::Arc::new(item)), false)
}

/// The `vector` column of `dim` floats, as both tables declare it.
pub(super) fn vector_field(dim: usize) -> arrow_schema::Field {
    use arrow_schema::{DataType, Field};
    let item = Field::new("item", DataType::Float32, true);
    let list = DataType::FixedSizeList(std::sync::Arc::new(item), dim as i32);
    Field::new("vector", list, false)
}

/// A column of a batch as its concrete array type.
pub(super) fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::internal(format!("lancedb: column {name} missing or mistyped")))
}

/// Every value of a string column.
pub(super) fn strings(b: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let c = col::<StringArray>(b, name)?;
    Ok((0..b.num_rows()).map(|i| c.value(i).to_string()).collect())
}

/// `(id, vector)` of every row whose vector is `f32`, the id from column `id_col`.
pub(super) fn id_vectors(b: &RecordBatch, id_col: &str) -> Result<Vec<(String, Vec<f32>)>> {
    let id = col::<StringArray>(b, id_col)?;
    let vec = col::<FixedSizeListArray>(b, "vector")?;
    Ok((0..b.num_rows())
        .filter_map(|i| Some((id.value(i).to_string(), floats_at(vec, i)?)))
        .collect())
}

/// Row `i` of a list-of-strings column.
pub(super) fn strings_at(list: &ListArray, i: usize) -> Vec<String> {
    let v = list.value(i);
    v.as_any()
        .downcast_ref::<StringArray>()
        .map(|a| (0..a.len()).map(|j| a.value(j).to_string()).collect())
        .unwrap_or_default()
}

/// Row `i` of a vector column (`None` when its items are not `f32`).
pub(super) fn floats_at(vectors: &FixedSizeListArray, i: usize) -> Option<Vec<f32>> {
    let v = vectors.value(i);
    v.as_any()
        .downcast_ref::<Float32Array>()
        .map(|f| f.values().to_vec())
}

impl FromBatch for SourceRecord {
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let id = col::<StringArray>(b, "id")?;
        let ext = col::<StringArray>(b, "external_id")?;
        let title = col::<StringArray>(b, "title")?;
        let ft = col::<StringArray>(b, "file_type")?;
        let hash = col::<StringArray>(b, "content_hash")?;
        let cc = col::<UInt32Array>(b, "chunk_count")?;
        let meta = col::<StringArray>(b, "metadata")?;
        let size = col::<UInt64Array>(b, "size_bytes")?;
        let ca = col::<Int64Array>(b, "created_at")?;
        let ua = col::<Int64Array>(b, "updated_at")?;
        Ok((0..b.num_rows())
            .map(|i| SourceRecord {
                id: id.value(i).to_string(),
                external_id: ext.value(i).to_string(),
                title: title.value(i).to_string(),
                file_type: ft.value(i).to_string(),
                content_hash: hash.value(i).to_string(),
                chunk_count: cc.value(i),
                metadata: serde_json::from_str(meta.value(i)).unwrap_or_default(),
                size_bytes: size.value(i),
                created_at: ca.value(i),
                updated_at: ua.value(i),
            })
            .collect())
    }
}

/// A chunk row without its vector, with its `_distance` when the batch has one (else 0).
impl FromBatch for (ChunkRecord, f32) {
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let chunk_id = col::<StringArray>(b, "chunk_id")?;
        let source_id = col::<StringArray>(b, "source_id")?;
        let hash = col::<StringArray>(b, "content_hash")?;
        let ordinal = col::<UInt32Array>(b, "ordinal")?;
        let text = col::<StringArray>(b, "text")?;
        let title = col::<StringArray>(b, "title")?;
        let section = col::<StringArray>(b, "section")?;
        let page = col::<UInt32Array>(b, "page")?;
        let cs = col::<UInt32Array>(b, "char_start")?;
        let ce = col::<UInt32Array>(b, "char_end")?;
        let ft = col::<StringArray>(b, "file_type")?;
        let meta = col::<ListArray>(b, "meta")?;
        let ext = col::<StringArray>(b, "external_id")?;
        let dist = b
            .column_by_name("_distance")
            .and_then(|c| c.as_any().downcast_ref::<Float32Array>());
        Ok((0..b.num_rows())
            .map(|i| {
                let c = ChunkRecord {
                    chunk_id: chunk_id.value(i).to_string(),
                    source_id: source_id.value(i).to_string(),
                    content_hash: hash.value(i).to_string(),
                    ordinal: ordinal.value(i),
                    text: text.value(i).to_string(),
                    title: title.value(i).to_string(),
                    section: section.value(i).to_string(),
                    page: (!page.is_null(i)).then(|| page.value(i)),
                    char_start: cs.value(i),
                    char_end: ce.value(i),
                    file_type: ft.value(i).to_string(),
                    meta: strings_at(meta, i),
                    external_id: ext.value(i).to_string(),
                    vector: Vec::new(),
                };
                (c, dist.map(|d| d.value(i)).unwrap_or(0.0))
            })
            .collect())
    }
}

/// What the in-memory vector index holds of a chunk, with the chunk's content hash.
impl FromBatch for (FlatEntry, String) {
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let id = col::<StringArray>(b, "chunk_id")?;
        let source = col::<StringArray>(b, "source_id")?;
        let hash = col::<StringArray>(b, "content_hash")?;
        let ft = col::<StringArray>(b, "file_type")?;
        let meta = col::<ListArray>(b, "meta")?;
        let vec = col::<FixedSizeListArray>(b, "vector")?;
        Ok((0..b.num_rows())
            .filter_map(|i| {
                let entry = FlatEntry {
                    chunk_id: id.value(i).to_string(),
                    source_id: source.value(i).to_string(),
                    file_type: ft.value(i).to_string(),
                    meta: strings_at(meta, i),
                    vector: floats_at(vec, i)?,
                };
                Some((entry, hash.value(i).to_string()))
            })
            .collect())
    }
}

impl FromBatch for MentionRow {
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let cid = col::<StringArray>(b, "concept_id")?;
        let chunk = col::<StringArray>(b, "chunk_id")?;
        let src = col::<StringArray>(b, "source_id")?;
        let hash = col::<StringArray>(b, "content_hash")?;
        let surf = col::<StringArray>(b, "surface")?;
        let score = col::<Float32Array>(b, "score")?;
        Ok((0..b.num_rows())
            .map(|i| MentionRow {
                concept_id: cid.value(i).to_string(),
                chunk_id: chunk.value(i).to_string(),
                source_id: src.value(i).to_string(),
                content_hash: hash.value(i).to_string(),
                surface: surf.value(i).to_string(),
                score: score.value(i),
            })
            .collect())
    }
}

/// A concept row; its vector is empty when the query did not select the `vector` column.
impl FromBatch for ConceptRow {
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let id = col::<StringArray>(b, "id")?;
        let name = col::<StringArray>(b, "name")?;
        let aliases = col::<ListArray>(b, "aliases")?;
        let freq = col::<UInt32Array>(b, "frequency")?;
        let srcs = col::<UInt32Array>(b, "source_count")?;
        let vec = match b.column_by_name("vector") {
            Some(_) => Some(col::<FixedSizeListArray>(b, "vector")?),
            None => None,
        };
        Ok((0..b.num_rows())
            .map(|i| ConceptRow {
                id: id.value(i).to_string(),
                name: name.value(i).to_string(),
                aliases: strings_at(aliases, i),
                frequency: freq.value(i),
                source_count: srcs.value(i),
                vector: vec.and_then(|v| floats_at(v, i)).unwrap_or_default(),
            })
            .collect())
    }
}
