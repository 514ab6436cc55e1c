//! HTML: the DOM (scraper) walked iteratively (deep nesting cannot overflow the stack) into
//! blocks under their heading path; scripts, styles and navigation are skipped.

use super::*;

pub(super) fn extract_html(bytes: &[u8]) -> Parsed {
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
pub(super) struct HtmlWalker<'s> {
    sections: &'s mut Sections,
    pub(super) blocks: Vec<Block>,
    buf: String,
    heading: Option<(u8, String)>,
    pub(super) first_h1: Option<String>,
    pre_depth: usize,
    cell_depth: usize,
}

impl<'s> HtmlWalker<'s> {
    pub(super) fn new(sections: &'s mut Sections) -> Self {
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

    pub(super) fn walk(&mut self, html: &scraper::Html) {
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
