//! Text extraction: turn the bytes of a supported file into text [`Block`]s that carry their
//! location (PDF page, heading path).
//!
//! One entry point, [`extract`], dispatches on the file extension. Every format ends in the
//! same clean-up: blocks are trimmed, empty blocks dropped, and a document with no text left is
//! [`ExtractError::Empty`]. Nothing in here panics on bad input: parse errors (and panics inside
//! the PDF library) become [`ExtractError::Corrupt`].

use serde_json::{Map, Value};

mod docx;
mod html;
mod md;
mod pdf;

use docx::extract_docx;
use html::extract_html;
use md::extract_md;
use pdf::extract_pdf;
#[cfg(test)]
use pdf::pdf_nesting_over;

/// A supported input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    Txt,
    Md,
    Html,
    Pdf,
    Docx,
    Jsonl,
}

impl FileType {
    /// The type of a file by its extension, case-insensitive: `.txt .text .md .markdown .html
    /// .htm .pdf .docx .jsonl .ndjson`. `name` may be a bare file name or a path.
    pub fn from_name(name: &str) -> Option<FileType> {
        let ext = split_name(name).1?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" => FileType::Txt,
            "md" | "markdown" => FileType::Md,
            "html" | "htm" => FileType::Html,
            "pdf" => FileType::Pdf,
            "docx" => FileType::Docx,
            "jsonl" | "ndjson" => FileType::Jsonl,
            _ => return None,
        })
    }

    /// The lowercase short name: `"txt"`, `"md"`, `"html"`, `"pdf"`, `"docx"`, `"jsonl"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FileType::Txt => "txt",
            FileType::Md => "md",
            FileType::Html => "html",
            FileType::Pdf => "pdf",
            FileType::Docx => "docx",
            FileType::Jsonl => "jsonl",
        }
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit of text with its location. Blocks are paragraphs (or list items, table rows, code
/// blocks), never merged across headings or pages.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    pub text: String,
    /// 1-based page number; PDF only.
    pub page: Option<u32>,
    /// Heading path, outermost first.
    pub section: Vec<String>,
}

/// One extracted document (serialisable: the extraction sandbox sends it between processes).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExtractedDoc {
    /// The jsonl record's `id` (a string, or a number turned into a string); `None` for files.
    pub external_id: Option<String>,
    /// html `<title>` / first `<h1>`, md first `# ` heading, docx Title style or first heading,
    /// pdf Info `/Title`; else the file stem. jsonl: `title`, else the first 80 chars of text.
    pub title: String,
    /// The jsonl record's `metadata` object; empty otherwise.
    pub metadata: Map<String, Value>,
    pub file_type: FileType,
    /// Trimmed, non-empty, in document order; never empty.
    pub blocks: Vec<Block>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsupported file type: {0} (supported: .txt .md .html .pdf .docx .jsonl)")]
    Unsupported(String),
    #[error("cannot read {kind} file: {reason}")]
    Corrupt { kind: &'static str, reason: String },
    /// The file needs more than extraction may spend on one file: an archive member that
    /// inflates past its cap, or memory past `ingest.extract_memory_mb`.
    #[error("{kind} file is too large to extract: {reason}")]
    TooLarge { kind: &'static str, reason: String },
    /// Extraction ran past `ingest.extract_timeout_s` and was stopped.
    #[error("extracting the {kind} file took longer than {limit_s} s (ingest.extract_timeout_s)")]
    Timeout { kind: &'static str, limit_s: u64 },
    /// A bad jsonl line; `line` is 1-based.
    #[error("record {line}: {reason}")]
    BadRecord { line: usize, reason: String },
    #[error("no text found")]
    Empty,
}

/// One result per source. Plain files give exactly one; a .jsonl gives one per non-blank line
/// (a malformed line gives its own `Err(BadRecord)` and the other lines still succeed; a .jsonl
/// without any non-blank line gives a single `Err(Empty)`).
pub fn extract(file_name: &str, bytes: &[u8]) -> Vec<Result<ExtractedDoc, ExtractError>> {
    let Some(file_type) = FileType::from_name(file_name) else {
        let (base, ext) = split_name(file_name);
        let shown = match ext {
            Some(ext) => format!(".{ext}"),
            None => base.to_string(),
        };
        return vec![Err(ExtractError::Unsupported(shown))];
    };
    let stem = file_stem(file_name);
    let parsed = match file_type {
        FileType::Jsonl => return extract_jsonl(bytes),
        FileType::Txt => extract_txt(bytes),
        FileType::Md => extract_md(bytes),
        FileType::Html => extract_html(bytes),
        FileType::Pdf => extract_pdf(bytes),
        FileType::Docx => extract_docx(bytes),
    };
    vec![parsed.and_then(|(title, blocks)| {
        let blocks = clean_blocks(blocks);
        if blocks.is_empty() {
            return Err(ExtractError::Empty);
        }
        let title = title
            .map(|t| collapse_ws(&t))
            .filter(|t| !t.is_empty())
            .unwrap_or(stem);
        Ok(ExtractedDoc {
            external_id: None,
            title,
            metadata: Map::new(),
            file_type,
            blocks,
        })
    })]
}

/// What a format parser hands back: an optional title and the raw blocks.
type Parsed = Result<(Option<String>, Vec<Block>), ExtractError>;

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// The base name of `name` (after the last `/` or `\`) split at its last dot.
fn split_name(name: &str) -> (&str, Option<&str>) {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base.rsplit_once('.') {
        Some((_, ext)) if !ext.is_empty() => (base, Some(ext)),
        _ => (base, None),
    }
}

/// The file name without directory and extension (the whole base name when that would be
/// empty, as for `.txt`).
fn file_stem(name: &str) -> String {
    let (base, ext) = split_name(name);
    let stem = match ext {
        Some(ext) => &base[..base.len() - ext.len() - 1],
        None => base,
    };
    if stem.trim().is_empty() {
        base.to_string()
    } else {
        stem.to_string()
    }
}

fn corrupt(kind: &'static str, reason: impl std::fmt::Display) -> ExtractError {
    ExtractError::Corrupt {
        kind,
        reason: reason.to_string(),
    }
}

/// Decode a text file: UTF-16 when it starts with a UTF-16 byte order mark, else UTF-8 (lossy,
/// BOM stripped). NUL bytes in the first 8 KiB mean a binary file. Line ends become `\n`.
fn decode_text(bytes: &[u8], kind: &'static str) -> Result<String, ExtractError> {
    let text = if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        decode_utf16(rest, u16::from_le_bytes)
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        decode_utf16(rest, u16::from_be_bytes)
    } else {
        if bytes[..bytes.len().min(8192)].contains(&0) {
            return Err(corrupt(kind, "binary content (NUL bytes), not a text file"));
        }
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        String::from_utf8_lossy(bytes).into_owned()
    };
    Ok(normalize_newlines(&text))
}

fn decode_utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

fn normalize_newlines(text: &str) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text.to_string()
    }
}

/// Collapse every run of whitespace into one space and trim.
fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Paragraphs of plain text: runs of lines separated by blank (whitespace-only) lines.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(cur.join("\n"));
                cur.clear();
            }
        } else {
            cur.push(line);
        }
    }
    if !cur.is_empty() {
        out.push(cur.join("\n"));
    }
    out
}

fn plain_blocks(text: &str, page: Option<u32>) -> Vec<Block> {
    paragraphs(text)
        .into_iter()
        .map(|text| Block {
            text,
            page,
            section: Vec::new(),
        })
        .collect()
}

/// Trim every block and drop the empty ones.
fn clean_blocks(blocks: Vec<Block>) -> Vec<Block> {
    blocks
        .into_iter()
        .filter_map(|mut b| {
            let trimmed = b.text.trim();
            if trimmed.is_empty() {
                return None;
            }
            if trimmed.len() != b.text.len() {
                b.text = trimmed.to_string();
            }
            Some(b)
        })
        .collect()
}

/// The current heading path. Pushing a heading pops every heading of the same or a deeper
/// level first.
#[derive(Debug, Default)]
struct Sections {
    stack: Vec<(u8, String)>,
}

impl Sections {
    fn push(&mut self, level: u8, text: String) {
        while self.stack.last().is_some_and(|(l, _)| *l >= level) {
            self.stack.pop();
        }
        self.stack.push((level, text));
    }

    fn path(&self) -> Vec<String> {
        self.stack.iter().map(|(_, t)| t.clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Plain text

fn extract_txt(bytes: &[u8]) -> Parsed {
    let text = decode_text(bytes, "txt")?;
    Ok((None, plain_blocks(&text, None)))
}

// ---------------------------------------------------------------------------------------------
// JSONL

fn extract_jsonl(bytes: &[u8]) -> Vec<Result<ExtractedDoc, ExtractError>> {
    let text = match decode_text(bytes, "jsonl") {
        Ok(text) => text,
        Err(e) => return vec![Err(e)],
    };
    let results: Vec<_> = text
        .split('\n')
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| jsonl_record(i + 1, line))
        .collect();
    if results.is_empty() {
        vec![Err(ExtractError::Empty)]
    } else {
        results
    }
}

fn jsonl_record(line: usize, raw: &str) -> Result<ExtractedDoc, ExtractError> {
    let bad = |reason: &str| ExtractError::BadRecord {
        line,
        reason: reason.to_string(),
    };
    let value: Value =
        serde_json::from_str(raw.trim()).map_err(|e| bad(&format!("invalid JSON ({e})")))?;
    let Value::Object(mut record) = value else {
        return Err(bad("expected a JSON object"));
    };
    let text = match record.remove("text") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(bad("missing required field \"text\"")),
        Some(_) => return Err(bad("\"text\" must be a string")),
    };
    let id = match record.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(bad("\"id\" must not be empty"))
        }
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(bad("\"id\" must be a string or a number")),
    };
    let title = match record.remove("title") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(bad("\"title\" must be a string")),
    };
    let metadata = match record.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("\"metadata\" must be an object")),
    };
    text_record(TextRecord {
        id,
        title,
        text,
        metadata,
    })
    .map_err(|_| bad("\"text\" is empty"))
}

/// One text document given as data rather than a file: a JSONL line or a JSON upload
/// (`{id?, title?, text, metadata?}`).
#[derive(Debug, Clone, Default)]
pub struct TextRecord {
    pub id: Option<String>,
    pub title: Option<String>,
    pub text: String,
    pub metadata: Map<String, Value>,
}

impl TextRecord {
    /// The record with an id: its own, else `text:` and a hash of its trimmed text (a JSON
    /// upload without an id is identified by its text).
    pub fn or_text_id(mut self) -> Self {
        if self.id.is_none() {
            use sha2::Digest;
            let hash = hex::encode(sha2::Sha256::digest(self.text.trim().as_bytes()));
            self.id = Some(format!("text:{}", &hash[..24]));
        }
        self
    }
}

/// The one path from a text record to a document, whichever way it came (a JSONL line or a
/// JSON upload): the same record always gives the same blocks, title and type, and so the same
/// chunks and content hash. Paragraphs split on blank lines after newline normalisation; the
/// title is the given one with whitespace collapsed, else the text's first 80 characters.
/// `Err(Empty)` when no text is left.
pub fn text_record(record: TextRecord) -> Result<ExtractedDoc, ExtractError> {
    let text = normalize_newlines(&record.text);
    let blocks = clean_blocks(plain_blocks(&text, None));
    if blocks.is_empty() {
        return Err(ExtractError::Empty);
    }
    let title = record
        .title
        .map(|t| collapse_ws(&t))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            let flat = collapse_ws(&text);
            flat.chars()
                .take(80)
                .collect::<String>()
                .trim_end()
                .to_string()
        });
    Ok(ExtractedDoc {
        external_id: record.id,
        title,
        metadata: record.metadata,
        file_type: FileType::Jsonl,
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::testdata::{make_docx, make_docx_with_body, make_nested_pdf, make_pdf, make_zip};

    fn one(file_name: &str, bytes: &[u8]) -> Result<ExtractedDoc, ExtractError> {
        let mut results = extract(file_name, bytes);
        assert_eq!(results.len(), 1, "a plain file gives one result");
        results.pop().unwrap()
    }

    fn ok(file_name: &str, bytes: &[u8]) -> ExtractedDoc {
        one(file_name, bytes).unwrap_or_else(|e| panic!("{file_name}: {e}"))
    }

    fn texts(doc: &ExtractedDoc) -> Vec<&str> {
        doc.blocks.iter().map(|b| b.text.as_str()).collect()
    }

    fn sections(doc: &ExtractedDoc) -> Vec<Vec<&str>> {
        doc.blocks
            .iter()
            .map(|b| b.section.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn file_types_by_extension() {
        let cases = [
            ("a.txt", Some(FileType::Txt)),
            ("A.TEXT", Some(FileType::Txt)),
            ("notes.md", Some(FileType::Md)),
            ("x.Markdown", Some(FileType::Md)),
            ("dir/page.html", Some(FileType::Html)),
            ("C:\\web\\page.HTM", Some(FileType::Html)),
            ("paper.pdf", Some(FileType::Pdf)),
            ("report.DocX", Some(FileType::Docx)),
            ("data.jsonl", Some(FileType::Jsonl)),
            ("data.ndjson", Some(FileType::Jsonl)),
            ("archive.tar.gz", None),
            ("README", None),
            ("sheet.xlsx", None),
            ("trailingdot.", None),
        ];
        for (name, expected) in cases {
            assert_eq!(FileType::from_name(name), expected, "{name}");
        }
        for ft in [
            FileType::Txt,
            FileType::Md,
            FileType::Html,
            FileType::Pdf,
            FileType::Docx,
            FileType::Jsonl,
        ] {
            assert_eq!(
                serde_json::to_value(ft).unwrap(),
                Value::String(ft.as_str().into())
            );
            assert_eq!(ft.to_string(), ft.as_str());
        }
    }

    #[test]
    fn unsupported_extension() {
        match one("sheet.XLSX", b"whatever") {
            Err(e @ ExtractError::Unsupported(_)) => {
                assert!(matches!(&e, ExtractError::Unsupported(ext) if ext == ".XLSX"));
                assert_eq!(
                    e.to_string(),
                    "unsupported file type: .XLSX (supported: .txt .md .html .pdf .docx .jsonl)"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(one("Makefile", b"all:"), Err(ExtractError::Unsupported(n)) if n == "Makefile")
        );
    }

    #[test]
    fn txt_paragraphs() {
        let bytes =
            b"\xEF\xBB\xBFFirst line\r\nstill first.\r\n\r\n  \r\nSecond para.\n\n\n  Third  \n";
        let doc = ok("notes/My Notes.txt", bytes);
        assert_eq!(doc.title, "My Notes");
        assert_eq!(doc.file_type, FileType::Txt);
        assert_eq!(doc.external_id, None);
        assert!(doc.metadata.is_empty());
        assert_eq!(
            texts(&doc),
            ["First line\nstill first.", "Second para.", "Third"]
        );
        assert!(doc
            .blocks
            .iter()
            .all(|b| b.page.is_none() && b.section.is_empty()));
    }

    #[test]
    fn txt_lossy_utf8_and_utf16() {
        let doc = ok("a.txt", b"caf\xE9 ok");
        assert_eq!(texts(&doc), ["caf\u{FFFD} ok"]);
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in "héllo\r\n\r\nwörld".encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(texts(&ok("b.txt", &utf16)), ["héllo", "wörld"]);
    }

    #[test]
    fn txt_binary_and_empty() {
        let err = one("a.txt", b"PK\x03\x04\x00\x00binary").unwrap_err();
        assert!(
            matches!(err, ExtractError::Corrupt { kind: "txt", .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("cannot read txt file: "));
        assert!(matches!(one("a.txt", b""), Err(ExtractError::Empty)));
        assert!(matches!(
            one("a.txt", b" \n\r\n\t "),
            Err(ExtractError::Empty)
        ));
        assert_eq!(ExtractError::Empty.to_string(), "no text found");
    }

    #[test]
    fn md_structure() {
        let md = "\
---
title: Front Matter Title
---
Intro before any heading.

# Guide

Some *emphasis* and `inline code` and a [link text](http://x.y).
Soft wrapped line.

## Install

- item one
- item **two**
  - nested item

1. first step

```sh
cargo build
cargo test
```

> quoted text

| Name | Value |
|------|-------|
| a    | 1     |

### Deep

deep text

## Usage

usage text

# Second

second text
";
        let doc = ok("guide.md", md.as_bytes());
        assert_eq!(doc.title, "Guide");
        assert_eq!(
            texts(&doc),
            [
                "Intro before any heading.",
                "Some emphasis and inline code and a link text. Soft wrapped line.",
                "item one",
                "item two",
                "nested item",
                "first step",
                "cargo build\ncargo test",
                "quoted text",
                "Name | Value",
                "a | 1",
                "deep text",
                "usage text",
                "second text",
            ]
        );
        let none: Vec<&str> = vec![];
        assert_eq!(
            sections(&doc),
            [
                none.clone(),
                vec!["Guide"],
                vec!["Guide", "Install"],
                vec!["Guide", "Install"],
                vec!["Guide", "Install"],
                vec!["Guide", "Install"],
                vec!["Guide", "Install"],
                vec!["Guide", "Install"],
                vec!["Guide", "Install"],
                vec!["Guide", "Install"],
                vec!["Guide", "Install", "Deep"],
                vec!["Guide", "Usage"],
                vec!["Second"],
            ]
        );
        // Heading text is never a block of its own.
        assert!(!doc.blocks.iter().any(|b| b.text == "Install"));
    }

    #[test]
    fn md_title_fallbacks() {
        let doc = ok("x/readme.md", b"## Only h2\n\ntext");
        assert_eq!(doc.title, "readme");
        assert_eq!(sections(&doc), [vec!["Only h2"]]);
        let doc = ok("x.md", b"+++\ntitle = \"Toml Title\"\n+++\n\nbody");
        assert_eq!(doc.title, "Toml Title");
        assert_eq!(texts(&doc), ["body"]);
        let doc = ok("x.md", b"Setext Title\n============\n\nbody");
        assert_eq!(doc.title, "Setext Title");
        assert!(matches!(
            one("x.md", b"# Just a heading\n"),
            Err(ExtractError::Empty)
        ));
    }

    #[test]
    fn md_html_blocks() {
        let md = "<h1 align=\"center\">Project</h1>\n\n<p>An <b>HTML</b> paragraph.</p>\n\n## Sub\n\ntext\n";
        let doc = ok("r.md", md.as_bytes());
        assert_eq!(doc.title, "Project");
        assert_eq!(texts(&doc), ["An HTML paragraph.", "text"]);
        assert_eq!(sections(&doc), [vec!["Project"], vec!["Project", "Sub"]]);
    }

    #[test]
    fn html_structure() {
        let html = r#"<!DOCTYPE html>
<html><head><title> The   Page </title><style>p { color: red }</style>
<script>var x = "script text";</script></head>
<body>
<nav><a href="/">Home nav</a></nav>
<header><h1>Header h1</h1></header>
<div>Loose   div
   text</div>
<h1>Main</h1>
<p>First <em>para</em>graph
   spans lines.</p>
<h2>Lists</h2>
<ul><li>one</li><li>two <b>bold</b></li></ul>
<pre>  code
    indented</pre>
<blockquote>quoted</blockquote>
<table><tr><th>Name</th><th>Value</th></tr><tr><td><p>a</p></td><td>1</td></tr></table>
<h3>Deep</h3><p>deep text<br>second line</p>
<h2>Other</h2><p>other text</p>
<noscript>enable js</noscript><template><p>tmpl</p></template>
<footer>Footer text</footer>
</body></html>"#;
        let doc = ok("page.html", html.as_bytes());
        assert_eq!(doc.title, "The Page");
        assert_eq!(
            texts(&doc),
            [
                "Loose div text",
                "First paragraph spans lines.",
                "one",
                "two bold",
                "code\n    indented",
                "quoted",
                "Name | Value",
                "a | 1",
                "deep text second line",
                "other text",
            ]
        );
        let none: Vec<&str> = vec![];
        assert_eq!(
            sections(&doc),
            [
                none,
                vec!["Main"],
                vec!["Main", "Lists"],
                vec!["Main", "Lists"],
                vec!["Main", "Lists"],
                vec!["Main", "Lists"],
                vec!["Main", "Lists"],
                vec!["Main", "Lists"],
                vec!["Main", "Lists", "Deep"],
                vec!["Main", "Other"],
            ]
        );
    }

    #[test]
    fn html_title_fallbacks() {
        let doc = ok(
            "p.htm",
            b"<body><h2>Sub</h2><h1>Big  Title</h1><p>x</p></body>",
        );
        assert_eq!(doc.title, "Big Title");
        let doc = ok("plain.html", b"just some text");
        assert_eq!(doc.title, "plain");
        assert_eq!(texts(&doc), ["just some text"]);
        assert!(matches!(
            one(
                "e.html",
                b"<html><head><title>T</title></head><body><script>x</script></body></html>"
            ),
            Err(ExtractError::Empty)
        ));
    }

    #[test]
    fn html_deep_nesting_does_not_overflow() {
        let html = format!("{}deep{}", "<div>".repeat(5000), "</div>".repeat(5000));
        assert_eq!(texts(&ok("d.html", html.as_bytes())), ["deep"]);
    }

    #[test]
    fn pdf_pages_and_title() {
        let bytes = make_pdf(
            "A Study (of Things)",
            &[
                "Page one first paragraph\ncontinues here.\n\nPage one second paragraph.",
                "Page two text.",
                "",
                "Last page.",
            ],
        );
        let doc = ok("paper.pdf", &bytes);
        assert_eq!(doc.title, "A Study (of Things)");
        assert_eq!(doc.file_type, FileType::Pdf);
        let got: Vec<(Option<u32>, String)> = doc
            .blocks
            .iter()
            .map(|b| {
                (
                    b.page,
                    b.text.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    Some(1),
                    "Page one first paragraph continues here.".to_string()
                ),
                (Some(1), "Page one second paragraph.".to_string()),
                (Some(2), "Page two text.".to_string()),
                (Some(4), "Last page.".to_string()),
            ]
        );
        assert!(doc.blocks.iter().all(|b| b.section.is_empty()));
    }

    #[test]
    fn pdf_title_falls_back_to_stem() {
        let doc = ok("dir/report 2024.pdf", &make_pdf("", &["Hello world."]));
        assert_eq!(doc.title, "report 2024");
        let doc = ok("u.pdf", &make_pdf("Über Titel", &["x"]));
        assert_eq!(doc.title, "Über Titel");
    }

    #[test]
    fn pdf_errors() {
        for bytes in [
            &b"not a pdf at all"[..],
            b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF",
            b"",
        ] {
            let err = one("bad.pdf", bytes).unwrap_err();
            assert!(
                matches!(err, ExtractError::Corrupt { kind: "pdf", .. }),
                "{err:?}"
            );
        }
        // Truncated and bit-flipped files must never panic.
        let good = make_pdf("T", &["Some text here.", "More text."]);
        for cut in (0..good.len()).step_by(37) {
            let _ = extract("cut.pdf", &good[..cut]);
        }
        for i in (0..good.len()).step_by(53) {
            let mut bad = good.clone();
            bad[i] ^= 0x5A;
            let _ = extract("flip.pdf", &bad);
        }
        // A PDF whose pages have no text.
        assert!(matches!(
            one("blank.pdf", &make_pdf("T", &["", ""])),
            Err(ExtractError::Empty)
        ));
    }

    #[test]
    fn pdf_nesting_is_refused_before_the_parser() {
        // Depth 1,000 overflowed lopdf's recursion and aborted the process.
        let err = one("deep.pdf", &make_nested_pdf(1000)).unwrap_err();
        assert!(
            matches!(&err, ExtractError::Corrupt { kind: "pdf", reason } if reason.contains("nested 101 deep")),
            "{err}"
        );
        assert_eq!(
            texts(&ok("ok.pdf", &make_nested_pdf(20))),
            ["Hello from a deep file."]
        );
    }

    #[test]
    fn pdf_nesting_scan_skips_strings_comments_and_streams() {
        let deep = "[".repeat(150);
        let hidden = [
            format!("1 0 obj ({deep}) endobj"),
            format!("1 0 obj (a \\) {deep}) endobj"),
            format!("% {deep}\n1 0 obj [] endobj"),
            format!("<< /Length 3 >>\nstream\n{deep}\nendstream"),
            format!("<{}>", "5b".repeat(10)),
        ];
        for pdf in &hidden {
            assert_eq!(pdf_nesting_over(pdf.as_bytes(), 100), None, "{pdf}");
        }
        assert_eq!(
            pdf_nesting_over(format!("<<{deep}").as_bytes(), 100),
            Some(101)
        );
        assert_eq!(pdf_nesting_over("[[]]".repeat(1000).as_bytes(), 100), None);
    }

    #[test]
    fn docx_headings_and_paragraphs() {
        let bytes = make_docx(&[
            (None, "Preface text."),
            (Some("Title"), "The Title"),
            (Some("Heading1"), "Chapter One"),
            (None, "First & <paragraph>."),
            (Some("Heading2"), "Part A"),
            (None, "Tab\tseparated\nand broken."),
            (Some("Normal"), "normal style"),
            (Some("Heading1"), "Chapter Two"),
            (None, "  "),
            (None, "Second chapter text."),
        ]);
        let doc = ok("book.docx", &bytes);
        assert_eq!(doc.title, "The Title");
        assert_eq!(doc.file_type, FileType::Docx);
        assert_eq!(
            texts(&doc),
            [
                "Preface text.",
                "First & <paragraph>.",
                "Tab\tseparated\nand broken.",
                "normal style",
                "Second chapter text.",
            ]
        );
        let none: Vec<&str> = vec![];
        assert_eq!(
            sections(&doc),
            [
                none,
                vec!["The Title", "Chapter One"],
                vec!["The Title", "Chapter One", "Part A"],
                vec!["The Title", "Chapter One", "Part A"],
                vec!["The Title", "Chapter Two"],
            ]
        );
    }

    #[test]
    fn docx_title_fallbacks() {
        let doc = ok(
            "x.docx",
            &make_docx(&[(Some("Heading2"), "First H"), (None, "t")]),
        );
        assert_eq!(doc.title, "First H");
        let doc = ok("dir/plain.docx", &make_docx(&[(None, "just text")]));
        assert_eq!(doc.title, "plain");
        assert!(matches!(
            one("e.docx", &make_docx(&[(Some("Heading1"), "Only heading")])),
            Err(ExtractError::Empty)
        ));
    }

    #[test]
    fn docx_tables_runs_and_alternate_content() {
        let body = r#"
<w:p><w:pPr><w:pStyle w:val="Heading1"/><w:pPrChange><w:pPr><w:pStyle w:val="Normal"/></w:pPr></w:pPrChange></w:pPr><w:r><w:t>Data</w:t></w:r></w:p>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell one</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>cell two</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr><w:r><w:t xml:space="preserve">Split </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>run&amp;more</w:t></w:r><w:r><w:instrText>HYPERLINK x</w:instrText><w:delText>deleted</w:delText></w:r></w:p>
<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:txbxContent><w:p><w:r><w:t>box text</w:t></w:r></w:p></w:txbxContent></mc:Choice><mc:Fallback><w:txbxContent><w:p><w:r><w:t>box text</w:t></w:r></w:p></w:txbxContent></mc:Fallback></mc:AlternateContent></w:r><w:r><w:t>outer</w:t></w:r></w:p>
<w:p><w:pPr><w:outlineLvl w:val="1"/></w:pPr><w:r><w:t>Outline Heading</w:t></w:r></w:p>
<w:p><w:r><w:t>&#169; 2024</w:t></w:r></w:p>
"#;
        let doc = ok("t.docx", &make_docx_with_body(body));
        assert_eq!(doc.title, "Data");
        assert_eq!(
            texts(&doc),
            [
                "cell one",
                "cell two",
                "Split run&more",
                "box text",
                "outer",
                "© 2024"
            ]
        );
        assert_eq!(sections(&doc)[0], ["Data"]);
        assert_eq!(sections(&doc)[5], ["Data", "Outline Heading"]);
    }

    #[test]
    fn docx_errors() {
        let err = one("a.docx", b"definitely not a zip").unwrap_err();
        assert!(
            matches!(err, ExtractError::Corrupt { kind: "docx", .. }),
            "{err:?}"
        );
        let zip = make_zip(&[("word/other.xml", b"<x/>")]);
        let err = one("a.docx", &zip).unwrap_err();
        assert!(
            matches!(err, ExtractError::Corrupt { kind: "docx", .. }),
            "{err:?}"
        );
        let zip = make_zip(&[("word/document.xml", b"<w:document><w:body><w:p></w:body>")]);
        let err = one("a.docx", &zip).unwrap_err();
        assert!(
            matches!(err, ExtractError::Corrupt { kind: "docx", .. }),
            "{err:?}"
        );
        let mut good = make_docx(&[(None, "text")]);
        good.truncate(good.len() / 2);
        assert!(matches!(
            one("a.docx", &good),
            Err(ExtractError::Corrupt { .. })
        ));
    }

    #[test]
    fn docx_zip_bombs_are_refused() {
        // 8 MiB of one repeated run compresses ~1000x: past the ratio cap, refused unparsed.
        let mut xml = b"<w:document><w:body>".to_vec();
        xml.extend(b"<w:p><w:r><w:t>aaaa</w:t></w:r></w:p>".repeat(8 << 20 >> 5));
        let zip = make_zip(&[("word/document.xml", &xml)]);
        let err = one("bomb.docx", &zip).unwrap_err();
        assert!(
            matches!(&err, ExtractError::TooLarge { kind: "docx", reason } if reason.contains("inflates past")),
            "{err}"
        );
        assert_eq!(Error::from(err).code().as_str(), "document_too_large");
        // Under the first MiB any ratio is fine: a short document compresses well too.
        let small = format!(
            "<w:document><w:body>{}</w:body></w:document>",
            "<w:p><w:r><w:t>ok</w:t></w:r></w:p>".repeat(2000)
        );
        assert_eq!(
            texts(&ok(
                "fine.docx",
                &make_zip(&[("word/document.xml", small.as_bytes())])
            ))[0],
            "ok"
        );
    }

    #[test]
    fn jsonl_records() {
        let long = "word ".repeat(40);
        let jsonl = format!(
            "{{\"id\": \"doc-1\", \"title\": \"  First  \", \"text\": \"Para one.\\n\\nPara two.\", \"metadata\": {{\"lang\": \"en\", \"n\": 3}}}}\r\n\
             \n\
             {{\"id\": 42, \"text\": \"{long}\"}}\n\
             not json\n\
             [1, 2]\n\
             {{\"title\": \"no text\"}}\n\
             {{\"text\": 5}}\n\
             {{\"text\": \"  \"}}\n\
             {{\"text\": \"x\", \"id\": [1]}}\n\
             {{\"text\": \"x\", \"metadata\": \"m\"}}\n\
             {{\"text\": \"x\", \"title\": 7}}\n\
             {{\"text\": \"last\", \"id\": 1.5, \"metadata\": null}}"
        );
        let results = extract("corpus.jsonl", jsonl.as_bytes());
        assert_eq!(results.len(), 11);

        let first = results[0].as_ref().unwrap();
        assert_eq!(first.external_id.as_deref(), Some("doc-1"));
        assert_eq!(first.title, "First");
        assert_eq!(first.file_type, FileType::Jsonl);
        assert_eq!(texts(first), ["Para one.", "Para two."]);
        assert_eq!(first.metadata["lang"], "en");
        assert_eq!(first.metadata["n"], 3);

        let second = results[1].as_ref().unwrap();
        assert_eq!(second.external_id.as_deref(), Some("42"));
        assert_eq!(second.title.chars().count(), 79); // 80 chars, trailing space trimmed
        assert!(long.starts_with(&second.title));
        assert!(second.metadata.is_empty());

        let bad_lines: Vec<usize> = results
            .iter()
            .filter_map(|r| match r {
                Err(ExtractError::BadRecord { line, .. }) => Some(*line),
                Err(e) => panic!("{e:?}"),
                Ok(_) => None,
            })
            .collect();
        assert_eq!(bad_lines, [4, 5, 6, 7, 8, 9, 10, 11]);
        let last = results[10].as_ref().unwrap();
        assert_eq!(last.external_id.as_deref(), Some("1.5"));
        assert_eq!(last.title, "last");

        let msg = results[2].as_ref().unwrap_err().to_string();
        assert!(msg.starts_with("record 4: invalid JSON"), "{msg}");
        let msg = results[4].as_ref().unwrap_err().to_string();
        assert_eq!(msg, "record 6: missing required field \"text\"");
    }

    #[test]
    fn jsonl_empty_and_binary() {
        assert!(matches!(
            extract("e.jsonl", b"\n  \n").as_slice(),
            [Err(ExtractError::Empty)]
        ));
        assert!(matches!(
            extract("b.ndjson", b"{\"text\":\"a\"}\n\x00\x01").as_slice(),
            [Err(ExtractError::Corrupt { kind: "jsonl", .. })]
        ));
    }
}
