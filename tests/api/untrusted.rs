//! Untrusted files are bounded (issue 25): a file whose parser would crash, loop or allocate
//! without end fails on its own, in the extraction worker, and the server and the other files
//! of the same upload carry on.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with};
use cairn::testdata::{make_nested_pdf, make_pdf_nested_content, make_zip};

const NOTE: &str = "Cairns are stacks of stones that mark hiking trails above the tree line.";

/// The report of `file` in an ingest response.
fn report<'a>(body: &'a Value, file: &str) -> &'a Value {
    body["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|r| r["file"] == file)
        .unwrap_or_else(|| panic!("no report for {file}: {body}"))
}

#[tokio::test]
async fn a_deeply_nested_pdf_fails_alone_and_the_server_stays_up() {
    let app = spawn_app().await;
    let (status, body) = app
        .upload(&[
            // The 2.6 KB file of the defect: arrays nested 1,000 deep in the catalog.
            ("deep.pdf", make_nested_pdf(1000)),
            // Nesting in a page's content stream, which only the parser sees: it overflows the
            // worker's stack, not the server's.
            ("deep-content.pdf", make_pdf_nested_content(1_000_000)),
            ("notes.txt", NOTE.as_bytes().to_vec()),
        ])
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(report(&body, "notes.txt")["status"], "created");
    for file in ["deep.pdf", "deep-content.pdf"] {
        let r = report(&body, file);
        assert_eq!(r["status"], "failed", "{r}");
        assert_eq!(r["error"]["code"], "unreadable_document", "{r}");
    }
    // The content parser recursed until the worker's stack ran out: that cost one file.
    let content = &report(&body, "deep-content.pdf")["error"]["message"];
    assert!(
        content.as_str().unwrap().contains("overflowed its stack"),
        "{content}"
    );
    let deep = report(&body, "deep.pdf")["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(deep.contains("nested 101 deep"), "{deep}");
    let (status, _) = app.get("/health").await;
    assert_eq!(status, 200);
    let hits = app
        .search(json!({"query": "stones that mark hiking trails"}))
        .await;
    assert!(hits.iter().any(|h| h["title"] == "notes"), "{hits:?}");
    app.assert_consistent().await;
}

#[tokio::test]
async fn a_docx_zip_bomb_is_refused_beside_a_good_file() {
    let app = spawn_app().await;
    let mut xml = b"<w:document><w:body>".to_vec();
    xml.extend(b"<w:p><w:r><w:t>bomb</w:t></w:r></w:p>".repeat(1 << 20));
    let bomb = make_zip(&[("word/document.xml", &xml)]);
    let (status, body) = app
        .upload(&[("bomb.docx", bomb), ("notes.txt", NOTE.as_bytes().to_vec())])
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(report(&body, "notes.txt")["status"], "created");
    let r = report(&body, "bomb.docx");
    assert_eq!(r["error"]["code"], "document_too_large", "{r}");
}

#[tokio::test]
async fn extraction_past_its_memory_budget_fails_with_document_too_large() {
    let app = spawn_app_with(|c| c.ingest.extract_memory_mb = 96).await;
    // ~40 MB of text: the worker's copies of it (decoded, normalised, split) pass 96 MiB.
    let big = "All work and no play makes a dull text file.\n".repeat(900_000);
    let (status, body) = app
        .upload(&[
            ("big.txt", big.into_bytes()),
            ("notes.txt", NOTE.as_bytes().to_vec()),
        ])
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(report(&body, "notes.txt")["status"], "created");
    let r = report(&body, "big.txt");
    assert_eq!(r["error"]["code"], "document_too_large", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("96 MiB"), "{message}");
}

#[tokio::test]
async fn extraction_past_its_deadline_is_stopped_with_extract_timeout() {
    let app = spawn_app_with(|c| c.ingest.extract_timeout_s = 1).await;
    // 100,000 nested <div>s took 65 s to extract in a release build.
    let html = format!(
        "<html><body>{}deep{}</body></html>",
        "<div>".repeat(100_000),
        "</div>".repeat(100_000)
    );
    let (status, body) = app
        .upload(&[
            ("deep.html", html.into_bytes()),
            ("notes.txt", NOTE.as_bytes().to_vec()),
        ])
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(report(&body, "notes.txt")["status"], "created");
    let r = report(&body, "deep.html");
    assert_eq!(r["error"]["code"], "extract_timeout", "{r}");
}

#[tokio::test]
async fn cli_ingest_of_a_folder_with_a_deep_pdf_keeps_the_good_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (docs, data) = (tmp.path().join("docs"), tmp.path().join("data"));
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("deep.pdf"), make_pdf_nested_content(1_000_000)).unwrap();
    std::fs::write(docs.join("notes.txt"), NOTE).unwrap();
    let (code, v) = crate::cli::run_json(
        crate::crash::cairn_cmd(&data)
            .args(["ingest", "--json"])
            .arg(&docs),
    );
    assert_eq!(code, 1, "a failed file makes a non-zero exit: {v}");
    assert_eq!(v["created"], 1, "{v}");
    assert_eq!(v["failed"], 1, "{v}");
    let (code, v) = crate::cli::run_json(crate::crash::cairn_cmd(&data).args([
        "search",
        "hiking trails",
        "--json",
    ]));
    assert_eq!(code, 0);
    assert_eq!(v["results"][0]["title"], "notes", "{v}");
}
