//! `cairn eval --answers` (issue 24): grounded answers on SciFact's claims, scored against the
//! sentence-level evidence in `claims/` (`claims_dev.jsonl`: the 300 claims that are BEIR's
//! test queries, 188 with evidence). Each claim is asked as a `/query` would ask it: the claim
//! is the retrieval query, and the system prompt asks for a verdict first. Scored:
//! - **labels**: the answer's first verdict (supported / refuted / not enough evidence; a
//!   relevance-gate refusal is "not enough evidence"; no verdict at all is wrong) against the
//!   gold label (the claim's SUPPORT or CONTRADICT evidence; none: not enough evidence):
//!   accuracy and macro-F1 over the three labels;
//! - **citations**, on claims with evidence: precision = cited chunks holding a gold evidence
//!   sentence / cited chunks; recall = claims whose answer cites such a chunk / claims;
//! - **uncited verdicts**: answers that say supported or refuted and cite nothing;
//! - time to first token and decode speed.
//!
//! The store is whatever the caller ingested (`cairn eval` ingests the corpus first).

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{open_maybe_gz, percentile, round4};
use crate::answer::{decode_tokens_per_s, Citation, QueryRequest};
use crate::error::{Error, Result};
use crate::service::Cairn;

/// The system prompt of an answer evaluation (`answer.system_prompt` for the run).
pub const VERDICT_PROMPT: &str = "You check scientific claims against numbered passages. \
Start your answer with exactly one verdict: SUPPORTED, REFUTED or NOT ENOUGH EVIDENCE. Then \
say why in one or two sentences, citing the passages you used like [1]. Use only the passages.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Supported,
    Refuted,
    NotEnoughEvidence,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Supported => "supported",
            Verdict::Refuted => "refuted",
            Verdict::NotEnoughEvidence => "not_enough_evidence",
        }
    }
}

const VERDICTS: [Verdict; 3] = [
    Verdict::Supported,
    Verdict::Refuted,
    Verdict::NotEnoughEvidence,
];

/// One claim with its gold label and evidence (document id → abstract sentence indices).
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: u64,
    pub text: String,
    pub gold: Verdict,
    pub evidence: HashMap<String, Vec<usize>>,
}

#[derive(Deserialize)]
struct RawClaim {
    id: u64,
    claim: String,
    #[serde(default)]
    evidence: HashMap<String, Vec<RawEvidence>>,
}

#[derive(Deserialize)]
struct RawEvidence {
    sentences: Vec<usize>,
    label: String,
}

/// `claims/claims_dev.jsonl` of a SciFact folder.
pub fn load_claims(dir: &Path) -> Result<Vec<Claim>> {
    let mut out = Vec::new();
    for (i, line) in open_maybe_gz(&dir.join("claims"), "claims_dev.jsonl")?
        .lines()
        .enumerate()
    {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawClaim = serde_json::from_str(&line)
            .map_err(|e| Error::InvalidInput(format!("claims line {}: {e}", i + 1)))?;
        out.push(claim(raw));
    }
    Ok(out)
}

/// The gold label is the evidence's majority label; no evidence: not enough evidence.
fn claim(raw: RawClaim) -> Claim {
    let (mut support, mut contradict) = (0, 0);
    let mut evidence: HashMap<String, Vec<usize>> = HashMap::new();
    for (doc, sets) in raw.evidence {
        for set in sets {
            match set.label.as_str() {
                "SUPPORT" => support += 1,
                _ => contradict += 1,
            }
            evidence
                .entry(doc.clone())
                .or_default()
                .extend(set.sentences);
        }
    }
    let gold = match (support, contradict) {
        (0, 0) => Verdict::NotEnoughEvidence,
        (s, c) if s >= c => Verdict::Supported,
        _ => Verdict::Refuted,
    };
    Claim {
        id: raw.id,
        text: raw.claim,
        gold,
        evidence,
    }
}

#[derive(Deserialize)]
struct RawSentences {
    doc_id: serde_json::Value,
    #[serde(rename = "abstract")]
    sentences: Vec<String>,
}

/// The abstract sentences of `docs`, from `claims/corpus_sentences.jsonl.gz`.
pub fn load_sentences(dir: &Path, docs: &HashSet<String>) -> Result<HashMap<String, Vec<String>>> {
    let mut out = HashMap::new();
    for line in open_maybe_gz(&dir.join("claims"), "corpus_sentences.jsonl")?.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawSentences = serde_json::from_str(&line)
            .map_err(|e| Error::InvalidInput(format!("corpus_sentences: {e}")))?;
        let id = match raw.doc_id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        if docs.contains(&id) {
            out.insert(id, raw.sentences);
        }
    }
    Ok(out)
}

/// The user message's last line: the verdict asked for right after the passages, where a small
/// model still reads it.
pub fn closing(claim: &str) -> String {
    format!(
        "Claim: \"{claim}\"\nDo these passages show the claim is SUPPORTED or REFUTED, or is there \
         NOT ENOUGH EVIDENCE? Start with the verdict, then give the reason, citing passages like [1]."
    )
}

/// The answer's first verdict, if it states one.
pub fn parse_verdict(answer: &str) -> Option<Verdict> {
    let up = answer.to_uppercase();
    [
        ("NOT ENOUGH", Verdict::NotEnoughEvidence),
        ("INSUFFICIENT", Verdict::NotEnoughEvidence),
        ("NOT SUPPORTED", Verdict::NotEnoughEvidence),
        ("SUPPORT", Verdict::Supported),
        ("REFUT", Verdict::Refuted),
        ("CONTRADICT", Verdict::Refuted),
    ]
    .iter()
    .filter_map(|(word, v)| up.find(word).map(|i| (i, *v)))
    .min_by_key(|(i, _)| *i)
    .map(|(_, v)| v)
}

/// Whether a chunk's text holds a sentence: whole, or its first or last 60 characters (a
/// sentence split across two chunks), whitespace-insensitive.
pub fn holds_sentence(chunk: &str, sentence: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let (chunk, sentence) = (squash(chunk), squash(sentence));
    if sentence.is_empty() {
        return false;
    }
    if chunk.contains(&sentence) {
        return true;
    }
    let chars: Vec<char> = sentence.chars().collect();
    if chars.len() < 120 {
        return false;
    }
    let head: String = chars[..60].iter().collect();
    let tail: String = chars[chars.len() - 60..].iter().collect();
    chunk.contains(&head) || chunk.contains(&tail)
}

/// Macro-F1 over the three labels; a missing prediction counts against its gold label.
pub fn macro_f1(pairs: &[(Verdict, Option<Verdict>)]) -> f64 {
    let f1 = |k: Verdict| {
        let tp = pairs
            .iter()
            .filter(|(g, p)| *g == k && *p == Some(k))
            .count();
        let fp = pairs
            .iter()
            .filter(|(g, p)| *g != k && *p == Some(k))
            .count();
        let fn_ = pairs
            .iter()
            .filter(|(g, p)| *g == k && *p != Some(k))
            .count();
        let d = 2 * tp + fp + fn_;
        if d == 0 {
            0.0
        } else {
            2.0 * tp as f64 / d as f64
        }
    };
    VERDICTS.iter().map(|k| f1(*k)).sum::<f64>() / VERDICTS.len() as f64
}

/// What `cairn eval --answers` reports.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerEval {
    pub generator: String,
    pub claims: usize,
    pub with_evidence: usize,
    pub max_tokens: u32,
    pub label_accuracy: f64,
    pub macro_f1: f64,
    /// Predicted labels (and `none`: no verdict stated), for a look at the model's bias.
    pub predicted: HashMap<String, usize>,
    pub citation_precision: f64,
    pub citation_recall: f64,
    /// Share of answers that say supported or refuted and cite nothing.
    pub uncited_verdicts: f64,
    pub refused_by_relevance_gate: usize,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p95: f64,
    pub decode_tokens_per_s_p50: f64,
}

/// Running totals over the claims.
#[derive(Default)]
struct Tally {
    pairs: Vec<(Verdict, Option<Verdict>)>,
    cited: usize,
    cited_good: usize,
    recalled: usize,
    uncited: usize,
    refused: usize,
    ttft: Vec<f64>,
    tps: Vec<f64>,
}

/// Asks every claim (the first `limit`) and scores the answers.
pub async fn run(
    cairn: &Cairn,
    dir: &Path,
    limit: Option<usize>,
    max_tokens: u32,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<AnswerEval> {
    let mut claims = load_claims(dir)?;
    claims.truncate(limit.unwrap_or(usize::MAX));
    let docs: HashSet<String> = claims
        .iter()
        .flat_map(|c| c.evidence.keys().cloned())
        .collect();
    let sentences = load_sentences(dir, &docs)?;
    let generator = match &cairn.generator {
        Some(g) => format!("{} ({})", g.backend().as_str(), g.model()),
        None => {
            return Err(Error::InvalidInput(
                "eval --answers needs a generator: pass --generator llama or openai".into(),
            ))
        }
    };
    let mut t = Tally::default();
    for (i, claim) in claims.iter().enumerate() {
        ask(cairn, claim, max_tokens, &sentences, &mut t).await?;
        progress(i + 1, claims.len());
    }
    Ok(report(t, &claims, generator, max_tokens))
}

async fn ask(
    cairn: &Cairn,
    claim: &Claim,
    max_tokens: u32,
    sentences: &HashMap<String, Vec<String>>,
    t: &mut Tally,
) -> Result<()> {
    let mut req = QueryRequest::new(claim.text.clone());
    req.closing = Some(closing(&claim.text));
    req.options.max_tokens = Some(max_tokens);
    req.options.temperature = Some(0.0);
    let r = cairn.answer(req, Vec::new()).await?;
    let predicted = if r.finish_reason == "no_context" {
        t.refused += 1;
        Some(Verdict::NotEnoughEvidence)
    } else {
        parse_verdict(r.answer.as_deref().unwrap_or(""))
    };
    t.pairs.push((claim.gold, predicted));
    let used: Vec<&Citation> = r.citations.iter().filter(|c| c.used).collect();
    if used.is_empty() && matches!(predicted, Some(Verdict::Supported | Verdict::Refuted)) {
        t.uncited += 1;
    }
    if !claim.evidence.is_empty() {
        let mut found = false;
        for c in used {
            t.cited += 1;
            if cites_evidence(cairn, c, claim, sentences).await? {
                t.cited_good += 1;
                found = true;
            }
        }
        t.recalled += usize::from(found);
    }
    if r.timing.ttft_ms > 0.0 {
        t.ttft.push(r.timing.ttft_ms);
        t.tps.extend(decode_tokens_per_s(&r.usage, &r.timing));
    }
    Ok(())
}

/// Whether a cited chunk is from an evidence document and holds one of its evidence sentences.
async fn cites_evidence(
    cairn: &Cairn,
    c: &Citation,
    claim: &Claim,
    sentences: &HashMap<String, Vec<String>>,
) -> Result<bool> {
    let (Some(wanted), Some(abstract_)) = (
        claim.evidence.get(&c.external_id),
        sentences.get(&c.external_id),
    ) else {
        return Ok(false);
    };
    let chunks = cairn.source_chunks(&c.source_id, 0, 500).await?;
    let Some(chunk) = chunks.chunks.iter().find(|x| x.chunk_id == c.chunk_id) else {
        return Ok(false);
    };
    Ok(wanted
        .iter()
        .filter_map(|i| abstract_.get(*i))
        .any(|s| holds_sentence(&chunk.text, s)))
}

fn report(mut t: Tally, claims: &[Claim], generator: String, max_tokens: u32) -> AnswerEval {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let r4 = round4;
    let with_evidence = claims.iter().filter(|c| !c.evidence.is_empty()).count();
    let correct = t.pairs.iter().filter(|(g, p)| Some(*g) == *p).count();
    let mut predicted = HashMap::new();
    for (_, p) in &t.pairs {
        let name = p.map_or("none", Verdict::as_str).to_string();
        *predicted.entry(name).or_insert(0) += 1;
    }
    t.ttft.sort_by(f64::total_cmp);
    t.tps.sort_by(f64::total_cmp);
    let p = |v: &[f64], q: f64| {
        if v.is_empty() {
            0.0
        } else {
            r4(percentile(v, q))
        }
    };
    AnswerEval {
        generator,
        claims: claims.len(),
        with_evidence,
        max_tokens,
        label_accuracy: r4(ratio(correct, t.pairs.len())),
        macro_f1: r4(macro_f1(&t.pairs)),
        predicted,
        citation_precision: r4(ratio(t.cited_good, t.cited)),
        citation_recall: r4(ratio(t.recalled, with_evidence)),
        uncited_verdicts: r4(ratio(t.uncited, t.pairs.len())),
        refused_by_relevance_gate: t.refused,
        ttft_ms_p50: p(&t.ttft, 0.5),
        ttft_ms_p95: p(&t.ttft, 0.95),
        decode_tokens_per_s_p50: p(&t.tps, 0.5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    #[test]
    fn the_first_verdict_stated_counts() {
        assert_eq!(
            parse_verdict("SUPPORTED. The passage [1] says so."),
            Some(Supported)
        );
        assert_eq!(parse_verdict("Refuted: [2] contradicts it"), Some(Refuted));
        assert_eq!(
            parse_verdict("Not enough evidence; nothing supports it."),
            Some(NotEnoughEvidence)
        );
        assert_eq!(
            parse_verdict("The claim is not supported."),
            Some(NotEnoughEvidence)
        );
        assert_eq!(parse_verdict("Cairns mark trails."), None);
    }

    #[test]
    fn gold_labels_follow_the_evidence() {
        let raw = |ev: &str| {
            claim(
                serde_json::from_str(&format!(r#"{{"id":1,"claim":"c","evidence":{ev}}}"#))
                    .unwrap(),
            )
        };
        assert_eq!(raw("{}").gold, NotEnoughEvidence);
        let c = raw(r#"{"7":[{"sentences":[0,2],"label":"SUPPORT"}]}"#);
        assert_eq!((c.gold, c.evidence["7"].clone()), (Supported, vec![0, 2]));
        assert_eq!(
            raw(r#"{"7":[{"sentences":[1],"label":"CONTRADICT"}]}"#).gold,
            Refuted
        );
    }

    #[test]
    fn a_chunk_holds_a_sentence_whole_or_split_at_its_edge() {
        let s = "Aspirin lowers the risk of a second heart attack in adults over fifty, in a randomised trial of 2,000 patients followed for five years.";
        assert!(holds_sentence(&format!("Title.  {s} More."), s));
        let (head, _) = s.split_at(70);
        assert!(holds_sentence(&format!("Earlier text. {head}"), s));
        assert!(!holds_sentence("Aspirin lowers the risk", s));
        assert!(!holds_sentence("anything", ""));
    }

    #[test]
    fn macro_f1_averages_the_three_labels() {
        let perfect = [
            (Supported, Some(Supported)),
            (Refuted, Some(Refuted)),
            (NotEnoughEvidence, Some(NotEnoughEvidence)),
        ];
        assert!((macro_f1(&perfect) - 1.0).abs() < 1e-12);
        // Everything "supported": F1 of supported = 2/(2+2) = 0.5, the others 0.
        let biased = [
            (Supported, Some(Supported)),
            (Refuted, Some(Supported)),
            (NotEnoughEvidence, Some(Supported)),
        ];
        assert!((macro_f1(&biased) - 0.5 / 3.0).abs() < 1e-12);
        assert_eq!(macro_f1(&[(Refuted, None)]), 0.0);
    }
}
