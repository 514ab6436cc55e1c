//! Ingest over HTTP: every format, re-upload, update, delete, restart.

use serde_json::{json, Value};

use crate::helpers::*;
use cairn::testdata::{make_docx, make_pdf};

fn md() -> Vec<u8> {
    b"# Field Guide\n\nIntro paragraph about the expedition.\n\n## Glaciers\n\nThe zorbulite moraine sits below the glacier tongue.\n".to_vec()
}

#[tokio::test]
async fn every_format_is_ingested_and_searchable() {
    let app = spawn_app().await;
    let html = b"<html><head><title>Harbour Notes</title><script>var hidden='quixotrap';</script></head><body><h1>Harbour</h1><p>The pelicanthra bird nests on the pier.</p></body></html>".to_vec();
    let pdf = make_pdf(
        "Survey Report",
        &[
            "First page about weather.",
            "Second page mentions the vandermeerite mineral.",
        ],
    );
    let docx = make_docx(&[
        (Some("Heading1"), "Methods"),
        (None, "We measured the crystolyth samples twice."),
    ]);
    let jsonl = b"{\"id\":\"rec-1\",\"title\":\"Record One\",\"text\":\"The flumberwick engine hums.\",\"metadata\":{\"lang\":\"en\"}}\n{\"id\":\"rec-2\",\"title\":\"Record Two\",\"text\":\"Another record about trees.\"}\n".to_vec();
    let (status, body) = app
        .upload(&[
            (
                "notes.txt",
                b"Plain text about the snorkelberry harvest.\n\nSecond paragraph.".to_vec(),
            ),
            ("guide.md", md()),
            ("harbour.html", html),
            ("survey.pdf", pdf),
            ("methods.docx", docx),
            ("records.jsonl", jsonl),
        ])
        .await;
    assert_eq!(status, 201, "{body}");
    let reports = body["sources"].as_array().unwrap();
    assert_eq!(
        reports.len(),
        7,
        "6 files, the jsonl gives 2 sources: {body}"
    );
    assert!(reports.iter().all(|r| r["status"] == "created"), "{body}");

    // Each format's unique word is found, with its location metadata.
    let hit = |rs: &Vec<Value>| rs.first().cloned().expect("a result");
    let r = hit(&app
        .search(json!({"query": "snorkelberry", "mode": "keyword"}))
        .await);
    assert_eq!(r["title"], "notes");
    let r = hit(&app
        .search(json!({"query": "zorbulite moraine", "mode": "keyword"}))
        .await);
    assert_eq!(r["title"], "Field Guide");
    assert_eq!(r["section"], "Field Guide > Glaciers");
    let r = hit(&app
        .search(json!({"query": "pelicanthra", "mode": "keyword"}))
        .await);
    assert_eq!(r["title"], "Harbour Notes");
    assert!(
        app.search(json!({"query": "quixotrap", "mode": "keyword"}))
            .await
            .is_empty(),
        "script text is not indexed"
    );
    let r = hit(&app
        .search(json!({"query": "vandermeerite", "mode": "keyword"}))
        .await);
    assert_eq!(r["page"], 2, "pdf chunks keep their page: {r}");
    let span = r["char_end"].as_u64().unwrap() - r["char_start"].as_u64().unwrap();
    assert_eq!(
        span as usize,
        r["text"].as_str().unwrap().chars().count(),
        "char span covers the chunk: {r}"
    );
    assert!(
        r["char_start"].as_u64().unwrap() > 0,
        "page 2 text starts after page 1: {r}"
    );
    let r = hit(&app
        .search(json!({"query": "crystolyth", "mode": "keyword"}))
        .await);
    assert_eq!(r["section"], "Methods");
    let r = hit(&app
        .search(json!({"query": "flumberwick", "mode": "keyword"}))
        .await);
    assert_eq!(r["external_id"], "rec-1", "jsonl ids become external ids");
    assert_eq!(r["title"], "Record One");
    let files: Vec<&str> = reports
        .iter()
        .map(|r| r["file"].as_str().unwrap())
        .collect();
    assert!(
        files.contains(&"records.jsonl#L1") && files.contains(&"records.jsonl#L2"),
        "{files:?}"
    );

    // Every chunk is in both indexes.
    let s = app.stats().await;
    assert_eq!(s["sources"], 7);
    assert_eq!(s["chunks_vector"], s["chunks_keyword"]);
    assert!(s["chunks"].as_u64().unwrap() >= 7);
    assert_eq!(s["embedding_dim"], 384);
}

#[tokio::test]
async fn reupload_is_a_noop_and_a_change_replaces_chunks() {
    let app = spawn_app().await;
    let v1 = b"Version one mentions the obsidianite quarry.".to_vec();
    let (s, b) = app.upload(&[("doc.txt", v1.clone())]).await;
    assert_eq!(s, 201, "{b}");
    let id = b["sources"][0]["source_id"].as_str().unwrap().to_string();
    let before = app.stats().await;

    let (s, b) = app.upload(&[("doc.txt", v1)]).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "unchanged");
    assert_eq!(b["sources"][0]["status"], "unchanged");
    assert_eq!(b["sources"][0]["source_id"], id.as_str());
    assert_eq!(
        app.stats().await["chunks"],
        before["chunks"],
        "no duplicates"
    );

    let (s, b) = app
        .upload(&[(
            "doc.txt",
            b"Version two talks about the basaltine ridge instead.".to_vec(),
        )])
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["sources"][0]["status"], "updated");
    assert_eq!(
        b["sources"][0]["source_id"],
        id.as_str(),
        "same file, same source id"
    );
    assert!(
        app.search(json!({"query": "obsidianite", "mode": "keyword"}))
            .await
            .is_empty(),
        "old chunks are gone"
    );
    assert_eq!(
        source_ids(
            &app.search(json!({"query": "basaltine", "mode": "keyword"}))
                .await
        ),
        vec![id.clone()]
    );
    let s = app.stats().await;
    assert_eq!(s["sources"], 1);
    assert_eq!(s["chunks_vector"], s["chunks_keyword"]);
    assert_eq!(s["chunks_vector"], before["chunks_vector"]);

    let (st, src) = app.get(&format!("/sources/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(src["external_id"], "doc.txt");
    assert_eq!(src["chunk_count"], s["chunks"]);
    assert!(src["updated_at"].as_str().unwrap() >= src["created_at"].as_str().unwrap());
}

#[tokio::test]
async fn json_text_sources_and_delete_from_both_indexes() {
    let app = spawn_app().await;
    let (s, b) = app
        .post_json("/sources", &json!({"id": "note-7", "title": "Note", "text": "The marmalith statue stands tall.", "metadata": {"team": "a"}}))
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["sources"][0]["source_id"].as_str().unwrap().to_string();
    let (s, _) = app
        .upload(&[("other.txt", b"Unrelated text on rivers.".to_vec())])
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        app.search(json!({"query": "marmalith"})).await[0]["source_id"],
        id.as_str()
    );

    assert_eq!(app.delete(&format!("/sources/{id}")).await, 204);
    assert!(app
        .search(json!({"query": "marmalith", "mode": "keyword"}))
        .await
        .is_empty());
    let vec_hits = app
        .search(json!({"query": "marmalith statue", "mode": "vector"}))
        .await;
    assert!(
        !source_ids(&vec_hits).contains(&id),
        "gone from the vector index too"
    );
    let st = app.stats().await;
    assert_eq!(st["sources"], 1);
    assert_eq!(st["chunks_vector"], st["chunks_keyword"]);
    assert_error(app.get(&format!("/sources/{id}")).await, 404, "not_found");
    assert_eq!(app.delete(&format!("/sources/{id}")).await, 404);
    app.assert_consistent().await;
}

#[tokio::test]
async fn sources_are_paginated() {
    let app = spawn_app().await;
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("f{i}.txt"),
                format!("document number {i} about topic {i}").into_bytes(),
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    assert_eq!(app.upload(&refs).await.0, 201);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/sources?limit=2&cursor={c}"),
            None => "/sources?limit=2".to_string(),
        };
        let (s, page) = app.get(&path).await;
        assert_eq!(s, 200);
        let items = page["sources"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|x| x["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 5);
    assert_eq!(sorted, seen, "pages are in id order without repeats");
}

#[tokio::test]
async fn restart_keeps_everything() {
    let mut app = spawn_app().await;
    let (s, b) = app
        .upload(&[
            ("keep.md", md()),
            ("keep2.txt", b"The tessellite lantern glows.".to_vec()),
        ])
        .await;
    assert_eq!(s, 201, "{b}");
    let before = app.stats().await;
    let cfg = app.cfg();
    let tmp = app.stop().await;
    let app2 = start(cfg).await;
    let after = app2.stats().await;
    assert_eq!(before["sources"], after["sources"]);
    assert_eq!(before["chunks_vector"], after["chunks_vector"]);
    assert_eq!(after["chunks_vector"], after["chunks_keyword"]);
    assert_eq!(
        app2.search(json!({"query": "tessellite"})).await[0]["title"],
        "keep2"
    );
    assert_eq!(
        app2.search(json!({"query": "zorbulite", "mode": "vector"}))
            .await[0]["title"],
        "Field Guide"
    );
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_caller_never_leaves_a_half_done_write() {
    // A client that disconnects (or a timeout) drops the request's future; the store write it
    // started must still finish, or the live server would serve a half-written batch.
    let app = spawn_app().await;
    let cairn = app.cairn.clone().unwrap();
    let docs: Vec<(String, cairn::extract::ExtractedDoc)> = (0..60)
        .map(|i| {
            let doc = cairn::extract::ExtractedDoc {
                external_id: Some(format!("d{i}")),
                title: format!("Doc {i}"),
                metadata: Default::default(),
                file_type: cairn::extract::FileType::Txt,
                blocks: vec![cairn::extract::Block {
                    text: format!("document {i} about the dropped caller"),
                    page: None,
                    section: Vec::new(),
                }],
            };
            (format!("d{i}"), doc)
        })
        .collect();
    let c2 = cairn.clone();
    let task = tokio::spawn(async move { c2.ingest_docs(docs, &|_| {}).await });
    // Wait until the store write has begun (its journal entry exists), then drop the caller.
    let journal = app.cfg().data_dir.join("journal");
    let mut seen = false;
    while !task.is_finished() {
        let pending = std::fs::read_dir(&journal)
            .unwrap()
            .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "json"));
        if pending {
            seen = true;
            task.abort();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(seen, "the write was observed in progress");
    cairn.store.wait_idle().await;
    let rep = cairn.store.check().await.unwrap();
    assert!(rep.is_consistent(), "{rep:?}");
    assert_eq!(rep.pending_journal, 0);
    assert_eq!(
        cairn.stats().await.unwrap().sources,
        60,
        "the write finished without its caller"
    );
}

#[tokio::test]
async fn concurrent_uploads_of_the_same_file_store_it_once() {
    let app = spawn_app().await;
    let body = b"Racing uploads of the xylophonist manuscript.".to_vec();
    let files = [("race.txt", body)];
    let (a, b) = tokio::join!(app.upload(&files), app.upload(&files));
    let mut statuses = vec![
        a.1["sources"][0]["status"].clone(),
        b.1["sources"][0]["status"].clone(),
    ];
    statuses.sort_by_key(|v| v.to_string());
    assert_eq!(
        statuses,
        [json!("created"), json!("unchanged")],
        "{a:?} {b:?}"
    );
    let st = app.stats().await;
    assert_eq!(st["sources"], 1);
    assert_eq!(st["chunks_vector"], 1, "no duplicate chunks: {st}");
    assert_eq!(st["chunks_keyword"], 1);
    app.assert_consistent().await;
}

#[tokio::test]
async fn jsonl_records_are_labelled_by_line_and_bad_lines_do_not_stop_the_rest() {
    let app = spawn_app().await;
    let jsonl = b"{\"title\":\"A\",\"text\":\"alpha record about the quasimodo bell\"}\n\n{not json}\n{\"title\":\"B\",\"text\":\"beta record\"}\n".to_vec();
    let (s, b) = app.upload(&[("recs.jsonl", jsonl.clone())]).await;
    assert_eq!(s, 201, "{b}");
    let got: Vec<(String, String)> = b["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["file"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("recs.jsonl#L1", "created"),
        ("recs.jsonl#L3", "failed"),
        ("recs.jsonl#L4", "created"),
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(
        got_sorted,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{b}"
    );
    // Records without an id are identified by file and line, so re-uploading is a no-op.
    let (s, b) = app.upload(&[("recs.jsonl", jsonl)]).await;
    assert_eq!(
        s, 200,
        "the bad line still fails, the rest is unchanged: {b}"
    );
    assert_eq!(b["status"], "unchanged");
    let hit = &app
        .search(json!({"query": "quasimodo", "mode": "keyword"}))
        .await[0];
    assert_eq!(hit["external_id"], "recs.jsonl#L1");
    assert_eq!(app.stats().await["sources"], 2);
}

/// One text-document path (issue 19): a JSON upload and the same record as a JSONL line give
/// the same chunks and content hash, so re-sending it by the other route changes nothing.
#[tokio::test]
async fn a_json_upload_and_the_same_jsonl_record_are_one_document() {
    let app = spawn_app().await;
    let record = json!({
        "id": "doc-42",
        "title": "  Tide   tables ",
        "text": "First paragraph about the quillfeather tide.\r\n\r\nSecond  paragraph,\r\nwrapped.\n\n\n",
        "metadata": {"team": "ocean"},
    });
    let (status, body) = app.post_json("/sources", &record).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .upload(&[("records.jsonl", format!("{record}\n").into_bytes())])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sources"][0]["status"], "unchanged", "{body}");
    // And the other way round, with a changed record: JSONL first, then JSON.
    let mut changed = record.clone();
    changed["text"] = json!("A third text about the quillfeather tide.\n\nWith two paragraphs.");
    let (status, _) = app
        .upload(&[("records.jsonl", format!("{changed}\n").into_bytes())])
        .await;
    assert_eq!(status, 201);
    let (status, body) = app.post_json("/sources", &changed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sources"][0]["status"], "unchanged", "{body}");
    let (_, source) = app.get("/sources?limit=10").await;
    assert_eq!(source["sources"][0]["title"], "Tide tables", "{source}");
}

/// `GET /sources/{id}/chunks`: the stored version's chunks in order with their pages, in
/// pages that neither repeat nor skip, each with the concepts the graph has for it.
#[tokio::test]
async fn a_source_lists_its_chunks_in_order_with_their_concepts() {
    let app = spawn_app().await;
    let pages = [
        "Glacial moraines hold the Vandermeer Basin sediment record. Ice cores date each layer.",
        "The Vandermeer Basin sediment shows three advances of the glacier during the Holocene.",
        "Radiocarbon dating of the Vandermeer Basin moraines confirms the Holocene advances.",
    ];
    let (s, b) = app
        .upload(&[("basin.pdf", make_pdf("Basin Survey", &pages))])
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["sources"][0]["source_id"].as_str().unwrap().to_string();
    let (s, all) = app.get(&format!("/sources/{id}/chunks")).await;
    assert_eq!(s, 200, "{all}");
    let chunks = all["chunks"].as_array().unwrap();
    assert_eq!(all["total"], b["sources"][0]["chunks"]);
    assert_eq!(chunks.len(), all["total"].as_u64().unwrap() as usize);
    assert_eq!(all["source"]["id"], id.as_str());
    assert_eq!(all["next_offset"], Value::Null);
    let ordinals: Vec<u64> = chunks
        .iter()
        .map(|c| c["ordinal"].as_u64().unwrap())
        .collect();
    assert_eq!(ordinals, (0..chunks.len() as u64).collect::<Vec<_>>());
    assert_eq!(chunks[0]["page"], 1);
    assert_eq!(chunks.last().unwrap()["page"], 3);
    let text: String = chunks.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert!(text.contains("Radiocarbon dating"), "{text}");

    // One chunk a page: the same sequence.
    let mut paged = Vec::new();
    let mut offset = Some(0);
    while let Some(o) = offset {
        let (s, p) = app
            .get(&format!("/sources/{id}/chunks?limit=1&offset={o}"))
            .await;
        assert_eq!(s, 200, "{p}");
        paged.extend(
            p["chunks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["chunk_id"].clone()),
        );
        offset = p["next_offset"].as_u64();
    }
    let ids: Vec<Value> = chunks.iter().map(|c| c["chunk_id"].clone()).collect();
    assert_eq!(paged, ids);

    // The concepts of a chunk are the graph's: each one lists the chunk among its mentions.
    let concepts: Vec<&Value> = chunks
        .iter()
        .flat_map(|c| c["concepts"].as_array().unwrap())
        .collect();
    assert!(!concepts.is_empty(), "{all}");
    let c = &chunks
        .iter()
        .find(|c| !c["concepts"].as_array().unwrap().is_empty())
        .unwrap();
    let name = c["concepts"][0]["name"].as_str().unwrap();
    let (s, found) = app.get(&format!("/concepts/{name}?limit=1")).await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found[0]["id"], c["concepts"][0]["id"]);
    assert!(
        found[0]["chunks"]
            .as_array()
            .unwrap()
            .contains(&c["chunk_id"]),
        "{found}"
    );

    // An update shows only the new version's chunks.
    let (s, b) = app
        .upload(&[(
            "basin.pdf",
            make_pdf("Basin Survey", &["A single new page."]),
        )])
        .await;
    assert_eq!(
        (s, &b["sources"][0]["status"]),
        (201, &json!("updated")),
        "{b}"
    );
    let (_, now) = app.get(&format!("/sources/{id}/chunks")).await;
    assert_eq!(now["total"], 1, "{now}");
    assert!(!ids.contains(&now["chunks"][0]["chunk_id"]));

    assert_error(app.get("/sources/src_nope/chunks").await, 404, "not_found");
    assert_error(
        app.get(&format!("/sources/{id}/chunks?limit=0")).await,
        422,
        "invalid_request",
    );
    assert_error(
        app.get(&format!("/sources/{id}/chunks?limit=501")).await,
        422,
        "invalid_request",
    );
    assert_error(
        app.get(&format!("/sources/{id}/chunks?cursor=x")).await,
        422,
        "invalid_request",
    );
}
