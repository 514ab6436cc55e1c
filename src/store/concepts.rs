//! The concept half of the store behind one entry point, [`ConceptStore`]: the LanceDB
//! tables (`tables.rs`) and the in-memory graph of the committed mentions, kept in step.
//!
//! The write protocol in `store/mod.rs` calls it at fixed points and nothing else writes
//! concepts or the graph:
//! - an upsert [`prepare`](ConceptStore::prepare)s its concepts before its journal entry (the
//!   vectors of new concepts, their rows), [`stage`](ConceptStore::stage)s them with its chunks
//!   (a new concept's row before any mention of it) and [`apply`](ConceptStore::apply)s them to
//!   the graph after the commit;
//! - a delete [`remove`](ConceptStore::remove)s its sources after the commit; chunk deletions
//!   take their mentions along ([`delete_mentions`](ConceptStore::delete_mentions));
//! - reconciliation [`refresh`](ConceptStore::refresh)es the graph from the committed mentions,
//!   and a failed write or a repair [`resync`](ConceptStore::resync)s the rows with the graph.
//!
//! After each of these a `concepts` row exists exactly for each concept the graph holds; the
//! rows' derived columns (name, aliases, counts) follow in batches ([`ConceptStore::flush`]).

mod tables;

use super::*;
use crate::graph::ConceptRow;
use tables::ConceptTables;

/// The concept tables and the graph derived from their committed mentions.
pub(super) struct ConceptStore {
    tables: ConceptTables,
    graph: Arc<std::sync::RwLock<ConceptGraph>>,
    /// Live concepts whose row's derived columns (name, aliases, counts) lag the graph: a
    /// write only queues them, and [`flush`](ConceptStore::flush) rewrites them together
    /// (store upkeep, an orderly stop). Nothing serves those columns — the graph does — and
    /// every open brings all rows in line, so a row's counts may lag; a row's existence may
    /// not, so rows of concepts left without a mention are deleted at once.
    stale_rows: std::sync::Mutex<BTreeSet<String>>,
}

/// The concept half of one upsert, decided before its journal entry: the mentions of the
/// sources that change, the rows of the concepts new to the store, and a vector for every
/// concept the mentions name.
pub(super) struct Staged {
    mentions: Vec<MentionRow>,
    new_rows: Vec<ConceptRow>,
    vectors: HashMap<String, Vec<f32>>,
}

impl ConceptStore {
    /// Opens (creating) the concept tables in the LanceDB dir; the graph is empty until
    /// [`load`](Self::load).
    pub(super) async fn open(
        dir: &Path,
        dim: usize,
        session: &Arc<lancedb::Session>,
    ) -> Result<Self> {
        Ok(Self {
            tables: ConceptTables::open(dir, dim, session).await?,
            graph: Default::default(),
            stale_rows: Default::default(),
        })
    }

    /// Whether this open created the mentions table (a data dir from before the graph).
    pub(super) fn created(&self) -> bool {
        self.tables.created
    }

    pub(super) fn graph(&self) -> Arc<std::sync::RwLock<ConceptGraph>> {
        self.graph.clone()
    }

    pub(super) fn graph_read(&self) -> std::sync::RwLockReadGuard<'_, ConceptGraph> {
        self.graph.read().unwrap_or_else(|e| e.into_inner())
    }

    fn graph_write(&self) -> std::sync::RwLockWriteGuard<'_, ConceptGraph> {
        self.graph.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the graph from the committed mentions and the concept rows' vectors.
    pub(super) async fn load(&self, committed: &HashMap<String, String>) -> Result<()> {
        let rows = self.tables.all_concepts(true).await?;
        let vectors: HashMap<String, Vec<f32>> =
            rows.into_iter().map(|r| (r.id, r.vector)).collect();
        let mentions = self.tables.mentions_where(None).await?;
        let mut g = ConceptGraph::default();
        let skipped = add_committed_mentions(
            &mut g,
            &mentions,
            committed,
            &|id| vectors.get(id).cloned(),
            &mut BTreeSet::new(),
        );
        warn_skipped(skipped);
        *self.graph_write() = g;
        Ok(())
    }

    /// Makes the `concepts` table equal to the graph: rows for every live concept (frequency,
    /// aliases), none for the others.
    pub(super) async fn resync(&self) -> Result<()> {
        self.stale_rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let stored: HashMap<String, RowKey> = self
            .tables
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
        self.tables.upsert_concepts(&upsert).await?;
        self.tables.delete_concepts(&delete).await
    }

    /// Deletes the rows of the concepts a write left without a mention, and queues the rows of
    /// the others it touched for [`flush`](Self::flush).
    async fn sync(&self, touched: BTreeSet<String>) -> Result<()> {
        let delete: Vec<String> = {
            let g = self.graph_read();
            let mut stale = self.stale_rows.lock().unwrap_or_else(|e| e.into_inner());
            let mut delete = Vec::new();
            for id in touched {
                if g.contains(&id) {
                    stale.insert(id);
                } else {
                    stale.remove(&id);
                    delete.push(id);
                }
            }
            delete
        };
        self.tables.delete_concepts(&delete).await
    }

    /// Rewrites the queued rows from the graph (one merge-insert for many writes).
    pub(super) async fn flush(&self) -> Result<()> {
        let ids = std::mem::take(&mut *self.stale_rows.lock().unwrap_or_else(|e| e.into_inner()));
        let rows: Vec<ConceptRow> = {
            let g = self.graph_read();
            ids.iter().filter_map(|id| g.row(id)).collect()
        };
        if let Err(e) = self.tables.upsert_concepts(&rows).await {
            // Still stale: the next flush tries again.
            self.stale_rows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ids);
            return Err(e);
        }
        Ok(())
    }

    /// The concept half of an upsert, for the mentions `changed` keeps (those of sources whose
    /// content changes). Vectors come from the graph for known concepts, else from the caller,
    /// else (a concept a concurrent delete emptied meanwhile) from `embed_names`. Call with the
    /// write lock held.
    pub(super) async fn prepare(
        &self,
        write: ConceptWrite,
        changed: &(dyn Fn(&MentionRow) -> bool + Sync),
    ) -> Result<Staged> {
        let ConceptWrite {
            mut mentions,
            vectors,
            embed_names,
        } = write;
        mentions.retain(|m| changed(m));
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
        let mut vectors =
            complete_vectors(&mentions, &known, vectors, embed_names.as_ref()).await?;
        let new_rows = new_concept_rows(&mentions, &|id| known.contains_key(id), &vectors)?;
        // The graph's vector wins over the caller's for a concept it holds.
        vectors.extend(known);
        Ok(Staged {
            mentions,
            new_rows,
            vectors,
        })
    }

    /// Writes a prepared upsert's new concept rows, then its mentions (before the commit).
    pub(super) async fn stage(&self, s: &Staged) -> Result<()> {
        self.tables.upsert_concepts(&s.new_rows).await?;
        self.tables.add_mentions(&s.mentions).await
    }

    /// After an upsert's commit: the graph holds the `committed` versions' mentions of the
    /// sources `ids` (and no other of theirs), and the rows of the concepts touched follow.
    pub(super) async fn apply(
        &self,
        s: Staged,
        ids: &[String],
        committed: &HashMap<String, String>,
    ) -> Result<()> {
        let mut touched = BTreeSet::new();
        {
            let mut g = self.graph_write();
            g.remove_sources(ids, &mut touched);
            let lookup = |id: &str| s.vectors.get(id).cloned();
            add_committed_mentions(&mut g, &s.mentions, committed, &lookup, &mut touched);
        }
        self.sync(touched).await
    }

    /// After a delete's commit: the sources leave the graph, and the rows follow.
    pub(super) async fn remove(&self, ids: &[String]) -> Result<()> {
        let mut touched = BTreeSet::new();
        self.graph_write().remove_sources(ids, &mut touched);
        self.sync(touched).await
    }

    /// Deletes the mentions a chunk deletion's `predicate` (over `source_id` /
    /// `content_hash`) matches: a mention never outlives its chunk.
    pub(super) async fn delete_mentions(&self, predicate: &str) -> Result<()> {
        self.tables.delete_mentions(predicate).await
    }

    /// Adds mentions of already committed chunks (the backfill of a data dir written before
    /// the graph): new concept rows first, then the mentions. Returns their sources, for
    /// [`refresh`](Self::refresh).
    pub(super) async fn add(&self, write: ConceptWrite) -> Result<Vec<String>> {
        let ConceptWrite {
            mentions, vectors, ..
        } = write;
        let new_rows = {
            let g = self.graph_read();
            new_concept_rows(&mentions, &|id| g.contains(id), &vectors)?
        };
        self.tables.upsert_concepts(&new_rows).await?;
        self.tables.add_mentions(&mentions).await?;
        let mut sources: Vec<String> = mentions.into_iter().map(|m| m.source_id).collect();
        sources.sort();
        sources.dedup();
        Ok(sources)
    }

    /// Replaces the graph's mentions of `sources` with their stored mentions of the
    /// `committed` versions, and brings the rows of the concepts touched in line.
    pub(super) async fn refresh(
        &self,
        sources: &[String],
        committed: &HashMap<String, String>,
    ) -> Result<()> {
        let mut mentions = Vec::new();
        for part in sources.chunks(200) {
            mentions.extend(
                self.tables
                    .mentions_where(Some(sql_in("source_id", part)))
                    .await?,
            );
        }
        let mut ids: Vec<String> = mentions.iter().map(|m| m.concept_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let stored = self.tables.vectors_of(&ids).await?;
        let mut touched = BTreeSet::new();
        {
            let mut g = self.graph_write();
            g.remove_sources(sources, &mut touched);
            let skipped = add_committed_mentions(
                &mut g,
                &mentions,
                committed,
                &|id| stored.get(id).cloned(),
                &mut touched,
            );
            warn_skipped(skipped);
        }
        self.sync(touched).await
    }

    /// The concept half of `check`: every mention belongs to a `valid` (committed) chunk and
    /// names a concept with a row; every concept row is mentioned. Returns the sources of the
    /// orphan mentions.
    pub(super) async fn check(
        &self,
        rep: &mut CheckReport,
        valid: &HashSet<&str>,
    ) -> Result<Vec<String>> {
        let concept_ids = self.tables.concept_ids().await?;
        let mentions = self.tables.mentions_where(None).await?;
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

    /// Deletes the mentions of concepts with no row (and so no vector: they cannot be used).
    pub(super) async fn drop_dangling(&self) -> Result<()> {
        let known = self.tables.concept_ids().await?;
        let mut dangling: Vec<String> = self
            .tables
            .mentions_where(None)
            .await?
            .into_iter()
            .filter(|m| !known.contains(&m.concept_id))
            .map(|m| m.concept_id)
            .collect();
        dangling.sort();
        dangling.dedup();
        for part in dangling.chunks(500) {
            self.tables
                .delete_mentions(&sql_in("concept_id", part))
                .await?;
        }
        Ok(())
    }

    /// Concept rows stored.
    pub(super) async fn count_concepts(&self) -> Result<usize> {
        self.tables.count_concepts().await
    }

    /// Mention rows stored.
    pub(super) async fn count_mentions(&self) -> Result<usize> {
        self.tables.count_mentions().await
    }

    /// Compacts the two tables' small fragments.
    pub(super) async fn compact(&self) -> Result<()> {
        self.tables.compact().await
    }
}

fn warn_skipped(skipped: usize) {
    if skipped > 0 {
        tracing::warn!(
            mentions = skipped,
            "mentions of concepts without a row were skipped"
        );
    }
}

/// The caller's concept vectors plus those of the new concepts it did not embed because it
/// saw them in the graph, which a concurrent delete has emptied since: embedded now with
/// `embed` (under the write lock; it is rare and a few names).
async fn complete_vectors(
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
fn new_concept_rows(
    mentions: &[MentionRow],
    known: &dyn Fn(&str) -> bool,
    vectors: &HashMap<String, Vec<f32>>,
) -> Result<Vec<ConceptRow>> {
    let mut rows: BTreeMap<&str, ConceptRow> = BTreeMap::new();
    for m in mentions {
        if known(&m.concept_id) || rows.contains_key(m.concept_id.as_str()) {
            continue;
        }
        let vector = vectors.get(&m.concept_id).cloned().ok_or_else(|| {
            Error::internal(format!("no vector for the new concept `{}`", m.concept_id))
        })?;
        rows.insert(
            &m.concept_id,
            ConceptRow {
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

fn row_key(r: &ConceptRow) -> RowKey {
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
