//! Fixture builders for tests: tiny but valid PDF and DOCX files generated in memory, so the
//! test suite needs no binary fixture files. Used by unit tests and integration tests alike,
//! which is why this module is not `#[cfg(test)]`.

use std::io::Write;

/// A valid PDF with one page per entry, each page showing that text (Helvetica, plain ASCII,
/// lines split on `'\n'`; an empty line leaves a blank line, so text extraction sees a
/// paragraph break there). The document Info dictionary carries `title` (omitted when empty).
///
/// Characters outside printable ASCII are replaced by `?` in page text; the title may be any
/// Unicode (it is written as a UTF-16BE text string when it is not ASCII).
pub fn make_pdf(title: &str, pages: &[&str]) -> Vec<u8> {
    let contents: Vec<Vec<u8>> = pages.iter().map(|p| page_content(p)).collect();
    pdf_document(title, "", &contents)
}

/// A one-page PDF whose catalog holds arrays nested `depth` deep (`/Deep [[[ … ]]]`): the
/// 2.6 KB file of depth 1,000 that overflowed lopdf's recursive parser.
pub fn make_nested_pdf(depth: usize) -> Vec<u8> {
    let deep = format!("/Deep {}{}", "[".repeat(depth), "]".repeat(depth));
    pdf_document("", &deep, &[page_content("Hello from a deep file.")])
}

/// A one-page PDF whose page content stream shows text through arrays nested `depth` deep
/// (`[[[ … (text) … ]]] TJ`): nesting that only the content parser sees.
pub fn make_pdf_nested_content(depth: usize) -> Vec<u8> {
    let mut content = b"BT\n/F1 12 Tf\n72 720 Td\n".to_vec();
    content.extend(std::iter::repeat_n(b'[', depth));
    content.extend_from_slice(b"(deep)");
    content.extend(std::iter::repeat_n(b']', depth));
    content.extend_from_slice(b" TJ\nET\n");
    pdf_document("", "", &[content])
}

/// The content stream that shows `page`'s lines.
fn page_content(page: &str) -> Vec<u8> {
    let mut content = b"BT\n/F1 12 Tf\n14 TL\n72 720 Td\n".to_vec();
    for (n, line) in page.split('\n').enumerate() {
        if n > 0 {
            content.extend_from_slice(b"T*\n");
        }
        if !line.trim().is_empty() {
            content.extend_from_slice(&pdf_literal(line));
            content.extend_from_slice(b" Tj\n");
        }
    }
    content.extend_from_slice(b"ET\n");
    content
}

/// A PDF with one page per content stream; `catalog_extra` is spliced into the catalog.
fn pdf_document(title: &str, catalog_extra: &str, contents: &[Vec<u8>]) -> Vec<u8> {
    // Object numbers: 1 catalog, 2 page tree, 3 font, 4 info, then (page, content) pairs.
    let page_obj = |i: usize| 5 + 2 * i;
    let content_obj = |i: usize| 6 + 2 * i;
    let mut objects: Vec<Vec<u8>> = Vec::new();

    objects.push(format!("<< /Type /Catalog /Pages 2 0 R {catalog_extra} >>").into_bytes());
    let kids: Vec<String> = (0..contents.len())
        .map(|i| format!("{} 0 R", page_obj(i)))
        .collect();
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            contents.len()
        )
        .into_bytes(),
    );
    objects.push(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    );
    let mut info = b"<< /Producer (cairn testdata)".to_vec();
    if !title.is_empty() {
        info.extend_from_slice(b" /Title ");
        info.extend_from_slice(&pdf_text_string(title));
    }
    info.extend_from_slice(b" >>");
    objects.push(info);

    for (i, content) in contents.iter().enumerate() {
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                content_obj(i)
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend_from_slice(content);
        stream.extend_from_slice(b"endstream");
        objects.push(stream);
    }

    let mut out: Vec<u8> = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref_at = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n", objects.len() + 1).as_bytes());
    out.extend_from_slice(b"0000000000 65535 f \n");
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{xref_at}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A PDF literal string `( ... )` with `\`, `(` and `)` escaped; anything outside printable
/// ASCII becomes `?`.
fn pdf_literal(s: &str) -> Vec<u8> {
    let mut out = vec![b'('];
    for c in s.chars() {
        match c {
            '\\' | '(' | ')' => {
                out.push(b'\\');
                out.push(c as u8);
            }
            ' '..='~' => out.push(c as u8),
            _ => out.push(b'?'),
        }
    }
    out.push(b')');
    out
}

/// A PDF text string: a literal for ASCII, else UTF-16BE with a byte order mark, in hex.
fn pdf_text_string(s: &str) -> Vec<u8> {
    if s.chars().all(|c| (' '..='~').contains(&c)) {
        return pdf_literal(s);
    }
    let mut hex = String::from("<FEFF");
    for unit in s.encode_utf16() {
        hex.push_str(&format!("{unit:04X}"));
    }
    hex.push('>');
    hex.into_bytes()
}

/// A minimal valid .docx (a zip holding `[Content_Types].xml`, `_rels/.rels` and
/// `word/document.xml`) whose paragraphs are given as `(style, text)`; style is `None` for a
/// body paragraph or a style id such as `Some("Heading1")` or `Some("Title")`. In the text,
/// `'\n'` becomes a line break (`w:br`) and `'\t'` a tab (`w:tab`).
pub fn make_docx(paragraphs: &[(Option<&str>, &str)]) -> Vec<u8> {
    let mut body = String::new();
    for (style, text) in paragraphs {
        body.push_str("<w:p>");
        if let Some(style) = style {
            body.push_str(&format!(
                "<w:pPr><w:pStyle w:val=\"{}\"/></w:pPr>",
                xml_escape(style)
            ));
        }
        body.push_str("<w:r>");
        let mut run = String::new();
        let flush = |run: &mut String, body: &mut String| {
            if !run.is_empty() {
                body.push_str(&format!(
                    "<w:t xml:space=\"preserve\">{}</w:t>",
                    xml_escape(run)
                ));
                run.clear();
            }
        };
        for c in text.chars() {
            match c {
                '\n' => {
                    flush(&mut run, &mut body);
                    body.push_str("<w:br/>");
                }
                '\t' => {
                    flush(&mut run, &mut body);
                    body.push_str("<w:tab/>");
                }
                _ => run.push(c),
            }
        }
        flush(&mut run, &mut body);
        body.push_str("</w:r></w:p>");
    }
    make_docx_with_body(&body)
}

/// A minimal valid .docx whose `w:body` content is the given raw WordprocessingML (for tests
/// that need tables, text boxes or other structures `make_docx` cannot express).
pub fn make_docx_with_body(body_xml: &str) -> Vec<u8> {
    let document = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
         <w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\" \
         xmlns:mc=\"http://schemas.openxmlformats.org/markup-compatibility/2006\">\
         <w:body>{body_xml}<w:sectPr/></w:body></w:document>"
    );
    let content_types = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
        <Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
        <Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\
        <Default Extension=\"xml\" ContentType=\"application/xml\"/>\
        <Override PartName=\"/word/document.xml\" \
        ContentType=\"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml\"/>\
        </Types>";
    let rels = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
        <Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">\
        <Relationship Id=\"rId1\" \
        Type=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument\" \
        Target=\"word/document.xml\"/></Relationships>";
    make_zip(&[
        ("[Content_Types].xml", content_types.as_bytes()),
        ("_rels/.rels", rels.as_bytes()),
        ("word/document.xml", document.as_bytes()),
    ])
}

/// A deflate-compressed zip archive holding the given `(path, contents)` entries.
pub fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    for (name, data) in entries {
        zip.start_file(*name, options)
            .expect("writing to memory cannot fail");
        zip.write_all(data).expect("writing to memory cannot fail");
    }
    zip.finish()
        .expect("writing to memory cannot fail")
        .into_inner()
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// The BEIR SciFact folder beside the repository (`../shared/eval/scifact`), which CI has but a
/// plain clone may not.
pub fn scifact_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/eval/scifact")
}

/// The SciFact corpus (`corpus.jsonl.gz`, one JSON document per line), or `None` (saying the
/// test is skipped) when it is not there.
pub fn scifact_corpus() -> Option<String> {
    use std::io::Read;
    let path = scifact_dir().join("corpus.jsonl.gz");
    let Ok(file) = std::fs::File::open(&path) else {
        eprintln!("skipped: {} not found", path.display());
        return None;
    };
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("corpus.jsonl.gz reads");
    Some(text)
}

/// A deterministic embedder for fast tests of the core without the ONNX model or runtime:
/// each lowercased alphanumeric word is hashed into one of `dim` buckets (a bag of words,
/// L2-normalised), so texts that share words are near and others are not. Tokens are
/// whitespace-separated words.
#[derive(Debug, Clone, Copy)]
pub struct HashEmbedder {
    pub dim: usize,
}

impl Default for HashEmbedder {
    fn default() -> Self {
        Self { dim: 64 }
    }
}

impl crate::embed::Embedder for HashEmbedder {
    fn name(&self) -> &str {
        "test-hash-embedder"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_until(
        &self,
        texts: &[String],
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> crate::error::Result<Vec<Vec<f32>>> {
        if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(crate::error::Error::internal("embedding cancelled"));
        }
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }

    fn tokenizer(&self) -> &dyn crate::chunk::Tokenize {
        &crate::chunk::WhitespaceTokenizer
    }
}

impl HashEmbedder {
    fn vector(&self, text: &str) -> Vec<f32> {
        use std::hash::{Hash, Hasher};
        let mut v = vec![0.0f32; self.dim];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            // FNV-1a: stable across runs and platforms, unlike std's RandomState.
            let mut h = Fnv(0xcbf29ce484222325);
            word.to_lowercase().hash(&mut h);
            v[(h.finish() % self.dim as u64) as usize] += 1.0;
        }
        if v.iter().all(|x| *x == 0.0) {
            v[0] = 1.0;
        }
        crate::embed::normalize(&mut v);
        v
    }
}

struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
    }
}
