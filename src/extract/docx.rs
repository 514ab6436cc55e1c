//! DOCX: `word/document.xml` (inflated under a size and ratio cap) read with quick-xml into
//! paragraphs, headings by style, tables as rows.

use std::io::{Cursor, Read};

use super::*;

/// Largest `word/document.xml` we are willing to inflate (guards against zip bombs): a
/// 1,000-page report's is ~10 MB.
const DOCX_XML_LIMIT: u64 = 64 * 1024 * 1024;
/// Largest inflation ratio of `word/document.xml` past its first MiB: WordprocessingML
/// compresses ~10-30x; a zip bomb (2.6 MB to 1 GB) does ~400x.
const DOCX_MAX_RATIO: u64 = 200;

pub(super) fn extract_docx(bytes: &[u8]) -> Parsed {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| corrupt("docx", format!("not a zip archive ({e})")))?;
    let mut raw = Vec::new();
    {
        let file = archive
            .by_name("word/document.xml")
            .map_err(|_| corrupt("docx", "no word/document.xml in the archive"))?;
        let compressed = file.compressed_size().max(1);
        let cap = DOCX_XML_LIMIT.min((compressed * DOCX_MAX_RATIO).max(1024 * 1024));
        file.take(cap + 1)
            .read_to_end(&mut raw)
            .map_err(|e| corrupt("docx", format!("cannot inflate word/document.xml ({e})")))?;
        if raw.len() as u64 > cap {
            return Err(ExtractError::TooLarge {
                kind: "docx",
                reason: format!(
                    "word/document.xml inflates past {cap} bytes from {compressed} \
                     (at most {DOCX_MAX_RATIO}x and {DOCX_XML_LIMIT} bytes)"
                ),
            });
        }
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
