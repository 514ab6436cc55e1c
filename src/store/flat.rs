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
//! The scan itself is memory-bound (14 MB of floats per query for SciFact), so it reads an
//! int8 copy of each row first (a quarter of the bytes) and computes the exact float product
//! only for the best candidates. The int8 product's error has a hard bound per row
//! (`‖q‖₁ × scale / 2`), and a row is skipped only when even that bound cannot lift it to the
//! k-th exact score, so the result is the exhaustive scan's, not an approximation.
//!
//! Up to `index.memory_max_rows` chunks (rows × dimension × 5 bytes: 192 MB for 100k 384-d
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
    /// The same rows in int8 (`row ≈ codes × scale`), what the first pass of a search reads.
    codes: Vec<i8>,
    /// Per-row scale of `codes` (the row's largest magnitude / 127; 0 for a free slot).
    scales: Vec<f32>,
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
            codes: Vec::new(),
            scales: Vec::new(),
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

    /// Bytes the vectors take (floats and their int8 copy).
    pub fn vector_bytes(&self) -> usize {
        self.vectors.len() * std::mem::size_of::<f32>()
            + self.codes.len()
            + self.scales.len() * std::mem::size_of::<f32>()
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
                self.codes.resize(self.slots.len() * self.dim, 0);
                self.scales.push(0.0);
                self.slots.len() - 1
            }
        };
        let rows = slot * self.dim..(slot + 1) * self.dim;
        let row = &mut self.vectors[rows.clone()];
        row.copy_from_slice(&e.vector);
        crate::embed::normalize(row);
        self.scales[slot] = quantize(row, &mut self.codes[rows]);
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
        self.codes[slot * self.dim..(slot + 1) * self.dim].fill(0);
        self.scales[slot] = 0.0;
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

    /// For each of `ids` this index holds: its source when it passes `filters`, `None` when
    /// they reject it. Ids it does not hold are absent.
    pub fn sources_passing(
        &self,
        ids: &[String],
        filters: &Filters,
    ) -> HashMap<String, Option<String>> {
        let pass = Matcher::new(filters);
        ids.iter()
            .filter_map(|id| {
                let s = self.slots[*self.by_chunk.get(id)?].as_ref()?;
                Some((id.clone(), pass.accepts(s).then(|| s.source_id.clone())))
            })
            .collect()
    }

    /// The `k` nearest chunks passing `filters`, as `(chunk_id, cosine distance)`, nearest
    /// first (ties by chunk id, so equal inputs give equal output).
    ///
    /// Two passes: every passing row's int8 product, then the exact float product of the
    /// best [`rescore_window`] rows and of any other row whose error bound reaches the k-th
    /// exact score. Rows left out provably rank below the k-th, so the result equals a full
    /// float scan's.
    pub fn search(&self, query: &[f32], k: usize, filters: &Filters) -> Vec<(String, f32)> {
        if k == 0 || query.len() != self.dim || self.is_empty() {
            return Vec::new();
        }
        let mut q = query.to_vec();
        crate::embed::normalize(&mut q);
        let pass = Matcher::new(filters);
        let (dot, idot) = (dot_fn(), idot_fn(self.dim));
        // The query in int16 too (q ≈ qc × sq), so the first pass is integer arithmetic.
        let mut qc = vec![0i16; self.dim];
        let sq = quantize_query(&q, &mut qc);
        // With q = sq·qc + eq and v = sv·c + ev (|eq| ≤ sq/2, |ev| ≤ sv/2 per component),
        // |q·v − sq·sv·(qc·c)| ≤ ‖q‖₁·sv/2 + ‖v‖₁·sq/2 + dim·sq·sv/4, and ‖v‖₁ ≤ √dim for a
        // unit row. The integer sum is exact; the slack covers the float rounding.
        let half_l1 = 0.5 * q.iter().map(|x| x.abs()).sum::<f32>();
        let per_scale = half_l1 + self.dim as f32 * sq / 4.0;
        let fixed = 0.5 * sq * (self.dim as f32).sqrt() + 1e-5;
        let bound = |slot: usize| per_scale * self.scales[slot] + fixed;
        // (approximate similarity, slot) of every passing row.
        let mut approx: Vec<(f32, usize)> = Vec::with_capacity(self.len());
        for (slot, codes) in self.codes.chunks_exact(self.dim).enumerate() {
            let Some(s) = &self.slots[slot] else { continue };
            if !pass.accepts(s) {
                continue;
            }
            approx.push((idot(&qc, codes) as f32 * sq * self.scales[slot], slot));
        }
        let window = rescore_window(k).min(approx.len());
        if window < approx.len() {
            approx.select_nth_unstable_by(window, |a, b| b.0.total_cmp(&a.0));
        }
        let row = |slot: usize| &self.vectors[slot * self.dim..(slot + 1) * self.dim];
        let mut scored: Vec<(f32, usize)> = approx[..window]
            .iter()
            .map(|&(_, slot)| (1.0 - dot(&q, row(slot)), slot))
            .collect();
        let id = |slot: usize| -> &str { self.slots[slot].as_ref().map_or("", |s| &s.chunk_id) };
        let cmp = |a: &(f32, usize), b: &(f32, usize)| {
            a.0.total_cmp(&b.0).then_with(|| id(a.1).cmp(id(b.1)))
        };
        if window < approx.len() {
            // The k-th exact similarity so far; a row outside the window whose bound reaches it
            // could still rank, so it is scored exactly too (rare: the bound is ~1e-3).
            let kth = if scored.len() >= k {
                scored.select_nth_unstable_by(k - 1, cmp);
                1.0 - scored[k - 1].0
            } else {
                f32::NEG_INFINITY
            };
            for &(a, slot) in &approx[window..] {
                if a + bound(slot) >= kth {
                    scored.push((1.0 - dot(&q, row(slot)), slot));
                }
            }
        }
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

/// Rows whose exact product a search computes up front: twice `k` plus a margin, so that the
/// int8 error (about 1e-3 in cosine) rarely leaves a top-`k` row outside.
pub fn rescore_window(k: usize) -> usize {
    2 * k + 64
}

/// Writes `row` as int8 codes (`row ≈ codes × scale`, rounded to nearest) and returns the
/// scale: the row's largest magnitude / 127 (0 for a zero row).
fn quantize(row: &[f32], codes: &mut [i8]) -> f32 {
    let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        codes.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (c, x) in codes.iter_mut().zip(row) {
        *c = (x / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
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

/// Largest magnitude of a query code: 13 bits keep `qc × c` sums of up to 16,000 dimensions
/// inside the int32 lanes of the AVX2 kernel.
const QUERY_MAX: f32 = 8191.0;
/// Dimensions above this take the portable (int64) kernel.
const AVX2_MAX_DIM: usize = 16_000;

/// Writes the (unit) query as int16 codes (`q ≈ codes × scale`) and returns the scale.
fn quantize_query(q: &[f32], codes: &mut [i16]) -> f32 {
    let max = q.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        codes.fill(0);
        return 0.0;
    }
    let scale = max / QUERY_MAX;
    for (c, x) in codes.iter_mut().zip(q) {
        *c = (x / scale).round().clamp(-QUERY_MAX, QUERY_MAX) as i16;
    }
    scale
}

/// The integer product for this CPU and dimension: AVX2 (`vpmaddwd`, sixteen products per
/// instruction) where it has it, else the portable loop.
fn idot_fn(dim: usize) -> fn(&[i16], &[i8]) -> i64 {
    #[cfg(target_arch = "x86_64")]
    if dim <= AVX2_MAX_DIM && std::arch::is_x86_feature_detected!("avx2") {
        return idot_avx2;
    }
    let _ = dim;
    idot
}

#[cfg(target_arch = "x86_64")]
fn idot_avx2(q: &[i16], c: &[i8]) -> i64 {
    #[target_feature(enable = "avx2")]
    unsafe fn inner(q: &[i16], c: &[i8]) -> i64 {
        use std::arch::x86_64::*;
        let n = q.len().min(c.len());
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n bounds both 16-element reads (unaligned loads).
            let (cv, qv) = unsafe {
                (
                    _mm_loadu_si128(c.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(q.as_ptr().add(i).cast()),
                )
            };
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(qv, _mm256_cvtepi8_epi16(cv)));
            i += 16;
        }
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` is 32 bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
        let head: i64 = lanes.iter().map(|&x| i64::from(x)).sum();
        head + idot(&q[i..n], &c[i..n])
    }
    // SAFETY: only returned by `idot_fn` after the CPU reported AVX2.
    unsafe { inner(q, c) }
}

/// The integer product of a query and a row's codes (before their scales).
fn idot(q: &[i16], c: &[i8]) -> i64 {
    q.iter()
        .zip(c)
        .map(|(&a, &b)| i64::from(a) * i64::from(b))
        .sum()
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
    fn sources_of_held_chunks_answer_the_filters() {
        let mut ix = FlatIndex::new(2);
        ix.insert(entry("a", "s1", vec![1.0, 0.0]));
        ix.insert(entry("c", "s2", vec![1.0, 1.0]));
        let ids: Vec<String> = ["a", "c", "gone"].map(String::from).to_vec();
        let all = ix.sources_passing(&ids, &Filters::default());
        assert_eq!(all.len(), 2);
        assert_eq!(all["a"].as_deref(), Some("s1"));
        let pdf = Filters {
            file_types: vec!["pdf".into()],
            ..Default::default()
        };
        let some = ix.sources_passing(&ids, &pdf);
        assert_eq!(
            (some["a"].as_deref(), some["c"].as_deref()),
            (None, Some("s2"))
        );
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

    /// A full float scan with the index's own arithmetic: what the two-pass search must equal.
    fn full_scan(ix: &FlatIndex, query: &[f32], k: usize) -> Vec<(String, f32)> {
        let mut q = query.to_vec();
        crate::embed::normalize(&mut q);
        let mut all: Vec<(String, f32)> = ix
            .by_chunk
            .iter()
            .map(|(id, &slot)| {
                let row = &ix.vectors[slot * ix.dim..(slot + 1) * ix.dim];
                (id.clone(), 1.0 - dot_fn()(&q, row))
            })
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    #[test]
    fn int8_pass_never_drops_a_neighbour_of_a_tight_cluster() {
        // 600 rows within ~1e-3 of each other: the int8 error is larger than the gaps between
        // them, so the window alone would miss neighbours and the error bound has to catch them.
        let dim = 48;
        let mut ix = FlatIndex::new(dim);
        for i in 0..600u32 {
            let v: Vec<f32> = (0..dim)
                .map(|d| 1.0 + 1e-3 * (((i * 31 + d as u32 * 17) % 97) as f32 / 97.0))
                .collect();
            ix.insert(entry(&format!("c{i:04}"), "s1", v));
        }
        let q: Vec<f32> = (0..dim).map(|d| 1.0 + (d % 5) as f32 * 1e-3).collect();
        for k in [1, 5, 40] {
            let got = ix.search(&q, k, &Filters::default());
            assert!(rescore_window(k) < 600);
            assert_eq!(got, full_scan(&ix, &q, k), "k = {k}");
        }
    }

    #[test]
    fn quantized_rows_stay_within_half_a_step() {
        let row = [0.5f32, -0.25, 0.0, 0.125, -0.5];
        let mut codes = [0i8; 5];
        let scale = quantize(&row, &mut codes);
        assert_eq!(codes, [127, -64, 0, 32, -127]);
        for (c, x) in codes.iter().zip(row) {
            assert!((f32::from(*c) * scale - x).abs() <= scale / 2.0);
        }
        assert_eq!(quantize(&[0.0; 3], &mut [0i8; 3]), 0.0);
        let mut qc = [0i16; 5];
        let sq = quantize_query(&row, &mut qc);
        assert_eq!(qc, [8191, -4096, 0, 2048, -8191]);
        assert!((sq - 0.5 / 8191.0).abs() < 1e-9);
        // The kernel for this CPU sums like the portable loop, remainders included.
        for n in [0, 5, 16, 37, 384, 1000] {
            let a: Vec<i16> = (0..n).map(|i| ((i * 613) % 16383) as i16 - 8191).collect();
            let b: Vec<i8> = (0..n).map(|i| ((i * 7) % 255) as i8).collect();
            let naive: i64 = a.iter().zip(&b).map(|(&x, &y)| x as i64 * y as i64).sum();
            assert_eq!(idot_fn(n)(&a, &b), naive, "n = {n}");
        }
    }

    proptest! {
        /// Past the rescoring window too, the two-pass search equals a full float scan.
        #[test]
        fn two_passes_equal_a_full_scan(
            rows in proptest::collection::vec(proptest::collection::vec(-1.0f32..1.0, 8), 70..300),
            q in proptest::collection::vec(-1.0f32..1.0, 8),
            k in 1usize..12,
            source in 0usize..4,
        ) {
            let mut ix = FlatIndex::new(8);
            for (i, v) in rows.iter().enumerate() {
                ix.insert(entry(&format!("c{i:03}"), &format!("s{}", i % 3), v.clone()));
            }
            prop_assert_eq!(ix.search(&q, k, &Filters::default()), full_scan(&ix, &q, k));
            // Through a filter, against the scan of the rows it keeps.
            let f = Filters { source_ids: vec![format!("s{source}")], ..Default::default() };
            let mut kept = FlatIndex::new(8);
            for (i, v) in rows.iter().enumerate().filter(|(i, _)| i % 3 == source) {
                kept.insert(entry(&format!("c{i:03}"), &format!("s{source}"), v.clone()));
            }
            prop_assert_eq!(ix.search(&q, k, &f), full_scan(&kept, &q, k));
        }

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
