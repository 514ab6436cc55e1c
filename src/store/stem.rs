//! English Snowball stemming with a process-wide memo, as a tantivy token filter.
//!
//! Why: every search cuts snippets from its result chunks, and tantivy's snippet generator runs
//! the field's whole analyzer over each chunk's text — a few thousand words per request. Stemming
//! them was about a sixth of a keyword search's CPU (`perf`, docs/benchmarks.md), yet a corpus
//! has few distinct words, so each is stemmed once and looked up afterwards. The output is the
//! stemmer's own (same index terms, same query terms); only the work is saved.
//!
//! The memo is bounded ([`MEMO_MAX_WORDS`], spread over shards): once a shard is full, new
//! words are stemmed without being remembered, so odd tokens (ids, numbers) cannot grow it
//! without limit.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::sync::{LazyLock, RwLock};

use rustc_hash::{FxBuildHasher, FxHashMap};
use tantivy::tokenizer::{Token, TokenFilter, TokenStream, Tokenizer};

/// Words remembered at most (over all shards); about 6 MB when full.
pub const MEMO_MAX_WORDS: usize = 1 << 17;
const SHARDS: usize = 16;

/// Word → its stem, or `None` when the stem is the word itself.
type Shard = RwLock<FxHashMap<Box<str>, Option<Box<str>>>>;

struct Memo {
    stemmer: frostem::Stemmer,
    shards: Vec<Shard>,
}

static MEMO: LazyLock<Memo> = LazyLock::new(|| Memo {
    stemmer: frostem::Stemmer::new(frostem::Algorithm::English),
    shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
});

/// The English Snowball stem of a lowercased word (memoized).
pub fn stem(word: &str) -> Cow<'_, str> {
    let memo = &*MEMO;
    let shard = &memo.shards[(FxBuildHasher.hash_one(word) as usize) % SHARDS];
    if let Some(hit) = shard.read().ok().and_then(|m| m.get(word).cloned()) {
        return match hit {
            Some(s) => Cow::Owned(s.into()),
            None => Cow::Borrowed(word),
        };
    }
    let stemmed = memo.stemmer.stem(word);
    if let Ok(mut m) = shard.write() {
        if m.len() < MEMO_MAX_WORDS / SHARDS {
            let value = (stemmed != word).then(|| stemmed.as_ref().into());
            m.insert(word.into(), value);
        }
    }
    stemmed
}

/// Token filter: replaces each (lowercased) token by its English stem. A drop-in for
/// `tantivy::tokenizer::Stemmer::new(Language::English)` with the same output.
#[derive(Clone, Copy, Default)]
pub struct EnglishStemmer;

impl TokenFilter for EnglishStemmer {
    type Tokenizer<T: Tokenizer> = StemFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> StemFilter<T> {
        StemFilter { inner: tokenizer }
    }
}

#[derive(Clone)]
pub struct StemFilter<T> {
    inner: T,
}

impl<T: Tokenizer> Tokenizer for StemFilter<T> {
    type TokenStream<'a> = StemStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        StemStream {
            tail: self.inner.token_stream(text),
        }
    }
}

pub struct StemStream<T> {
    tail: T,
}

impl<T: TokenStream> TokenStream for StemStream<T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if let Cow::Owned(s) = stem(&token.text) {
            token.text = s;
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tantivy::tokenizer::{Language, LowerCaser, SimpleTokenizer, Stemmer, TextAnalyzer};

    fn tokens(mut a: TextAnalyzer, text: &str) -> Vec<(String, usize, usize, usize)> {
        let mut out = Vec::new();
        let mut s = a.token_stream(text);
        while let Some(t) = s.next() {
            out.push((t.text.clone(), t.offset_from, t.offset_to, t.position));
        }
        out
    }

    fn pair() -> (TextAnalyzer, TextAnalyzer) {
        let ours = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(LowerCaser)
            .filter(EnglishStemmer)
            .build();
        let theirs = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(LowerCaser)
            .filter(Stemmer::new(Language::English))
            .build();
        (ours, theirs)
    }

    #[test]
    fn stems_like_tantivy_twice_over() {
        let text = "Running runners ran; the skies were dying, generously happy studies 1990s 000s";
        let (ours, theirs) = pair();
        let want = tokens(theirs, text);
        // The first pass fills the memo, the second reads it: both must agree with tantivy.
        assert_eq!(tokens(ours.clone(), text), want);
        assert_eq!(tokens(ours, text), want);
        assert_eq!(stem("running"), "run");
        assert_eq!(stem("skies"), "sky");
    }

    proptest! {
        #[test]
        fn memo_never_changes_a_stem(text in "[a-zA-Z0-9 éü'-]{0,80}") {
            let (ours, theirs) = pair();
            let want = tokens(theirs, &text);
            prop_assert_eq!(tokens(ours.clone(), &text), want.clone());
            prop_assert_eq!(tokens(ours, &text), want);
        }
    }
}
