//! Concept extraction: the key phrases of a chunk, found with no model and no LLM call.
//!
//! A RAKE-style scorer (Rose et al., 2010): the text is cut into candidate phrases at stopwords,
//! punctuation and numbers; each word scores `degree / frequency` over the chunk's candidates,
//! a phrase scores the sum of its words, times `1 + ln(occurrences)`. The best
//! `per_chunk` phrases become the chunk's concepts. Corpus statistics (document frequency, for
//! idf and PMI) are applied later, by the graph, so extraction is deterministic and does not
//! depend on what was ingested before.
//!
//! Names are normalised so that surface variants meet: lowercase, punctuation and hyphens as
//! spaces, each word singularised by a few suffix rules (`variables` → `variable`,
//! `studies` → `study`). An acronym introduced as `long form (LF)` becomes an alias of the long
//! form, and a bare `LF` elsewhere in the same document is a mention of it.

use std::collections::{BTreeMap, HashMap};

/// One concept found in a chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Mention {
    /// Normalised key (the concept id).
    pub key: String,
    /// The form seen most in the text, lowercased (an alias when it differs from the name).
    pub surface: String,
    /// Other forms the chunk used (plural, hyphenated, an acronym it defines).
    pub other_surfaces: Vec<String>,
    pub score: f32,
}

impl Mention {
    /// Every surface form, the main one first, joined by `|` (how mentions store them; a
    /// surface never contains `|`).
    pub fn surfaces_joined(&self) -> String {
        std::iter::once(&self.surface)
            .chain(&self.other_surfaces)
            .cloned()
            .collect::<Vec<_>>()
            .join("|")
    }
}

const MAX_WORDS: usize = 4;

/// Words that end a candidate phrase: English function words plus the verbs and fillers of
/// academic and technical prose, which RAKE would otherwise glue into phrases.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "according",
    "across",
    "after",
    "again",
    "against",
    "al",
    "all",
    // Verbs of technical prose (RAKE has no part-of-speech tagger; without these, "estimation
    // addresses endogeneity" would be one phrase).
    "address",
    "addresses",
    "affect",
    "affects",
    "affected",
    "allow",
    "allows",
    "allowed",
    "appear",
    "appears",
    "assess",
    "assessed",
    "avoid",
    "avoids",
    "build",
    "builds",
    "built",
    "cause",
    "causes",
    "caused",
    "confirm",
    "confirmed",
    "confuse",
    "confuses",
    "consider",
    "considered",
    "contain",
    "contains",
    "contained",
    "contribute",
    "contributes",
    "define",
    "defined",
    "describe",
    "described",
    "determine",
    "determined",
    "develop",
    "developed",
    "enable",
    "enables",
    "enhance",
    "enhances",
    "enhanced",
    "establish",
    "established",
    "evaluate",
    "evaluated",
    "examine",
    "examined",
    "exist",
    "exists",
    "explain",
    "explained",
    "express",
    "expressed",
    "hold",
    "holds",
    "held",
    "identify",
    "identified",
    "improve",
    "improves",
    "improved",
    "induce",
    "induces",
    "induced",
    "inhibit",
    "inhibits",
    "inhibited",
    "investigate",
    "investigated",
    "involve",
    "involves",
    "involved",
    "mark",
    "marks",
    "measure",
    "measured",
    "mediate",
    "mediates",
    "mediated",
    "need",
    "needs",
    "needed",
    "obtain",
    "obtained",
    "occur",
    "occurs",
    "occurred",
    "perform",
    "performed",
    "predict",
    "predicted",
    "produce",
    "produces",
    "produced",
    "promote",
    "promotes",
    "promoted",
    "propose",
    "proposed",
    "regulate",
    "regulates",
    "regulated",
    "require",
    "requires",
    "required",
    "reveal",
    "revealed",
    "satisfy",
    "satisfies",
    "seem",
    "seems",
    "support",
    "supports",
    "supported",
    "tend",
    "tends",
    "almost",
    "along",
    "also",
    "although",
    "always",
    "among",
    "an",
    "and",
    "another",
    "any",
    "are",
    "around",
    "as",
    "at",
    "be",
    "became",
    "because",
    "become",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "done",
    "down",
    "due",
    "during",
    "each",
    "either",
    "else",
    "et",
    "etc",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "found",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "however",
    "i",
    "ie",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "less",
    "like",
    "made",
    "make",
    "many",
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "my",
    "myself",
    "neither",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "often",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "others",
    "otherwise",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "per",
    "perhaps",
    "rather",
    "same",
    "several",
    "shall",
    "she",
    "should",
    "show",
    "showed",
    "shown",
    "shows",
    "since",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "therefore",
    "these",
    "they",
    "this",
    "those",
    "though",
    "through",
    "thus",
    "to",
    "too",
    "toward",
    "towards",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "use",
    "used",
    "uses",
    "using",
    "very",
    "via",
    "was",
    "we",
    "well",
    "were",
    "what",
    "when",
    "where",
    "whereas",
    "whether",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "within",
    "without",
    "would",
    "yet",
    "you",
    "your",
    "yours",
    "yourself",
    "whereby",
    "upon",
    "onto",
    "including",
    "include",
    "includes",
    "included",
    "based",
    "given",
    "within",
    "across",
    "respectively",
    "previously",
    "recently",
    "currently",
    "significantly",
    "significant",
    "here",
    "new",
    "novel",
    "whose",
    "suggest",
    "suggests",
    "suggested",
    "indicate",
    "indicates",
    "indicated",
    "demonstrate",
    "demonstrates",
    "demonstrated",
    "report",
    "reported",
    "reports",
    "observed",
    "result",
    "results",
    "resulted",
    "lead",
    "leads",
    "led",
    "increase",
    "increased",
    "increases",
    "decrease",
    "decreased",
    "decreases",
    "reduced",
    "reduces",
    "associated",
    "compared",
    "remains",
    "remain",
    "however",
    "moreover",
    "furthermore",
    "addition",
    "important",
    "role",
    "whereas",
    "able",
    "cannot",
    "several",
    "various",
    "different",
    "specific",
    "specifically",
    "potential",
    "potentially",
    "likely",
    "high",
    "higher",
    "low",
    "lower",
    "large",
    "larger",
    "small",
    "smaller",
    "present",
    "provide",
    "provides",
    "provided",
    "thereby",
    "therein",
    "whereas",
    "yes",
    "must",
    "every",
];

/// Words that end in `s` but are not plurals.
const NOT_PLURAL: &[&str] = &[
    "aids", "alias", "analysis", "atlas", "bias", "biceps", "diabetes", "gas", "herpes", "lens",
    "measles", "mumps", "news", "physics", "rabies", "series", "species", "status", "virus",
    "corpus", "genus", "chaos", "ethos", "pathos", "thesis", "basis", "axis", "kudos",
];

fn is_stopword(w: &str) -> bool {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    SET.get_or_init(|| STOPWORDS.iter().copied().collect())
        .contains(w)
}

/// The singular of one lowercase word, by suffix rules (no dictionary).
pub fn singular(w: &str) -> String {
    let n = w.chars().count();
    if n <= 3 || NOT_PLURAL.contains(&w) || !w.is_ascii() {
        return w.to_string();
    }
    if let Some(stem) = w.strip_suffix("ies") {
        if n > 4 {
            return format!("{stem}y");
        }
    }
    for suf in ["sses", "xes", "ches", "shes", "zes"] {
        if w.ends_with(suf) {
            return w[..w.len() - 2].to_string();
        }
    }
    if w.ends_with("ss")
        || w.ends_with("us")
        || w.ends_with("is")
        || w.ends_with("ics")
        || w.ends_with("ous")
    {
        return w.to_string();
    }
    match w.strip_suffix('s') {
        // `1990s` stays whole: without its `s` it would be a number, which is no word.
        Some(stem) if stem.chars().any(char::is_alphabetic) => stem.to_string(),
        _ => w.to_string(),
    }
}

/// A token of the text: a word (lowercase, as written) or a phrase break.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word { lower: String, upper_acronym: bool },
    Break,
}

fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Tok>| {
        if word.is_empty() {
            return;
        }
        let w = std::mem::take(word);
        let letters = w.chars().filter(|c| c.is_alphabetic()).count();
        if letters == 0 {
            // Numbers and the like end a phrase.
            out.push(Tok::Break);
            return;
        }
        let upper_acronym = w.chars().count() >= 2
            && w.chars().count() <= 8
            && w.chars().filter(|c| c.is_uppercase()).count() >= 2
            && w.chars()
                .all(|c| c.is_uppercase() || c.is_ascii_digit() || c == '-');
        out.push(Tok::Word {
            lower: w.to_lowercase(),
            upper_acronym,
        });
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '\'' && !word.is_empty() {
            word.push(c);
        } else if c == '-' && !word.is_empty() && chars.peek().is_some_and(|n| n.is_alphanumeric())
        {
            // Hyphenated compounds are phrases of their parts: `cross-encoder` = `cross encoder`.
            flush(&mut word, &mut out);
        } else {
            flush(&mut word, &mut out);
            if !c.is_whitespace() {
                out.push(Tok::Break);
            }
        }
    }
    flush(&mut word, &mut out);
    // Possessives and stray apostrophes.
    for t in &mut out {
        if let Tok::Word { lower, .. } = t {
            if let Some(s) = lower.strip_suffix("'s") {
                *lower = s.to_string();
            }
            *lower = lower.trim_matches('\'').to_string();
        }
    }
    out
}

/// A word that can be part of a concept: two letters, or a letter and digits (`p53`).
fn usable(w: &str) -> bool {
    let letters = w.chars().filter(|c| c.is_alphabetic()).count();
    (letters >= 2 || letters == 1 && w.chars().count() >= 2) && !is_stopword(w)
}

/// The normalised key of a phrase, or `None` when nothing of it is usable.
pub fn normalise(phrase: &str) -> Option<String> {
    let words: Vec<String> = tokens(phrase)
        .into_iter()
        .filter_map(|t| match t {
            Tok::Word { lower, .. } if !lower.is_empty() => Some(singular(&lower)),
            _ => None,
        })
        .collect();
    if words.is_empty() {
        None
    } else {
        Some(words.join(" "))
    }
}

/// A display form of a key usable in URLs: words joined by `-`.
pub fn slug(key: &str) -> String {
    key.replace(' ', "-")
}

/// `long form (LF)` definitions in a text: acronym (lowercase) → long-form words (lowercase).
pub fn acronyms(text: &str) -> BTreeMap<String, Vec<String>> {
    let toks = tokens(text);
    let mut out = BTreeMap::new();
    // The pattern after tokenising: words…, Break("("), Word(ACR), Break(")").
    for i in 0..toks.len() {
        let Tok::Word {
            lower,
            upper_acronym: true,
        } = &toks[i]
        else {
            continue;
        };
        if i < 2 || toks.get(i + 1) != Some(&Tok::Break) || toks[i - 1] != Tok::Break {
            continue;
        }
        let letters: Vec<char> = lower.chars().filter(|c| c.is_alphabetic()).collect();
        let n = letters.len();
        if !(2..=MAX_WORDS + 1).contains(&n) {
            continue;
        }
        // The n words before the bracket must start with the acronym's letters.
        let mut words = Vec::new();
        let mut j = i - 1;
        while j > 0 && words.len() < n {
            j -= 1;
            match &toks[j] {
                Tok::Word { lower, .. } => words.push(lower.clone()),
                Tok::Break => break,
            }
        }
        words.reverse();
        if words.len() == n
            && words.iter().zip(&letters).all(|(w, l)| w.starts_with(*l))
            && words.iter().all(|w| !is_stopword(w))
        {
            out.insert(lower.clone(), words);
        }
    }
    out
}

/// The concepts of one chunk, best first, at most `per_chunk`. `acronyms` (from the whole
/// document) turns a bare acronym into a mention of its long form.
pub fn extract(
    text: &str,
    per_chunk: usize,
    acronyms: &BTreeMap<String, Vec<String>>,
) -> Vec<Mention> {
    if per_chunk == 0 {
        return Vec::new();
    }
    // Candidate phrases: maximal runs of usable words; a longer run is cut into pieces of
    // MAX_WORDS from its end (the head noun of an English noun phrase is last).
    let mut phrases: Vec<Vec<String>> = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut acronym_hits: Vec<String> = Vec::new();
    let end = |cur: &mut Vec<String>, phrases: &mut Vec<Vec<String>>| {
        let mut stop = cur.len();
        while stop > 0 {
            let start = stop.saturating_sub(MAX_WORDS);
            phrases.push(cur[start..stop].to_vec());
            stop = start;
        }
        cur.clear();
    };
    for t in tokens(text) {
        match t {
            Tok::Word {
                lower,
                upper_acronym,
            } => {
                if upper_acronym && acronyms.contains_key(&lower) {
                    end(&mut cur, &mut phrases);
                    acronym_hits.push(lower);
                } else if usable(&lower) {
                    cur.push(lower);
                } else {
                    end(&mut cur, &mut phrases);
                }
            }
            Tok::Break => end(&mut cur, &mut phrases),
        }
    }
    end(&mut cur, &mut phrases);
    // Single words must be long enough to be a term on their own.
    phrases.retain(|p| p.len() > 1 || p[0].chars().count() >= 4);
    for a in &acronym_hits {
        phrases.push(acronyms[a].clone());
    }
    // RAKE word scores over the candidates (normalised words).
    let norm: Vec<Vec<String>> = phrases
        .iter()
        .map(|p| p.iter().map(|w| singular(w)).collect())
        .collect();
    let mut freq: HashMap<&str, f32> = HashMap::new();
    let mut degree: HashMap<&str, f32> = HashMap::new();
    for p in &norm {
        for w in p {
            *freq.entry(w).or_default() += 1.0;
            *degree.entry(w).or_default() += p.len() as f32;
        }
    }
    // Per key: score, occurrences and the surface forms seen.
    let mut by_key: BTreeMap<String, (f32, u32, BTreeMap<String, u32>)> = BTreeMap::new();
    for (p, n) in phrases.iter().zip(&norm) {
        let key = n.join(" ");
        let score: f32 = n
            .iter()
            .map(|w| degree[w.as_str()] / freq[w.as_str()])
            .sum();
        let e = by_key.entry(key).or_insert((score, 0, BTreeMap::new()));
        e.1 += 1;
        *e.2.entry(p.join(" ")).or_default() += 1;
    }
    for (a, long) in &acronym_hits
        .iter()
        .map(|a| (a, &acronyms[a]))
        .collect::<Vec<_>>()
    {
        let key: Vec<String> = long.iter().map(|w| singular(w)).collect();
        if let Some(e) = by_key.get_mut(&key.join(" ")) {
            *e.2.entry((*a).clone()).or_default() += 1;
        }
    }
    let mut out: Vec<Mention> = by_key
        .into_iter()
        .map(|(key, (score, n, surfaces))| {
            // The most frequent surface form (ties: the first by name).
            let surface = surfaces
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(s, _)| s.clone())
                .unwrap_or_else(|| key.clone());
            let other_surfaces = surfaces.into_keys().filter(|s| *s != surface).collect();
            Mention {
                key,
                surface,
                other_surfaces,
                score: score * (1.0 + (n as f32).ln()),
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
    out.truncate(per_chunk);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plurals_become_singular() {
        assert_eq!(singular("variables"), "variable");
        assert_eq!(singular("studies"), "study");
        assert_eq!(singular("approaches"), "approach");
        assert_eq!(singular("analysis"), "analysis");
        assert_eq!(singular("diabetes"), "diabetes");
        assert_eq!(singular("genetics"), "genetics");
        assert_eq!(singular("class"), "class");
        assert_eq!(singular("gas"), "gas");
    }

    #[test]
    fn variants_share_a_key() {
        let k = normalise("Instrumental Variables").unwrap();
        assert_eq!(k, "instrumental variable");
        assert_eq!(
            normalise("instrumental-variable").as_deref(),
            Some(k.as_str())
        );
        assert_eq!(
            normalise("INSTRUMENTAL VARIABLES.").as_deref(),
            Some(k.as_str())
        );
        assert_eq!(
            normalise("cross-encoders").as_deref(),
            Some("cross encoder")
        );
        assert_eq!(normalise("  ...  "), None);
    }

    #[test]
    fn extracts_key_phrases_not_stopwords() {
        let text = "Instrumental variables estimation is used when treatment assignment is \
                    endogenous. Instrumental variables need a valid exclusion restriction.";
        let m = extract(text, 8, &BTreeMap::new());
        let keys: Vec<&str> = m.iter().map(|m| m.key.as_str()).collect();
        assert!(
            keys.contains(&"instrumental variables estimation")
                || keys.contains(&"instrumental variable estimation"),
            "{keys:?}"
        );
        assert!(keys.contains(&"valid exclusion restriction"), "{keys:?}");
        assert!(
            keys.iter().all(|k| !k.split(' ').any(is_stopword)),
            "{keys:?}"
        );
        assert!(m.len() <= 8);
        // Best first.
        for w in m.windows(2) {
            assert!(w[0].score >= w[1].score);
        }
    }

    #[test]
    fn acronyms_alias_their_long_form() {
        let doc = "We estimate effects with instrumental variables (IV). IV methods need care.";
        let acr = acronyms(doc);
        assert_eq!(
            acr.get("iv").map(|v| v.join(" ")).as_deref(),
            Some("instrumental variables")
        );
        let m = extract("IV methods need care. The IV is weak.", 8, &acr);
        assert!(m.iter().any(|m| m.key == "instrumental variable"), "{m:?}");
        let all = extract(doc, 8, &acr);
        let iv = all
            .iter()
            .find(|m| m.key == "instrumental variable")
            .unwrap();
        assert_eq!(iv.surface, "instrumental variables");
        assert!(iv.other_surfaces.contains(&"iv".to_string()), "{iv:?}");
        assert_eq!(iv.surfaces_joined(), "instrumental variables|iv");
    }

    #[test]
    fn a_plural_number_keeps_its_s() {
        assert_eq!(singular("1990s"), "1990s");
        assert_eq!(normalise("000s"), Some("000s".into()));
        assert_eq!(singular("cells"), "cell");
    }

    #[test]
    fn numbers_and_punctuation_break_phrases() {
        let m = extract(
            "tumour growth 2019 (mouse model); p53 pathway",
            10,
            &BTreeMap::new(),
        );
        let keys: Vec<&str> = m.iter().map(|m| m.key.as_str()).collect();
        assert!(keys.contains(&"tumour growth"), "{keys:?}");
        assert!(keys.contains(&"mouse model"), "{keys:?}");
        assert!(keys.contains(&"p53 pathway"), "{keys:?}");
        assert!(!keys.iter().any(|k| k.contains("2019")));
    }

    proptest! {
        #[test]
        fn extraction_is_deterministic_bounded_and_normalised(text in "[ a-zA-Z0-9,.()-]{0,300}", k in 0usize..12) {
            let a = extract(&text, k, &BTreeMap::new());
            prop_assert_eq!(&a, &extract(&text, k, &BTreeMap::new()));
            prop_assert!(a.len() <= k);
            let mut keys: Vec<&str> = a.iter().map(|m| m.key.as_str()).collect();
            keys.sort();
            keys.dedup();
            prop_assert_eq!(keys.len(), a.len(), "keys are unique");
            for m in &a {
                // A key is its own normal form, has at most MAX_WORDS words and no stopword.
                prop_assert_eq!(normalise(&m.key), Some(m.key.clone()));
                prop_assert!(m.key.split(' ').count() <= MAX_WORDS);
                prop_assert!(m.score.is_finite() && m.score > 0.0);
            }
        }

        #[test]
        fn normalising_twice_changes_nothing(s in "[ a-zA-Z-]{0,60}") {
            if let Some(k) = normalise(&s) {
                prop_assert_eq!(normalise(&k), Some(k.clone()));
            }
        }
    }
}
