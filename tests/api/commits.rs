//! Group commit (`store/group.rs`): writes that queue behind the store's one writer are
//! committed together, each caller getting its own result, and a write that cannot be stored
//! fails alone.

use std::sync::Arc;
use std::time::Duration;

use cairn::store::{ChunkRecord, ConceptWrite, SourceRecord, Store};
use serde_json::json;

use crate::helpers::*;

/// Resolves once `n` writes wait for the writer, then lets them through.
async fn release_at(store: Arc<Store>, guard: tokio::sync::MutexGuard<'_, ()>, n: usize) {
    wait_queued(&store, n).await;
    drop(guard);
}

/// Resolves once `n` writes wait for the writer.
async fn wait_queued(store: &Store, n: usize) {
    while store.queued_writes() < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_uploads_and_deletes_commit_together_each_with_its_own_result() {
    let app = spawn_app().await;
    let store = app.cairn.clone().unwrap().store.clone();
    let (status, body) = app
        .upload(&[
            (
                "old-1.txt",
                b"The heliograph archive, first volume.".to_vec(),
            ),
            (
                "old-2.txt",
                b"The heliograph archive, second volume.".to_vec(),
            ),
        ])
        .await;
    assert_eq!(status, 201, "{body}");
    let old = source_ids(body["sources"].as_array().unwrap());
    store.wait_idle().await;
    let before = store.commits();

    // Five one-file uploads queue behind the held writer, then two deletes behind them.
    let guard = store.hold_writes().await;
    let words = ["quokka", "narwhal", "axolotl", "pangolin", "okapi"];
    let app = &app;
    let uploads = futures::future::join_all(words.iter().map(|w| {
        let body = format!("A field note about the {w} and where it lives.").into_bytes();
        let name = format!("{w}.txt");
        async move { app.upload(&[(name.as_str(), body)]).await }
    }));
    let deletes = async {
        wait_queued(&store, words.len()).await;
        let paths: Vec<String> = old.iter().map(|id| format!("/sources/{id}")).collect();
        futures::future::join_all(paths.iter().map(|p| app.delete(p))).await
    };
    let (uploaded, deleted, ()) = tokio::join!(
        uploads,
        deletes,
        release_at(store.clone(), guard, words.len() + old.len())
    );

    assert_eq!(
        store.commits() - before,
        2,
        "one commit of the uploads, one of the deletes"
    );
    for ((status, body), w) in uploaded.iter().zip(words) {
        assert_eq!(*status, 201, "{body}");
        let sources = body["sources"].as_array().unwrap();
        assert_eq!(sources.len(), 1, "{body}");
        assert_eq!(sources[0]["status"], "created", "{w}: {body}");
        let hits = app.search(json!({"query": w, "mode": "keyword"})).await;
        assert_eq!(
            hits[0]["source_id"], sources[0]["source_id"],
            "{w} is searchable"
        );
    }
    assert_eq!(deleted, [204, 204]);
    for id in &old {
        assert_eq!(app.get(&format!("/sources/{id}")).await.0, 404);
    }
    assert_eq!(app.stats().await["sources"], 5);
    app.assert_consistent().await;
}

fn source(id: &str, hash: &str) -> SourceRecord {
    SourceRecord {
        id: id.into(),
        external_id: id.into(),
        title: id.into(),
        file_type: "txt".into(),
        content_hash: hash.into(),
        chunk_count: 1,
        metadata: Default::default(),
        size_bytes: 10,
        created_at: 0,
        updated_at: 0,
    }
}

fn chunk(source: &SourceRecord, text: &str, dim: usize) -> ChunkRecord {
    ChunkRecord {
        chunk_id: format!("{}:{}:0", source.id, source.content_hash),
        source_id: source.id.clone(),
        content_hash: source.content_hash.clone(),
        ordinal: 0,
        text: text.into(),
        title: source.title.clone(),
        section: String::new(),
        page: None,
        char_start: 0,
        char_end: text.len() as u32,
        file_type: source.file_type.clone(),
        meta: Vec::new(),
        external_id: source.external_id.clone(),
        vector: vec![0.1; dim],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_cannot_be_stored_fails_alone() {
    let app = spawn_app().await;
    let cairn = app.cairn.clone().unwrap();
    let store = cairn.store.clone();
    let dim = cairn.embedder.dim();
    let write = |id: &str, dim: usize| {
        let s = source(id, "h1");
        let c = chunk(&s, &format!("the {id} entry of the ledger"), dim);
        store.upsert(vec![s], vec![c], ConceptWrite::default())
    };
    let before = store.commits();
    let guard = store.hold_writes().await;
    // The middle write's vector has the wrong dimension: LanceDB refuses its chunk.
    let (a, bad, c, ()) = tokio::join!(
        write("ledger-a", dim),
        write("ledger-bad", dim + 1),
        write("ledger-c", dim),
        release_at(store.clone(), guard, 3)
    );
    assert_eq!(a.unwrap(), ["ledger-a"]);
    assert_eq!(c.unwrap(), ["ledger-c"]);
    assert!(bad.is_err(), "{bad:?}");
    // The group (rolled back), then each write alone.
    assert_eq!(store.commits() - before, 4);
    let ids: Vec<String> = store
        .all_sources()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"ledger-a".to_string()) && ids.contains(&"ledger-c".to_string()));
    app.assert_consistent().await;
}

/// The concept rows' counts follow the graph in batches (`ConceptStore::flush`): after an
/// orderly stop's `wait_idle` every row holds its concept's counts, and only live concepts
/// have a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concept_rows_are_in_line_with_the_graph_after_an_orderly_stop() {
    use arrow_array::{StringArray, UInt32Array};
    use futures::TryStreamExt;
    use lancedb::query::{ExecutableQuery, QueryBase, Select};

    let app = spawn_app().await;
    let store = app.cairn.clone().unwrap().store.clone();
    let mut ids = Vec::new();
    for i in 0..3 {
        let text = format!(
            "Report {i}. Photosynthesis in chloroplasts converts light energy. Chloroplasts \
             and mitochondria both hold their own DNA, and photosynthesis feeds the cell."
        );
        let (status, body) = app
            .upload(&[(&format!("r{i}.txt"), text.into_bytes())])
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(
            body["sources"][0]["source_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // A delete leaves some concepts fewer mentions.
    assert_eq!(app.delete(&format!("/sources/{}", ids[0])).await, 204);
    store.wait_idle().await;

    let dir = app.cfg().data_dir.join("lance");
    let db = lancedb::connect(dir.to_str().unwrap())
        .execute()
        .await
        .unwrap();
    let table = db.open_table("concepts").execute().await.unwrap();
    let batches: Vec<arrow_array::RecordBatch> = table
        .query()
        .select(Select::columns(&["id", "frequency"]))
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut rows = std::collections::BTreeMap::new();
    for b in &batches {
        let ids = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let freq = b.column(1).as_any().downcast_ref::<UInt32Array>().unwrap();
        for i in 0..b.num_rows() {
            rows.insert(ids.value(i).to_string(), freq.value(i));
        }
    }
    let graph = store.graph_read();
    let live: std::collections::BTreeMap<String, u32> = graph
        .ids()
        .into_iter()
        .map(|id| {
            let f = graph.row(&id).unwrap().frequency;
            (id, f)
        })
        .collect();
    assert!(!live.is_empty());
    assert_eq!(rows, live, "one row per live concept, with its count");
}
