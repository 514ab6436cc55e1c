//! Retrieval evaluation on a BEIR-format folder (`corpus.jsonl[.gz]`, `queries.jsonl`,
//! `qrels/<split>.tsv`): nDCG@10, Recall@10, Recall@100, MRR@10 and query latency.
//!
//! BEIR `_id`s become the sources' external ids. Each query is one `/search` request as a client
//! sends it (`limit` 100, the API's largest): the metrics score the documents of the results
//! in the order the API returns them, so @10 figures are what a `limit: 10` request returns
//! (pages agree whatever their size, see `search::fuse`). Without grouping, several chunks of
//! one document count once, at the first one's rank. Metrics use binary relevance (score > 0),
//! as BEIR/pytrec_eval do for SciFact; queries without any relevant document in the qrels are
//! skipped.

pub mod answers;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::extract::{Block, ExtractedDoc, FileType};
use crate::search::{GroupBy, Mode, SearchRequest};
use crate::service::Cairn;

#[derive(Deserialize)]
struct CorpusLine {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

fn open_maybe_gz(dir: &Path, name: &str) -> Result<Box<dyn BufRead>> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if plain.is_file() {
        Ok(Box::new(BufReader::new(std::fs::File::open(plain)?)))
    } else if gz.is_file() {
        let r: Box<dyn Read> = Box::new(flate2::read::GzDecoder::new(std::fs::File::open(gz)?));
        Ok(Box::new(BufReader::new(r)))
    } else {
        Err(Error::InvalidInput(format!(
            "{} has no {name} or {name}.gz",
            dir.display()
        )))
    }
}

/// The corpus as documents (one source per BEIR document).
pub fn load_corpus(dir: &Path) -> Result<Vec<(String, ExtractedDoc)>> {
    let mut out = Vec::new();
    for (i, line) in open_maybe_gz(dir, "corpus.jsonl")?.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let c: CorpusLine = serde_json::from_str(&line)
            .map_err(|e| Error::InvalidInput(format!("corpus line {}: {e}", i + 1)))?;
        let text = c.text.trim();
        if text.is_empty() && c.title.trim().is_empty() {
            continue;
        }
        let body = if text.is_empty() {
            c.title.clone()
        } else {
            text.to_string()
        };
        out.push((
            format!("corpus#{}", c.id),
            ExtractedDoc {
                external_id: Some(c.id),
                title: c.title.trim().to_string(),
                metadata: Default::default(),
                file_type: FileType::Jsonl,
                blocks: vec![Block {
                    text: body,
                    page: None,
                    section: Vec::new(),
                }],
            },
        ));
    }
    Ok(out)
}

/// Queries of the split that have judgements, with their relevant document ids.
pub fn load_queries(dir: &Path, split: &str) -> Result<Vec<(String, String, HashSet<String>)>> {
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    let qrels = std::fs::read_to_string(&qrels_path)
        .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", qrels_path.display())))?;
    let mut rel: HashMap<String, HashSet<String>> = HashMap::new();
    for (i, line) in qrels.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 || (i == 0 && cols[0] == "query-id") {
            continue;
        }
        if cols[2].trim().parse::<f64>().unwrap_or(0.0) > 0.0 {
            rel.entry(cols[0].to_string())
                .or_default()
                .insert(cols[1].to_string());
        }
    }
    let mut out = Vec::new();
    for line in open_maybe_gz(dir, "queries.jsonl")?.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let q: QueryLine = serde_json::from_str(&line)
            .map_err(|e| Error::InvalidInput(format!("queries: {e}")))?;
        if let Some(r) = rel.remove(&q.id) {
            out.push((q.id, q.text, r));
        }
    }
    Ok(out)
}

/// nDCG@k with binary gains.
pub fn ndcg_at(ranked: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, d)| relevant.contains(*d))
        .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(k))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    if ideal == 0.0 {
        0.0
    } else {
        dcg / ideal
    }
}

pub fn recall_at(ranked: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let hit = ranked
        .iter()
        .take(k)
        .filter(|d| relevant.contains(*d))
        .count();
    hit as f64 / relevant.len() as f64
}

pub fn mrr_at(ranked: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| relevant.contains(d))
        .map(|p| 1.0 / (p + 1) as f64)
        .unwrap_or(0.0)
}

/// The value at quantile `q` (0..=1) of sorted data, nearest-rank.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResult {
    pub mode: Mode,
    #[serde(default)]
    pub rerank: bool,
    #[serde(default)]
    pub use_graph: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_type: Option<String>,
    /// What the results were collapsed by (`none`, `source`, `metadata.<key>`).
    #[serde(default = "no_grouping")]
    pub group_by: String,
    pub queries: usize,
    /// Median number of distinct documents among the first 10 results.
    #[serde(default)]
    pub distinct_docs_at_10: f64,
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
    pub latency_ms: Latency,
}

fn no_grouping() -> String {
    "none".into()
}

/// What each evaluated search asks for beyond the query (the options `/search` takes).
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub mode: Mode,
    pub rerank: bool,
    pub use_graph: bool,
    pub context_type: Option<String>,
    /// `None`: the server's `search.group_by`.
    pub group_by: Option<GroupBy>,
}

impl EvalOptions {
    /// A short label: the mode plus the options that are on (`hybrid+graph+rerank`).
    pub fn label(&self) -> String {
        let mut s = self.mode.as_str().to_string();
        if let Some(t) = &self.context_type {
            s.push_str(&format!("+{t}"));
        }
        if self.use_graph {
            s.push_str("+graph");
        }
        if self.rerank {
            s.push_str("+rerank");
        }
        match &self.group_by {
            None | Some(GroupBy::None) => {}
            Some(g) => s.push_str(&format!("+by-{}", String::from(g.clone()))),
        }
        s
    }
}

/// Runs every judged query of `split` and averages the metrics. With `run_out`, the top 100
/// documents of every query are also written there as a TREC run (`qid Q0 doc rank score tag`).
pub async fn run(
    cairn: &Cairn,
    dir: &Path,
    split: &str,
    opts: &EvalOptions,
    mut run_out: Option<&mut dyn std::io::Write>,
) -> Result<EvalResult> {
    let mode = opts.mode;
    let queries = load_queries(dir, split)?;
    if queries.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no judged queries for split `{split}`"
        )));
    }
    let (mut ndcg, mut r10, mut r100, mut mrr) = (0.0, 0.0, 0.0, 0.0);
    let mut lat = Vec::with_capacity(queries.len());
    let mut distinct = Vec::with_capacity(queries.len());
    for (qid, text, relevant) in &queries {
        let t = Instant::now();
        let resp = cairn.search(request(text, opts)).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        let docs: Vec<(String, f32)> = resp
            .results
            .into_iter()
            .map(|h| (h.external_id, h.score))
            .collect();
        let top10: HashSet<&String> = docs.iter().take(10).map(|(d, _)| d).collect();
        distinct.push(top10.len() as f64);
        let at10 = first_each(&docs[..docs.len().min(10)]);
        let ranked = first_each(&docs);
        if let Some(w) = run_out.as_mut() {
            for (i, (d, score)) in ranked.iter().enumerate() {
                writeln!(w, "{qid} Q0 {d} {} {score} cairn-{}", i + 1, opts.label())?;
            }
        }
        let ids =
            |l: &[(String, f32)]| -> Vec<String> { l.iter().map(|(d, _)| d.clone()).collect() };
        let (at10, ranked) = (ids(&at10), ids(&ranked));
        ndcg += ndcg_at(&at10, relevant, 10);
        r10 += recall_at(&at10, relevant, 10);
        r100 += recall_at(&ranked, relevant, 100);
        mrr += mrr_at(&at10, relevant, 10);
    }
    distinct.sort_by(f64::total_cmp);
    lat.sort_by(f64::total_cmp);
    let n = queries.len() as f64;
    let r4 = round4;
    Ok(EvalResult {
        mode,
        rerank: opts.rerank,
        use_graph: opts.use_graph,
        context_type: opts.context_type.clone(),
        group_by: String::from(
            opts.group_by
                .clone()
                .unwrap_or_else(|| cairn.config.search.group_by.clone()),
        ),
        queries: queries.len(),
        distinct_docs_at_10: percentile(&distinct, 0.5),
        ndcg_at_10: r4(ndcg / n),
        recall_at_10: r4(r10 / n),
        recall_at_100: r4(r100 / n),
        mrr_at_10: r4(mrr / n),
        latency_ms: Latency {
            p50: r4(percentile(&lat, 0.5)),
            p95: r4(percentile(&lat, 0.95)),
        },
    })
}

/// A score as reported: four decimals.
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The `/search` request of one evaluated query: the API's largest page.
fn request(query: &str, opts: &EvalOptions) -> SearchRequest {
    SearchRequest {
        query: query.to_string(),
        limit: Some(100),
        mode: opts.mode,
        rerank: opts.rerank,
        use_graph: opts.use_graph.then_some(true),
        context_type: opts.context_type.clone(),
        group_by: opts.group_by.clone(),
        ..Default::default()
    }
}

/// Each document once, at its first (best) position.
fn first_each(docs: &[(String, f32)]) -> Vec<(String, f32)> {
    let mut seen = HashSet::new();
    docs.iter()
        .filter(|(d, _)| seen.insert(d.clone()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }
    fn set(v: &[&str]) -> HashSet<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn ndcg_perfect_and_shifted() {
        let rel = set(&["a"]);
        assert!((ndcg_at(&s(&["a", "b"]), &rel, 10) - 1.0).abs() < 1e-12);
        // Relevant at rank 2: 1/log2(3).
        assert!((ndcg_at(&s(&["b", "a"]), &rel, 10) - 1.0 / 3f64.log2()).abs() < 1e-12);
        assert_eq!(ndcg_at(&s(&["b", "c"]), &rel, 10), 0.0);
        // Two relevant, one found at rank 1: 1 / (1 + 1/log2(3)).
        let rel2 = set(&["a", "z"]);
        let want = 1.0 / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&s(&["a", "b"]), &rel2, 10) - want).abs() < 1e-12);
    }

    #[test]
    fn recall_and_mrr() {
        let rel = set(&["a", "b"]);
        let ranked = s(&["x", "a", "y", "b"]);
        assert_eq!(recall_at(&ranked, &rel, 2), 0.5);
        assert_eq!(recall_at(&ranked, &rel, 10), 1.0);
        assert_eq!(mrr_at(&ranked, &rel, 10), 0.5);
        assert_eq!(mrr_at(&ranked, &rel, 1), 0.0);
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&[3.0], 0.95), 3.0);
    }

    #[test]
    fn loads_beir_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("corpus.jsonl"),
            "{\"_id\":\"d1\",\"title\":\"T\",\"text\":\"hello\"}\n{\"_id\":\"d2\",\"title\":\"\",\"text\":\"\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("queries.jsonl"),
            "{\"_id\":\"q1\",\"text\":\"hi\"}\n{\"_id\":\"q2\",\"text\":\"no\"}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("qrels")).unwrap();
        std::fs::write(
            dir.path().join("qrels/test.tsv"),
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t0\n",
        )
        .unwrap();
        let corpus = load_corpus(dir.path()).unwrap();
        assert_eq!(corpus.len(), 1, "empty documents are skipped");
        assert_eq!(corpus[0].1.external_id.as_deref(), Some("d1"));
        let q = load_queries(dir.path(), "test").unwrap();
        assert_eq!(
            q.len(),
            1,
            "queries without a positive judgement are skipped"
        );
        assert!(q[0].2.contains("d1"));
        assert!(load_queries(dir.path(), "dev").is_err());
    }
}
