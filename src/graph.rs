//! The concept graph in memory: concepts, the chunks that mention them, and co-occurrence
//! counts, kept in step with the stored mentions (LanceDB is the store of record; this is
//! rebuilt from it at start and updated after every committed write).
//!
//! Edges are derived, never stored, so they cannot go stale:
//! - `co_occurs`: two concepts mentioned by the same chunk. Weight: normalised PMI over chunks,
//!   damped for rare pairs (`npmi · n/(n+1)`), so a pair seen once does not outrank a pair seen
//!   fifty times; only positive associations are edges.
//! - `similar_to`: two concepts whose name embeddings have cosine ≥ `min_similarity`.
//!
//! Corpus statistics enter here, not at extraction: idf (`ln(1 + N/n)`) weights a concept in
//! graph scores and N is the number of chunks with any mention.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::concepts;

/// One stored concept, as the graph and the `concepts` table see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptRow {
    pub id: String,
    pub name: String,
    pub aliases: Vec<String>,
    pub frequency: u32,
    pub source_count: u32,
    pub vector: Vec<f32>,
}

/// A concept mention as stored: which chunk (of which source version) mentions which concept.
#[derive(Debug, Clone, PartialEq)]
pub struct MentionRow {
    pub concept_id: String,
    pub chunk_id: String,
    pub source_id: String,
    pub content_hash: String,
    /// The surface forms the chunk used, the main one first, joined by `|`.
    pub surface: String,
    pub score: f32,
}

impl MentionRow {
    /// The main surface form: the concept's name for a new concept row.
    pub fn main_surface(&self) -> &str {
        self.surface.split('|').next().unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
struct Node {
    id: String,
    /// Surface form → mentions using it.
    surfaces: BTreeMap<String, u32>,
    chunks: BTreeSet<String>,
    sources: BTreeMap<String, u32>,
}

impl Node {
    /// The most used surface form that spells the concept out (an acronym is an alias, never
    /// the name); ties go to the first by name.
    fn name(&self) -> String {
        let spelled =
            |s: &str| concepts::normalise(s).is_some_and(|k| concepts::slug(&k) == self.id);
        self.surfaces
            .iter()
            .filter(|(s, _)| spelled(s))
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| self.id.replace('-', " "))
    }

    fn aliases(&self) -> Vec<String> {
        let name = self.name();
        let key = self.id.replace('-', " ");
        let mut v: Vec<String> = self
            .surfaces
            .keys()
            .filter(|s| **s != name)
            .cloned()
            .collect();
        if key != name && !v.contains(&key) {
            v.push(key);
        }
        v.sort();
        v
    }
}

struct ChunkEntry {
    source_id: String,
    /// (node, surface)
    concepts: Vec<(u32, String)>,
}

/// The kind of a graph edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    CoOccurs,
    SimilarTo,
}

/// A concept as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ConceptNode {
    pub id: String,
    pub name: String,
    /// Chunks that mention it.
    pub frequency: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct GraphEdge {
    pub source: String,
    pub target: String,
    pub kind: EdgeKind,
    pub weight: f32,
}

/// A neighbourhood: `GET /graph/{concept}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Neighbourhood {
    pub center: ConceptNode,
    pub nodes: Vec<ConceptNode>,
    pub edges: Vec<GraphEdge>,
}

/// A concept matching a text: `GET /concepts/{query}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConceptMatch {
    pub id: String,
    pub name: String,
    pub aliases: Vec<String>,
    /// 1.0 for an exact name or alias match; 0.6–0.9 lexical; below 0.6 by embedding
    /// similarity.
    pub score: f32,
    pub frequency: u32,
    /// Sources that mention it (at most 50, by id).
    pub sources: Vec<String>,
    /// Chunks that mention it (at most 50, by id).
    pub chunks: Vec<String>,
}

/// How a query was expanded for `use_graph`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Expansion {
    pub id: String,
    pub name: String,
    /// `exact` (the query names it), `similar` (its embedding is close to the query's) or
    /// `neighbour` (it co-occurs strongly with a matched concept).
    pub via: String,
    pub weight: f32,
}

/// Settings of one graph expansion.
#[derive(Debug, Clone, Copy)]
pub struct ExpandOptions {
    /// Concepts whose name embedding is this close to the query's join the seeds (`>1` = off).
    pub min_similarity: f32,
    /// Strongest co-occurring neighbours added per seed (0 = no neighbour expansion).
    pub neighbours: usize,
    pub min_weight: f32,
}

#[derive(Default)]
pub struct ConceptGraph {
    nodes: Vec<Option<Node>>,
    /// Unit name vectors, one row per node slot (a free slot's row is zero), so similarity to
    /// every concept is one matrix-vector product.
    matrix: Vec<f32>,
    dim: usize,
    free: Vec<u32>,
    by_id: HashMap<String, u32>,
    by_surface: HashMap<String, BTreeSet<u32>>,
    chunks: HashMap<String, ChunkEntry>,
    by_source: HashMap<String, BTreeSet<String>>,
    adjacency: Vec<HashMap<u32, u32>>,
    edges: usize,
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter().map(|x| x / n).collect()
    } else {
        v.to_vec()
    }
}

impl ConceptGraph {
    pub fn concept_count(&self) -> usize {
        self.by_id.len()
    }

    /// Distinct co-occurring pairs.
    pub fn edge_count(&self) -> usize {
        self.edges
    }

    pub fn mention_count(&self) -> usize {
        self.chunks.values().map(|c| c.concepts.len()).sum()
    }

    /// Chunks with at least one mention (the N of idf and PMI).
    fn n_chunks(&self) -> f32 {
        self.chunks.len().max(1) as f32
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The stored vector of a concept (to reuse instead of embedding its name again).
    pub fn vector_of(&self, id: &str) -> Option<Vec<f32>> {
        self.by_id.get(id).map(|&i| self.row_of(i).to_vec())
    }

    fn row_of(&self, i: u32) -> &[f32] {
        let start = i as usize * self.dim;
        &self.matrix[start..start + self.dim]
    }

    fn node(&self, i: u32) -> Option<&Node> {
        self.nodes.get(i as usize).and_then(|n| n.as_ref())
    }

    /// The row the `concepts` table should hold for `id` (`None` once nothing mentions it).
    pub fn row(&self, id: &str) -> Option<ConceptRow> {
        let n = self.node(*self.by_id.get(id)?)?;
        Some(ConceptRow {
            id: n.id.clone(),
            name: n.name(),
            aliases: n.aliases(),
            frequency: n.chunks.len() as u32,
            source_count: n.sources.len() as u32,
            vector: self.row_of(*self.by_id.get(id)?).to_vec(),
        })
    }

    pub fn ids(&self) -> Vec<String> {
        self.by_id.keys().cloned().collect()
    }

    /// Adds the mentions of one committed chunk. `vectors` gives the embedding of concepts the
    /// graph does not hold yet; a mention of an unknown concept without one is skipped and
    /// counted in the result (it would be a dangling mention).
    pub fn add_chunk(
        &mut self,
        chunk_id: &str,
        source_id: &str,
        mentions: &[(String, String)],
        vectors: &dyn Fn(&str) -> Option<Vec<f32>>,
        touched: &mut BTreeSet<String>,
    ) -> usize {
        if self.chunks.contains_key(chunk_id) {
            self.remove_chunk(chunk_id, touched);
        }
        let mut skipped = 0;
        let mut entry = ChunkEntry {
            source_id: source_id.to_string(),
            concepts: Vec::new(),
        };
        for (id, surface) in mentions {
            let i = match self.by_id.get(id) {
                Some(&i) => i,
                None => match vectors(id).and_then(|v| self.insert_node(id, normalised(&v))) {
                    Some(i) => i,
                    None => {
                        skipped += 1;
                        continue;
                    }
                },
            };
            if entry.concepts.iter().any(|(j, _)| *j == i) {
                continue;
            }
            let n = self.nodes[i as usize].as_mut().expect("live node");
            for sf in surface.split('|').filter(|x| !x.is_empty()) {
                *n.surfaces.entry(sf.to_string()).or_default() += 1;
                self.by_surface.entry(sf.to_string()).or_default().insert(i);
            }
            n.chunks.insert(chunk_id.to_string());
            *n.sources.entry(source_id.to_string()).or_default() += 1;
            touched.insert(id.clone());
            entry.concepts.push((i, surface.clone()));
        }
        for a in 0..entry.concepts.len() {
            for b in 0..a {
                let (x, y) = (entry.concepts[a].0, entry.concepts[b].0);
                let c = self.adjacency[x as usize].entry(y).or_default();
                if *c == 0 {
                    self.edges += 1;
                }
                *c += 1;
                *self.adjacency[y as usize].entry(x).or_default() += 1;
            }
        }
        if !entry.concepts.is_empty() {
            self.by_source
                .entry(source_id.to_string())
                .or_default()
                .insert(chunk_id.to_string());
            self.chunks.insert(chunk_id.to_string(), entry);
        }
        skipped
    }

    /// Adds a node, or `None` when its vector has another dimension than the others.
    fn insert_node(&mut self, id: &str, vector: Vec<f32>) -> Option<u32> {
        if self.dim == 0 {
            self.dim = vector.len();
        }
        if vector.len() != self.dim || self.dim == 0 {
            return None;
        }
        let node = Node {
            id: id.to_string(),
            surfaces: BTreeMap::new(),
            chunks: BTreeSet::new(),
            sources: BTreeMap::new(),
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = Some(node);
                self.adjacency[i as usize].clear();
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.adjacency.push(HashMap::new());
                self.matrix.resize(self.nodes.len() * self.dim, 0.0);
                (self.nodes.len() - 1) as u32
            }
        };
        let start = i as usize * self.dim;
        self.matrix[start..start + self.dim].copy_from_slice(&vector);
        self.by_id.insert(id.to_string(), i);
        Some(i)
    }

    fn remove_chunk(&mut self, chunk_id: &str, touched: &mut BTreeSet<String>) {
        let Some(entry) = self.chunks.remove(chunk_id) else {
            return;
        };
        if let Some(set) = self.by_source.get_mut(&entry.source_id) {
            set.remove(chunk_id);
            if set.is_empty() {
                self.by_source.remove(&entry.source_id);
            }
        }
        for a in 0..entry.concepts.len() {
            for b in 0..a {
                let (x, y) = (entry.concepts[a].0, entry.concepts[b].0);
                for (p, q) in [(x, y), (y, x)] {
                    let adj = &mut self.adjacency[p as usize];
                    if let Some(c) = adj.get_mut(&q) {
                        *c -= 1;
                        if *c == 0 {
                            adj.remove(&q);
                            if p == x {
                                self.edges -= 1;
                            }
                        }
                    }
                }
            }
        }
        for (i, surface) in &entry.concepts {
            let n = self.nodes[*i as usize].as_mut().expect("live node");
            touched.insert(n.id.clone());
            for sf in surface.split('|').filter(|x| !x.is_empty()) {
                if let Some(c) = n.surfaces.get_mut(sf) {
                    *c -= 1;
                    if *c == 0 {
                        n.surfaces.remove(sf);
                        if let Some(s) = self.by_surface.get_mut(sf) {
                            s.remove(i);
                            if s.is_empty() {
                                self.by_surface.remove(sf);
                            }
                        }
                    }
                }
            }
            n.chunks.remove(chunk_id);
            if let Some(c) = n.sources.get_mut(&entry.source_id) {
                *c -= 1;
                if *c == 0 {
                    n.sources.remove(&entry.source_id);
                }
            }
            if n.chunks.is_empty() {
                let id = n.id.clone();
                self.by_id.remove(&id);
                self.nodes[*i as usize] = None;
                let start = *i as usize * self.dim;
                self.matrix[start..start + self.dim].fill(0.0);
                self.free.push(*i);
            }
        }
    }

    /// Removes every mention from the given sources; returns nothing, records the concepts
    /// whose rows changed (or must go) in `touched`.
    pub fn remove_sources(&mut self, source_ids: &[String], touched: &mut BTreeSet<String>) {
        for s in source_ids {
            let chunks: Vec<String> = self
                .by_source
                .get(s)
                .map(|c| c.iter().cloned().collect())
                .unwrap_or_default();
            for c in chunks {
                self.remove_chunk(&c, touched);
            }
        }
    }

    /// Finds a concept by id, by name or by alias (`None` when unknown).
    pub fn resolve(&self, id_or_name: &str) -> Option<u32> {
        if let Some(&i) = self.by_id.get(id_or_name) {
            return Some(i);
        }
        let key = concepts::normalise(id_or_name)?;
        if let Some(&i) = self.by_id.get(&concepts::slug(&key)) {
            return Some(i);
        }
        let lower = id_or_name.trim().to_lowercase();
        self.by_surface
            .get(&lower)
            .and_then(|s| {
                s.iter()
                    .max_by_key(|&&i| self.node(i).map(|n| n.chunks.len()))
            })
            .copied()
    }

    fn public(&self, i: u32) -> ConceptNode {
        let n = self.node(i).expect("live node");
        ConceptNode {
            id: n.id.clone(),
            name: n.name(),
            frequency: n.chunks.len() as u32,
        }
    }

    /// Concepts matching `text`: exact id/name/alias (score 1), then lexical word overlap
    /// (0.6–0.9), then embedding similarity of `vector` (below 0.6).
    pub fn find(&self, text: &str, vector: Option<&[f32]>, limit: usize) -> Vec<ConceptMatch> {
        let mut scores: HashMap<u32, f32> = HashMap::new();
        if let Some(i) = self.resolve(text) {
            scores.insert(i, 1.0);
        }
        let lower = text.trim().to_lowercase();
        if let Some(set) = self.by_surface.get(&lower) {
            for &i in set {
                scores.insert(i, 1.0);
            }
        }
        if let Some(key) = concepts::normalise(text) {
            let q: HashSet<&str> = key.split(' ').collect();
            for (id, &i) in &self.by_id {
                let words: HashSet<&str> = id.split('-').collect();
                let common = q.intersection(&words).count();
                if common == 0 {
                    continue;
                }
                let jaccard = common as f32 / q.union(&words).count() as f32;
                let s = 0.6 + 0.3 * jaccard;
                let e = scores.entry(i).or_default();
                *e = e.max(s.min(0.9));
            }
        }
        if let Some(v) = vector {
            let v = normalised(v);
            for (i, cos) in self.similar_to_vector(&v, limit.max(10), 0.3, None) {
                let e = scores.entry(i).or_default();
                *e = e.max(0.6 * cos);
            }
        }
        let mut out: Vec<(u32, f32)> = scores.into_iter().collect();
        out.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| {
                    let f = |i: u32| self.node(i).map_or(0, |n| n.chunks.len());
                    f(b.0).cmp(&f(a.0))
                })
                .then_with(|| {
                    self.node(a.0)
                        .map(|n| &n.id)
                        .cmp(&self.node(b.0).map(|n| &n.id))
                })
        });
        out.truncate(limit);
        out.into_iter()
            .filter_map(|(i, score)| {
                let n = self.node(i)?;
                let mut sources: Vec<(&String, &u32)> = n.sources.iter().collect();
                sources.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                Some(ConceptMatch {
                    id: n.id.clone(),
                    name: n.name(),
                    aliases: n.aliases(),
                    score: (score * 1e4).round() / 1e4,
                    frequency: n.chunks.len() as u32,
                    sources: sources
                        .into_iter()
                        .take(50)
                        .map(|(s, _)| s.clone())
                        .collect(),
                    chunks: n.chunks.iter().take(50).cloned().collect(),
                })
            })
            .collect()
    }

    /// Concept names closest to an unknown one (for a 404's suggestions).
    pub fn suggest(&self, text: &str, vector: Option<&[f32]>, limit: usize) -> Vec<String> {
        self.find(text, vector, limit)
            .into_iter()
            .map(|m| m.name)
            .collect()
    }

    /// Concepts by cosine similarity to a unit vector, best first: one matrix-vector product
    /// over every node's row (free rows are zero and never reach a positive threshold).
    fn similar_to_vector(
        &self,
        v: &[f32],
        k: usize,
        min_cos: f32,
        skip: Option<u32>,
    ) -> Vec<(u32, f32)> {
        if self.dim == 0 || v.len() != self.dim || self.nodes.is_empty() {
            return Vec::new();
        }
        let m = ndarray::ArrayView2::from_shape((self.nodes.len(), self.dim), &self.matrix)
            .expect("matrix holds one row per slot");
        let sims = m.dot(&ndarray::ArrayView1::from(v));
        let mut out: Vec<(u32, f32)> = sims
            .iter()
            .enumerate()
            .filter(|(i, c)| **c >= min_cos && Some(*i as u32) != skip && self.nodes[*i].is_some())
            .map(|(i, c)| (i as u32, *c))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        out
    }

    /// Co-occurrence edge weight of a pair seen together in `n_ab` chunks.
    fn cooccurrence_weight(&self, a: u32, b: u32, n_ab: u32) -> f32 {
        let n = self.n_chunks();
        let na = self.node(a).map_or(1, |x| x.chunks.len()) as f32;
        let nb = self.node(b).map_or(1, |x| x.chunks.len()) as f32;
        let p_ab = n_ab as f32 / n;
        let pmi = (p_ab / ((na / n) * (nb / n))).ln();
        let npmi = if p_ab >= 1.0 { 1.0 } else { pmi / -p_ab.ln() };
        npmi * n_ab as f32 / (n_ab as f32 + 1.0)
    }

    /// The strongest edges of a node, best first.
    fn edges_of(
        &self,
        i: u32,
        min_weight: f32,
        k: usize,
        similar: Option<f32>,
    ) -> Vec<(u32, EdgeKind, f32)> {
        let mut out: Vec<(u32, EdgeKind, f32)> = self.adjacency[i as usize]
            .iter()
            .map(|(&j, &c)| (j, EdgeKind::CoOccurs, self.cooccurrence_weight(i, j, c)))
            .filter(|e| e.2 > 0.0 && e.2 >= min_weight)
            .collect();
        if let (Some(min_cos), Some(_)) = (similar, self.node(i)) {
            let v = self.row_of(i).to_vec();
            for (j, c) in self.similar_to_vector(&v, k, min_cos.max(min_weight), Some(i)) {
                out.push((j, EdgeKind::SimilarTo, c));
            }
        }
        out.sort_by(|a, b| {
            b.2.total_cmp(&a.2)
                .then(a.0.cmp(&b.0))
                .then((a.1 as u8).cmp(&(b.1 as u8)))
        });
        out.truncate(k);
        out
    }

    /// The neighbourhood of `center` to `depth` hops: at most `limit` nodes besides the centre,
    /// the strongest edges first at each hop. `similar` is the `similar_to` cosine threshold.
    pub fn neighbourhood(
        &self,
        center: u32,
        depth: usize,
        limit: usize,
        min_weight: f32,
        similar: Option<f32>,
    ) -> Neighbourhood {
        let mut seen: HashSet<u32> = HashSet::from([center]);
        let mut order: Vec<u32> = Vec::new();
        let mut edges: Vec<GraphEdge> = Vec::new();
        let mut edge_set: HashSet<(u32, u32, u8)> = HashSet::new();
        let mut frontier = vec![center];
        for _ in 0..depth {
            let mut next = Vec::new();
            for &u in &frontier {
                for (v, kind, w) in self.edges_of(u, min_weight, limit.max(1), similar) {
                    let is_new = !seen.contains(&v);
                    if is_new && order.len() >= limit {
                        continue;
                    }
                    let key = (u.min(v), u.max(v), kind as u8);
                    if edge_set.insert(key) {
                        edges.push(GraphEdge {
                            source: self.node(u).expect("live").id.clone(),
                            target: self.node(v).expect("live").id.clone(),
                            kind,
                            weight: (w * 1e4).round() / 1e4,
                        });
                    }
                    if is_new {
                        seen.insert(v);
                        order.push(v);
                        next.push(v);
                    }
                }
            }
            frontier = next;
        }
        Neighbourhood {
            center: self.public(center),
            nodes: order.into_iter().map(|i| self.public(i)).collect(),
            edges,
        }
    }

    /// The concepts a query names (and, when `opts` allow, those similar to it and their
    /// strongest neighbours), with weights.
    pub fn expand(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        opts: ExpandOptions,
    ) -> Vec<Expansion> {
        let mut seeds: BTreeMap<u32, (f32, &'static str)> = BTreeMap::new();
        let exact = |i: u32, seeds: &mut BTreeMap<u32, (f32, &'static str)>| {
            seeds.insert(i, (1.0, "exact"));
        };
        if let Some(i) = self.resolve(query) {
            exact(i, &mut seeds);
        }
        for m in concepts::extract(query, 16, &concepts::acronyms(query)) {
            if let Some(&i) = self.by_id.get(&concepts::slug(&m.key)) {
                exact(i, &mut seeds);
            }
            if let Some(set) = self.by_surface.get(&m.surface) {
                for &i in set {
                    exact(i, &mut seeds);
                }
            }
        }
        if let (Some(v), true) = (vector, opts.min_similarity <= 1.0) {
            let v = normalised(v);
            for (i, c) in self.similar_to_vector(&v, 3, opts.min_similarity, None) {
                seeds.entry(i).or_insert((c, "similar"));
            }
        }
        let mut out: BTreeMap<u32, (f32, &'static str)> = seeds.clone();
        if opts.neighbours > 0 {
            for (&s, &(w, _)) in &seeds {
                for (j, _, e) in self.edges_of(s, opts.min_weight, opts.neighbours, None) {
                    let add = w * e * 0.5;
                    let slot = out.entry(j).or_insert((0.0, "neighbour"));
                    if slot.1 == "neighbour" {
                        slot.0 = slot.0.max(add);
                    }
                }
            }
        }
        let mut v: Vec<Expansion> = out
            .into_iter()
            .filter_map(|(i, (w, via))| {
                let n = self.node(i)?;
                Some(Expansion {
                    id: n.id.clone(),
                    name: n.name(),
                    via: via.to_string(),
                    weight: (w * 1e4).round() / 1e4,
                })
            })
            .collect();
        v.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.id.cmp(&b.id)));
        v
    }

    /// Chunks scored by the expanded concepts they mention (`Σ weight · idf`), best first,
    /// optionally only from `sources`. Concepts mentioned by more than 5% of the chunks are too
    /// generic to point anywhere and are skipped (they would also make this the slow part).
    pub fn score_chunks(
        &self,
        expansion: &[Expansion],
        sources: Option<&HashSet<String>>,
        k: usize,
    ) -> Vec<(String, f32)> {
        let n = self.n_chunks();
        let mut acc: HashMap<&str, f32> = HashMap::new();
        for e in expansion {
            let Some(node) = self.by_id.get(&e.id).and_then(|&i| self.node(i)) else {
                continue;
            };
            if node.chunks.len() as f32 > n / 20.0 && n >= 100.0 {
                continue;
            }
            let idf = (1.0 + n / node.chunks.len().max(1) as f32).ln();
            for c in &node.chunks {
                if let Some(s) = sources {
                    let src = self.chunks.get(c).map(|x| &x.source_id);
                    if !src.is_some_and(|x| s.contains(x)) {
                        continue;
                    }
                }
                *acc.entry(c.as_str()).or_default() += e.weight * idf;
            }
        }
        let mut out: Vec<(String, f32)> =
            acc.into_iter().map(|(c, s)| (c.to_string(), s)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        out
    }

    /// Concept ids of a chunk (for tests and checks).
    pub fn chunk_concepts(&self, chunk_id: &str) -> Vec<String> {
        self.chunks
            .get(chunk_id)
            .map(|e| {
                e.concepts
                    .iter()
                    .filter_map(|(i, _)| self.node(*i).map(|n| n.id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The concepts a chunk mentions, as the API shows them (a source's chunk view).
    pub fn chunk_nodes(&self, chunk_id: &str) -> Vec<ConceptNode> {
        let Some(e) = self.chunks.get(chunk_id) else {
            return Vec::new();
        };
        let mut ids: Vec<u32> = e.concepts.iter().map(|(i, _)| *i).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter(|i| self.node(*i).is_some())
            .map(|i| self.public(i))
            .collect()
    }

    /// Every (chunk, concept) pair, for the consistency check.
    pub fn mention_keys(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (c, e) in &self.chunks {
            for (i, _) in &e.concepts {
                if let Some(n) = self.node(*i) {
                    v.push((c.clone(), n.id.clone()));
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 4];
        v[i % 4] = 1.0;
        v
    }

    fn graph() -> ConceptGraph {
        let mut g = ConceptGraph::default();
        let vec_of = |id: &str| Some(unit(id.len()));
        let mut t = BTreeSet::new();
        let m = |v: &[&str]| -> Vec<(String, String)> {
            v.iter()
                .map(|s| (s.to_string(), s.replace('-', " ")))
                .collect()
        };
        g.add_chunk("c1", "s1", &m(&["alpha", "beta"]), &vec_of, &mut t);
        g.add_chunk("c2", "s1", &m(&["alpha", "beta", "gamma"]), &vec_of, &mut t);
        g.add_chunk("c3", "s2", &m(&["gamma", "delta"]), &vec_of, &mut t);
        g.add_chunk("c4", "s3", &m(&["epsilon"]), &vec_of, &mut t);
        // Unrelated chunks, so that the pairs above co-occur more often than chance.
        for (c, x) in [("c5", "zeta"), ("c6", "eta"), ("c7", "theta")] {
            g.add_chunk(c, "s4", &m(&[x]), &vec_of, &mut t);
        }
        g
    }

    #[test]
    fn counts_and_edges() {
        let g = graph();
        assert_eq!(g.concept_count(), 8);
        // alpha-beta, alpha-gamma, beta-gamma, gamma-delta.
        assert_eq!(g.edge_count(), 4);
        let a = g.resolve("alpha").unwrap();
        let n = g.neighbourhood(a, 1, 10, 0.0, None);
        let ids: Vec<&str> = n.nodes.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(
            ids[0], "beta",
            "the pair seen twice is the strongest: {ids:?}"
        );
        assert!(!ids.contains(&"delta"));
        let n2 = g.neighbourhood(a, 2, 10, 0.0, None);
        assert!(
            n2.nodes.iter().any(|x| x.id == "delta"),
            "depth 2 reaches delta"
        );
        assert!(!n2.nodes.iter().any(|x| x.id == "epsilon"));
    }

    #[test]
    fn removing_sources_leaves_no_orphans() {
        let mut g = graph();
        let mut t = BTreeSet::new();
        g.remove_sources(&["s1".into()], &mut t);
        assert!(t.contains("alpha") && t.contains("beta") && t.contains("gamma"));
        assert!(g.row("alpha").is_none() && g.row("beta").is_none());
        assert_eq!(g.row("gamma").unwrap().frequency, 1);
        assert_eq!(g.edge_count(), 1);
        g.remove_sources(&["s2".into(), "s3".into(), "s4".into()], &mut t);
        assert_eq!(g.concept_count(), 0);
        assert_eq!(g.edge_count(), 0);
        assert_eq!(g.mention_count(), 0);
        assert!(g.adjacency.iter().all(|a| a.is_empty()));
    }
}
