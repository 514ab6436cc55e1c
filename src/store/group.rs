//! Group commit: the writes that queue behind the store's one writer go through the write
//! protocol together, as one journaled batch.
//!
//! Every write costs a fixed price whatever its size — a journal fsync, one LanceDB commit per
//! table (each merge-insert scans its table), one tantivy commit, two filesystem flushes — so
//! one-document uploads arriving together were limited to a few a second (issue 25's soak: ~2
//! writes/s at 2,000 sources). A writer now queues its write and the first to take the write
//! lock commits everything queued: the upserts as one upsert, the deletes as one delete. Each
//! caller gets the result for its own sources, as if its write had run alone:
//! - writes of different sources commute; writes of one source keep their arrival order (a
//!   second write of a source starts the next stretch of groups, see [`split`]), so no write
//!   is merged with, or reordered around, another of the same source;
//! - a group that fails for any reason but a full disk is rolled back as a whole and its
//!   writes are retried one by one, so a write that cannot be stored fails alone.

use std::collections::{HashSet, VecDeque};

use tokio::sync::oneshot;

use super::*;

/// The most sources one group commits (a bound on one commit's memory and duration).
const MAX_GROUP_SOURCES: usize = 512;

/// A write waiting for the writer.
pub(super) enum Op {
    Upsert {
        sources: Vec<SourceRecord>,
        chunks: Vec<ChunkRecord>,
        concepts: ConceptWrite,
    },
    Delete {
        ids: Vec<String>,
    },
}

impl Op {
    fn ids(&self) -> Vec<&str> {
        match self {
            Op::Upsert { sources, .. } => sources.iter().map(|s| s.id.as_str()).collect(),
            Op::Delete { ids } => ids.iter().map(String::as_str).collect(),
        }
    }

    fn is_upsert(&self) -> bool {
        matches!(self, Op::Upsert { .. })
    }
}

/// A queued write and where its result goes: the ids it wrote (or that existed, for a delete).
pub(super) struct Pending {
    op: Op,
    done: oneshot::Sender<Result<Vec<String>>>,
}

/// The writes waiting for the writer, in arrival order.
#[derive(Default)]
pub(super) struct WriteQueue(std::sync::Mutex<VecDeque<Pending>>);

impl WriteQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a write; the receiver gets its result.
    pub(super) fn push(&self, op: Op) -> oneshot::Receiver<Result<Vec<String>>> {
        let (done, rx) = oneshot::channel();
        self.lock().push_back(Pending { op, done });
        rx
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Everything queued, in groups (see the module docs).
    pub(super) fn take_groups(&self) -> Vec<Vec<Pending>> {
        let queued: Vec<Pending> = self.lock().drain(..).collect();
        split(queued, MAX_GROUP_SOURCES)
    }
}

/// Cuts writes into groups of one kind: the upserts of a stretch of the queue form one group
/// and its deletes another, until a write names a source that the stretch already holds (or
/// a group would pass `max` sources; a single larger write is a group of its own). Then the
/// stretch's groups are emitted, upserts first, and the write starts the next stretch. Writes
/// of different sources commute, so only writes of the same source must keep their order, and
/// they do: no stretch names a source twice.
fn split(queued: Vec<Pending>, max: usize) -> Vec<Vec<Pending>> {
    let mut out: Vec<Vec<Pending>> = Vec::new();
    let (mut upserts, mut deletes): (Vec<Pending>, Vec<Pending>) = Default::default();
    let (mut n_upserts, mut n_deletes) = (0, 0);
    let mut seen: HashSet<String> = HashSet::new();
    for p in queued {
        let ids = p.op.ids();
        let n = if p.op.is_upsert() {
            n_upserts
        } else {
            n_deletes
        };
        let repeats = ids.iter().any(|id| seen.contains(*id));
        if repeats || (n > 0 && n + ids.len() > max) {
            out.extend([std::mem::take(&mut upserts), std::mem::take(&mut deletes)]);
            (n_upserts, n_deletes) = (0, 0);
            seen.clear();
        }
        let count = ids.len();
        seen.extend(ids.into_iter().map(str::to_string));
        if p.op.is_upsert() {
            n_upserts += count;
            upserts.push(p);
        } else {
            n_deletes += count;
            deletes.push(p);
        }
    }
    out.extend([upserts, deletes]);
    out.retain(|g| !g.is_empty());
    out
}

impl Store {
    /// Queues a write and waits for its result. The write is committed by whichever writer
    /// takes the lock next, in a task of its own: a dropped caller never leaves it half-done.
    pub(super) async fn submit(self: &Arc<Self>, op: Op) -> Result<Vec<String>> {
        let rx = self.queue.push(op);
        let this = self.clone();
        tokio::spawn(async move { this.drain().await }.instrument(tracing::Span::current()));
        let r = rx
            .await
            .unwrap_or_else(|_| Err(Error::internal("store write task failed")));
        self.note_space(&r);
        r
    }

    /// Takes the write lock and commits every queued write (nothing when an earlier drain
    /// took them all).
    async fn drain(&self) {
        let _g = self.write_lock.lock().await;
        for group in self.queue.take_groups() {
            self.commit_group(group).await;
        }
    }

    async fn commit_group(&self, group: Vec<Pending>) {
        let (ops, senders): (Vec<Op>, Vec<_>) = group.into_iter().map(|p| (p.op, p.done)).unzip();
        if ops.len() == 1 {
            let op = ops.into_iter().next().expect("one write");
            let tx = senders.into_iter().next().expect("one sender");
            let _ = tx.send(self.commit_one(op).await);
            return;
        }
        let merged = async {
            if ops[0].is_upsert() {
                let (sources, chunks, concepts) = merge_upserts(&ops);
                self.upsert_now(sources, chunks, concepts).await
            } else {
                self.delete_now(&merge_deletes(&ops)).await
            }
        };
        let r = self.counted(ops.len(), merged).await;
        match r {
            Ok(done) => {
                for (op, tx) in ops.iter().zip(senders) {
                    let mine: HashSet<&str> = op.ids().into_iter().collect();
                    let own = done.iter().filter(|id| mine.contains(id.as_str()));
                    let _ = tx.send(Ok(own.cloned().collect()));
                }
            }
            // Rolled back as a whole; one by one would fail the same way.
            Err(e @ Error::NoSpace(_)) => {
                for tx in senders {
                    let _ = tx.send(Err(Error::internal(e.chain()).into_no_space()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e.chain(), writes = ops.len(), "group write failed; retrying its writes one by one");
                for (op, tx) in ops.into_iter().zip(senders) {
                    let _ = tx.send(self.commit_one(op).await);
                }
            }
        }
    }

    /// One write through the protocol on its own (the write lock held).
    async fn commit_one(&self, op: Op) -> Result<Vec<String>> {
        self.counted(1, async {
            match op {
                Op::Upsert {
                    sources,
                    chunks,
                    concepts,
                } => self.upsert_now(sources, chunks, concepts).await,
                Op::Delete { ids } => self.delete_now(&ids).await,
            }
        })
        .await
    }

    /// Runs one commit of `writes` writes, counting it (`Store::commits`, `/metrics`).
    async fn counted<T>(&self, writes: usize, commit: impl std::future::Future<Output = T>) -> T {
        self.commits.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("cairn_store_commit_size").record(writes as f64);
        let t = std::time::Instant::now();
        let r = commit.await;
        metrics::histogram!("cairn_store_commit_seconds").record(t.elapsed().as_secs_f64());
        r
    }
}

/// One upsert of every source, chunk and mention of `ops` (the upserts among them). A copy:
/// the writes stay whole for a retry one by one.
fn merge_upserts(ops: &[Op]) -> (Vec<SourceRecord>, Vec<ChunkRecord>, ConceptWrite) {
    let mut all = (Vec::new(), Vec::new(), ConceptWrite::default());
    for op in ops {
        if let Op::Upsert {
            sources,
            chunks,
            concepts,
        } = op
        {
            all.0.extend_from_slice(sources);
            all.1.extend_from_slice(chunks);
            all.2.mentions.extend_from_slice(&concepts.mentions);
            all.2.vectors.extend(concepts.vectors.clone());
            all.2.embed_names = all.2.embed_names.or(concepts.embed_names.clone());
        }
    }
    all
}

/// The ids of `ops` (the deletes among them), each once.
fn merge_deletes(ops: &[Op]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for op in ops {
        if let Op::Delete { ids: mine } = op {
            ids.extend(mine.iter().filter(|id| seen.insert(id.as_str())).cloned());
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str) -> SourceRecord {
        SourceRecord {
            id: id.into(),
            external_id: id.into(),
            title: String::new(),
            file_type: "text".into(),
            content_hash: "h".into(),
            chunk_count: 0,
            metadata: Default::default(),
            size_bytes: 0,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn upsert(ids: &[&str]) -> Op {
        Op::Upsert {
            sources: ids.iter().map(|id| source(id)).collect(),
            chunks: Vec::new(),
            concepts: ConceptWrite::default(),
        }
    }

    fn delete(ids: &[&str]) -> Op {
        Op::Delete {
            ids: ids.iter().map(|id| id.to_string()).collect(),
        }
    }

    /// Each group as its writes' ids, a delete's marked with `-`.
    fn shape(groups: &[Vec<Pending>]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|p| {
                        let sign = if p.op.is_upsert() { "" } else { "-" };
                        format!("{sign}{}", p.op.ids().join(","))
                    })
                    .collect()
            })
            .collect()
    }

    fn queued(ops: Vec<Op>) -> WriteQueue {
        let q = WriteQueue::default();
        for op in ops {
            drop(q.push(op));
        }
        q
    }

    #[test]
    fn the_upserts_form_one_group_and_the_deletes_another() {
        let q = queued(vec![
            upsert(&["a"]),
            delete(&["x"]),
            upsert(&["b", "c"]),
            delete(&["y"]),
            upsert(&["d"]),
        ]);
        assert_eq!(
            shape(&q.take_groups()),
            vec![vec!["a", "b,c", "d"], vec!["-x", "-y"]]
        );
        assert!(q.take_groups().is_empty(), "taking empties the queue");
    }

    #[test]
    fn writes_of_one_source_keep_their_order() {
        // The delete of `a` came first: it commits before the upsert of `a`, which waits for
        // the next stretch; `b` is independent and goes with the first.
        let q = queued(vec![delete(&["a"]), upsert(&["b"]), upsert(&["a"])]);
        assert_eq!(
            shape(&q.take_groups()),
            vec![vec!["b"], vec!["-a"], vec!["a"]]
        );
        let q = queued(vec![upsert(&["a"]), delete(&["a"])]);
        assert_eq!(shape(&q.take_groups()), vec![vec!["a"], vec!["-a"]]);
    }

    #[test]
    fn a_second_write_of_a_source_starts_the_next_group() {
        let q = queued(vec![
            upsert(&["a"]),
            upsert(&["b"]),
            upsert(&["a"]),
            delete(&["x"]),
            delete(&["x", "y"]),
        ]);
        assert_eq!(
            shape(&q.take_groups()),
            vec![vec!["a", "b"], vec!["a"], vec!["-x"], vec!["-x,y"]]
        );
    }

    #[test]
    fn a_group_holds_at_most_the_cap_of_sources_but_a_larger_write_is_whole() {
        let ops = vec![
            upsert(&["a", "b"]),
            upsert(&["c"]),
            upsert(&["d", "e", "f", "g"]),
        ];
        let q = queued(ops);
        let groups = split(q.lock().drain(..).collect(), 3);
        assert_eq!(shape(&groups), vec![vec!["a,b", "c"], vec!["d,e,f,g"]]);
    }

    #[test]
    fn merged_writes_keep_every_row_and_name_each_deleted_source_once() {
        let ops = vec![upsert(&["a"]), upsert(&["b", "c"])];
        let (sources, _, _) = merge_upserts(&ops);
        let ids: Vec<&str> = sources.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(
            merge_deletes(&[delete(&["x", "y"]), delete(&["y", "z"])]),
            ["x", "y", "z"]
        );
    }
}
