//! English Snowball stemming with a process-wide memo, as a tantivy token filter.
//!
//! Why: ingest stems every word of every chunk and every search cuts snippets from its results
//! (a few thousand words per request, see [`super::snippet`]), yet a corpus has few distinct
//! words, so each is stemmed once and looked up afterwards. The output is the stemmer's own
//! (same index terms, same query terms); only the work is saved. [`QueryStemmer`] says which
//! words of a result need stemming at all for one query.
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

fn shard(word: &str) -> &'static Shard {
    &MEMO.shards[(FxBuildHasher.hash_one(word) as usize) % SHARDS]
}

/// The English Snowball stem of a lowercased word (memoized).
pub fn stem(word: &str) -> Cow<'_, str> {
    with_stem(word, |s| {
        if s == word {
            Cow::Borrowed(word)
        } else {
            Cow::Owned(s.to_owned())
        }
    })
}

/// `f` of the stem of a lowercased word: [`stem`] without copying a remembered stem.
pub fn with_stem<R>(word: &str, f: impl FnOnce(&str) -> R) -> R {
    let shard = shard(word);
    if let Ok(m) = shard.read() {
        if let Some(hit) = m.get(word) {
            return f(hit.as_deref().unwrap_or(word));
        }
    }
    f(&remember(shard, word))
}

/// Stems a word the memo does not hold, and remembers it while its shard has room.
fn remember<'a>(shard: &Shard, word: &'a str) -> Cow<'a, str> {
    let stemmed = MEMO.stemmer.stem(word);
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

/// Stems every token.
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

/// A word's head: its first `min(2, len)` characters (`None` past the word's end), the part of
/// it that stemming keeps, as far as the stem is that long. English Snowball only rewrites
/// suffixes (inside R1/R2, which start after the second letter at the earliest, or the
/// `ies`/`ied`/`y` endings, which need a letter before them), and leaves words of one or two
/// letters as they are; the one exception is the fixed list "dying", "lying", "tying" → "die",
/// "lie", "tie", whose second letter is `y`. So for every word `w` whose second letter is not
/// `y`, the heads of `stem(w)` and `w` [agree](Head::agrees); the tests check it over random
/// words, the stemmer's exception list and the SciFact vocabulary. Two `char`s rather than a
/// slice: [`QueryStemmer`] compares every word of every result with the query's heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Head(Option<char>, Option<char>);

impl Head {
    fn of(word: &str) -> Self {
        let mut c = word.chars();
        Head(c.next(), c.next())
    }

    /// Equal on as many characters as both have.
    fn agrees(self, other: Head) -> bool {
        fn eq(a: Option<char>, b: Option<char>) -> bool {
            a.zip(b).is_none_or(|(x, y)| x == y)
        }
        eq(self.0, other.0) && eq(self.1, other.1)
    }
}

/// Which words could stem to one of a query's terms: those whose [`Head`] agrees with a
/// term's. A word that cannot is not stemmed when snippets are cut ([`super::snippet`]), since
/// its stem cannot equal a term; that saves stemming most words of every result.
#[derive(Clone)]
pub struct QueryStemmer {
    heads: Box<[Head]>,
}

impl QueryStemmer {
    /// For the query terms (already stemmed).
    pub fn new<'a>(terms: impl IntoIterator<Item = &'a str>) -> Self {
        let mut heads: Vec<Head> = terms.into_iter().map(Head::of).collect();
        heads.sort_unstable();
        heads.dedup();
        Self {
            heads: heads.into(),
        }
    }

    /// Whether `word`'s stem could be one of the terms. Words whose second letter is `y`,
    /// which [`Head`] cannot reason about, always could.
    pub fn could_match(&self, word: &str) -> bool {
        let h = Head::of(word);
        h.0.is_none_or(|first| self.could_match_head(first, h.1))
    }

    /// [`Self::could_match`] for a word starting with `first` and `second`.
    pub fn could_match_head(&self, first: char, second: Option<char>) -> bool {
        let h = Head(Some(first), second);
        second == Some('y') || self.heads.iter().any(|t| t.agrees(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tantivy::tokenizer::{Language, LowerCaser, SimpleTokenizer, Stemmer, TextAnalyzer};

    fn y_second(word: &str) -> bool {
        word.chars().nth(1) == Some('y')
    }

    fn heads_agree(a: &str, b: &str) -> bool {
        Head::of(a).agrees(Head::of(b))
    }

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

    #[test]
    fn the_exceptions_keep_their_head() {
        for w in [
            "skis",
            "skies",
            "dying",
            "lying",
            "tying",
            "idly",
            "gently",
            "ugly",
            "early",
            "only",
            "singly",
            "sky",
            "news",
            "howe",
            "atlas",
            "cosmos",
            "bias",
            "andes",
            "ties",
            "cries",
            "yes",
            "ye",
            "y",
            "a",
            "generously",
            "communism",
            "arsenal",
            "café",
            "über",
        ] {
            assert!(
                y_second(w) || heads_agree(&stem(w), w),
                "{w} -> {}",
                stem(w)
            );
        }
        assert!(y_second("dying") && !heads_agree(&stem("dying"), "dying"));
        assert_eq!(Head::of("über"), Head(Some('ü'), Some('b')));
        assert_eq!(Head::of("a"), Head(Some('a'), None));
    }

    /// Every word of the SciFact corpus (when `../shared/eval/scifact` is there) keeps its
    /// head when stemmed: what [`QueryStemmer`] relies on, over real scientific text.
    #[test]
    fn the_scifact_vocabulary_keeps_its_head() {
        let Some(text) = crate::testdata::scifact_corpus() else {
            return;
        };
        let mut a = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(LowerCaser)
            .build();
        let mut words = std::collections::HashSet::new();
        let mut s = a.token_stream(&text);
        while let Some(t) = s.next() {
            words.insert(t.text.clone());
        }
        assert!(words.len() > 10_000, "{} words", words.len());
        let bad: Vec<_> = words
            .iter()
            .filter(|w| !y_second(w) && !heads_agree(&stem(w), w))
            .take(5)
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
    }

    proptest! {
        #[test]
        fn a_stem_keeps_the_head_of_its_word(w in "[a-zé]{1,14}") {
            prop_assert!(y_second(&w) || heads_agree(&stem(&w), &w), "{} -> {}", w, stem(&w));
        }

        #[test]
        fn memo_never_changes_a_stem(text in "[a-zA-Z0-9 éü'-]{0,80}") {
            let (ours, theirs) = pair();
            let want = tokens(theirs, &text);
            prop_assert_eq!(tokens(ours.clone(), &text), want.clone());
            prop_assert_eq!(tokens(ours, &text), want);
        }
    }
}
