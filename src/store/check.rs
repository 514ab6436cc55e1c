//! `cairn check` and `--repair`, and the reconciliation that replays an interrupted write:
//! both indexes are made to agree with the committed `sources` rows.

use super::*;

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

impl Store {
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
                self.vectors.retract_sources(&broken).await?;
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
            let committed = self.committed_of(&part).await?;
            self.concepts.refresh(&part, &committed).await?;
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

    /// The concept half of `check` (see `ConceptStore::check`) over the committed chunks.
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
        self.concepts.check(rep, &valid).await
    }

    pub(super) fn compare(
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
            self.concepts.drop_dangling().await?;
        }
        self.concepts.load(&self.committed_hashes().await?).await?;
        self.concepts.resync().await?;
        for f in self.journal_files()? {
            std::fs::remove_file(f)?;
        }
        Ok((rep, removed))
    }
}
