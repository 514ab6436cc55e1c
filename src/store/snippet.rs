//! Query-dependent snippets: the best window of a result's text with the query's terms marked.
//!
//! Why not tantivy's `SnippetGenerator`: it runs the field's whole analyzer over every result
//! (a `Token` per word through five boxed filters, then lowercases each word once more to look
//! it up), which was about a quarter of a keyword search's CPU (`perf`, docs/benchmarks.md).
//! [`Snippets::html`] makes one pass over the bytes instead and only builds a word's
//! lowercased, stemmed form when its head says it could be a query term ([`QueryStemmer`]).
//! The output is tantivy's, byte for byte: the same tokens (runs of alphanumeric characters,
//! under 40 bytes, stop words dropped), the same fragment cut (tantivy's `search_fragments`),
//! the same choice of fragment (highest score, the earliest on a tie) and the same HTML
//! escaping; a property test compares the two.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::LazyLock;

use rustc_hash::FxHashSet;

use super::stem::{with_stem, QueryStemmer};

/// The English stop words (Lucene's list, as tantivy's `Language::English`): one list for the
/// index analyzer and for snippets.
pub const STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// Tokens of this many bytes or more are dropped (the analyzer's `RemoveLongFilter`).
pub const MAX_TOKEN_BYTES: usize = 40;

static STOP_SET: LazyLock<FxHashSet<&'static str>> =
    LazyLock::new(|| STOP_WORDS.iter().copied().collect());
/// No stop word is longer: longer ASCII words skip the lookup.
const STOP_MAX_BYTES: usize = 5;

/// The snippet maker of one query: its terms (analyzed as the index analyzes) with tantivy's
/// snippet score, `1 / (1 + doc freq)`.
pub struct Snippets {
    terms: BTreeMap<String, f32>,
    stemmer: QueryStemmer,
    max_chars: usize,
}

/// A window of the text (tantivy's `FragmentCandidate`).
struct Fragment {
    score: f32,
    start: usize,
    stop: usize,
    marks: Vec<Range<usize>>,
}

impl Fragment {
    fn new(start: usize) -> Self {
        Self {
            score: 0.0,
            start,
            stop: start,
            marks: Vec::new(),
        }
    }
}

impl Snippets {
    /// `terms`: analyzed query term → score; windows of at most `max_chars` bytes.
    pub fn new(terms: BTreeMap<String, f32>, max_chars: usize) -> Self {
        let stemmer = QueryStemmer::new(terms.keys().map(String::as_str));
        Self {
            terms,
            stemmer,
            max_chars,
        }
    }

    /// The best window of `text` as HTML (escaped, matches in `<mark>`), or `None` when no
    /// term occurs in it.
    pub fn html(&self, text: &str) -> Option<String> {
        let mut best: Option<Fragment> = None;
        let mut keep = |f: Fragment| {
            // Highest score; on a tie the earlier window (tantivy's order).
            if f.score > 0.0 && best.as_ref().is_none_or(|b| f.score > b.score) {
                best = Some(f);
            }
        };
        let mut frag = Fragment::new(0);
        let mut lower = String::new();
        for (from, to, ascii) in Words::new(text) {
            let Some(score) = self.token(&text[from..to], ascii, &mut lower) else {
                continue;
            };
            if to - frag.start > self.max_chars {
                keep(std::mem::replace(&mut frag, Fragment::new(from)));
            }
            frag.stop = to;
            if score > 0.0 {
                frag.score += score;
                frag.marks.push(from..to);
            }
        }
        keep(frag);
        let best = best?;
        let mut html = String::with_capacity(best.stop - best.start + 16 * best.marks.len());
        let mut at = best.start;
        for m in &best.marks {
            escape_into(&mut html, &text[at..m.start]);
            html.push_str("<mark>");
            escape_into(&mut html, &text[m.clone()]);
            html.push_str("</mark>");
            at = m.end;
        }
        escape_into(&mut html, &text[at..best.stop]);
        Some(html)
    }

    /// What the analyzer and the term lookup make of one word: `None` when the analyzer drops
    /// it (too long, a stop word), else its term's score, 0 for no term.
    fn token(&self, word: &str, ascii: bool, lower: &mut String) -> Option<f32> {
        if word.len() >= MAX_TOKEN_BYTES {
            return None;
        }
        if ascii {
            let b = word.as_bytes();
            if b.len() <= STOP_MAX_BYTES {
                let mut buf = [0u8; STOP_MAX_BYTES];
                let buf = &mut buf[..b.len()];
                buf.copy_from_slice(b);
                buf.make_ascii_lowercase();
                if std::str::from_utf8(buf).is_ok_and(|w| STOP_SET.contains(w)) {
                    return None;
                }
            }
            let first = b[0].to_ascii_lowercase() as char;
            let second = b.get(1).map(|c| c.to_ascii_lowercase() as char);
            if !self.stemmer.could_match_head(first, second) {
                // Its stem cannot be a term (and lowercased ASCII is its own lookup key).
                return Some(0.0);
            }
            lower.clear();
            lower.push_str(word);
            lower.make_ascii_lowercase();
            // Stems of lowercase ASCII are lowercase ASCII: their own lookup key.
            return Some(with_stem(lower, |s| self.terms.get(s).copied()).unwrap_or(0.0));
        }
        // tantivy's LowerCaser: char by char (no final-sigma rule).
        lower.clear();
        lower.extend(word.chars().flat_map(char::to_lowercase));
        if STOP_SET.contains(lower.as_str()) {
            return None;
        }
        let lookup = |token: &str| {
            // tantivy looks terms up by the token's `to_lowercase()`.
            let key = token.to_lowercase();
            self.terms.get(&key).copied().unwrap_or(0.0)
        };
        if self.stemmer.could_match(lower) {
            Some(with_stem(lower, lookup))
        } else {
            Some(lookup(lower))
        }
    }
}

/// The words of a text as tantivy's `SimpleTokenizer` cuts them (maximal runs of alphanumeric
/// characters): `(from, to, all ASCII)` byte ranges.
struct Words<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Words<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    /// The non-ASCII character at `i` (a char boundary), if it is alphanumeric, and its length.
    fn wide_alnum_at(&self, i: usize) -> (bool, usize) {
        let c = self.text[i..].chars().next().unwrap_or(' ');
        (c.is_alphanumeric(), c.len_utf8())
    }
}

impl Iterator for Words<'_> {
    type Item = (usize, usize, bool);

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.text.as_bytes();
        let n = bytes.len();
        let mut i = self.at;
        // Skip to the next alphanumeric character.
        loop {
            while i < n && bytes[i].is_ascii() && !bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if i >= n {
                self.at = n;
                return None;
            }
            if bytes[i].is_ascii() {
                break;
            }
            let (alnum, len) = self.wide_alnum_at(i);
            if alnum {
                break;
            }
            i += len;
        }
        let from = i;
        let mut ascii = true;
        loop {
            while i < n && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if i < n && !bytes[i].is_ascii() {
                let (alnum, len) = self.wide_alnum_at(i);
                if alnum {
                    ascii = false;
                    i += len;
                    continue;
                }
            }
            break;
        }
        self.at = i;
        Some((from, i, ascii))
    }
}

/// HTML-escapes as tantivy's snippets do (`htmlescape::encode_minimal`).
fn escape_into(out: &mut String, s: &str) {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'"' => "&quot;",
            b'&' => "&amp;",
            b'\'' => "&#x27;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        out.push_str(entity);
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::tokenizer::{Language, StopWordFilter, TextAnalyzer, WhitespaceTokenizer};

    #[test]
    fn the_stop_words_are_tantivys_english_list() {
        let mut a = TextAnalyzer::builder(WhitespaceTokenizer::default())
            .filter(StopWordFilter::new(Language::English).unwrap())
            .build();
        let mut s = a.token_stream("a an and are as at be but by for if in into is it no not of on or such that the their then there these they this to was will with also we");
        let mut left = Vec::new();
        while let Some(t) = s.next() {
            left.push(t.text.clone());
        }
        assert_eq!(left, ["also", "we"]);
        assert!(STOP_WORDS.iter().all(|w| w.len() <= STOP_MAX_BYTES));
        assert_eq!(STOP_SET.len(), STOP_WORDS.len());
    }

    #[test]
    fn words_are_runs_of_alphanumerics_with_byte_offsets() {
        let w: Vec<_> = Words::new("Über-café, x1 ΣΟΦΟΣ!").collect();
        assert_eq!(
            w,
            [
                (0, 5, false),
                (6, 11, false),
                (13, 15, true),
                (16, 26, false)
            ]
        );
        assert_eq!(Words::new(" ,; ").count(), 0);
    }

    #[test]
    fn escapes_the_five_minimal_entities() {
        let mut s = String::new();
        escape_into(&mut s, r#"a<b & "c" 'd'>é"#);
        assert_eq!(s, "a&lt;b &amp; &quot;c&quot; &#x27;d&#x27;&gt;é");
    }
}
