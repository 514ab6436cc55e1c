//! Structure-aware, token-bounded chunking.
//!
//! Blocks (paragraphs with a page and a heading path, see [`crate::extract`]) are grouped into
//! runs of consecutive blocks sharing the same `(page, section)`; a chunk never leaves its run.
//! Inside a run whole blocks are packed greedily up to `max_tokens`; a block too big for one
//! chunk is split at sentence ends when possible, else at token boundaries. Consecutive chunks
//! of a run overlap by up to `overlap_tokens` tokens (whole sentences; whole tokens only where
//! the previous chunk had to cut a sentence in two).
//!
//! Every chunk's text is an exact substring of [`document_text`], located by char offsets.
//! Each block is tokenized once; a chunk's token count is only re-measured (by tokenizing the
//! chunk text) when the chunk is not exactly one whole block, which guards against tokenizers
//! whose counts are not additive (for instance ones that turn the `"\n\n"` between blocks into
//! tokens).

use crate::extract::Block;

/// Token boundaries of a text, as byte offsets into it (no special tokens). Implemented by the
/// embedder's tokenizer elsewhere.
pub trait Tokenize {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)>;
}

/// Every maximal run of non-whitespace characters is one token. For tests and as a fallback.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhitespaceTokenizer;

impl Tokenize for WhitespaceTokenizer {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            match (c.is_whitespace(), start) {
                (true, Some(s)) => {
                    spans.push((s, i));
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(s) = start {
            spans.push((s, text.len()));
        }
        spans
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ChunkConfig {
    /// Hard upper bound of tokens per chunk (values below 1 act as 1). Default 256.
    pub max_tokens: usize,
    /// Tokens shared by consecutive chunks of one run, at most (clamped below `max_tokens`).
    /// Default 32.
    pub overlap_tokens: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            max_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Chunk {
    /// 0..n in document order.
    pub ordinal: u32,
    pub text: String,
    /// Char (not byte) offsets into [`document_text`]: `[char_start, char_end)`.
    pub char_start: usize,
    pub char_end: usize,
    pub page: Option<u32>,
    pub section: Vec<String>,
    /// Tokens in `text` as measured by the tokenizer.
    pub token_count: usize,
}

/// The separator between blocks in [`document_text`].
const BLOCK_SEPARATOR: &str = "\n\n";

/// The document text: non-empty block texts joined by `"\n\n"`. Chunk char spans index into
/// it: `doc_text.chars().skip(start).take(end - start)` equals `chunk.text` for every chunk.
pub fn document_text(blocks: &[Block]) -> String {
    let mut out = String::new();
    let mut first = true;
    for block in blocks.iter().filter(|b| !b.text.is_empty()) {
        if !first {
            out.push_str(BLOCK_SEPARATOR);
        }
        first = false;
        out.push_str(&block.text);
    }
    out
}

/// Split the blocks into chunks of at most `cfg.max_tokens` tokens (see the module docs).
pub fn chunk_blocks(blocks: &[Block], cfg: &ChunkConfig, tok: &dyn Tokenize) -> Vec<Chunk> {
    let max = cfg.max_tokens.max(1);
    let limits = Limits {
        max,
        overlap: cfg.overlap_tokens.min(max - 1),
    };
    let doc = document_text(blocks);
    let mut out = Vec::new();
    let mut run: Option<Run> = None;
    let mut byte_pos = 0usize;
    let mut char_pos = 0usize;
    let mut first = true;

    for block in blocks.iter().filter(|b| !b.text.is_empty()) {
        if !first {
            byte_pos += BLOCK_SEPARATOR.len();
            char_pos += BLOCK_SEPARATOR.chars().count();
        }
        first = false;
        let (start_byte, start_char) = (byte_pos, char_pos);
        byte_pos += block.text.len();
        char_pos += block.text.chars().count();

        let same_run = run
            .as_ref()
            .is_some_and(|r| r.page == block.page && r.section == block.section.as_slice());
        if !same_run {
            if let Some(done) = run.take() {
                done.chunk(&doc, limits, tok, &mut out);
            }
            run = Some(Run::new(block.page, &block.section));
        }
        let spans = token_groups(&block.text, tok.token_spans(&block.text));
        if !spans.is_empty() {
            let run = run.as_mut().expect("run was just set");
            run.add_block(&block.text, start_byte, start_char, &spans);
        }
    }
    if let Some(done) = run.take() {
        done.chunk(&doc, limits, tok, &mut out);
    }
    out
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max: usize,
    overlap: usize,
}

/// What kind of break lies just before a group: where a chunk may preferably end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    /// Inside a sentence (or the first group of a run).
    None,
    /// A sentence end (`. `, `? `, `! `) or a line break.
    Sentence,
    /// The group starts a new block.
    Block,
}

/// A group of tokens with overlapping spans (usually one token). Chunks may only begin and end
/// between groups. Offsets are absolute in the document text.
#[derive(Debug, Clone, Copy)]
struct Group {
    byte_start: usize,
    byte_end: usize,
    char_start: usize,
    char_end: usize,
    /// Index of the block (within the run) the group belongs to.
    block: usize,
    brk: Break,
}

#[derive(Debug, Clone, Copy)]
struct RunBlock {
    /// Groups `first..end` of the run.
    first: usize,
    end: usize,
    /// Byte range of the whole block text in the document text.
    byte_start: usize,
    byte_end: usize,
}

/// Consecutive blocks with the same page and section.
struct Run<'b> {
    page: Option<u32>,
    section: &'b [String],
    groups: Vec<Group>,
    blocks: Vec<RunBlock>,
    /// `prefix[i]` = tokens in groups `0..i`.
    prefix: Vec<usize>,
}

/// Sanitize a tokenizer's spans (clamp to the text, widen to char boundaries, drop empty ones,
/// sort) and merge overlapping spans into groups: `(start, end, tokens)`.
fn token_groups(text: &str, mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize, usize)> {
    let len = text.len();
    for span in spans.iter_mut() {
        let mut end = span.1.min(len);
        let mut start = span.0.min(end);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        while !text.is_char_boundary(end) {
            end += 1;
        }
        *span = (start, end);
    }
    spans.retain(|(s, e)| s < e);
    spans.sort_unstable();
    let mut groups: Vec<(usize, usize, usize)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match groups.last_mut() {
            Some(last) if s < last.1 => {
                last.1 = last.1.max(e);
                last.2 += 1;
            }
            _ => groups.push((s, e, 1)),
        }
    }
    groups
}

/// Whether a group starting at byte `start` of `text` begins a new sentence or line: it starts
/// with a non-space character, and the text before it ends in whitespace that contains a line
/// break or follows a sentence end (`.`, `?`, `!`, possibly followed by a closing quote or
/// bracket). CJK full stops count without whitespace.
fn sentence_starts_at(text: &str, start: usize) -> bool {
    let after = &text[start..];
    if after.chars().next().is_none_or(char::is_whitespace) {
        return false;
    }
    let mut before = text[..start].chars().rev().peekable();
    let mut saw_space = false;
    while let Some(&c) = before.peek() {
        if !c.is_whitespace() {
            break;
        }
        if c == '\n' {
            return true;
        }
        saw_space = true;
        before.next();
    }
    let Some(last) = before.next() else {
        return false;
    };
    if matches!(last, '。' | '！' | '？') {
        return true;
    }
    if !saw_space {
        return false;
    }
    let is_end = |c: char| matches!(c, '.' | '?' | '!');
    is_end(last)
        || (matches!(last, '"' | '\'' | ')' | ']' | '”' | '’' | '»')
            && before.next().is_some_and(is_end))
}

impl<'b> Run<'b> {
    fn new(page: Option<u32>, section: &'b [String]) -> Self {
        Run {
            page,
            section,
            groups: Vec::new(),
            blocks: Vec::new(),
            prefix: vec![0],
        }
    }

    fn add_block(
        &mut self,
        text: &str,
        byte_offset: usize,
        char_offset: usize,
        spans: &[(usize, usize, usize)],
    ) {
        let block = self.blocks.len();
        let first = self.groups.len();
        // Byte -> char conversion with a cursor: spans are sorted and disjoint.
        let (mut cursor_byte, mut cursor_char) = (0usize, 0usize);
        let mut to_char = |byte: usize| {
            cursor_char += text[cursor_byte..byte].chars().count();
            cursor_byte = byte;
            cursor_char
        };
        for (i, &(start, end, count)) in spans.iter().enumerate() {
            let brk = if i == 0 {
                if first == 0 {
                    Break::None
                } else {
                    Break::Block
                }
            } else if sentence_starts_at(text, start) {
                Break::Sentence
            } else {
                Break::None
            };
            let char_start = to_char(start);
            let char_end = to_char(end);
            self.groups.push(Group {
                byte_start: byte_offset + start,
                byte_end: byte_offset + end,
                char_start: char_offset + char_start,
                char_end: char_offset + char_end,
                block,
                brk,
            });
            let total = self.prefix.last().copied().unwrap_or(0) + count;
            self.prefix.push(total);
        }
        self.blocks.push(RunBlock {
            first,
            end: self.groups.len(),
            byte_start: byte_offset,
            byte_end: byte_offset + text.len(),
        });
    }

    /// Tokens in groups `a..b` (as counted per block).
    fn tokens(&self, a: usize, b: usize) -> usize {
        self.prefix[b] - self.prefix[a]
    }

    /// The largest `e` with `tokens(s, e) <= max`, but at least `s + 1`.
    fn furthest_end(&self, s: usize, max: usize) -> usize {
        let limit = self.prefix[s] + max;
        // prefix is non-decreasing: count the ends in s+1..=n still within the limit.
        let fits = self.prefix[s + 1..].partition_point(|&p| p <= limit);
        (s + fits).max(s + 1)
    }

    /// Where to end a chunk that starts at `s`, must end after `lo`, and can reach `e`
    /// (`lo < e < n`): at a block end if whole blocks fit, else at a sentence end, else at `e`.
    fn choose_end(&self, s: usize, lo: usize, e: usize, lim: Limits) -> usize {
        if self.groups[e].brk == Break::Block {
            return e;
        }
        let sentence_end_in = |from: usize| {
            (from + 1..=e)
                .rev()
                .find(|&g| self.groups[g].brk != Break::None)
        };
        let x = &self.blocks[self.groups[e].block]; // the block that does not fit
        if x.first > lo {
            // End before block X, unless X is too big for any chunk and this chunk is still
            // less than half full: then fill it with X's first sentences.
            let x_fits_alone = self.tokens(x.first, x.end) <= lim.max;
            if x_fits_alone || self.tokens(s, x.first) >= lim.max / 2 {
                return x.first;
            }
            sentence_end_in(x.first).unwrap_or(x.first)
        } else {
            sentence_end_in(lo).unwrap_or(e)
        }
    }

    /// Where the chunk after `s..end` starts: back from `end` by at most `overlap` tokens, at
    /// a sentence start; or, when `end` cuts a sentence, by whole tokens. The result is after
    /// `s`, and never so early that a block which fits in one chunk would have to be split.
    fn next_start(&self, s: usize, end: usize, lim: Limits) -> usize {
        if lim.overlap == 0 || end <= s + 1 {
            return end;
        }
        let next = &self.blocks[self.groups[end].block];
        let must_reach = if self.tokens(next.first, next.end) <= lim.max {
            next.end
        } else {
            end
        };
        let ok =
            |t: usize| self.tokens(t, end) <= lim.overlap && self.tokens(t, must_reach) <= lim.max;
        let mut best_sentence = None;
        let mut best_token = None;
        let mut t = end;
        while t > s + 1 && ok(t - 1) {
            t -= 1;
            best_token = Some(t);
            if self.groups[t].brk != Break::None {
                best_sentence = Some(t);
            }
        }
        match (best_sentence, best_token) {
            (Some(t), _) => t,
            (None, Some(t)) if self.groups[end].brk == Break::None => t,
            _ => end,
        }
    }

    fn chunk(self, doc: &str, lim: Limits, tok: &dyn Tokenize, out: &mut Vec<Chunk>) {
        let n = self.groups.len();
        let mut s = 0usize;
        let mut prev_end = 0usize;
        while prev_end < n {
            let lo = prev_end;
            let mut e = self.furthest_end(s, lim.max);
            if e <= lo {
                // The overlap leaves no room for new text: drop it.
                s = lo;
                e = self.furthest_end(s, lim.max);
            }
            let mut end = if e >= n {
                n
            } else {
                self.choose_end(s, lo, e, lim)
            };

            // Measure the chunk text unless it is exactly one whole, already measured block.
            let token_count = loop {
                let (first, last) = (&self.groups[s], &self.groups[end - 1]);
                let estimate = self.tokens(s, end);
                let block = &self.blocks[first.block];
                if first.block == last.block
                    && first.byte_start == block.byte_start
                    && last.byte_end == block.byte_end
                {
                    break estimate;
                }
                let measured = tok.token_spans(&doc[first.byte_start..last.byte_end]).len();
                if measured <= lim.max || end - s == 1 {
                    break measured;
                }
                if s < lo {
                    s = lo; // give up the overlap first
                    continue;
                }
                // Drop groups from the end until the estimate sheds the excess.
                let excess = measured - lim.max;
                let mut cut = end - 1;
                while cut > s + 1 && self.tokens(cut, end) < excess {
                    cut -= 1;
                }
                // Prefer ending at a block end, then at a sentence end.
                let latest =
                    |kind: Break| (lo + 1..=cut).rev().find(|&g| self.groups[g].brk == kind);
                end = latest(Break::Block)
                    .or_else(|| latest(Break::Sentence))
                    .unwrap_or(cut)
                    .max(s + 1);
            };

            let (first, last) = (&self.groups[s], &self.groups[end - 1]);
            let text = &doc[first.byte_start..last.byte_end];
            if !text.trim().is_empty() {
                out.push(Chunk {
                    ordinal: out.len() as u32,
                    text: text.to_string(),
                    char_start: first.char_start,
                    char_end: last.char_end,
                    page: self.page,
                    section: self.section.to_vec(),
                    token_count,
                });
            }
            prev_end = end;
            if end < n {
                s = self.next_start(s, end, lim);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(text: &str, page: Option<u32>, section: &[&str]) -> Block {
        Block {
            text: text.to_string(),
            page,
            section: section.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cfg(max_tokens: usize, overlap_tokens: usize) -> ChunkConfig {
        ChunkConfig {
            max_tokens,
            overlap_tokens,
        }
    }

    /// Every char, whitespace included, is a token: token counts are not additive over the
    /// `"\n\n"` block separators, which exercises re-measuring.
    struct CharTokenizer;
    impl Tokenize for CharTokenizer {
        fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
            text.char_indices()
                .map(|(i, c)| (i, i + c.len_utf8()))
                .collect()
        }
    }

    fn char_slice(s: &str, start: usize, end: usize) -> String {
        s.chars().skip(start).take(end - start).collect()
    }

    /// Char ranges of the non-empty blocks in the document text, with their block index.
    fn block_char_ranges(blocks: &[Block]) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        let mut pos = 0;
        for (i, b) in blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.text.is_empty())
        {
            if !out.is_empty() {
                pos += 2;
            }
            let len = b.text.chars().count();
            out.push((pos, pos + len, i));
            pos += len;
        }
        out
    }

    /// All the invariants of `chunk_blocks`. Every token (of `tok`) with non-whitespace text
    /// must lie inside some chunk.
    fn check(blocks: &[Block], config: &ChunkConfig, tok: &dyn Tokenize, chunks: &[Chunk]) {
        let doc = document_text(blocks);
        let max = config.max_tokens.max(1);
        let ranges = block_char_ranges(blocks);
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.ordinal as usize, i, "ordinals are sequential");
            assert!(!c.text.trim().is_empty(), "no empty chunks");
            let measured = tok.token_spans(&c.text).len();
            assert!(
                measured <= max,
                "chunk {i} has {measured} > {max} tokens: {c:?}"
            );
            assert_eq!(measured, c.token_count, "token_count of chunk {i}");
            assert!(c.char_start < c.char_end);
            assert_eq!(
                char_slice(&doc, c.char_start, c.char_end),
                c.text,
                "span {i}"
            );
            // Every block the chunk touches has the chunk's page and section.
            for &(bs, be, bi) in &ranges {
                if bs < c.char_end && c.char_start < be {
                    assert_eq!(blocks[bi].page, c.page, "page of chunk {i}");
                    assert_eq!(blocks[bi].section, c.section, "section of chunk {i}");
                }
            }
        }
        // Every non-whitespace token of every block lies inside some chunk.
        for &(bs, _, bi) in &ranges {
            let text = &blocks[bi].text;
            for (s, e) in tok.token_spans(text) {
                if text[s..e].trim().is_empty() {
                    continue;
                }
                let cs = bs + text[..s].chars().count();
                let ce = bs + text[..e].chars().count();
                assert!(
                    chunks
                        .iter()
                        .any(|c| c.char_start <= cs && ce <= c.char_end),
                    "token {:?} of block {bi} is not covered",
                    &text[s..e]
                );
            }
        }
    }

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn default_config() {
        let c = ChunkConfig::default();
        assert_eq!((c.max_tokens, c.overlap_tokens), (256, 32));
    }

    #[test]
    fn document_text_joins_non_empty_blocks() {
        let blocks = [
            block("a b", None, &[]),
            block("", None, &[]),
            block("c", None, &[]),
        ];
        assert_eq!(document_text(&blocks), "a b\n\nc");
        assert_eq!(document_text(&[]), "");
    }

    #[test]
    fn empty_and_blank_input_gives_no_chunks() {
        let tok = WhitespaceTokenizer;
        assert!(chunk_blocks(&[], &ChunkConfig::default(), &tok).is_empty());
        let blocks = [block("  \n ", None, &[]), block("", Some(1), &[])];
        assert!(chunk_blocks(&blocks, &ChunkConfig::default(), &tok).is_empty());
    }

    #[test]
    fn packs_whole_blocks_greedily() {
        let blocks = [
            block("one two three four", None, &["S"]),
            block("five six seven eight", None, &["S"]),
            block("nine ten eleven twelve", None, &["S"]),
        ];
        let config = cfg(10, 0);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(
            texts(&chunks),
            [
                "one two three four\n\nfive six seven eight",
                "nine ten eleven twelve"
            ]
        );
        assert_eq!(chunks[0].token_count, 8);
        assert_eq!(chunks[1].section, ["S"]);
    }

    #[test]
    fn never_crosses_sections_or_pages() {
        let blocks = [
            block("alpha beta", Some(1), &["A"]),
            block("gamma", Some(1), &["A", "B"]),
            block("delta", Some(2), &["A", "B"]),
            block("epsilon", Some(2), &["A", "B"]),
        ];
        let config = cfg(100, 10);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(texts(&chunks), ["alpha beta", "gamma", "delta\n\nepsilon"]);
        assert_eq!(chunks[2].page, Some(2));
        assert_eq!(chunks[1].section, ["A", "B"]);
    }

    #[test]
    fn long_block_splits_at_sentence_ends() {
        let sentence = |i: usize| format!("Sentence number {i} has words.");
        let text = (0..10).map(sentence).collect::<Vec<_>>().join(" ");
        let blocks = [block(&text, None, &[])];
        let config = cfg(12, 0);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(chunks.len(), 5);
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(
                c.text,
                format!("{} {}", sentence(2 * i), sentence(2 * i + 1))
            );
            assert_eq!(c.token_count, 10);
        }
    }

    #[test]
    fn splits_at_newlines_and_question_marks() {
        let text = "why is this so? because it is\nanother line here! and more words follow";
        let blocks = [block(text, None, &[])];
        let config = cfg(6, 0);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(
            texts(&chunks),
            [
                "why is this so?",
                "because it is\nanother line here!",
                "and more words follow"
            ]
        );
    }

    #[test]
    fn long_block_without_sentences_splits_at_tokens() {
        let words: Vec<String> = (0..25).map(|i| format!("w{i}")).collect();
        let blocks = [block(&words.join(" "), None, &[])];
        let config = cfg(10, 0);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(
            texts(&chunks),
            [
                words[0..10].join(" "),
                words[10..20].join(" "),
                words[20..25].join(" ")
            ]
        );
    }

    #[test]
    fn overlap_carries_whole_sentences() {
        let text = "a b c. d e f. g h i. j k l. m n o. p q r.";
        let blocks = [block(text, None, &[])];
        let config = cfg(9, 4);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(
            texts(&chunks),
            [
                "a b c. d e f. g h i.",
                "g h i. j k l. m n o.",
                "m n o. p q r."
            ]
        );
        for pair in chunks.windows(2) {
            assert!(pair[1].char_start < pair[0].char_end, "chunks overlap");
        }
    }

    #[test]
    fn overlap_slides_by_tokens_inside_a_long_sentence() {
        let words: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
        let blocks = [block(&words.join(" "), None, &[])];
        let config = cfg(10, 3);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(
            texts(&chunks),
            [
                words[0..10].join(" "),
                words[7..17].join(" "),
                words[14..20].join(" ")
            ]
        );
    }

    #[test]
    fn overlap_across_blocks_and_never_splits_a_block_that_fits() {
        let blocks = [
            block("One two three. Four five six.", None, &[]),
            block("Seven eight nine ten.", None, &[]),
            block("a b c d e f g h i j", None, &[]),
        ];
        let config = cfg(10, 4);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(
            texts(&chunks),
            [
                "One two three. Four five six.\n\nSeven eight nine ten.",
                "a b c d e f g h i j"
            ]
        );
        // Overlap is still used when the next block leaves room for it.
        let blocks = [
            block("One two three. Four five six.", None, &[]),
            block("Seven eight nine ten eleven.", None, &[]),
        ];
        let config = cfg(8, 4);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(
            texts(&chunks),
            [
                "One two three. Four five six.",
                "Four five six.\n\nSeven eight nine ten eleven."
            ]
        );
    }

    #[test]
    fn oversized_block_fills_a_short_chunk_with_its_sentences() {
        let long = (0..6)
            .map(|i| format!("s{i} x x x."))
            .collect::<Vec<_>>()
            .join(" ");
        let blocks = [block("tiny", None, &[]), block(&long, None, &[])];
        let config = cfg(10, 0);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(
            texts(&chunks),
            [
                "tiny\n\ns0 x x x. s1 x x x.",
                "s2 x x x. s3 x x x.",
                "s4 x x x. s5 x x x."
            ]
        );
    }

    #[test]
    fn char_offsets_count_chars_not_bytes() {
        let blocks = [
            block("héllo wörld", None, &[]),
            block("日本語 テキスト です", None, &["章"]),
        ];
        let config = cfg(2, 0);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(texts(&chunks), ["héllo wörld", "日本語 テキスト", "です"]);
        assert_eq!((chunks[1].char_start, chunks[1].char_end), (13, 21));
    }

    #[test]
    fn remeasures_when_counts_are_not_additive() {
        // Estimated 4 + 4 = 8 tokens, but "aaaa\n\nbbbb" is 10 chars.
        let blocks = [block("aaaa", None, &[]), block("bbbb", None, &[])];
        let config = cfg(9, 0);
        let chunks = chunk_blocks(&blocks, &config, &CharTokenizer);
        check(&blocks, &config, &CharTokenizer, &chunks);
        assert_eq!(texts(&chunks), ["aaaa", "bbbb"]);
        let config = cfg(10, 0);
        let chunks = chunk_blocks(&blocks, &config, &CharTokenizer);
        assert_eq!(texts(&chunks), ["aaaa\n\nbbbb"]);
        assert_eq!(chunks[0].token_count, 10);
    }

    #[test]
    fn odd_tokenizer_spans_are_tolerated() {
        // Overlapping, unsorted, out-of-range and mid-char spans.
        struct Odd;
        impl Tokenize for Odd {
            fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
                let mut spans = WhitespaceTokenizer.token_spans(text);
                spans.reverse();
                spans.push((0, 1));
                spans.push((text.len(), text.len() + 5));
                spans
            }
        }
        let blocks = [block("é b c d e f", None, &[])];
        let chunks = chunk_blocks(&blocks, &cfg(3, 1), &Odd);
        assert!(!chunks.is_empty());
        let doc = document_text(&blocks);
        for c in &chunks {
            assert_eq!(char_slice(&doc, c.char_start, c.char_end), c.text);
        }
    }

    #[test]
    fn zero_max_tokens_acts_as_one() {
        let blocks = [block("a b c", None, &[])];
        let config = cfg(0, 5);
        let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
        check(&blocks, &config, &WhitespaceTokenizer, &chunks);
        assert_eq!(texts(&chunks), ["a", "b", "c"]);
    }

    #[test]
    fn abstract_sized_documents_chunk_per_section() {
        // 5000 documents of ~250 tokens (an abstract of ~12 sentences in 1-2 paragraphs).
        let docs: Vec<Vec<Block>> = (0..5000)
            .map(|d| {
                let sentence = |s: usize| {
                    let words: Vec<String> = (0..20).map(|w| format!("w{}", d + s + w)).collect();
                    format!("{}.", words.join(" "))
                };
                let para =
                    |r: std::ops::Range<usize>| r.map(sentence).collect::<Vec<_>>().join(" ");
                vec![
                    block(&para(0..6), None, &[]),
                    block(&para(6..12), None, &[]),
                    block("Conclusion words here.", None, &["Results"]),
                ]
            })
            .collect();
        let config = ChunkConfig::default();
        // Two ~120-token paragraphs fit one 256-token chunk; the "Results" section is its own.
        // (Speed is measured by `cairn bench ingest`, not here.)
        let total: usize = docs
            .iter()
            .map(|blocks| chunk_blocks(blocks, &config, &WhitespaceTokenizer).len())
            .sum();
        assert_eq!(total, 10_000);
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "([a-zé日]{1,6}[ .!?\n]{1,3}){0,40}",
            "[ab é.!?\n]{0,80}",
            "([a-z]{1,4} ){0,50}",
        ]
    }

    fn arb_blocks() -> impl Strategy<Value = Vec<Block>> {
        let sections = [vec![], vec!["A"], vec!["A", "B"], vec!["C"]];
        let pages = [None, Some(1), Some(2)];
        prop::collection::vec((arb_text(), 0..3usize, 0..4usize), 0..10).prop_map(move |items| {
            items
                .into_iter()
                .map(|(text, p, s)| block(&text, pages[p], &sections[s]))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_whitespace_tokenizer(blocks in arb_blocks(), max in 0usize..40, overlap in 0usize..50) {
            let config = cfg(max, overlap);
            let chunks = chunk_blocks(&blocks, &config, &WhitespaceTokenizer);
            check(&blocks, &config, &WhitespaceTokenizer, &chunks);
            // Deterministic.
            prop_assert_eq!(&chunks, &chunk_blocks(&blocks, &config, &WhitespaceTokenizer));
        }

        #[test]
        fn prop_char_tokenizer(blocks in arb_blocks(), max in 1usize..60, overlap in 0usize..50) {
            let config = cfg(max, overlap);
            let chunks = chunk_blocks(&blocks, &config, &CharTokenizer);
            check(&blocks, &config, &CharTokenizer, &chunks);
        }
    }
}
