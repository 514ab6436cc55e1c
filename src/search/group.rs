//! Collapsing a ranking into groups (`group_by`): one group per source or metadata value,
//! ranked by its best chunk, holding its best `size` chunks. Pure: the caller says each
//! chunk's key.
//!
//! Why here and not in the store: grouping follows the final order (after fusion, re-ranking
//! and MMR), and a group's rank is its best chunk's rank, so collapsing a prefix of the ranking
//! gives a prefix of the groups — the property that keeps pages stable.

use std::collections::HashMap;

/// One group: its key and its chunks (id, score), best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `None`: the chunks whose source lacks the metadata key.
    pub key: Option<String>,
    pub hits: Vec<(String, f32)>,
}

/// Groups `ranked` (best first) by `key_of(chunk id)`, which answers `None` for a chunk to skip
/// (no row) and `Some(key)` otherwise. Groups come in the order of their best chunk; each keeps
/// at most `size` chunks (at least one).
pub fn group<F>(ranked: &[(String, f32)], key_of: F, size: usize) -> Vec<Group>
where
    F: Fn(&str) -> Option<Option<String>>,
{
    let size = size.max(1);
    let mut at: HashMap<Option<String>, usize> = HashMap::new();
    let mut out: Vec<Group> = Vec::new();
    for (id, score) in ranked {
        let Some(key) = key_of(id) else { continue };
        let i = *at.entry(key.clone()).or_insert_with(|| {
            out.push(Group {
                key,
                hits: Vec::new(),
            });
            out.len() - 1
        });
        if out[i].hits.len() < size {
            out[i].hits.push((id.clone(), *score));
        }
    }
    out
}

/// The page `offset .. offset + limit` of `items`, and the next page's offset when there is one.
pub fn page<T>(items: &[T], offset: usize, limit: usize) -> (&[T], Option<usize>) {
    let end = (offset + limit).min(items.len());
    let more = items.len() > offset + limit;
    (&items[offset.min(end)..end], more.then_some(offset + limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranked(ids: &[&str]) -> Vec<(String, f32)> {
        let n = ids.len() as f32;
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.to_string(), n - i as f32))
            .collect()
    }

    /// Ids are `source/chunk`; `x/…` has no row.
    fn by_source(id: &str) -> Option<Option<String>> {
        let (s, _) = id.split_once('/')?;
        (s != "x").then(|| Some(s.to_string()))
    }

    #[test]
    fn groups_rank_by_their_best_chunk_and_keep_size_chunks() {
        let r = ranked(&["a/1", "b/1", "a/2", "x/1", "a/3", "c/1", "b/2"]);
        let g = group(&r, by_source, 2);
        let keys: Vec<_> = g.iter().map(|g| g.key.clone().unwrap()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let a: Vec<&str> = g[0].hits.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(a, ["a/1", "a/2"]);
        assert_eq!(g[0].hits[0].1, 7.0);
        assert_eq!(g[1].hits.len(), 2);
        // Size 0 still keeps the best chunk.
        assert!(group(&r, by_source, 0).iter().all(|g| g.hits.len() == 1));
    }

    #[test]
    fn chunks_without_the_key_share_one_null_group() {
        let r = ranked(&["a/1", "n/1", "b/1", "n/2"]);
        let key = |id: &str| Some((!id.starts_with('n')).then(|| id[..1].to_string()));
        let g = group(&r, key, 3);
        assert_eq!(g.len(), 3);
        assert_eq!(g[1].key, None);
        assert_eq!(g[1].hits.len(), 2);
    }

    #[test]
    fn pages_cover_everything_once() {
        let items: Vec<u32> = (0..25).collect();
        assert_eq!(page(&items, 0, 10), (&items[0..10], Some(10)));
        assert_eq!(page(&items, 20, 10), (&items[20..25], None));
        assert_eq!(page(&items, 15, 10), (&items[15..25], None));
        assert_eq!(page(&items, 30, 10), (&[][..], None));
    }

    proptest! {
        #[test]
        fn a_prefix_of_the_ranking_groups_into_a_prefix_of_the_groups(
            sources in proptest::collection::vec(0u8..8, 0..40),
            cut in 0usize..40,
            size in 1usize..4,
        ) {
            let ids: Vec<String> = sources.iter().enumerate().map(|(i, s)| format!("{s}/{i}")).collect();
            let r: Vec<(String, f32)> = ids.iter().map(|id| (id.clone(), 1.0)).collect();
            let all = group(&r, by_source, size);
            let keys: Vec<_> = all.iter().map(|g| g.key.clone()).collect();
            let mut uniq = keys.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(uniq.len(), keys.len());
            let head = group(&r[..cut.min(r.len())], by_source, size);
            for (h, a) in head.iter().zip(&all) {
                prop_assert_eq!(&h.key, &a.key);
                prop_assert_eq!(&h.hits[0], &a.hits[0]);
            }
        }
    }
}
