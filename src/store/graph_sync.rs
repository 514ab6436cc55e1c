//! The in-memory concept graph kept in step with the committed mentions: loaded at open,
//! refreshed after each committed write, and the concept rows a write adds.

use super::*;

impl Store {
    pub(super) fn graph_write(&self) -> std::sync::RwLockWriteGuard<'_, ConceptGraph> {
        self.graph.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn graph_read(&self) -> std::sync::RwLockReadGuard<'_, ConceptGraph> {
        self.graph.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the in-memory graph from the committed mentions and the concept rows' vectors.
    pub(super) async fn load_graph(&self, committed: &HashMap<String, String>) -> Result<()> {
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
    pub(super) async fn sync_all_concepts(&self) -> Result<()> {
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
    pub(super) async fn sync_concepts(&self, touched: BTreeSet<String>) -> Result<()> {
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
    pub(super) async fn refresh_graph(&self, sources: &[String]) -> Result<BTreeSet<String>> {
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
}

/// The caller's concept vectors plus those of the new concepts it did not embed because it
/// saw them in the graph, which a concurrent delete has emptied since: embedded now with
/// `embed` (under the write lock; it is rare and a few names).
pub(super) async fn complete_vectors(
    mentions: &[MentionRow],
    known: &HashMap<String, Vec<f32>>,
    mut vectors: HashMap<String, Vec<f32>>,
    embed: Option<&super::NameEmbedder>,
) -> Result<HashMap<String, Vec<f32>>> {
    let mut missing: BTreeMap<String, String> = BTreeMap::new();
    for m in mentions {
        if !known.contains_key(&m.concept_id) && !vectors.contains_key(&m.concept_id) {
            let name = m.main_surface().to_string();
            missing.entry(m.concept_id.clone()).or_insert(name);
        }
    }
    let Some(embed) = embed.filter(|_| !missing.is_empty()) else {
        return Ok(vectors);
    };
    tracing::info!(
        concepts = missing.len(),
        "concepts removed by a concurrent delete: embedding their names again"
    );
    let (ids, names): (Vec<String>, Vec<String>) = missing.into_iter().unzip();
    let got = embed(names).await?;
    vectors.extend(ids.into_iter().zip(got));
    Ok(vectors)
}

/// Rows for the concepts the mentions name that the store does not hold yet (`known` says
/// which it does), with their vectors and placeholder counts (the counts are written once the
/// mentions are in).
pub(super) fn new_concept_rows(
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
                name: m.main_surface().to_string(),
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

pub(super) fn row_key(r: &crate::graph::ConceptRow) -> RowKey {
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
pub(super) fn add_committed_mentions(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mention(concept: &str, surface: &str) -> MentionRow {
        MentionRow {
            concept_id: concept.into(),
            chunk_id: "c".into(),
            source_id: "s".into(),
            content_hash: "h".into(),
            surface: surface.into(),
            score: 1.0,
        }
    }

    /// The race fifty-kills found: an upload saw `ston` in the graph (so did not embed it), a
    /// delete then removed its last mention, and the upload's write found it new.
    #[tokio::test]
    async fn a_concept_emptied_meanwhile_is_embedded_under_the_lock() {
        let mentions = [mention("ston", "stone|stones"), mention("path", "path")];
        let known = HashMap::new();
        let given = HashMap::from([("path".to_string(), vec![0.5])]);
        // Without an embedder the write cannot make the row, and says which concept.
        let v = complete_vectors(&mentions, &known, given.clone(), None)
            .await
            .unwrap();
        let e = new_concept_rows(&mentions, &|_| false, &v).unwrap_err();
        assert!(e.to_string().contains("`ston`"), "{e}");
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        let embed: super::super::NameEmbedder = std::sync::Arc::new(move |names: Vec<String>| {
            seen.lock().unwrap().extend(names.clone());
            Box::pin(async move { Ok(names.iter().map(|_| vec![1.0]).collect()) })
        });
        let v = complete_vectors(&mentions, &known, given, Some(&embed))
            .await
            .unwrap();
        // Only the missing name, its main surface form, is embedded.
        assert_eq!(*asked.lock().unwrap(), ["stone"]);
        let rows = new_concept_rows(&mentions, &|_| false, &v).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["path", "stone"]);
    }
}
