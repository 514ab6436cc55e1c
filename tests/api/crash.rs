//! Crash safety: the real `cairn` binary is killed in the middle of writes (abort at each step
//! of the write protocol, and a plain SIGKILL at a random moment); after a restart both indexes
//! agree and every acknowledged source is searchable.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use cairn::search::{Mode, SearchRequest};
use cairn::service::Cairn;

use crate::helpers::test_config;

pub fn cairn_cmd(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CAIRN_LOG", "error")
        .env("CAIRN_LOG__FORMAT", "pretty")
        .arg("--data-dir")
        .arg(data);
    c
}

fn write_docs(dir: &Path, n: usize, version: &str) {
    for i in 0..n {
        std::fs::write(
            dir.join(format!("doc{i:02}.txt")),
            format!("Document {i} {version}: the uniqword{i}{version} appears only here."),
        )
        .unwrap();
    }
}

/// Files the child reported as written (created/updated) before it died.
fn acknowledged(stderr: &str) -> BTreeSet<usize> {
    stderr
        .lines()
        .filter(|l| l.starts_with("created") || l.starts_with("updated"))
        .filter_map(|l| {
            l.rsplit('/')
                .next()?
                .strip_prefix("doc")?
                .get(0..2)?
                .parse()
                .ok()
        })
        .collect()
}

async fn found(cairn: &Cairn, word: &str) -> bool {
    let r = cairn
        .search(SearchRequest {
            query: word.into(),
            mode: Mode::Keyword,
            limit: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    r.results.iter().any(|h| h.text.contains(word))
}

/// Restarts on `data` and checks the invariants; returns the reopened instance.
async fn restart_and_check(data: &Path) -> Cairn {
    let cairn = Cairn::open(test_config(data)).await.expect("restart");
    let rep = cairn.store.check().await.unwrap();
    assert!(rep.is_consistent(), "inconsistent after restart: {rep:?}");
    assert_eq!(rep.chunks_vector, rep.chunks_keyword);
    cairn
}

#[tokio::test]
async fn abort_at_every_step_of_an_update_loses_nothing_acknowledged() {
    for point in [
        "after_journal",
        "after_vectors",
        "after_keywords",
        "after_commit",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        let data = tmp.path().join("data");
        std::fs::create_dir(&docs).unwrap();
        write_docs(&docs, 6, "a");
        let out = cairn_cmd(&data).arg("ingest").arg(&docs).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Change every file, then crash in the second batch of the re-ingest.
        write_docs(&docs, 6, "b");
        let out = cairn_cmd(&data)
            .arg("ingest")
            .arg(&docs)
            .env("CAIRN_INGEST__BATCH_SOURCES", "2")
            .env("CAIRN_CRASH_AT", point)
            .env("CAIRN_CRASH_AFTER", "1")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the child must have crashed"
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(stderr.contains("crash point"), "{point}: {stderr}");
        let acked = acknowledged(&stderr);
        assert_eq!(
            acked,
            BTreeSet::from([0, 1]),
            "{point}: first batch acknowledged: {stderr}"
        );

        let cairn = restart_and_check(&data).await;
        let st = cairn.stats().await.unwrap();
        assert_eq!(st.sources, 6, "{point}: no source lost");
        for i in 0..6 {
            let new = found(&cairn, &format!("uniqword{i}b")).await;
            let old = found(&cairn, &format!("uniqword{i}a")).await;
            assert!(
                new ^ old,
                "{point}: doc {i} is exactly one version (new {new}, old {old})"
            );
            if acked.contains(&i) {
                assert!(new, "{point}: acknowledged update of doc {i} survives");
            }
        }
        // After the commit point the crashed batch is durable too.
        if point == "after_commit" {
            assert!(found(&cairn, "uniqword2b").await && found(&cairn, "uniqword3b").await);
        }
    }
}

#[tokio::test]
async fn abort_during_delete_and_first_ingest() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let data = tmp.path().join("data");
    std::fs::create_dir(&docs).unwrap();
    write_docs(&docs, 4, "a");
    // First ingest dies after the vectors of batch 2 were written but before anything else.
    let out = cairn_cmd(&data)
        .arg("ingest")
        .arg(&docs)
        .env("CAIRN_INGEST__BATCH_SOURCES", "2")
        .env("CAIRN_CRASH_AT", "after_keywords")
        .env("CAIRN_CRASH_AFTER", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    {
        let cairn = restart_and_check(&data).await;
        assert_eq!(
            cairn.stats().await.unwrap().sources,
            2,
            "only the acknowledged batch exists"
        );
        assert!(
            !found(&cairn, "uniqword3a").await,
            "the unacknowledged batch left no chunk behind"
        );
    }
    // A delete dies right after its commit point: the source must be gone from both indexes.
    let out = cairn_cmd(&data)
        .args(["delete"])
        .arg(std::fs::canonicalize(docs.join("doc00.txt")).unwrap())
        .env("CAIRN_CRASH_AT", "after_delete_commit")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cairn = restart_and_check(&data).await;
    assert_eq!(cairn.stats().await.unwrap().sources, 1);
    assert!(!found(&cairn, "uniqword0a").await);
    assert!(found(&cairn, "uniqword1a").await);
}

#[tokio::test]
async fn sigkill_mid_ingest_then_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let data = tmp.path().join("data");
    std::fs::create_dir(&docs).unwrap();
    write_docs(&docs, 40, "k");
    let mut child = cairn_cmd(&data)
        .arg("ingest")
        .arg(&docs)
        .env("CAIRN_INGEST__BATCH_SOURCES", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    // Wait for three acknowledged sources, then kill -9 wherever the child is.
    while acknowledged(&seen).len() < 3 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
    }
    child.kill().unwrap();
    let _ = child.wait();
    let acked = acknowledged(&seen);
    assert!(acked.len() >= 3, "child output: {seen}");
    let cairn = restart_and_check(&data).await;
    for i in &acked {
        assert!(
            found(&cairn, &format!("uniqword{i}k")).await,
            "acknowledged doc {i} is searchable"
        );
    }
    // Re-running the ingest completes the job without duplicates.
    drop(cairn);
    let out = cairn_cmd(&data).arg("ingest").arg(&docs).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cairn = restart_and_check(&data).await;
    assert_eq!(cairn.stats().await.unwrap().sources, 40);
}

#[tokio::test]
async fn cli_ingest_reads_files_in_byte_bounded_groups() {
    // With a 1-byte budget every file is its own store write: a crash in the second write
    // leaves exactly the first file acknowledged.
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let data = tmp.path().join("data");
    std::fs::create_dir(&docs).unwrap();
    write_docs(&docs, 3, "g");
    let out = cairn_cmd(&data)
        .arg("ingest")
        .arg(&docs)
        .env("CAIRN_INGEST__MAX_BATCH_BYTES", "1")
        .env("CAIRN_CRASH_AT", "after_journal")
        .env("CAIRN_CRASH_AFTER", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(acknowledged(&stderr), BTreeSet::from([0]), "{stderr}");
    let cairn = restart_and_check(&data).await;
    assert_eq!(cairn.stats().await.unwrap().sources, 1);
}
