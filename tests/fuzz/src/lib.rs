//! The fuzz harness: Cairn's extractor and chunker sources compiled by path (the modules are
//! the very files `cairn` builds; nothing is copied), and the properties every input must keep.
//!
//! A finding is a panic that escapes extraction or chunking, a broken property below, a hang
//! past libFuzzer's `-timeout` or memory past its `-rss_limit_mb` (`scripts/fuzz` sets both to
//! the extraction sandbox's limits). Panics *inside* the PDF library are caught by
//! `extract/pdf.rs` and become a `Corrupt` error in production; the harness keeps that
//! behaviour (see [`init`]).

// `chunk.rs` names `crate::extract`; both live in `cairn_src`, re-exported at the root.
#[path = "../../../src"]
mod cairn_src {
    pub mod chunk;
    pub mod extract;
}

pub use cairn_src::{chunk, extract};

use chunk::{chunk_blocks, document_text, ChunkConfig, Tokenize, WhitespaceTokenizer};
use extract::{Block, ExtractError};

thread_local! {
    /// The message of the last panic on this thread (printed when one escapes).
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Called once per fuzzing process: a panic's message is kept instead of printed, because a
/// panic caught by the code under test is handled behaviour (libfuzzer-sys's own hook would
/// abort on it); one that escapes is printed and aborts the run ([`guarded`]).
pub fn init() {
    std::panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|m| *m.borrow_mut() = info.to_string());
    }));
}

/// Runs `f`; a panic that escapes it is a finding: its message is printed and the process
/// aborts, which libFuzzer reports with the input.
fn guarded(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        LAST_PANIC.with(|m| eprintln!("finding: {}", m.borrow()));
        std::process::abort();
    }
}

/// Extracts `data` as the file `name` and chunks every document, checking that each result is
/// either a document with clean, non-empty blocks or an error of the kinds extraction may
/// return for a bad file.
pub fn check_file(name: &str, data: &[u8]) {
    guarded(|| check_extraction(name, data));
}

fn check_extraction(name: &str, data: &[u8]) {
    for r in extract::extract(name, data) {
        match r {
            Ok(doc) => {
                assert!(!doc.blocks.is_empty(), "a document without blocks");
                for b in &doc.blocks {
                    assert!(!b.text.is_empty(), "an empty block");
                    assert_eq!(b.text.trim(), b.text, "an untrimmed block");
                }
                check_chunks(&doc.blocks, &ChunkConfig::default());
            }
            Err(
                ExtractError::Corrupt { .. }
                | ExtractError::TooLarge { .. }
                | ExtractError::BadRecord { .. }
                | ExtractError::Empty,
            ) => {}
            Err(e) => panic!("unexpected extraction error: {e}"),
        }
    }
}

/// Blocks and limits read from the input (a two-byte header of limits, then blocks separated
/// by NUL, each with a page and a section chosen by its first byte), chunked and checked.
pub fn check_chunking(data: &[u8]) {
    guarded(|| chunk_input(data));
}

fn chunk_input(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let cfg = ChunkConfig {
        max_tokens: head[0] as usize,
        overlap_tokens: head[1] as usize,
    };
    let text = String::from_utf8_lossy(rest);
    let blocks: Vec<Block> = text
        .split('\0')
        .map(|part| {
            let tag = part.bytes().next().unwrap_or(0);
            Block {
                text: part.trim().to_string(),
                page: (tag & 1 == 1).then_some(u32::from(tag >> 5)),
                section: match tag & 6 {
                    0 => vec![],
                    2 => vec!["A".into()],
                    4 => vec!["A".into(), "B".into()],
                    _ => vec!["C".into()],
                },
            }
        })
        .collect();
    check_chunks(&blocks, &cfg);
}

/// The chunker's contract (`src/chunk.rs`): ordinals count from 0; every chunk is non-empty,
/// has the token count the tokenizer measures, at most `max_tokens`, and is exactly the
/// document text at its char span, inside one block run (one page and section); chunks come in
/// document order; every token of every block lies inside one chunk (no text is lost); the same
/// input gives the same chunks.
fn check_chunks(blocks: &[Block], cfg: &ChunkConfig) {
    let tok = WhitespaceTokenizer;
    let chunks = chunk_blocks(blocks, cfg, &tok);
    let doc: Vec<char> = document_text(blocks).chars().collect();
    let max = cfg.max_tokens.max(1);
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.ordinal as usize, i, "ordinals");
        assert!(!c.text.trim().is_empty(), "an empty chunk");
        let measured = tok.token_spans(&c.text).len();
        assert_eq!(measured, c.token_count, "token count of chunk {i}");
        assert!(measured <= max, "chunk {i}: {measured} tokens over {max}");
        assert!(
            c.char_start < c.char_end && c.char_end <= doc.len(),
            "span out of the text"
        );
        let span: String = doc[c.char_start..c.char_end].iter().collect();
        assert_eq!(span, c.text, "chunk {i} differs from its span");
        if i > 0 {
            let prev = &chunks[i - 1];
            assert!(
                prev.char_start <= c.char_start && prev.char_end <= c.char_end,
                "order"
            );
        }
    }
    let mut at = 0;
    for b in blocks.iter().filter(|b| !b.text.is_empty()) {
        for c in chunks
            .iter()
            .filter(|c| c.char_start < at + b.text.chars().count())
        {
            if c.char_end > at {
                assert_eq!(
                    (c.page, &c.section),
                    (b.page, &b.section),
                    "chunk crosses a run"
                );
            }
        }
        for (s, e) in tok.token_spans(&b.text) {
            let (cs, ce) = (
                at + b.text[..s].chars().count(),
                at + b.text[..e].chars().count(),
            );
            assert!(covered(&chunks, cs, ce), "token {:?} lost", &b.text[s..e]);
        }
        at += b.text.chars().count() + 2;
    }
    assert_eq!(chunks, chunk_blocks(blocks, cfg, &tok), "not deterministic");
}

/// Whether one chunk holds the chars `[cs, ce)` (chunks are sorted by start and by end).
fn covered(chunks: &[chunk::Chunk], cs: usize, ce: usize) -> bool {
    let after = chunks.partition_point(|c| c.char_start <= cs);
    chunks[..after]
        .iter()
        .rev()
        .take_while(|c| c.char_end > cs)
        .any(|c| c.char_end >= ce)
}
