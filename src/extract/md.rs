//! Markdown: CommonMark events (pulldown-cmark) to blocks under their heading path; the title
//! is the first `# ` heading or a front-matter `title:`.

use super::html::HtmlWalker;
use super::*;

pub(super) fn extract_md(bytes: &[u8]) -> Parsed {
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
