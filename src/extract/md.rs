//! Markdown: CommonMark events (pulldown-cmark) to blocks under their heading path; the title
//! is the first `# ` heading or a front-matter `title:`.

use super::html::HtmlWalker;
use super::*;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

pub(super) fn extract_md(bytes: &[u8]) -> Parsed {
    let text = decode_text(bytes, "md")?;
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let mut w = MdWalker::default();
    for event in Parser::new_ext(&text, options) {
        w.event(event);
    }
    w.flush();
    let title = w.first_h1.or_else(|| front_matter_title(&w.metadata));
    Ok((title, w.blocks))
}

/// The walk's state: the blocks so far under the current heading path.
#[derive(Default)]
struct MdWalker {
    sections: Sections,
    blocks: Vec<Block>,
    buf: String,
    /// Some(level, text) while inside a heading.
    heading: Option<(u8, String)>,
    first_h1: Option<String>,
    in_metadata: bool,
    metadata: String,
    in_html_block: bool,
    html: String,
}

impl MdWalker {
    /// Where text goes: the heading being read, else the current block.
    fn sink(&mut self) -> &mut String {
        match self.heading.as_mut() {
            Some((_, t)) => t,
            None => &mut self.buf,
        }
    }

    fn flush(&mut self) {
        if !self.buf.trim().is_empty() {
            self.blocks.push(Block {
                text: std::mem::take(&mut self.buf),
                page: None,
                section: self.sections.path(),
            });
        }
        self.buf.clear();
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) if self.in_metadata => self.metadata.push_str(&t),
            Event::Text(t) => self.sink().push_str(&t),
            Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                self.sink().push_str(&t)
            }
            Event::Html(t) if self.in_html_block => self.html.push_str(&t),
            Event::Html(_) => {}
            Event::SoftBreak => self.sink().push(' '),
            Event::HardBreak => self.sink().push('\n'),
            Event::Rule => self.flush(),
            Event::InlineHtml(_) | Event::FootnoteReference(_) | Event::TaskListMarker(_) => {}
        }
    }

    fn start(&mut self, tag: Tag) {
        match tag {
            Tag::Heading { level, .. } => {
                self.flush();
                self.heading = Some((level as u8, String::new()));
            }
            Tag::MetadataBlock(_) => self.in_metadata = true,
            Tag::HtmlBlock => {
                self.flush();
                self.in_html_block = true;
                self.html.clear();
            }
            Tag::TableCell => {
                let sink = self.sink();
                if !sink.trim().is_empty() {
                    sink.push_str(" | ");
                }
            }
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
                if self.heading.is_none() =>
            {
                self.flush()
            }
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_) => self.end_heading(),
            TagEnd::MetadataBlock(_) => self.in_metadata = false,
            TagEnd::HtmlBlock => self.end_html_block(),
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
                if self.heading.is_none() =>
            {
                self.flush()
            }
            _ => {}
        }
    }

    fn end_heading(&mut self) {
        if let Some((level, raw)) = self.heading.take() {
            let text = collapse_ws(&raw);
            if !text.is_empty() {
                if level == 1 && self.first_h1.is_none() {
                    self.first_h1 = Some(text.clone());
                }
                self.sections.push(level, text);
            }
        }
    }

    /// An HTML block is read like an HTML file, under the current heading path.
    fn end_html_block(&mut self) {
        self.in_html_block = false;
        let fragment = scraper::Html::parse_fragment(&self.html);
        let (h1, mut blocks) = {
            let mut walker = HtmlWalker::new(&mut self.sections);
            walker.walk(&fragment);
            (walker.first_h1.take(), std::mem::take(&mut walker.blocks))
        };
        if self.first_h1.is_none() {
            self.first_h1 = h1;
        }
        self.blocks.append(&mut blocks);
    }
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
