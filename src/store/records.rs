//! The rows the store holds and the filters over them: what the rest of Cairn reads and
//! writes through the store's facade.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::vector::{sql_in, sql_str};

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
    meta.iter()
        .flat_map(|(k, v)| meta_values(v).into_iter().map(move |s| format!("{k}={s}")))
        .collect()
}

/// One metadata value as the strings filters compare: a scalar as printed, each scalar of an
/// array; nothing for anything else.
pub fn meta_values(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
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
    /// Refuses a metadata condition that could not match as written: a value that is not a
    /// string, number or boolean (or a non-empty array of them). Such a value used to be
    /// dropped, which widened the results — a client separating tenants by metadata would have
    /// seen other tenants' chunks.
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in &self.metadata {
            let ok = match v {
                serde_json::Value::Array(items) => {
                    !items.is_empty() && items.iter().all(|i| scalar(i).is_some())
                }
                other => scalar(other).is_some(),
            };
            if !ok {
                return Err(format!(
                    "filters.metadata.{k} must be a string, number or boolean, or a non-empty \
                     array of them (all must match); got {v}"
                ));
            }
        }
        Ok(())
    }

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
