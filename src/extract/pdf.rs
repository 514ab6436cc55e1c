//! PDF: text per page (pdf-extract over lopdf) with page numbers; the Info `/Title`. A
//! nesting scan refuses what would overflow lopdf's recursive parser, and panics inside it
//! become errors; the extraction sandbox (`crate::sandbox`) bounds the rest.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;

/// Deepest nesting of arrays and dictionaries a PDF may have. lopdf parses them recursively, so
/// a 2.6 KB file nested 1,000 deep overflowed a thread's stack and aborted the process; real
/// files stay under ~10. Nesting inside compressed object streams is not visible to this scan:
/// the extraction sandbox (`crate::sandbox`) is what keeps a crash there to one file.
const PDF_MAX_NESTING: usize = 100;

pub(super) fn extract_pdf(bytes: &[u8]) -> Parsed {
    if let Some(depth) = pdf_nesting_over(bytes, PDF_MAX_NESTING) {
        return Err(corrupt(
            "pdf",
            format!("objects nested {depth} deep (the limit is {PDF_MAX_NESTING})"),
        ));
    }
    // pdf-extract (and lopdf below it) are known to panic on some malformed files.
    let (title, pages) = catch_unwind(AssertUnwindSafe(|| pdf_pages(bytes)))
        .unwrap_or_else(|panic| Err(corrupt("pdf", panic_reason(&*panic))))?;
    let blocks = pages
        .iter()
        .flat_map(|(page, text)| plain_blocks(&normalize_newlines(text), Some(*page)))
        .collect();
    Ok((title, blocks))
}

/// The nesting depth of `[` arrays and `<<` dictionaries in a PDF's bytes, once it passes
/// `limit` (`None` while it stays within). Literal strings, hex strings, comments and stream
/// data are skipped, as a PDF lexer would.
pub(super) fn pdf_nesting_over(bytes: &[u8], limit: usize) -> Option<usize> {
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'[' => depth += 1,
            b'<' if bytes.get(i + 1) == Some(&b'<') => {
                depth += 1;
                i += 1;
            }
            b']' => depth = depth.saturating_sub(1),
            b'>' if bytes.get(i + 1) == Some(&b'>') => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'<' => i += skip_until(&bytes[i..], b">"),
            b'(' => i += skip_literal_string(&bytes[i..]),
            b'%' => {
                i += bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(bytes.len() - i)
            }
            b's' if bytes[i..].starts_with(b"stream") => i += skip_until(&bytes[i..], b"endstream"),
            _ => {}
        }
        if depth > limit {
            return Some(depth);
        }
        i += 1;
    }
    None
}

/// Bytes from the start of `s` to the last byte of the first `end` (or to the end of `s`).
fn skip_until(s: &[u8], end: &[u8]) -> usize {
    s.windows(end.len())
        .position(|w| w == end)
        .map_or(s.len(), |at| at + end.len())
        .saturating_sub(1)
}

/// Bytes of a literal string `( … )` from its `(` to its closing `)`: balanced parentheses
/// and backslash escapes, as the PDF syntax has them.
fn skip_literal_string(s: &[u8]) -> usize {
    let (mut open, mut i) = (0usize, 0usize);
    while i < s.len() {
        match s[i] {
            b'\\' => i += 1,
            b'(' => open += 1,
            b')' => {
                open -= 1;
                if open == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    s.len().saturating_sub(1)
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
