//! Search queries that arrive together share model calls.
//!
//! One query is a few dozen tokens, and a model call on so few rows spends much of its time on
//! fixed costs (the graph's per-call work, small matrix products that cannot use the cores'
//! vector units well). Under concurrent searches several queries wait for a session at once;
//! a worker per session takes every waiting query and runs them in as few calls as pays.
//!
//! Padding is what makes this tricky: a batch is padded to its longest input, and queries of
//! very different lengths in one call cost more than running them apart. So the waiting
//! queries are sorted by token count and split into runs of similar length by [`plan`], which
//! minimises a cost model of `overhead + rows × longest` tokens per call. A query that arrives
//! alone is embedded alone, at once: nothing waits for a batch to fill.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};

/// One model call on a batch of texts, as a worker makes it: one vector per text, in order
/// (not normalised). Each worker owns one, bound to its session.
pub type Call = Box<dyn Fn(&[&str]) -> Result<Vec<Vec<f32>>> + Send>;

/// The fixed cost of one model call, in tokens of a one-row call's per-token cost. Measured on
/// the default model (2-core x86, ONNX Runtime 1.31, `docs/benchmarks.md`): calls of 1 to 8
/// queries of 8 to 64 tokens fit `overhead + rows × longest` within a few percent with this
/// value.
pub const CALL_OVERHEAD_TOKENS: usize = 12;

/// Splits queries sorted by ascending token count into consecutive groups (one model call each)
/// of at most `max` queries, minimising Σ (`overhead` + size × longest) over the groups.
pub fn plan(sorted_tokens: &[usize], overhead: usize, max: usize) -> Vec<Range<usize>> {
    let n = sorted_tokens.len();
    let max = max.max(1);
    // best[j]: least cost of the first j queries; cut[j]: where the last group of it starts.
    let mut best = vec![0usize; n + 1];
    let mut cut = vec![0usize; n + 1];
    for j in 1..=n {
        let longest = sorted_tokens[j - 1];
        best[j] = usize::MAX;
        for i in j.saturating_sub(max)..j {
            let c = best[i] + overhead + (j - i) * longest;
            if c < best[j] {
                best[j] = c;
                cut[j] = i;
            }
        }
    }
    let mut groups = Vec::new();
    let mut j = n;
    while j > 0 {
        groups.push(cut[j]..j);
        j = cut[j];
    }
    groups.reverse();
    groups
}

/// Sorts `items` by token count and splits them by [`plan`] into the groups to embed together,
/// each in ascending length. What the batcher's workers do with the queries they take, and
/// what `cairn bench embed` measures.
pub fn split<T>(
    mut items: Vec<T>,
    tokens: impl Fn(&T) -> usize,
    overhead: usize,
    max: usize,
) -> Vec<Vec<T>> {
    items.sort_by_key(&tokens);
    let lengths: Vec<usize> = items.iter().map(&tokens).collect();
    let mut items = items.into_iter();
    plan(&lengths, overhead, max)
        .into_iter()
        .map(|g| items.by_ref().take(g.len()).collect())
        .collect()
}

/// One waiting query.
struct Job {
    text: String,
    tokens: usize,
    span: tracing::Span,
    reply: tokio::sync::oneshot::Sender<Result<Vec<f32>>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Job>,
    closed: bool,
    counts: Counts,
}

/// What a batcher has done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Queries waiting for a worker.
    pub waiting: usize,
    /// Queries taken by a worker.
    pub taken: usize,
    /// Model calls made or under way.
    pub calls: usize,
}

type Shared = (Mutex<Queue>, Condvar);

/// A queued query's vector, to be awaited (or `blocking_recv`ed off the runtime).
pub type Pending = tokio::sync::oneshot::Receiver<Result<Vec<f32>>>;

/// The queue of waiting queries and the workers that drain it (one per session).
pub struct QueryBatcher {
    queue: Arc<Shared>,
}

impl QueryBatcher {
    /// Starts one worker per call (one per session); each takes up to `max` waiting queries at
    /// a time.
    pub fn start(calls: Vec<Call>, max: usize) -> Result<Self> {
        let queue: Arc<Shared> = Arc::default();
        for (i, call) in calls.into_iter().enumerate() {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("cairn-embed-{i}"))
                .spawn(move || work(&queue, &call, max))
                .map_err(Error::internal)?;
        }
        Ok(Self { queue })
    }

    /// Embeds one query (`tokens` long) with whatever else is waiting; blocks until done.
    /// The vector is not normalised.
    pub fn embed(&self, text: &str, tokens: usize) -> Result<Vec<f32>> {
        self.submit(text, tokens)?
            .blocking_recv()
            .unwrap_or_else(|_| Err(Error::internal("embedding worker stopped")))
    }

    /// Queues one query without waiting: the vector arrives on the receiver, which an async
    /// caller awaits on its own thread (no hand-off to a blocking thread). Not normalised.
    pub fn submit(&self, text: &str, tokens: usize) -> Result<Pending> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (lock, wake) = &*self.queue;
        let mut q = lock
            .lock()
            .map_err(|_| Error::internal("embedder lock poisoned"))?;
        q.waiting.push(Job {
            text: text.to_string(),
            tokens,
            span: tracing::Span::current(),
            reply: tx,
        });
        wake.notify_one();
        Ok(rx)
    }

    /// What the batcher has done so far.
    pub fn counts(&self) -> Counts {
        self.queue
            .0
            .lock()
            .map(|q| Counts {
                waiting: q.waiting.len(),
                ..q.counts
            })
            .unwrap_or_default()
    }
}

impl Drop for QueryBatcher {
    fn drop(&mut self) {
        let (lock, wake) = &*self.queue;
        if let Ok(mut q) = lock.lock() {
            q.closed = true;
        }
        wake.notify_all();
    }
}

/// A worker: waits for queries, takes all that wait (up to `max`), embeds them in planned
/// groups, answers each; stops when the batcher is dropped and nothing waits.
fn work(queue: &Shared, call: &Call, max: usize) {
    let (lock, wake) = queue;
    loop {
        let groups = {
            let Ok(mut q) = lock.lock() else { return };
            while q.waiting.is_empty() && !q.closed {
                q = match wake.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if q.waiting.is_empty() {
                return;
            }
            let take = q.waiting.len().min(max);
            let jobs: Vec<Job> = q.waiting.drain(..take).collect();
            if !q.waiting.is_empty() {
                // More than one worker's worth: let another session take the rest.
                wake.notify_one();
            }
            let groups = split(jobs, |j| j.tokens, CALL_OVERHEAD_TOKENS, max);
            q.counts.taken += take;
            q.counts.calls += groups.len();
            groups
        };
        for group in groups {
            run(call, group);
        }
    }
}

/// One model call for a group of queries; every query of it gets the vector or the error. A
/// panic in the call is an error for this group only: the worker goes on serving.
fn run(call: &Call, group: Vec<Job>) {
    let span = tracing::debug_span!("embed_batch", queries = group.len());
    for j in &group {
        span.follows_from(&j.span);
    }
    let _entered = span.enter();
    metrics::histogram!("cairn_embed_batch_size").record(group.len() as f64);
    let texts: Vec<&str> = group.iter().map(|j| j.text.as_str()).collect();
    let out = catch_unwind(AssertUnwindSafe(|| call(&texts)))
        .unwrap_or_else(|_| Err(Error::Embedding("the embedding model panicked".into())));
    match out {
        Ok(vecs) if vecs.len() == group.len() => {
            for (j, v) in group.into_iter().zip(vecs) {
                let _ = j.reply.send(Ok(v));
            }
        }
        other => {
            let message = match other {
                Err(e) => e.to_string(),
                Ok(v) => format!(
                    "model returned {} vectors for {} queries",
                    v.len(),
                    group.len()
                ),
            };
            for j in group {
                let _ = j.reply.send(Err(Error::Embedding(message.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cost(tokens: &[usize], groups: &[Range<usize>], overhead: usize) -> usize {
        groups
            .iter()
            .map(|g| overhead + g.len() * tokens[g.end - 1])
            .sum()
    }

    /// Every partition of `n` sorted items into consecutive groups of at most `max`.
    fn partitions(n: usize, max: usize) -> Vec<Vec<Range<usize>>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut all = Vec::new();
        for last in 1..=max.min(n) {
            for mut p in partitions(n - last, max) {
                p.push(n - last..n);
                all.push(p);
            }
        }
        all
    }

    #[test]
    fn similar_lengths_share_a_call_and_outliers_go_alone() {
        assert_eq!(plan(&[], 12, 16), Vec::<Range<usize>>::new());
        assert_eq!(plan(&[20], 12, 16), vec![0..1]);
        assert_eq!(plan(&[18, 20, 21, 22], 12, 16), vec![0..4]);
        // Padding three short queries to 64 tokens costs more than a second call.
        assert_eq!(plan(&[10, 11, 12, 64], 12, 16), vec![0..3, 3..4]);
        // The size cap holds even when one call would be cheapest.
        assert_eq!(plan(&[20; 5], 12, 2), vec![0..1, 1..3, 3..5]);
    }

    #[test]
    fn split_sorts_by_tokens_and_groups_by_the_plan() {
        let items = vec![
            "c".repeat(64),
            "a".repeat(10),
            "b".repeat(12),
            "a".repeat(11),
        ];
        let groups = split(items, |s| s.len(), 12, 16);
        let lengths: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| g.iter().map(|s| s.len()).collect())
            .collect();
        assert_eq!(lengths, vec![vec![10, 11, 12], vec![64]]);
        assert!(split(Vec::<String>::new(), |s| s.len(), 12, 16).is_empty());
    }

    /// A batcher with one worker whose call holds `gate` while it runs, fails on "fail", panics
    /// on "boom", and otherwise answers each text with `[calls so far, texts in this call]`.
    fn gated_batcher(gate: Arc<Mutex<()>>) -> QueryBatcher {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let call: Call = Box::new(move |texts: &[&str]| {
            let _held = gate.lock().unwrap_or_else(|e| e.into_inner());
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if texts.contains(&"boom") {
                panic!("boom");
            }
            if texts.contains(&"fail") {
                return Err(Error::Embedding("model failed".into()));
            }
            Ok(texts
                .iter()
                .map(|_| vec![n as f32, texts.len() as f32])
                .collect())
        });
        QueryBatcher::start(vec![call], 16).unwrap()
    }

    /// Waits (no sleeps) until `done` holds for the batcher's counts, and returns them.
    fn until(b: &QueryBatcher, done: impl Fn(&Counts) -> bool) -> Counts {
        loop {
            let c = b.counts();
            if done(&c) {
                return c;
            }
            std::thread::yield_now();
        }
    }

    #[test]
    fn queries_that_wait_share_one_call_and_a_failure_reaches_its_whole_group() {
        let gate = Arc::new(Mutex::new(()));
        let b = Arc::new(gated_batcher(gate.clone()));
        let held = gate.lock().unwrap();
        let ask = |text: &'static str| {
            let b = b.clone();
            std::thread::spawn(move || b.embed(text, text.len()))
        };
        // The first query is taken at once and blocks on the gate; the next three pile up.
        // (Waiting for it to be *taken*, not only queued: a worker that had not yet taken it
        // when the others arrived would take all four as one group.)
        let first = ask("first");
        until(&b, |c| c.taken >= 1);
        let rest: Vec<_> = ["one", "three", "fail"].into_iter().map(ask).collect();
        let c = until(&b, |c| c.waiting + c.taken >= 4);
        assert_eq!((c.taken, c.waiting), (1, 3));
        drop(held);
        assert_eq!(first.join().unwrap().unwrap(), vec![1.0, 1.0]);
        for r in rest {
            // One call for the three (lengths 3, 4 and 5 plan into one group), so the failure
            // of one is every one's.
            let e = r.join().unwrap().unwrap_err();
            assert!(e.to_string().contains("model failed"), "{e}");
        }
        let c = b.counts();
        assert_eq!((c.waiting, c.taken, c.calls), (0, 4, 2));
        // A lone query afterwards is one call of one.
        assert_eq!(b.embed("later", 5).unwrap(), vec![3.0, 1.0]);
    }

    #[test]
    fn a_panic_in_the_model_fails_its_group_and_the_worker_goes_on() {
        let b = gated_batcher(Arc::new(Mutex::new(())));
        let e = b.embed("boom", 4).unwrap_err();
        assert!(matches!(e, Error::Embedding(_)), "{e:?}");
        assert!(e.to_string().contains("panicked"), "{e}");
        // The only worker survived: a later query is answered (it would block forever if not).
        assert_eq!(b.embed("after", 5).unwrap(), vec![2.0, 1.0]);
        assert_eq!(b.counts().calls, 2);
    }

    proptest! {
        #[test]
        fn plan_is_an_optimal_partition(
            mut tokens in proptest::collection::vec(1usize..80, 0..8),
            overhead in 0usize..40,
            max in 1usize..6,
        ) {
            tokens.sort_unstable();
            let groups = plan(&tokens, overhead, max);
            // Consecutive, non-empty, covering every query once, none larger than max.
            let mut next = 0;
            for g in &groups {
                prop_assert_eq!(g.start, next);
                prop_assert!(!g.is_empty() && g.len() <= max);
                next = g.end;
            }
            prop_assert_eq!(next, tokens.len());
            // No partition is cheaper (exhaustive over the small inputs).
            let found = cost(&tokens, &groups, overhead);
            let least = partitions(tokens.len(), max)
                .iter()
                .map(|p| cost(&tokens, p, overhead))
                .min()
                .unwrap_or(0);
            prop_assert_eq!(found, least);
        }
    }
}
