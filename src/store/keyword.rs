//! The tantivy half of the store: BM25 over title + section path + chunk text ("flat"), plus a
//! small extra boost for title matches,
//! with an English analyzer (lowercase, stop words, Snowball stemming).
//!
//! Every write is one tantivy commit (deletes and adds together), so a crash leaves the index
//! at the previous commit; `store::Store` reconciles it with LanceDB afterwards.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery, TermSetQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, StopWordFilter, TextAnalyzer, TokenFilter,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::snippet::{Snippets, MAX_TOKEN_BYTES, STOP_WORDS};
use super::{ChunkRecord, Filters};
use crate::error::{Error, Result};

const ANALYZER: &str = "cairn_en";
const WRITER_HEAP: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy)]
struct Fields {
    chunk_id: Field,
    source_id: Field,
    content_hash: Field,
    title: Field,
    body: Field,
    text: Field,
    section: Field,
    page: Field,
    ordinal: Field,
    char_start: Field,
    char_end: Field,
    file_type: Field,
    meta: Field,
    external_id: Field,
}

pub struct KeywordIndex {
    snippet_chars: usize,
    reader: IndexReader,
    writer: Option<Mutex<IndexWriter>>,
    f: Fields,
}

/// Postings (summed document frequencies of a query's terms) up to which a keyword search is
/// light enough for the async runtime. Block-max WAND scores at most this many documents, at
/// roughly 20-30 ns each on the 2-core benchmark machine, so a light search takes well under a
/// millisecond; handing it to a blocking thread and back would cost more than that
/// (`docs/benchmarks.md`). Heavier searches, and filtered ones, go to a blocking thread.
const LIGHT_POSTINGS: u64 = 20_000;

/// A parsed BM25 search ([`KeywordIndex::prepare`]) waiting to [`run`](KeywordIndex::run).
pub struct KeywordSearch {
    searcher: tantivy::Searcher,
    query: Box<dyn Query>,
    snippets: Option<Snippets>,
    /// Upper bound of the documents the text query scores.
    postings: u64,
    filtered: bool,
}

impl KeywordSearch {
    /// Whether it may run on the async runtime: unfiltered (a filter's cost is not bounded by
    /// the query's terms) and at most [`LIGHT_POSTINGS`] postings.
    pub fn is_light(&self) -> bool {
        !self.filtered && self.postings <= LIGHT_POSTINGS
    }
}

/// A BM25 hit with the stored chunk fields.
pub struct KeywordHit {
    pub chunk: ChunkRecord,
    pub score: f32,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let indexed = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let f = Fields {
        chunk_id: b.add_text_field("chunk_id", STRING | STORED),
        source_id: b.add_text_field("source_id", STRING | STORED),
        content_hash: b.add_text_field("content_hash", STRING | STORED),
        title: b.add_text_field("title", indexed.clone().set_stored()),
        // Title, section path and chunk text together: what BM25 scores ("flat" indexing,
        // which beats separate fields on BEIR); the chunk text itself is only stored.
        body: b.add_text_field("body", indexed),
        text: b.add_text_field("text", STORED),
        section: b.add_text_field("section", STORED),
        page: b.add_u64_field("page", STORED),
        ordinal: b.add_u64_field("ordinal", STORED),
        char_start: b.add_u64_field("char_start", STORED),
        char_end: b.add_u64_field("char_end", STORED),
        file_type: b.add_text_field("file_type", STRING | STORED),
        meta: b.add_text_field("meta", STRING),
        external_id: b.add_text_field("external_id", STRING | STORED),
    };
    (b.build(), f)
}

/// The English analyzer, built once (its stop-word set is a hash set) and cloned per use.
fn analyzer() -> TextAnalyzer {
    static ANALYZER_PROTO: std::sync::LazyLock<TextAnalyzer> =
        std::sync::LazyLock::new(|| english(super::stem::EnglishStemmer));
    ANALYZER_PROTO.clone()
}

/// The English chain (split on non-alphanumerics, drop tokens of 40 bytes or more, lowercase,
/// drop stop words) ending in `stemmer`. [`Snippets`] cuts words the same way (tested against
/// tantivy's snippet generator running this chain).
fn english(stemmer: impl TokenFilter) -> TextAnalyzer {
    static STOP: std::sync::LazyLock<StopWordFilter> = std::sync::LazyLock::new(|| {
        StopWordFilter::remove(STOP_WORDS.iter().map(|w| w.to_string()))
    });
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(STOP.clone())
        .filter(stemmer)
        .build()
}

impl KeywordIndex {
    /// Opens or creates the index in `dir`. With `writable`, takes the index's writer lock,
    /// which fails when another process holds it.
    pub fn open(
        dir: &Path,
        writable: bool,
        snippet_chars: usize,
        doc_cache_blocks: usize,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (schema, f) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| Error::internal(format!("tantivy: {e}")))?;
        let index = Index::open_or_create(mmap, schema)?;
        index.tokenizers().register(ANALYZER, analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .doc_store_cache_num_blocks(doc_cache_blocks)
            .try_into()?;
        let writer = if writable {
            Some(Mutex::new(index.writer(WRITER_HEAP)?))
        } else {
            None
        };
        Ok(Self {
            snippet_chars,
            reader,
            writer,
            f,
        })
    }

    fn doc(&self, c: &ChunkRecord) -> TantivyDocument {
        let f = &self.f;
        let mut d = TantivyDocument::default();
        d.add_text(f.chunk_id, &c.chunk_id);
        d.add_text(f.source_id, &c.source_id);
        d.add_text(f.content_hash, &c.content_hash);
        d.add_text(f.title, &c.title);
        d.add_text(f.body, format!("{}\n{}\n{}", c.title, c.section, c.text));
        d.add_text(f.text, &c.text);
        d.add_text(f.section, &c.section);
        if let Some(p) = c.page {
            d.add_u64(f.page, p as u64);
        }
        d.add_u64(f.ordinal, c.ordinal as u64);
        d.add_u64(f.char_start, c.char_start as u64);
        d.add_u64(f.char_end, c.char_end as u64);
        d.add_text(f.file_type, &c.file_type);
        for m in &c.meta {
            d.add_text(f.meta, m);
        }
        d.add_text(f.external_id, &c.external_id);
        d
    }

    /// Deletes every chunk of `delete_sources`, then adds `add`, in one durable commit.
    pub fn replace(&self, delete_sources: &[String], add: &[ChunkRecord]) -> Result<()> {
        let w = self
            .writer
            .as_ref()
            .ok_or_else(|| Error::internal("keyword index opened read-only"))?;
        let mut w = w
            .lock()
            .map_err(|_| Error::internal("keyword writer lock poisoned"))?;
        for s in delete_sources {
            w.delete_term(Term::from_field_text(self.f.source_id, s));
        }
        let added = add
            .iter()
            .try_for_each(|c| w.add_document(self.doc(c)).map(drop));
        commit_or_roll_back(&mut w, added)?;
        drop(w);
        self.reader.reload()?;
        Ok(())
    }

    /// Deletes single chunks by id, in one commit.
    pub fn delete_chunks(&self, chunk_ids: &[String]) -> Result<()> {
        let w = self
            .writer
            .as_ref()
            .ok_or_else(|| Error::internal("keyword index opened read-only"))?;
        let mut w = w
            .lock()
            .map_err(|_| Error::internal("keyword writer lock poisoned"))?;
        for c in chunk_ids {
            w.delete_term(Term::from_field_text(self.f.chunk_id, c));
        }
        commit_or_roll_back(&mut w, Ok(()))?;
        drop(w);
        self.reader.reload()?;
        Ok(())
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// `(chunk_id, source_id, content_hash)` of every indexed chunk.
    pub fn all_keys(&self) -> Result<Vec<(String, String, String)>> {
        let searcher = self.reader.searcher();
        let n = searcher.num_docs() as usize;
        let hits = searcher.search(&AllQuery, &TopDocs::with_limit(n.max(1)).order_by_score())?;
        let mut out = Vec::with_capacity(hits.len());
        for (_, addr) in hits {
            let d: TantivyDocument = searcher.doc(addr)?;
            out.push((
                text_of(&d, self.f.chunk_id),
                text_of(&d, self.f.source_id),
                text_of(&d, self.f.content_hash),
            ));
        }
        Ok(out)
    }

    /// The analyzed terms of `query` (lowercased, stemmed, stop words removed), deduplicated.
    pub fn query_terms(&self, query: &str) -> Vec<String> {
        let mut a = analyzer();
        let mut stream = a.token_stream(query);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            if seen.insert(t.text.clone()) {
                out.push(t.text.clone());
            }
        }
        out
    }

    fn text_query(&self, terms: &[String], title_boost: f32) -> Box<dyn Query> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in terms {
            let tq = |field| {
                Box::new(TermQuery::new(
                    Term::from_field_text(field, t),
                    IndexRecordOption::WithFreqs,
                )) as Box<dyn Query>
            };
            clauses.push((Occur::Should, tq(self.f.body)));
            if title_boost > 0.0 {
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(tq(self.f.title), title_boost)),
                ));
            }
        }
        Box::new(BooleanQuery::new(clauses))
    }

    fn filter_query(&self, filters: &Filters) -> Option<Box<dyn Query>> {
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let set = |field: Field, vals: &[String]| -> Box<dyn Query> {
            Box::new(TermSetQuery::new(
                vals.iter().map(|v| Term::from_field_text(field, v)),
            ))
        };
        if !filters.source_ids.is_empty() {
            must.push((Occur::Must, set(self.f.source_id, &filters.source_ids)));
        }
        if !filters.file_types.is_empty() {
            must.push((Occur::Must, set(self.f.file_type, &filters.file_types)));
        }
        for kv in filters.meta_terms() {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.f.meta, &kv),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if must.is_empty() {
            None
        } else {
            Some(Box::new(ConstScoreQuery::new(
                Box::new(BooleanQuery::new(must)),
                0.0,
            )))
        }
    }

    /// BM25 top-`k` chunks for `query`, restricted by `filters`.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        filters: &Filters,
        title_boost: f32,
    ) -> Result<(Vec<KeywordHit>, Option<Snippets>)> {
        match self.prepare(query, filters, title_boost) {
            Some(s) => self.run(s, k),
            None => Ok((Vec::new(), None)),
        }
    }

    /// Analyses `query` and looks its terms up (microseconds), for [`KeywordIndex::run`];
    /// `None` when no term is left (all stop words or punctuation).
    pub fn prepare(
        &self,
        query: &str,
        filters: &Filters,
        title_boost: f32,
    ) -> Option<KeywordSearch> {
        let terms = self.query_terms(query);
        if terms.is_empty() {
            return None;
        }
        let text_q = self.text_query(&terms, title_boost);
        let searcher = self.reader.searcher();
        let (snippets, body_postings) = self.generator(&searcher, &*text_q);
        // A title is part of its chunk's body, so its postings are at most the body's.
        let postings = body_postings.saturating_mul(if title_boost > 0.0 { 2 } else { 1 });
        let filter = self.filter_query(filters);
        let filtered = filter.is_some();
        let query: Box<dyn Query> = match filter {
            None => text_q,
            Some(fq) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, text_q),
                (Occur::Must, fq),
            ])),
        };
        Some(KeywordSearch {
            searcher,
            query,
            snippets,
            postings,
            filtered,
        })
    }

    /// Runs a prepared search: the top `k` hits with their stored rows, and the snippet maker.
    pub fn run(&self, s: KeywordSearch, k: usize) -> Result<(Vec<KeywordHit>, Option<Snippets>)> {
        if k == 0 {
            return Ok((Vec::new(), s.snippets));
        }
        let top = s
            .searcher
            .search(&*s.query, &TopDocs::with_limit(k).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d: TantivyDocument = s.searcher.doc(addr)?;
            out.push(KeywordHit {
                chunk: self.chunk_of(&d),
                score,
            });
        }
        Ok((out, s.snippets))
    }

    /// The stored rows of the given chunks that pass `filters` (ids not in the index are
    /// left out; `meta` is not stored and comes back empty).
    pub fn chunks_by_id(&self, ids: &[String], filters: &Filters) -> Result<Vec<ChunkRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let by_id: Box<dyn Query> = Box::new(TermSetQuery::new(
            ids.iter()
                .map(|v| Term::from_field_text(self.f.chunk_id, v)),
        ));
        let q: Box<dyn Query> = match self.filter_query(filters) {
            None => by_id,
            Some(fq) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, by_id),
                (Occur::Must, fq),
            ])),
        };
        let searcher = self.reader.searcher();
        let mut out = Vec::with_capacity(ids.len());
        for addr in searcher.search(&*q, &DocSetCollector)? {
            let d: TantivyDocument = searcher.doc(addr)?;
            out.push(self.chunk_of(&d));
        }
        Ok(out)
    }

    /// The snippet maker for `query` over chunk text, for hits that came from elsewhere.
    pub fn snippets(&self, query: &str, title_boost: f32) -> Option<Snippets> {
        self.prepare(query, &Filters::default(), title_boost)?
            .snippets
    }

    /// The snippet maker of a query: what `SnippetGenerator::create` would build (the query's
    /// body terms, each scored `1 / (1 + doc freq)`, absent terms left out), as [`Snippets`];
    /// and the sum of those doc freqs (`u64::MAX` when a lookup failed).
    fn generator(&self, searcher: &tantivy::Searcher, q: &dyn Query) -> (Option<Snippets>, u64) {
        // Terms come from the indexed body field; the snippet is cut from the chunk text.
        let mut terms: BTreeSet<&Term> = BTreeSet::new();
        q.query_terms(&mut |term, _| {
            if term.field() == self.f.body {
                terms.insert(term);
            }
        });
        let mut scored: BTreeMap<String, f32> = BTreeMap::new();
        let mut postings = 0u64;
        for term in terms {
            let value = term.value();
            let Some(text) = value.as_str() else {
                continue;
            };
            let Ok(df) = searcher.doc_freq(term) else {
                return (None, u64::MAX);
            };
            postings += df;
            if df > 0 {
                scored.insert(text.to_string(), 1.0 / (1.0 + df as f32));
            }
        }
        (Some(Snippets::new(scored, self.snippet_chars)), postings)
    }

    fn chunk_of(&self, d: &TantivyDocument) -> ChunkRecord {
        let f = &self.f;
        let u = |field: Field| d.get_first(field).and_then(|v| v.as_u64());
        ChunkRecord {
            chunk_id: text_of(d, f.chunk_id),
            source_id: text_of(d, f.source_id),
            content_hash: text_of(d, f.content_hash),
            ordinal: u(f.ordinal).unwrap_or(0) as u32,
            text: text_of(d, f.text),
            title: text_of(d, f.title),
            section: text_of(d, f.section),
            page: u(f.page).map(|p| p as u32),
            char_start: u(f.char_start).unwrap_or(0) as u32,
            char_end: u(f.char_end).unwrap_or(0) as u32,
            file_type: text_of(d, f.file_type),
            meta: Vec::new(),
            external_id: text_of(d, f.external_id),
            vector: Vec::new(),
        }
    }
}

fn text_of(d: &TantivyDocument, f: Field) -> String {
    d.get_first(f)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Commits the writer's queued operations, or, when queuing (`queued`) or the commit failed
/// (a full disk), discards them: a later commit must not carry half of a failed write, and a
/// writer whose threads died on the error is only usable again after a rollback.
fn commit_or_roll_back(w: &mut IndexWriter, queued: tantivy::Result<()>) -> Result<()> {
    let r = queued.and_then(|()| w.commit().map(drop));
    if r.is_err() {
        if let Err(e) = w.rollback() {
            tracing::warn!(error = %e, "keyword index: rollback after a failed write failed");
        }
    }
    Ok(r?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Inflections, stop words, exceptions of the stemmer, capitals and non-ASCII letters.
    const WORDS: &[&str] = &[
        "running",
        "runs",
        "ran",
        "runner",
        "Run",
        "skies",
        "sky",
        "dying",
        "die",
        "cells",
        "cell",
        "Cellular",
        "increased",
        "increase",
        "increasing",
        "the",
        "The",
        "a",
        "of",
        "in",
        "is",
        "was",
        "were",
        "studies",
        "study",
        "studied",
        "happy",
        "happiness",
        "generously",
        "general",
        "generate",
        "Generation",
        "über",
        "Über",
        "café",
        "1990s",
        "000s",
        "ties",
        "tie",
        "cries",
        "cry",
        "ugly",
        "early",
        "only",
        "news",
        "protein",
        "proteins",
        "TNF",
        "inflammation",
        "inflammatory",
        "in-vivo",
        "x",
        "ab",
        "abc",
        "ΣΟΦΟΣ",
        "naïve",
        "Naïvely",
        "\u{212A}elvin",
        "İstanbul",
        "Ωmega",
        "pneumonoultramicroscopicsilicovolcanoconiosis",
        "abcdefghijklmnopqrstuvwxyzabcdefghijklm",
    ];

    fn chunk(i: usize, text: &str) -> ChunkRecord {
        ChunkRecord {
            chunk_id: format!("c{i}"),
            source_id: format!("s{i}"),
            content_hash: String::new(),
            ordinal: 0,
            text: text.to_string(),
            title: String::new(),
            section: String::new(),
            page: None,
            char_start: 0,
            char_end: text.len() as u32,
            file_type: "txt".into(),
            meta: Vec::new(),
            external_id: String::new(),
            vector: Vec::new(),
        }
    }

    /// An index holding every word of [`WORDS`] at different document frequencies.
    fn index() -> (tempfile::TempDir, KeywordIndex) {
        let dir = tempfile::tempdir().unwrap();
        let k = KeywordIndex::open(dir.path(), true, 60, 10).unwrap();
        let chunks: Vec<ChunkRecord> = (0..WORDS.len())
            .map(|i| chunk(i, &WORDS[i..].join(" ")))
            .collect();
        k.replace(&[], &chunks).unwrap();
        (dir, k)
    }

    /// A prepared search counts its terms' postings (doubled when title clauses are on) and is
    /// light only unfiltered and within [`LIGHT_POSTINGS`]; either way it runs the same.
    #[test]
    fn prepared_searches_know_their_postings() {
        let (_dir, k) = index();
        // Word `j` of WORDS is in chunks 0..=j; these two have stems of their own.
        let df = |w: &str| WORDS.iter().position(|x| *x == w).unwrap() as u64 + 1;
        let both = df("TNF") + df("inflammation");
        let none = Filters::default();
        let s = k.prepare("TNF, and inflammation?", &none, 0.0).unwrap();
        assert_eq!(s.postings, both);
        assert!(s.is_light());
        let (hits, snippets) = k.run(s, 3).unwrap();
        assert_eq!(hits.len(), 3);
        assert!(snippets.is_some());
        assert_eq!(
            k.prepare("TNF inflammation", &none, 0.5).unwrap().postings,
            2 * both
        );
        let only_s1 = Filters {
            source_ids: vec!["s1".into()],
            ..Default::default()
        };
        let s = k.prepare("TNF", &only_s1, 0.0).unwrap();
        assert!(!s.is_light());
        let (hits, _) = k.run(s, 10).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.chunk.chunk_id.as_str()).collect();
        assert_eq!(ids, ["c1"]);
        let mut s = k.prepare("TNF", &none, 0.0).unwrap();
        s.postings = LIGHT_POSTINGS;
        assert!(s.is_light());
        s.postings = LIGHT_POSTINGS + 1;
        assert!(!s.is_light());
        assert!(k.prepare("the of, is", &none, 0.0).is_none());
        assert!(k
            .run(k.prepare("TNF", &none, 0.0).unwrap(), 0)
            .unwrap()
            .0
            .is_empty());
    }

    fn text_of(words: &[usize], seps: &[usize]) -> String {
        const SEPS: [&str; 8] = [" ", ", ", ". ", " (", " & ", "'s <", "\" — ", "\n"];
        let mut t = String::new();
        for (w, s) in words.iter().zip(seps.iter().cycle()) {
            t.push_str(WORDS[*w % WORDS.len()]);
            t.push_str(SEPS[*s % SEPS.len()]);
        }
        t
    }

    /// Over real text: every SciFact query's snippet of 30 corpus documents (a different 30 for
    /// each query) is tantivy's, when `../shared/eval/scifact` is there.
    #[test]
    fn snippets_equal_tantivys_on_scifact() {
        let Some(corpus) = crate::testdata::scifact_corpus() else {
            return;
        };
        let field = |line: &str, name: &str| -> String {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v[name].as_str().unwrap_or_default().to_string()
        };
        let docs: Vec<String> = corpus.lines().map(|l| field(l, "text")).collect();
        let queries =
            std::fs::read_to_string(crate::testdata::scifact_dir().join("queries.jsonl")).unwrap();
        let (_dir, k) = index();
        let mut compared = 0;
        for (qi, line) in queries.lines().take(300).enumerate() {
            let terms: BTreeMap<String, f32> = k
                .query_terms(&field(line, "text"))
                .into_iter()
                .enumerate()
                .map(|(i, t)| (t, 1.0 / (2.0 + i as f32)))
                .collect();
            let ours = Snippets::new(terms.clone(), 150);
            let theirs = tantivy::snippet::SnippetGenerator::new(terms, analyzer(), k.f.body, 150);
            for text in docs.iter().skip(qi * 30).take(30) {
                let mut sn = theirs.snippet(text);
                let want = (!sn.is_empty()).then(|| {
                    sn.set_snippet_prefix_postfix("<mark>", "</mark>");
                    sn.to_html()
                });
                assert_eq!(ours.html(text), want, "query {qi}");
                compared += usize::from(want.is_some());
            }
        }
        assert!(compared > 1_000, "only {compared} snippets with a match");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// [`Snippets`] cuts, marks and escapes exactly what tantivy's own snippet generator
        /// (running the index analyzer, which stems every word) does.
        #[test]
        fn snippets_equal_tantivys(
            query in proptest::collection::vec(0usize..100, 1..6),
            words in proptest::collection::vec(0usize..100, 0..60),
            seps in proptest::collection::vec(0usize..8, 1..8),
        ) {
            static INDEX: std::sync::LazyLock<(tempfile::TempDir, KeywordIndex)> =
                std::sync::LazyLock::new(index);
            let k = &INDEX.1;
            let query = text_of(&query, &[0]);
            let text = text_of(&words, &seps);
            let ours = k.snippets(&query, 0.0);
            let terms = k.query_terms(&query);
            let theirs = (!terms.is_empty()).then(|| {
                let q = k.text_query(&terms, 0.0);
                let mut g = tantivy::snippet::SnippetGenerator::create(
                    &k.reader.searcher(),
                    &*q,
                    k.f.body,
                )
                .unwrap();
                g.set_max_num_chars(60);
                g
            });
            prop_assert_eq!(ours.is_some(), theirs.is_some());
            if let (Some(a), Some(b)) = (ours, theirs) {
                let mut sn = b.snippet(&text);
                let want = (!sn.is_empty()).then(|| {
                    sn.set_snippet_prefix_postfix("<mark>", "</mark>");
                    sn.to_html()
                });
                prop_assert_eq!(a.html(&text), want);
            }
        }
    }
}
