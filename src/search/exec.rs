//! The search executor: follows a [`Plan`] — the retrievers (BM25 on the runtime or a blocking
//! thread, the query embedding, nearest neighbours and the concept graph, concurrently), the
//! fusion ([`fuse`]), the rows that are still missing, the cross-encoder, MMR — and shapes the
//! results with their snippets and stage timings.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::fuse::{fuse, Fused, HitLists};
use super::group::{group, page, Group};
use super::plan::{plan, Capabilities, Plan, MMR_WINDOW};
use super::{
    rrf, Explain, GroupBy, SearchGroup, SearchHit, SearchRequest, SearchResponse, SearchTiming,
};
use crate::blocking;
use crate::error::{Error, Result};
use crate::service::Cairn;
use crate::store::keyword::KeywordHit;
use crate::store::snippet::Snippets;
use crate::store::{ChunkRecord, Filters};

/// What the retrievers found at one depth.
struct Retrieved {
    keyword: Vec<KeywordHit>,
    snippets: Option<Snippets>,
    vector: Vec<(String, f32)>,
    vector_rows: Vec<ChunkRecord>,
    graph: Vec<(String, f32)>,
    expansion: Option<Vec<crate::graph::Expansion>>,
    /// The query's embedding, kept for a deeper retrieval.
    qvec: Option<Arc<Vec<f32>>>,
    timing: SearchTiming,
}

impl Retrieved {
    /// Whether a list that ran came back `depth` long: a deeper retrieval could add hits.
    fn full(&self, plan: &Plan, depth: usize) -> bool {
        (plan.keyword && self.keyword.len() >= depth)
            || (plan.vector && self.vector.len() >= depth)
            || (plan.use_graph && self.graph.len() >= depth)
    }
}

/// The fused ranking with the rows (and group keys) of the hits that need them.
struct Gathered {
    ranked: Vec<(String, f32)>,
    explain: HashMap<String, Explain>,
    chunks: HashMap<String, ChunkRecord>,
    /// Each ranked chunk's group key (grouped searches only).
    keys: HashMap<String, Option<String>>,
    snippets: Option<Snippets>,
    expansion: Option<Vec<crate::graph::Expansion>>,
    timing: SearchTiming,
    /// The depth the retrievers went to.
    depth: usize,
}

impl Cairn {
    /// Hybrid, vector or keyword search.
    pub async fn search(&self, req: SearchRequest) -> Result<SearchResponse> {
        self.search_with_max(req, 100).await
    }

    /// What this server can run, for planning.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            reranker: self.reranker.is_some(),
            graph: self.config.graph.concepts_per_chunk > 0,
        }
    }

    /// Search allowing up to `max_limit` results (evaluation needs more than the API's 100).
    pub async fn search_with_max(
        &self,
        req: SearchRequest,
        max_limit: usize,
    ) -> Result<SearchResponse> {
        let started = Instant::now();
        let plan = plan(&req, &self.config.search, self.capabilities(), max_limit)?;
        let span = tracing::info_span!(
            "search",
            mode = plan.mode.as_str(),
            limit = plan.limit,
            offset = plan.offset,
            grouped = plan.group.is_some(),
            context_type = %plan.preset,
            use_graph = plan.use_graph,
            rerank = plan.rerank
        );
        self.execute(plan, &req.filters, req.explain, started)
            .instrument(span)
            .await
    }

    async fn execute(
        &self,
        plan: Plan,
        filters: &Filters,
        explain_on: bool,
        started: Instant,
    ) -> Result<SearchResponse> {
        let mut g = self.gather(&plan, filters).await?;
        let after = Instant::now();
        if plan.rerank {
            let t = Instant::now();
            g.ranked = self
                .rerank(
                    &plan.query,
                    std::mem::take(&mut g.ranked),
                    &g.chunks,
                    &mut g.explain,
                )
                .instrument(tracing::info_span!("rerank"))
                .await?;
            g.timing.rerank_ms = ms_since(t);
        }
        if plan.mmr_lambda < 1.0 {
            let ranked = std::mem::take(&mut g.ranked);
            g.ranked = self
                .diversify(ranked, plan.mmr_lambda, &mut g.explain)
                .await?;
        }
        let groups = plan
            .group
            .as_ref()
            .map(|grouping| group(&g.ranked, |id| g.keys.get(id).cloned(), grouping.size));
        let (results, groups, next_offset) = match &groups {
            Some(all) => {
                let (shown, next) = page(all, plan.offset, plan.limit);
                self.page_rows(shown, &mut g.chunks, filters).await?;
                let (results, groups) = self.shape_groups(&g, shown, explain_on);
                (results, Some(groups), next)
            }
            None => {
                let (shown, next) = page(&g.ranked, plan.offset, plan.limit);
                let hits = shown.iter().filter_map(|h| self.hit(&g, h, explain_on));
                (hits.collect(), None, next)
            }
        };
        let mut timing = std::mem::take(&mut g.timing);
        timing.fusion_ms += ms_since(after) - timing.rerank_ms;
        let timing = record_stages(timing);
        let took_ms = ms_since(started);
        tracing::info!(
            results = results.len(),
            depth = g.depth,
            took_ms,
            embed_ms = timing.embed_ms,
            keyword_ms = timing.keyword_ms,
            vector_ms = timing.vector_ms,
            graph_ms = timing.graph_ms,
            rerank_ms = timing.rerank_ms,
            fusion_ms = timing.fusion_ms,
            "search finished"
        );
        Ok(SearchResponse {
            results,
            groups,
            offset: plan.offset,
            next_offset,
            mode: plan.mode,
            context_type: plan.preset,
            concepts: g.expansion,
            reranked: plan.rerank,
            took_ms,
            timing,
        })
    }

    /// Retrieves, fuses and reads the rows the page needs; when the ranking is too short for
    /// the page (or its groups) and a list came back full, retrieves twice as deep (the query
    /// is embedded once) — the tiered fusion keeps what was ranked in place.
    async fn gather(&self, plan: &Plan, filters: &Filters) -> Result<Gathered> {
        let mut depth = plan.depth;
        let mut qvec = None;
        let mut timing = SearchTiming::default();
        loop {
            let mut found = self.retrieve(plan, depth, qvec.take(), filters).await?;
            add_timing(&mut timing, &found.timing);
            let t = Instant::now();
            let full = found.full(plan, depth);
            let fusion_span = tracing::info_span!("fusion", depth).entered();
            let lists = hit_lists(plan, &mut found);
            let Fused {
                mut ranked,
                explain,
            } = fuse(&lists, plan);
            let mut chunks: HashMap<String, ChunkRecord> = HashMap::new();
            for h in std::mem::take(&mut found.keyword) {
                chunks.entry(h.chunk.chunk_id.clone()).or_insert(h.chunk);
            }
            for c in std::mem::take(&mut found.vector_rows) {
                chunks.entry(c.chunk_id.clone()).or_insert(c);
            }
            drop(fusion_span);
            // Rows the retrievers did not return (vector hits from the in-memory index, graph
            // hits) are read, with the filters, only if they rank high enough; grouping needs
            // every candidate's source besides.
            let none = HashMap::new();
            self.fetch_missing(&mut ranked, &mut chunks, plan.need, filters, &none)
                .await?;
            let sources = match plan.group {
                Some(_) => {
                    self.candidate_sources(&mut ranked, &mut chunks, filters)
                        .await?
                }
                None => HashMap::new(),
            };
            let keys = self.group_keys(plan, &sources).await?;
            let enough = ranked.len() >= plan.need
                && (plan.group.is_none() || distinct(&keys) > plan.window());
            timing.fusion_ms += ms_since(t);
            match plan.deeper(depth) {
                Some(d) if full && !enough => {
                    depth = d;
                    qvec = found.qvec;
                }
                _ => {
                    return Ok(Gathered {
                        ranked,
                        explain,
                        chunks,
                        keys,
                        snippets: found.snippets,
                        expansion: found.expansion,
                        timing,
                        depth,
                    })
                }
            }
        }
    }

    /// Every ranked chunk's source, for grouping: from its row, else from the in-memory
    /// vector copy (which also applies the filters: the chunks they reject leave the
    /// ranking), else from its row read by id. Reading ~300 rows per grouped search was most
    /// of grouping's cost; the page's rows are read later ([`Cairn::page_rows`]).
    async fn candidate_sources(
        &self,
        ranked: &mut Vec<(String, f32)>,
        chunks: &mut HashMap<String, ChunkRecord>,
        filters: &Filters,
    ) -> Result<HashMap<String, String>> {
        let unknown: Vec<String> = ranked
            .iter()
            .filter(|(id, _)| !chunks.contains_key(id))
            .map(|(id, _)| id.clone())
            .collect();
        let memory = self.store.memory_sources(&unknown, filters);
        ranked.retain(|(id, _)| !matches!(memory.get(id), Some(None)));
        let mut sources: HashMap<String, String> = memory
            .into_iter()
            .filter_map(|(id, s)| Some((id, s?)))
            .collect();
        self.fetch_missing(ranked, chunks, usize::MAX, filters, &sources)
            .await?;
        for (id, _) in ranked.iter() {
            if let Some(c) = chunks.get(id) {
                sources.insert(id.clone(), c.source_id.clone());
            }
        }
        Ok(sources)
    }

    /// Each ranked chunk's group key: its source, or its source's metadata value for the key
    /// (several values of an array joined by `,`; `None` without the key).
    async fn group_keys(
        &self,
        plan: &Plan,
        sources: &HashMap<String, String>,
    ) -> Result<HashMap<String, Option<String>>> {
        let Some(grouping) = &plan.group else {
            return Ok(HashMap::new());
        };
        let GroupBy::Metadata(key) = &grouping.by else {
            return Ok(sources
                .iter()
                .map(|(id, s)| (id.clone(), Some(s.clone())))
                .collect());
        };
        let mut ids: Vec<String> = sources.values().cloned().collect();
        ids.sort();
        ids.dedup();
        let values: HashMap<String, Option<String>> = self
            .store
            .get_sources(&ids)
            .await?
            .into_iter()
            .map(|s| {
                let v = metadata_key(&s.metadata, key);
                (s.id, v)
            })
            .collect();
        Ok(sources
            .iter()
            .map(|(id, s)| (id.clone(), values.get(s).cloned().flatten()))
            .collect())
    }

    /// Reads the rows of the hits the page's groups show that no retriever returned.
    async fn page_rows(
        &self,
        shown: &[Group],
        chunks: &mut HashMap<String, ChunkRecord>,
        filters: &Filters,
    ) -> Result<()> {
        let missing: Vec<String> = shown
            .iter()
            .flat_map(|g| g.hits.iter().map(|(id, _)| id))
            .filter(|id| !chunks.contains_key(*id))
            .cloned()
            .collect();
        self.read_rows(missing, chunks, filters).await
    }

    /// Reads the rows of `ids` that pass `filters` into `chunks`.
    async fn read_rows(
        &self,
        ids: Vec<String>,
        chunks: &mut HashMap<String, ChunkRecord>,
        filters: &Filters,
    ) -> Result<()> {
        if !ids.is_empty() {
            for c in self.store.chunks_by_id(ids, filters).await? {
                chunks.insert(c.chunk_id.clone(), c);
            }
        }
        Ok(())
    }

    /// BM25 and embedding + vector search + graph, concurrently.
    async fn retrieve(
        &self,
        plan: &Plan,
        depth: usize,
        qvec: Option<Arc<Vec<f32>>>,
        filters: &Filters,
    ) -> Result<Retrieved> {
        // The vector side first: its first poll hands the query to the embedder, which then
        // works while a light keyword search runs here.
        let keyword = self
            .keyword_side(plan, depth, filters)
            .instrument(tracing::info_span!("keyword"));
        let vector = self.vector_side(plan, depth, qvec, filters);
        let (vector, keyword) = tokio::join!(vector, keyword);
        let (keyword, snippets, keyword_ms) = keyword?;
        let mut found = vector?;
        found.keyword = keyword;
        found.snippets = snippets;
        found.timing.keyword_ms = keyword_ms;
        Ok(found)
    }

    async fn keyword_side(
        &self,
        plan: &Plan,
        k: usize,
        filters: &Filters,
    ) -> Result<(Vec<KeywordHit>, Option<Snippets>, f64)> {
        let t = Instant::now();
        let kw = self.store.keywords().clone();
        let boost = self.config.search.title_boost;
        let (hits, snippets) = match plan.keyword {
            // A light search runs here: the hand-off to a blocking thread and back would cost
            // more than the search.
            true => match kw.prepare(&plan.query, filters, boost) {
                None => (Vec::new(), None),
                Some(s) if s.is_light() => kw.run(s, k)?,
                Some(s) => blocking(move || kw.run(s, k)).await??,
            },
            false => (Vec::new(), kw.snippets(&plan.query, boost)),
        };
        Ok((hits, snippets, ms_since(t)))
    }

    /// The query's embedding (unless `cached`), then nearest neighbours and the graph's list
    /// concurrently, `k` deep.
    async fn vector_side(
        &self,
        plan: &Plan,
        k: usize,
        cached: Option<Arc<Vec<f32>>>,
        filters: &Filters,
    ) -> Result<Retrieved> {
        let t = Instant::now();
        let embeds = plan.embed && cached.is_none();
        let v = match (plan.embed, cached) {
            (true, None) => Some(
                self.embed_query(&plan.query)
                    .instrument(tracing::info_span!("embed"))
                    .await?,
            ),
            (_, cached) => cached,
        };
        let embed_ms = if embeds { ms_since(t) } else { 0.0 };
        let neighbours = async {
            let Some(v) = v.as_ref().filter(|_| plan.vector) else {
                return Ok::<_, Error>((Vec::new(), Vec::new(), 0.0));
            };
            let t = Instant::now();
            let (hits, rows) = self
                .store
                .vector_search(v.clone(), k, filters)
                .instrument(tracing::info_span!("vector"))
                .await?;
            Ok((hits, rows, ms_since(t)))
        };
        let graph = async {
            if !plan.use_graph {
                return Ok::<_, Error>((None, Vec::new(), 0.0));
            }
            let t = Instant::now();
            let (expansion, scored) = self
                .graph_candidates(plan, k, v.clone(), filters)
                .instrument(tracing::info_span!("graph"))
                .await?;
            Ok((Some(expansion), scored, ms_since(t)))
        };
        let (neighbours, graph) = tokio::join!(neighbours, graph);
        let (vector, vector_rows, vector_ms) = neighbours?;
        let (expansion, graph, graph_ms) = graph?;
        Ok(Retrieved {
            keyword: Vec::new(),
            snippets: None,
            vector,
            vector_rows,
            graph,
            expansion,
            qvec: v,
            timing: SearchTiming {
                embed_ms,
                vector_ms,
                graph_ms,
                ..Default::default()
            },
        })
    }

    /// The graph's list for a search: the query's expansion and the chunk ids it scores
    /// (already restricted to `filters.source_ids`; the other filters apply when a graph-only
    /// hit is fetched, see [`Cairn::fetch_missing`]).
    async fn graph_candidates(
        &self,
        plan: &Plan,
        k: usize,
        qvec: Option<Arc<Vec<f32>>>,
        filters: &Filters,
    ) -> Result<(Vec<crate::graph::Expansion>, Vec<(String, f32)>)> {
        let g = self.store.graph();
        let cfg = &self.config.graph;
        let opts = crate::graph::ExpandOptions {
            min_similarity: if plan.expand {
                cfg.match_min_similarity
            } else {
                f32::INFINITY
            },
            neighbours: if plan.expand {
                cfg.expand_neighbours
            } else {
                0
            },
            min_weight: cfg.expand_min_weight,
        };
        let q = plan.query.clone();
        let sources: Option<HashSet<String>> =
            (!filters.source_ids.is_empty()).then(|| filters.source_ids.iter().cloned().collect());
        blocking(move || {
            let g = g.read().unwrap_or_else(|e| e.into_inner());
            let e = g.expand(&q, qvec.as_deref().map(|v| v.as_slice()), opts);
            let s = g.score_chunks(&e, sources.as_ref(), k);
            (e, s)
        })
        .await
    }

    /// Makes sure the first `need` ranked ids have their chunk rows (except those whose
    /// source is `known`, already checked against the filters): the missing ones (hits only
    /// the in-memory vector index or the graph found) are read by id with the request's
    /// filters, and those the filters reject (or no index holds any more) leave the ranking.
    async fn fetch_missing(
        &self,
        ranked: &mut Vec<(String, f32)>,
        chunks: &mut HashMap<String, ChunkRecord>,
        need: usize,
        filters: &Filters,
        known: &HashMap<String, String>,
    ) -> Result<()> {
        for _ in 0..4 {
            let missing: Vec<String> = ranked
                .iter()
                .take(need)
                .filter(|(id, _)| !chunks.contains_key(id) && !known.contains_key(id))
                .map(|(id, _)| id.clone())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            self.read_rows(missing.clone(), chunks, filters).await?;
            let rejected: HashSet<String> = missing
                .into_iter()
                .filter(|id| !chunks.contains_key(id))
                .collect();
            ranked.retain(|(id, _)| !rejected.contains(id));
        }
        Ok(())
    }

    /// Re-scores the top `search.rerank_candidates` with the cross-encoder. With
    /// `search.rerank_fused_weight` 0 they are ordered and scored by its probability; above 0
    /// by RRF over the cross-encoder's order and the fused order. The rest keep their fused
    /// order, scaled below the last re-ranked score.
    async fn rerank(
        &self,
        query: &str,
        ranked: Vec<(String, f32)>,
        chunks: &HashMap<String, ChunkRecord>,
        explain: &mut HashMap<String, Explain>,
    ) -> Result<Vec<(String, f32)>> {
        let rr = self.reranker.clone().ok_or_else(|| Error::Unavailable {
            code: crate::error::Code::RerankerUnavailable,
            message: crate::rerank::install_hint(),
        })?;
        let n = self.config.search.rerank_candidates.min(ranked.len());
        let (head, tail) = ranked.split_at(n);
        let passages: Vec<String> = head
            .iter()
            .map(|(id, _)| {
                chunks
                    .get(id)
                    .map(|c| rerank_input(&c.title, &c.text))
                    .unwrap_or_default()
            })
            .collect();
        let q = query.to_string();
        let _permit = self.embed_permit().await?;
        let logits = blocking(move || rr.score(&q, &passages)).await??;
        let probs: Vec<f32> = logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
        for ((id, _), p) in head.iter().zip(&probs) {
            if let Some(e) = explain.get_mut(id) {
                e.rerank = Some(*p);
            }
        }
        let scored: Vec<(String, f32)> = head
            .iter()
            .zip(&probs)
            .map(|((id, _), p)| (id.clone(), *p))
            .collect();
        let mut out = self.blend_rerank(head, scored);
        let floor = out.last().map_or(1.0, |x| x.1);
        let top_tail = tail.first().map_or(1.0, |x| x.1).max(f32::MIN_POSITIVE);
        out.extend(
            tail.iter()
                .map(|(id, s)| (id.clone(), floor * 0.999 * (s / top_tail))),
        );
        Ok(out)
    }

    /// The re-ranked head's order: the cross-encoder's alone, or (with
    /// `search.rerank_fused_weight` above 0) the cross-encoder's order and the fused order
    /// fused again by RRF, so that a small cross-encoder corrects the ranking instead of
    /// replacing it.
    fn blend_rerank(
        &self,
        head: &[(String, f32)],
        mut scored: Vec<(String, f32)>,
    ) -> Vec<(String, f32)> {
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let blend = self.config.search.rerank_fused_weight;
        if blend <= 0.0 {
            return scored;
        }
        let ce_order: Vec<String> = scored.into_iter().map(|(id, _)| id).collect();
        let fused_order: Vec<String> = head.iter().map(|(id, _)| id.clone()).collect();
        rrf(
            &[(&ce_order, 1.0), (&fused_order, blend)],
            self.config.search.rrf_k,
        )
    }

    /// MMR over the top [`MMR_WINDOW`] hits with the chunks' stored vectors.
    async fn diversify(
        &self,
        ranked: Vec<(String, f32)>,
        lambda: f32,
        explain: &mut HashMap<String, Explain>,
    ) -> Result<Vec<(String, f32)>> {
        let m = MMR_WINDOW.min(ranked.len());
        if m < 2 {
            return Ok(ranked);
        }
        let (head, tail) = ranked.split_at(m);
        let ids: Vec<String> = head.iter().map(|(id, _)| id.clone()).collect();
        let vecs = self.store.vectors_of(&ids).await?;
        let rel: Vec<f32> = head.iter().map(|(_, s)| *s).collect();
        let refs: Vec<Option<&[f32]>> = ids
            .iter()
            .map(|id| vecs.get(id).map(|v| v.as_slice()))
            .collect();
        let order = super::mmr(&rel, &refs, lambda, m);
        let mut out: Vec<(String, f32)> = Vec::with_capacity(ranked.len());
        for (new_rank, &i) in order.iter().enumerate() {
            if new_rank != i {
                if let Some(e) = explain.get_mut(&head[i].0) {
                    e.pre_mmr_rank = Some(i + 1);
                }
            }
            out.push(head[i].clone());
        }
        // Scores follow the new order (non-increasing), keeping each hit's own where it can.
        let mut cap = f32::INFINITY;
        for x in out.iter_mut() {
            x.1 = x.1.min(cap);
            cap = x.1;
        }
        out.extend(tail.iter().cloned().map(|(id, s)| (id, s.min(cap))));
        Ok(out)
    }

    /// A ranked hit with its row, snippet and (when asked) explanation; `None` without a row
    /// (its source deleted meanwhile).
    fn hit(
        &self,
        g: &Gathered,
        (id, score): &(String, f32),
        explain_on: bool,
    ) -> Option<SearchHit> {
        let c = g.chunks.get(id)?;
        let snippet = make_snippet(
            g.snippets.as_ref(),
            &c.text,
            self.config.search.snippet_chars,
        );
        Some(SearchHit {
            chunk_id: c.chunk_id.clone(),
            source_id: c.source_id.clone(),
            external_id: c.external_id.clone(),
            title: c.title.clone(),
            text: c.text.clone(),
            snippet,
            score: *score,
            page: c.page,
            section: (!c.section.is_empty()).then(|| c.section.clone()),
            ordinal: c.ordinal,
            char_start: c.char_start,
            char_end: c.char_end,
            scores: explain_on.then(|| g.explain.get(id).cloned().unwrap_or_default()),
        })
    }

    /// The page's groups with their hits, and each group's best hit as the results. A hit
    /// without a row is left out, and so is a group left with none.
    fn shape_groups(
        &self,
        g: &Gathered,
        shown: &[Group],
        explain_on: bool,
    ) -> (Vec<SearchHit>, Vec<SearchGroup>) {
        let groups: Vec<SearchGroup> = shown
            .iter()
            .filter_map(|x| {
                let hits: Vec<SearchHit> = x
                    .hits
                    .iter()
                    .filter_map(|h| self.hit(g, h, explain_on))
                    .collect();
                Some(SearchGroup {
                    score: hits.first()?.score,
                    key: x.key.clone(),
                    hits,
                })
            })
            .collect();
        let results = groups.iter().map(|x| x.hits[0].clone()).collect();
        (results, groups)
    }
}

/// The number of distinct group keys.
fn distinct(keys: &HashMap<String, Option<String>>) -> usize {
    keys.values().collect::<HashSet<_>>().len()
}

/// A source's value for a metadata key as a group key: a scalar as printed, an array's scalars
/// joined by `,`; `None` when the source lacks the key (or holds no scalar under it).
fn metadata_key(meta: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    let values = crate::store::meta_values(meta.get(key)?);
    (!values.is_empty()).then(|| values.join(","))
}

fn add_timing(total: &mut SearchTiming, t: &SearchTiming) {
    total.embed_ms += t.embed_ms;
    total.keyword_ms += t.keyword_ms;
    total.vector_ms += t.vector_ms;
    total.graph_ms += t.graph_ms;
}

/// The retrievers' hits as fusion's lists (the phrase list only when it has a weight); the
/// vector and graph lists move over, the keyword hits stay for their rows.
fn hit_lists(plan: &Plan, found: &mut Retrieved) -> HitLists {
    let phrase = if plan.weights.phrase > 0.0 {
        phrase_list(&plan.query, found.keyword.iter().map(|h| &h.chunk))
    } else {
        Vec::new()
    };
    HitLists {
        keyword: found
            .keyword
            .iter()
            .map(|h| (h.chunk.chunk_id.clone(), h.score))
            .collect(),
        vector: std::mem::take(&mut found.vector),
        graph: std::mem::take(&mut found.graph),
        phrase,
    }
}

/// The text a cross-encoder reads for a chunk (as `scripts/build-reranker` trained it).
pub fn rerank_input(title: &str, text: &str) -> String {
    if title.is_empty() {
        text.to_string()
    } else {
        format!("{title} {text}")
    }
}

/// The exact-phrase list: keyword hits that contain a phrase of the query verbatim (after
/// normalising case, punctuation and plurals), most phrases first, then in BM25 order. The
/// phrases are the query's quoted parts, or else its multi-word key phrases.
fn phrase_list<'a>(query: &str, hits: impl Iterator<Item = &'a ChunkRecord>) -> Vec<String> {
    let quoted: Vec<&str> = query.split('"').skip(1).step_by(2).collect();
    let mut phrases: Vec<String> = quoted
        .iter()
        .filter_map(|q| crate::concepts::normalise(q))
        .collect();
    if phrases.is_empty() {
        phrases = crate::concepts::extract(query, 16, &Default::default())
            .into_iter()
            .filter(|m| m.key.contains(' '))
            .map(|m| m.key)
            .collect();
    }
    if phrases.is_empty() {
        return Vec::new();
    }
    let padded: Vec<String> = phrases.iter().map(|p| format!(" {p} ")).collect();
    let mut matched: Vec<(usize, usize, String)> = hits
        .enumerate()
        .filter_map(|(rank, c)| {
            let text = format!(
                " {} ",
                crate::concepts::normalise(&c.text).unwrap_or_default()
            );
            let n = padded.iter().filter(|p| text.contains(p.as_str())).count();
            (n > 0).then(|| (n, rank, c.chunk_id.clone()))
        })
        .collect();
    matched.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    matched.into_iter().map(|(_, _, id)| id).collect()
}

/// Records the stages that ran in `cairn_search_stage_seconds{stage}`.
fn record_stages(t: SearchTiming) -> SearchTiming {
    for (stage, ms) in [
        ("embed", t.embed_ms),
        ("keyword", t.keyword_ms),
        ("vector", t.vector_ms),
        ("graph", t.graph_ms),
        ("rerank", t.rerank_ms),
        ("fusion", t.fusion_ms),
    ] {
        if ms > 0.0 {
            metrics::histogram!("cairn_search_stage_seconds", "stage" => stage).record(ms / 1e3);
        }
    }
    t
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn make_snippet(gen: Option<&Snippets>, text: &str, max_chars: usize) -> String {
    if let Some(html) = gen.and_then(|g| g.html(text)) {
        return html;
    }
    let head: String = text.chars().take(max_chars).collect();
    html_escape::encode_text(&head).into_owned()
}
