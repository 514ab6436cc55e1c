//! Text extraction: turn the bytes of a supported file into text [`Block`]s that carry their
//! location (PDF page, heading path).
//!
//! One entry point, [`extract`], dispatches on the file extension. Every format ends in the
//! same clean-up: blocks are trimmed, empty blocks dropped, and a document with no text left is
//! [`ExtractError::Empty`]. Nothing in here panics on bad input: parse errors (and panics inside
//! the PDF library) become [`ExtractError::Corrupt`].

use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{Map, Value};

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
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub text: String,
    /// 1-based page number; PDF only.
    pub page: Option<u32>,
    /// Heading path, outermost first.
    pub section: Vec<String>,
}

/// One extracted document.
#[derive(Debug, Clone)]
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
// Markdown

fn extract_md(bytes: &[u8]) -> Parsed {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

    let text = decode_text(bytes, "md")?;
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;

    let mut sections = Sections::default();
    let mut blocks: Vec<Block> = Vec::new();
    let mut buf = String::new();
    // Some(level, text) while inside a heading.
    let mut heading: Option<(u8, String)> = None;
    let mut first_h1: Option<String> = None;
    let mut in_metadata = false;
    let mut metadata = String::new();
    let mut in_html_block = false;
    let mut html = String::new();

    fn flush(buf: &mut String, blocks: &mut Vec<Block>, sections: &Sections) {
        if !buf.trim().is_empty() {
            blocks.push(Block {
                text: std::mem::take(buf),
                page: None,
                section: sections.path(),
            });
        }
        buf.clear();
    }

    for event in Parser::new_ext(&text, options) {
        let sink: &mut String = match heading.as_mut() {
            Some((_, t)) => t,
            None => &mut buf,
        };
        match event {
            Event::Start(tag) => match tag {
                Tag::Heading { level, .. } => {
                    flush(&mut buf, &mut blocks, &sections);
                    heading = Some((level as u8, String::new()));
                }
                Tag::MetadataBlock(_) => in_metadata = true,
                Tag::HtmlBlock => {
                    flush(&mut buf, &mut blocks, &sections);
                    in_html_block = true;
                    html.clear();
                }
                Tag::TableCell if !sink.trim().is_empty() => sink.push_str(" | "),
                Tag::Paragraph
                | Tag::BlockQuote(_)
                | Tag::CodeBlock(_)
                | Tag::List(_)
                | Tag::Item
                | Tag::FootnoteDefinition(_)
                | Tag::DefinitionList
                | Tag::DefinitionListTitle
                | Tag::DefinitionListDefinition
                | Tag::Table(_)
                | Tag::TableHead
                | Tag::TableRow
                    if heading.is_none() =>
                {
                    flush(&mut buf, &mut blocks, &sections)
                }
                _ => {}
            },
            Event::End(tag) => match tag {
                TagEnd::Heading(_) => {
                    if let Some((level, raw)) = heading.take() {
                        let text = collapse_ws(&raw);
                        if !text.is_empty() {
                            if level == 1 && first_h1.is_none() {
                                first_h1 = Some(text.clone());
                            }
                            sections.push(level, text);
                        }
                    }
                }
                TagEnd::MetadataBlock(_) => in_metadata = false,
                TagEnd::HtmlBlock => {
                    in_html_block = false;
                    let fragment = scraper::Html::parse_fragment(&html);
                    let mut walker = HtmlWalker::new(&mut sections);
                    walker.walk(&fragment);
                    if first_h1.is_none() {
                        first_h1 = walker.first_h1.take();
                    }
                    blocks.append(&mut walker.blocks);
                }
                TagEnd::Paragraph
                | TagEnd::BlockQuote(_)
                | TagEnd::CodeBlock
                | TagEnd::List(_)
                | TagEnd::Item
                | TagEnd::FootnoteDefinition
                | TagEnd::DefinitionList
                | TagEnd::DefinitionListTitle
                | TagEnd::DefinitionListDefinition
                | TagEnd::Table
                | TagEnd::TableHead
                | TagEnd::TableRow
                    if heading.is_none() =>
                {
                    flush(&mut buf, &mut blocks, &sections)
                }
                _ => {}
            },
            Event::Text(t) => {
                if in_metadata {
                    metadata.push_str(&t);
                } else {
                    sink.push_str(&t);
                }
            }
            Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => sink.push_str(&t),
            Event::Html(t) => {
                if in_html_block {
                    html.push_str(&t);
                }
            }
            Event::SoftBreak => sink.push(' '),
            Event::HardBreak => sink.push('\n'),
            Event::Rule => flush(&mut buf, &mut blocks, &sections),
            Event::InlineHtml(_) | Event::FootnoteReference(_) | Event::TaskListMarker(_) => {}
        }
    }
    flush(&mut buf, &mut blocks, &sections);

    let title = first_h1.or_else(|| front_matter_title(&metadata));
    Ok((title, blocks))
}

/// `title: ...` (YAML) or `title = "..."` (TOML) from a front matter block.
fn front_matter_title(metadata: &str) -> Option<String> {
    metadata.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("title")?.trim_start();
        let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// HTML

fn extract_html(bytes: &[u8]) -> Parsed {
    let text = decode_text(bytes, "html")?;
    let document = scraper::Html::parse_document(&text);
    let mut sections = Sections::default();
    let mut walker = HtmlWalker::new(&mut sections);
    walker.walk(&document);
    let blocks = std::mem::take(&mut walker.blocks);

    let select_text = |sel: &str| -> Option<String> {
        let selector = scraper::Selector::parse(sel).ok()?;
        document
            .select(&selector)
            .map(|el| collapse_ws(&el.text().collect::<String>()))
            .find(|t| !t.is_empty())
    };
    let title = select_text("title").or_else(|| select_text("h1"));
    Ok((title, blocks))
}

/// Elements whose whole subtree is dropped.
const HTML_SKIP: &[&str] = &[
    "script", "style", "noscript", "nav", "header", "footer", "template", "head", "svg", "math",
    "iframe", "object", "embed", "canvas", "select", "button",
];

/// Elements that end the current block (their content starts a new one).
const HTML_BLOCK: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "caption",
    "center",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "form",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "menu",
    "ol",
    "p",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "tr",
    "ul",
];

/// Walks an HTML tree (iteratively, so deep nesting cannot overflow the stack) and collects
/// blocks, tracking the heading path in `sections`.
struct HtmlWalker<'s> {
    sections: &'s mut Sections,
    blocks: Vec<Block>,
    buf: String,
    heading: Option<(u8, String)>,
    first_h1: Option<String>,
    pre_depth: usize,
    cell_depth: usize,
}

impl<'s> HtmlWalker<'s> {
    fn new(sections: &'s mut Sections) -> Self {
        HtmlWalker {
            sections,
            blocks: Vec::new(),
            buf: String::new(),
            heading: None,
            first_h1: None,
            pre_depth: 0,
            cell_depth: 0,
        }
    }

    fn walk(&mut self, html: &scraper::Html) {
        use scraper::Node;
        // (node, closing): a node is visited when opened and again when closed.
        let mut stack = vec![(html.tree.root(), false)];
        while let Some((node, closing)) = stack.pop() {
            match node.value() {
                Node::Text(text) => {
                    if let Some((_, h)) = self.heading.as_mut() {
                        h.push_str(text);
                    } else {
                        self.buf.push_str(text);
                    }
                }
                Node::Element(el) => {
                    let name = el.name();
                    if closing {
                        self.close(name);
                    } else if !HTML_SKIP.contains(&name) {
                        self.open(name);
                        stack.push((node, true));
                        stack.extend(node.children().rev().map(|c| (c, false)));
                    }
                }
                Node::Document | Node::Fragment => {
                    stack.extend(node.children().rev().map(|c| (c, false)));
                }
                _ => {}
            }
        }
        self.flush();
    }

    fn open(&mut self, name: &str) {
        if let Some(level) = heading_level(name) {
            self.flush();
            self.heading = Some((level, String::new()));
        } else if name == "br" {
            self.text_sink().push('\n');
        } else if name == "pre" {
            self.flush();
            self.pre_depth += 1;
        } else if name == "td" || name == "th" {
            if self.cell_depth == 0 && !self.buf.trim().is_empty() {
                self.buf.push_str(" | ");
            }
            self.cell_depth += 1;
        } else if HTML_BLOCK.contains(&name) {
            self.block_break(name);
        }
    }

    fn close(&mut self, name: &str) {
        if let Some(level) = heading_level(name) {
            if let Some((_, raw)) = self.heading.take() {
                let text = collapse_ws(&raw);
                if !text.is_empty() {
                    if level == 1 && self.first_h1.is_none() {
                        self.first_h1 = Some(text.clone());
                    }
                    self.sections.push(level, text);
                }
            }
        } else if name == "pre" {
            self.flush();
            self.pre_depth = self.pre_depth.saturating_sub(1);
        } else if name == "td" || name == "th" {
            self.cell_depth = self.cell_depth.saturating_sub(1);
        } else if HTML_BLOCK.contains(&name) {
            self.block_break(name);
        }
    }

    /// A block element boundary: inside a table cell (a paragraph in a cell) it is only a
    /// space, so a table row stays one block; elsewhere it ends the current block.
    fn block_break(&mut self, name: &str) {
        if self.cell_depth > 0 && name != "tr" {
            self.text_sink().push(' ');
        } else if self.heading.is_none() {
            self.flush();
        }
    }

    fn text_sink(&mut self) -> &mut String {
        match self.heading.as_mut() {
            Some((_, h)) => h,
            None => &mut self.buf,
        }
    }

    fn flush(&mut self) {
        let text = if self.pre_depth > 0 {
            self.buf.trim().to_string()
        } else {
            collapse_ws(&self.buf)
        };
        self.buf.clear();
        if !text.is_empty() {
            self.blocks.push(Block {
                text,
                page: None,
                section: self.sections.path(),
            });
        }
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// PDF

fn extract_pdf(bytes: &[u8]) -> Parsed {
    // pdf-extract (and lopdf below it) are known to panic on some malformed files.
    let (title, pages) = catch_unwind(AssertUnwindSafe(|| pdf_pages(bytes)))
        .unwrap_or_else(|panic| Err(corrupt("pdf", panic_reason(&*panic))))?;
    let blocks = pages
        .iter()
        .flat_map(|(page, text)| plain_blocks(&normalize_newlines(text), Some(*page)))
        .collect();
    Ok((title, blocks))
}

/// A PDF's Info title and its `(page number, text)` pairs.
type PdfText = (Option<String>, Vec<(u32, String)>);

/// The Info `/Title` and the text of every page (1-based page numbers). Pages that fail are
/// skipped; if every page fails, the first failure is the error.
fn pdf_pages(bytes: &[u8]) -> Result<PdfText, ExtractError> {
    let mut doc = pdf_extract::Document::load_mem(bytes).map_err(|e| corrupt("pdf", e))?;
    if doc.is_encrypted() {
        doc.decrypt("")
            .map_err(|e| corrupt("pdf", format!("encrypted and needs a password ({e})")))?;
    }
    let title = pdf_title(&doc);
    let mut pages = Vec::new();
    let mut first_error: Option<String> = None;
    for &number in doc.get_pages().keys() {
        let mut text = String::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut output = pdf_extract::PlainTextOutput::new(&mut text);
            pdf_extract::output_doc_page(&doc, &mut output, number)
        }));
        let error = match result {
            Ok(Ok(())) => {
                pages.push((number, text));
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => panic_reason(&*panic),
        };
        tracing::warn!(page = number, error = %error, "skipping unreadable PDF page");
        first_error.get_or_insert(format!("page {number}: {error}"));
    }
    if pages.is_empty() {
        if let Some(error) = first_error {
            return Err(corrupt("pdf", error));
        }
    }
    Ok((title, pages))
}

fn pdf_title(doc: &pdf_extract::Document) -> Option<String> {
    let deref = |obj: &pdf_extract::Object| -> Option<pdf_extract::Object> {
        match obj {
            pdf_extract::Object::Reference(id) => doc.get_object(*id).ok().cloned(),
            other => Some(other.clone()),
        }
    };
    let info = deref(doc.trailer.get(b"Info").ok()?)?;
    let title = deref(info.as_dict().ok()?.get(b"Title").ok()?)?;
    let text = pdf_extract::decode_text_string(&title).ok()?;
    let text = collapse_ws(text.trim_start_matches('\u{feff}'));
    (!text.is_empty()).then_some(text)
}

fn panic_reason(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown error".to_string());
    format!("the PDF parser failed: {message}")
}

// ---------------------------------------------------------------------------------------------
// DOCX

/// Largest `word/document.xml` we are willing to inflate (guards against zip bombs).
const DOCX_XML_LIMIT: u64 = 256 * 1024 * 1024;

fn extract_docx(bytes: &[u8]) -> Parsed {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| corrupt("docx", format!("not a zip archive ({e})")))?;
    let mut raw = Vec::new();
    {
        let file = archive
            .by_name("word/document.xml")
            .map_err(|_| corrupt("docx", "no word/document.xml in the archive"))?;
        file.take(DOCX_XML_LIMIT)
            .read_to_end(&mut raw)
            .map_err(|e| corrupt("docx", format!("cannot inflate word/document.xml ({e})")))?;
    }
    parse_document_xml(&String::from_utf8_lossy(&raw))
}

/// The local name of a WordprocessingML element or attribute (`w:` prefix or none).
fn w_local(qname: &[u8]) -> Option<&[u8]> {
    match qname.iter().position(|&b| b == b':') {
        Some(i) if &qname[..i] == b"w" => Some(&qname[i + 1..]),
        Some(_) => None,
        None => Some(qname),
    }
}

#[derive(Default)]
struct DocxPara {
    text: String,
    style: Option<String>,
    outline_level: Option<u8>,
}

impl DocxPara {
    /// Heading level: 0 for Title, 1..=9 for Heading1..Heading9 (or an outline level).
    fn heading_level(&self) -> Option<u8> {
        if let Some(style) = &self.style {
            let norm: String = style
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase();
            if norm == "title" {
                return Some(0);
            }
            if let Some(n) = norm.strip_prefix("heading") {
                if let Ok(n @ 1..=9) = n.parse::<u8>() {
                    return Some(n);
                }
            }
        }
        self.outline_level
    }
}

fn parse_document_xml(xml: &str) -> Parsed {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_str(xml);
    let decoder = reader.decoder();
    let bad_xml =
        |e: &dyn std::fmt::Display| corrupt("docx", format!("bad word/document.xml ({e})"));

    let mut sections = Sections::default();
    let mut blocks = Vec::new();
    let mut title_para: Option<String> = None;
    let mut first_heading: Option<String> = None;

    let mut paras: Vec<DocxPara> = Vec::new();
    let mut in_text = false;
    let mut run_depth = 0usize;
    // Depth inside a subtree we ignore (mc:Fallback duplicates mc:Choice content).
    let mut skip_depth = 0usize;

    loop {
        let event = reader.read_event().map_err(|e| bad_xml(&e))?;
        if skip_depth > 0 {
            match event {
                Event::Start(_) => skip_depth += 1,
                Event::End(_) => skip_depth -= 1,
                Event::Eof => break,
                _ => {}
            }
            continue;
        }
        match event {
            Event::Start(e) => {
                let qname = e.name();
                if qname.as_ref() == b"mc:Fallback" {
                    skip_depth = 1;
                    continue;
                }
                match w_local(qname.as_ref()) {
                    Some(b"p") => paras.push(DocxPara::default()),
                    Some(b"r") => run_depth += 1,
                    Some(b"t") => in_text = true,
                    Some(b"pStyle" | b"outlineLvl") => {
                        docx_para_property(&e, decoder, paras.last_mut())
                    }
                    _ => {}
                }
            }
            Event::Empty(e) => {
                let qname = e.name();
                let Some(local) = w_local(qname.as_ref()) else {
                    continue;
                };
                let para = paras.last_mut();
                match local {
                    b"pStyle" | b"outlineLvl" => docx_para_property(&e, decoder, para),
                    b"tab" if run_depth > 0 => push_to(para, "\t"),
                    b"br" | b"cr" if run_depth > 0 => push_to(para, "\n"),
                    b"noBreakHyphen" if run_depth > 0 => push_to(para, "-"),
                    _ => {}
                }
            }
            Event::End(e) => match w_local(e.name().as_ref()) {
                Some(b"t") => in_text = false,
                Some(b"r") => run_depth = run_depth.saturating_sub(1),
                Some(b"p") => {
                    let Some(para) = paras.pop() else { continue };
                    match para.heading_level() {
                        Some(level) => {
                            let text = collapse_ws(&para.text);
                            if text.is_empty() {
                                continue;
                            }
                            if level == 0 && title_para.is_none() {
                                title_para = Some(text.clone());
                            }
                            first_heading.get_or_insert_with(|| text.clone());
                            sections.push(level, text);
                        }
                        None => blocks.push(Block {
                            text: para.text,
                            page: None,
                            section: sections.path(),
                        }),
                    }
                }
                _ => {}
            },
            Event::Text(t) if in_text => {
                let text = t.xml10_content().map_err(|e| bad_xml(&e))?;
                push_to(paras.last_mut(), &text);
            }
            Event::CData(t) if in_text => {
                let text = t.decode().map_err(|e| bad_xml(&e))?;
                push_to(paras.last_mut(), &text);
            }
            Event::GeneralRef(r) if in_text => {
                let resolved = match r.resolve_char_ref().map_err(|e| bad_xml(&e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| bad_xml(&e))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .unwrap_or_default()
                            .to_string()
                    }
                };
                push_to(paras.last_mut(), &resolved);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((title_para.or(first_heading), blocks))
}

fn push_to(para: Option<&mut DocxPara>, text: &str) {
    if let Some(para) = para {
        para.text.push_str(text);
    }
}

/// Record `w:pStyle` / `w:outlineLvl` on the open paragraph. Only the first one counts, so the
/// old properties kept in a tracked change (`w:pPrChange`) do not override the current ones.
fn docx_para_property(
    e: &quick_xml::events::BytesStart<'_>,
    decoder: quick_xml::encoding::Decoder,
    para: Option<&mut DocxPara>,
) {
    let Some(para) = para else { return };
    let Some(value) = e
        .attributes()
        .flatten()
        .find(|a| w_local(a.key.as_ref()) == Some(b"val"))
        .and_then(|a| a.decode_and_unescape_value(decoder).ok())
    else {
        return;
    };
    match w_local(e.name().as_ref()) {
        Some(b"pStyle") if para.style.is_none() => para.style = Some(value.into_owned()),
        Some(b"outlineLvl") if para.outline_level.is_none() => {
            // Levels 0..=8 are headings 1..=9; 9 means body text.
            if let Ok(level @ 0..=8) = value.trim().parse::<u8>() {
                para.outline_level = Some(level + 1);
            }
        }
        _ => {}
    }
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
    let external_id = match record.remove("id") {
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
        Some(Value::String(s)) => Some(collapse_ws(&s)).filter(|t| !t.is_empty()),
        Some(_) => return Err(bad("\"title\" must be a string")),
    };
    let metadata = match record.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("\"metadata\" must be an object")),
    };
    let text = normalize_newlines(&text);
    let blocks = clean_blocks(plain_blocks(&text, None));
    if blocks.is_empty() {
        return Err(bad("\"text\" is empty"));
    }
    let title = title.unwrap_or_else(|| {
        let flat = collapse_ws(&text);
        flat.chars()
            .take(80)
            .collect::<String>()
            .trim_end()
            .to_string()
    });
    Ok(ExtractedDoc {
        external_id,
        title,
        metadata,
        file_type: FileType::Jsonl,
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{make_docx, make_docx_with_body, make_pdf, make_zip};

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
