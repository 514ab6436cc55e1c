//! Sources (list, get, resolve, delete) and the concept graph's reads (concepts, neighbourhood).

use super::*;

impl Cairn {
    /// Concepts matching a text: exact name or alias, then lexical overlap, then embedding
    /// similarity.
    pub async fn concepts(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<crate::graph::ConceptMatch>> {
        let q = query.trim().to_string();
        if q.is_empty() || q.chars().count() > 200 {
            return Err(Error::InvalidInput(
                "the concept query must be 1 to 200 characters".into(),
            ));
        }
        if limit == 0 || limit > 100 {
            return Err(Error::InvalidInput(
                "limit must be between 1 and 100".into(),
            ));
        }
        let v = self.embed_query(&q).await?;
        let g = self.store.graph();
        blocking(move || {
            let g = g.read().unwrap_or_else(|e| e.into_inner());
            g.find(&q, Some(&v), limit)
        })
        .await
    }

    /// The neighbourhood of a concept (by id, name or alias). An unknown concept is a 404
    /// whose message suggests the closest known ones.
    pub async fn graph(
        &self,
        concept: &str,
        depth: usize,
        limit: usize,
        min_weight: f32,
    ) -> Result<crate::graph::Neighbourhood> {
        if !(1..=3).contains(&depth) {
            return Err(Error::InvalidInput("depth must be 1, 2 or 3".into()));
        }
        if limit == 0 || limit > 200 {
            return Err(Error::InvalidInput(
                "limit must be between 1 and 200".into(),
            ));
        }
        if !min_weight.is_finite() || !(0.0..=1.0).contains(&min_weight) {
            return Err(Error::InvalidInput(
                "min_weight must be between 0 and 1".into(),
            ));
        }
        let c = concept.trim().to_string();
        if c.is_empty() || c.chars().count() > 200 {
            return Err(Error::InvalidInput(
                "the concept must be 1 to 200 characters".into(),
            ));
        }
        let g = self.store.graph();
        let similar = self.config.graph.similar_min;
        let c2 = c.clone();
        let found = blocking(move || {
            let g = g.read().unwrap_or_else(|e| e.into_inner());
            g.resolve(&c2)
                .map(|i| g.neighbourhood(i, depth, limit, min_weight, Some(similar)))
        })
        .await?;
        if let Some(n) = found {
            return Ok(n);
        }
        let v = self.embed_query(&c).await?;
        let g = self.store.graph();
        let c2 = c.clone();
        let suggestions = blocking(move || {
            let g = g.read().unwrap_or_else(|e| e.into_inner());
            g.suggest(&c2, Some(&v), 5)
        })
        .await?;
        Err(Error::UnknownConcept {
            name: c,
            suggestions,
        })
    }

    pub async fn list_sources(&self, limit: usize, cursor: Option<&str>) -> Result<SourcePage> {
        if limit == 0 || limit > 1000 {
            return Err(Error::InvalidInput(
                "limit must be between 1 and 1000".into(),
            ));
        }
        let ids = self.store.source_ids_after(cursor, limit + 1).await?;
        let more = ids.len() > limit;
        let ids: Vec<String> = ids.into_iter().take(limit).collect();
        let mut rows = self.store.get_sources(&ids).await?;
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        let next_cursor = if more {
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(SourcePage {
            sources: rows.into_iter().map(SourceInfo::from).collect(),
            next_cursor,
        })
    }

    pub async fn get_source(&self, id: &str) -> Result<SourceInfo> {
        self.store
            .get_sources(&[id.to_string()])
            .await?
            .into_iter()
            .next()
            .map(SourceInfo::from)
            .ok_or_else(|| Error::not_found(format!("source `{id}`")))
    }

    /// A page of a source's chunks in reading order, each with the concepts it mentions.
    /// Only the stored version's chunks (those of its content hash): an update in flight
    /// shows nothing of itself until it commits.
    pub async fn source_chunks(
        &self,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<SourceChunks> {
        if limit == 0 || limit > 500 {
            return Err(Error::InvalidInput(
                "limit must be between 1 and 500".into(),
            ));
        }
        let source = self.get_source(id).await?;
        let mut chunks = self
            .store
            .chunks_of_sources(std::slice::from_ref(&source.id))
            .await?;
        chunks.retain(|c| c.content_hash == source.content_hash);
        chunks.sort_by_key(|c| c.ordinal);
        let total = chunks.len();
        let g = self.store.graph_read();
        let page = chunks
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|c| SourceChunk {
                concepts: g.chunk_nodes(&c.chunk_id),
                chunk_id: c.chunk_id,
                ordinal: c.ordinal,
                page: c.page,
                section: (!c.section.is_empty()).then_some(c.section),
                text: c.text,
            })
            .collect();
        Ok(SourceChunks {
            source,
            total,
            offset,
            next_offset: (offset.saturating_add(limit) < total).then_some(offset + limit),
            chunks: page,
        })
    }

    /// Which of `ids` are stored sources.
    pub async fn existing_sources(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for part in ids.chunks(500) {
            let rows = self.store.get_sources(part).await?;
            out.extend(rows.into_iter().map(|s| s.id));
        }
        Ok(out)
    }

    /// Finds a source by id or by external id (e.g. the file path it was ingested from).
    pub async fn resolve_source(&self, id_or_external: &str) -> Result<SourceInfo> {
        match self.get_source(id_or_external).await {
            Err(Error::NotFound { .. }) => self.get_source(&source_id_of(id_or_external)).await,
            other => other,
        }
    }

    pub async fn delete_source(&self, id: &str) -> Result<()> {
        let deleted = self.store.delete(&[id.to_string()]).await?;
        if deleted.is_empty() {
            return Err(Error::not_found(format!("source `{id}`")));
        }
        Ok(())
    }
}
