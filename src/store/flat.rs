//! An exact, in-memory copy of the committed chunk vectors, for stores that fit in RAM.
//!
//! Below `index.ann_min_rows` LanceDB answers a nearest-neighbour query by an exact scan too,
//! but each query pays for planning, reading and decoding the vector column (33–41 ms for 9k
//! SciFact chunks against ~1 ms of arithmetic, see `docs/benchmarks.md`). This index keeps the
//! same vectors unit-length in one flat `Vec<f32>` and scans them directly: the same cosine
//! distances and ranking, without the per-query overhead. LanceDB stays the store of record:
//! the copy is loaded from it at open and follows every committed write (`store::Store`), and
//! it holds only what search needs (ids, the three filter columns and the vector).
//!
//! Up to `index.memory_max_rows` chunks (rows × dimension × 4 bytes: 154 MB for 100k 384-d
//! vectors); a store that outgrows it drops the copy and searches LanceDB again.

use std::collections::{HashMap, HashSet};

use super::Filters;

/// One chunk as the index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatEntry {
    pub chunk_id: String,
    pub source_id: String,
    pub file_type: String,
    /// Metadata as `key=value` terms (what filters compare).
    pub meta: Vec<String>,
    pub vector: Vec<f32>,
}

#[derive(Debug)]
struct Slot {
    chunk_id: String,
    source_id: String,
    file_type: String,
    meta: Vec<String>,
}

/// The in-memory index. Slots of removed chunks are reused by later inserts.
#[derive(Debug)]
pub struct FlatIndex {
    dim: usize,
    slots: Vec<Option<Slot>>,
    /// `slots.len() × dim` floats, unit-length rows (zero for a free slot).
    vectors: Vec<f32>,
    by_chunk: HashMap<String, usize>,
    by_source: HashMap<String, Vec<usize>>,
    free: Vec<usize>,
}

impl FlatIndex {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            slots: Vec::new(),
            vectors: Vec::new(),
            by_chunk: HashMap::new(),
            by_source: HashMap::new(),
            free: Vec::new(),
        }
    }

    /// Number of chunks held.
    pub fn len(&self) -> usize {
        self.by_chunk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_chunk.is_empty()
    }

    /// Bytes the vectors take.
    pub fn vector_bytes(&self) -> usize {
        self.vectors.len() * std::mem::size_of::<f32>()
    }

    /// Adds (or replaces) a chunk. A vector of another dimension is refused.
    pub fn insert(&mut self, e: FlatEntry) -> bool {
        if e.vector.len() != self.dim {
            return false;
        }
        self.remove_chunk(&e.chunk_id);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.vectors.resize(self.slots.len() * self.dim, 0.0);
                self.slots.len() - 1
            }
        };
        let row = &mut self.vectors[slot * self.dim..(slot + 1) * self.dim];
        row.copy_from_slice(&e.vector);
        crate::embed::normalize(row);
        self.by_chunk.insert(e.chunk_id.clone(), slot);
        self.by_source
            .entry(e.source_id.clone())
            .or_default()
            .push(slot);
        self.slots[slot] = Some(Slot {
            chunk_id: e.chunk_id,
            source_id: e.source_id,
            file_type: e.file_type,
            meta: e.meta,
        });
        true
    }

    fn remove_chunk(&mut self, chunk_id: &str) {
        let Some(slot) = self.by_chunk.remove(chunk_id) else {
            return;
        };
        if let Some(s) = self.slots[slot].take() {
            if let Some(v) = self.by_source.get_mut(&s.source_id) {
                v.retain(|&x| x != slot);
                if v.is_empty() {
                    self.by_source.remove(&s.source_id);
                }
            }
        }
        self.free_slot(slot);
    }

    fn free_slot(&mut self, slot: usize) {
        self.vectors[slot * self.dim..(slot + 1) * self.dim].fill(0.0);
        self.free.push(slot);
    }

    /// Removes every chunk of `sources`.
    pub fn remove_sources(&mut self, sources: &[String]) {
        for s in sources {
            for slot in self.by_source.remove(s).unwrap_or_default() {
                if let Some(x) = self.slots[slot].take() {
                    self.by_chunk.remove(&x.chunk_id);
                }
                self.free_slot(slot);
            }
        }
    }

    /// Replaces the chunks of `sources` with `add` (what a committed write did).
    pub fn replace_sources(&mut self, sources: &[String], add: Vec<FlatEntry>) {
        self.remove_sources(sources);
        for e in add {
            self.insert(e);
        }
    }

    /// The stored (unit-length) vector of a chunk.
    pub fn vector(&self, chunk_id: &str) -> Option<&[f32]> {
        let slot = *self.by_chunk.get(chunk_id)?;
        Some(&self.vectors[slot * self.dim..(slot + 1) * self.dim])
    }

    /// The `k` nearest chunks passing `filters`, as `(chunk_id, cosine distance)`, nearest
    /// first (ties by chunk id, so equal inputs give equal output).
    pub fn search(&self, query: &[f32], k: usize, filters: &Filters) -> Vec<(String, f32)> {
        if k == 0 || query.len() != self.dim || self.is_empty() {
            return Vec::new();
        }
        let mut q = query.to_vec();
        crate::embed::normalize(&mut q);
        let pass = Matcher::new(filters);
        let dot = dot_fn();
        let mut scored: Vec<(f32, usize)> = Vec::with_capacity(self.len());
        for (slot, row) in self.vectors.chunks_exact(self.dim).enumerate() {
            let Some(s) = &self.slots[slot] else { continue };
            if !pass.accepts(s) {
                continue;
            }
            scored.push((1.0 - dot(&q, row), slot));
        }
        let id = |slot: usize| -> &str { self.slots[slot].as_ref().map_or("", |s| &s.chunk_id) };
        let cmp = |a: &(f32, usize), b: &(f32, usize)| {
            a.0.total_cmp(&b.0).then_with(|| id(a.1).cmp(id(b.1)))
        };
        if scored.len() > k {
            scored.select_nth_unstable_by(k - 1, cmp);
            scored.truncate(k);
        }
        scored.sort_unstable_by(cmp);
        scored
            .into_iter()
            .map(|(d, slot)| (id(slot).to_string(), d))
            .collect()
    }
}

/// A request's filters, prepared for testing many chunks.
struct Matcher<'a> {
    sources: Option<HashSet<&'a str>>,
    file_types: Option<HashSet<&'a str>>,
    meta: Vec<String>,
}

impl<'a> Matcher<'a> {
    fn new(f: &'a Filters) -> Self {
        let set = |v: &'a [String]| {
            (!v.is_empty()).then(|| v.iter().map(String::as_str).collect::<HashSet<_>>())
        };
        Self {
            sources: set(&f.source_ids),
            file_types: set(&f.file_types),
            meta: f.meta_terms(),
        }
    }

    fn accepts(&self, s: &Slot) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|x| x.contains(s.source_id.as_str()))
            && self
                .file_types
                .as_ref()
                .is_none_or(|x| x.contains(s.file_type.as_str()))
            && self.meta.iter().all(|t| s.meta.contains(t))
    }
}

/// The dot product for this CPU: AVX2 where it has it (4× the default SSE2 width's work per
/// instruction pair), else the portable loop. Picked once per search.
fn dot_fn() -> fn(&[f32], &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return dot_avx2;
    }
    dot
}

#[cfg(target_arch = "x86_64")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    #[target_feature(enable = "avx2")]
    unsafe fn inner(a: &[f32], b: &[f32]) -> f32 {
        dot(a, b)
    }
    // SAFETY: only returned by `dot_fn` after the CPU reported AVX2.
    unsafe { inner(a, b) }
}

/// Dot product in sixteen independent lanes (the compiler vectorises it; the lanes keep the
/// sum's order fixed, so the result does not depend on the instruction set).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(id: &str, source: &str, v: Vec<f32>) -> FlatEntry {
        FlatEntry {
            chunk_id: id.into(),
            source_id: source.into(),
            file_type: if source == "s2" { "pdf" } else { "text" }.into(),
            meta: vec![format!("src={source}")],
            vector: v,
        }
    }

    #[test]
    fn nearest_first_with_cosine_distance() {
        let mut ix = FlatIndex::new(2);
        ix.insert(entry("a", "s1", vec![1.0, 0.0]));
        ix.insert(entry("b", "s1", vec![0.0, 2.0]));
        ix.insert(entry("c", "s2", vec![1.0, 1.0]));
        let hits = ix.search(&[3.0, 0.1], 3, &Filters::default());
        let ids: Vec<&str> = hits.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert!(
            hits[0].1 < 0.01 && (hits[2].1 - 0.967).abs() < 0.01,
            "{hits:?}"
        );
        assert_eq!(ix.search(&[1.0, 0.0], 1, &Filters::default()).len(), 1);
    }

    #[test]
    fn filters_restrict_like_the_other_retrievers() {
        let mut ix = FlatIndex::new(2);
        ix.insert(entry("a", "s1", vec![1.0, 0.0]));
        ix.insert(entry("c", "s2", vec![1.0, 1.0]));
        let only = |f: Filters| -> Vec<String> {
            ix.search(&[1.0, 0.0], 5, &f)
                .into_iter()
                .map(|x| x.0)
                .collect()
        };
        let by_source = Filters {
            source_ids: vec!["s2".into()],
            ..Default::default()
        };
        assert_eq!(only(by_source), ["c"]);
        let by_type = Filters {
            file_types: vec!["text".into()],
            ..Default::default()
        };
        assert_eq!(only(by_type), ["a"]);
        let mut by_meta = Filters::default();
        by_meta.metadata.insert("src".into(), "s2".into());
        assert_eq!(only(by_meta), ["c"]);
        let mut none = Filters::default();
        none.metadata.insert("src".into(), "s9".into());
        assert!(only(none).is_empty());
    }

    #[test]
    fn replacing_a_source_drops_its_old_chunks_and_reuses_slots() {
        let mut ix = FlatIndex::new(2);
        ix.insert(entry("a", "s1", vec![1.0, 0.0]));
        ix.insert(entry("b", "s1", vec![0.0, 1.0]));
        ix.insert(entry("c", "s2", vec![1.0, 1.0]));
        ix.replace_sources(&["s1".into()], vec![entry("d", "s1", vec![0.0, 1.0])]);
        assert_eq!(ix.len(), 2);
        assert!(ix.vector("a").is_none() && ix.vector("b").is_none());
        assert_eq!(ix.slots.len(), 3, "freed slots are reused");
        let ids: Vec<String> = ix
            .search(&[0.0, 1.0], 5, &Filters::default())
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(ids, ["d", "c"]);
        ix.remove_sources(&["s1".into(), "s2".into()]);
        assert!(ix.is_empty());
        assert!(ix.search(&[0.0, 1.0], 5, &Filters::default()).is_empty());
        assert!(!ix.insert(entry("e", "s1", vec![1.0])), "wrong dimension");
    }

    #[test]
    fn every_dot_product_agrees() {
        let a: Vec<f32> = (0..389)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
            .collect();
        let b: Vec<f32> = (0..389)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
        assert_eq!(dot_fn()(&a, &b), dot(&a, &b), "same lanes, same sum");
    }

    proptest! {
        /// The index ranks exactly like a brute-force sort of the cosine distances.
        #[test]
        fn ranks_like_a_full_sort(
            rows in proptest::collection::vec(proptest::collection::vec(-1.0f32..1.0, 5), 1..60),
            q in proptest::collection::vec(-1.0f32..1.0, 5),
            k in 1usize..20,
        ) {
            let mut ix = FlatIndex::new(5);
            for (i, v) in rows.iter().enumerate() {
                ix.insert(entry(&format!("c{i:03}"), &format!("s{}", i % 3), v.clone()));
            }
            let got = ix.search(&q, k, &Filters::default());
            let cos = |a: &[f32], b: &[f32]| {
                let n = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>().sqrt();
                let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                if n(a) == 0.0 || n(b) == 0.0 { 0.0 } else { d / (n(a) * n(b)) }
            };
            let mut want: Vec<(String, f32)> = rows.iter().enumerate()
                .map(|(i, v)| (format!("c{i:03}"), 1.0 - cos(&q, v)))
                .collect();
            want.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            want.truncate(k);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g.1 - w.1).abs() < 1e-4, "{:?} vs {:?}", got, want);
            }
        }
    }
}
