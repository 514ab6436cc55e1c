//! Retrieval-augmented answers: retrieve (hybrid search) → pack numbered context chunks into
//! the generator's context budget → generate → track `[n]` citations as they stream.
//!
//! The core hands out a stream of [`AnswerEvent`]s that wraps the generator's channel
//! directly, with no task in between: when the HTTP layer drops the stream (the client went
//! away) the generator sees its channel closed before its next token and stops. Everything
//! that can fail before the first event (validation, retrieval, a full generation queue)
//! fails the call itself, so HTTP can still answer with a status code; later failures arrive
//! as an `Error` event.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::error::{Code, Error, Result};
use crate::generate::{ChatMessage, GenEvent, GenParams, Generation, Generator};
use crate::search::{SearchHit, SearchRequest};
use crate::service::Cairn;

/// `POST /query`: every search option plus generation settings.
///
/// On the wire it is one flat object (`{"query", "limit", "mode", ..., "stream", "max_tokens"}`).
/// The search part is exactly [`SearchRequest`], so `/query` accepts every search option and
/// rejects unknown fields with the same message as `/search`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueryRequest {
    /// Retrieval; `limit` is the number of context chunks (default `answer.context_chunks`).
    #[serde(flatten)]
    pub search: SearchRequest,
    #[serde(flatten)]
    pub options: AnswerOptions,
    /// The user message's closing instruction in place of the default ("Answer the question …
    /// citing them like [1]"): what an evaluation asks for (`eval::answers`). Not on the wire.
    #[serde(skip)]
    pub closing: Option<String>,
}

/// The generation settings of a `/query`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerOptions {
    /// Stream server-sent events instead of one JSON response.
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// `none` for retrieval only, or the configured backend (`llama`, `openai`) or model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
}

impl AnswerOptions {
    const FIELDS: [&'static str; 4] = ["stream", "max_tokens", "temperature", "generator"];
}

impl<'de> Deserialize<'de> for QueryRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        // serde's `flatten` cannot be combined with `deny_unknown_fields`: split the object by
        // key instead, then let each half reject what it does not know.
        let mut all = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut opts = serde_json::Map::new();
        for k in AnswerOptions::FIELDS {
            if let Some(v) = all.remove(k) {
                opts.insert(k.to_string(), v);
            }
        }
        let search =
            serde_json::from_value(serde_json::Value::Object(all)).map_err(D::Error::custom)?;
        let options =
            serde_json::from_value(serde_json::Value::Object(opts)).map_err(D::Error::custom)?;
        Ok(Self {
            search,
            options,
            closing: None,
        })
    }
}

/// The wire schema is the union of [`SearchRequest`]'s and [`AnswerOptions`]' properties in one
/// object with no other field allowed (a derived `allOf` of two closed objects would admit
/// neither half's fields in the other).
impl utoipa::PartialSchema for QueryRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema};
        use utoipa::openapi::RefOr;
        let mut out = ObjectBuilder::new()
            .description(Some(
                "A question: every `/search` field (the `limit` is the number of context chunks) \
                 plus the generation settings.",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for part in [SearchRequest::schema(), AnswerOptions::schema()] {
            if let RefOr::T(Schema::Object(o)) = part {
                for (name, prop) in o.properties {
                    let required = o.required.contains(&name);
                    out = out.property(name.clone(), prop);
                    if required {
                        out = out.required(name);
                    }
                }
            }
        }
        RefOr::T(Schema::Object(out.build()))
    }
}

impl utoipa::ToSchema for QueryRequest {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <SearchRequest as utoipa::ToSchema>::schemas(schemas);
    }
}

impl QueryRequest {
    /// A question with default settings.
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            search: SearchRequest {
                query: query.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// A numbered context chunk the answer may cite as `[n]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Citation {
    pub n: usize,
    pub chunk_id: String,
    pub source_id: String,
    pub external_id: String,
    pub title: String,
    pub page: Option<u32>,
    pub section: Option<String>,
    pub snippet: String,
    pub score: f32,
    /// Whether the answer cites it.
    pub used: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueryUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Wall times of one answer, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueryTiming {
    /// Embedding the question (part of retrieval).
    pub embed_ms: f64,
    /// The whole search: embedding, both retrievers and fusion.
    pub retrieve_ms: f64,
    /// From the start of generation to its last token.
    pub generate_ms: f64,
    /// From the request to the first token (0 when nothing was generated).
    pub ttft_ms: f64,
    /// The generator's own time to first token (prompt processing), for comparison.
    pub generator_ttft_ms: f64,
    pub total_ms: f64,
}

/// Decode speed of an answer: tokens after the first over the time after the first token;
/// `None` when fewer than two tokens were generated.
pub fn decode_tokens_per_s(usage: &QueryUsage, timing: &QueryTiming) -> Option<f64> {
    let decode_s = (timing.generate_ms - timing.generator_ttft_ms) / 1e3;
    (usage.completion_tokens > 1 && decode_s > 0.0)
        .then(|| (usage.completion_tokens - 1) as f64 / decode_s)
}

/// The generator that answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct GeneratorInfo {
    pub backend: String,
    pub model: Option<String>,
}

/// The final summary of an answer (the `done` event, and the tail of the JSON response).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AnswerDone {
    /// `stop`, `length`, `no_context` (nothing relevant retrieved: the model was not asked) or
    /// `retrieval_only` (no generator).
    pub finish_reason: String,
    pub usage: QueryUsage,
    pub timing: QueryTiming,
    /// Citation numbers the answer used, ascending.
    pub used: Vec<usize>,
    pub generator: GeneratorInfo,
}

/// The non-streamed answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueryResponse {
    /// The answer text; `null` when retrieval-only.
    pub answer: Option<String>,
    pub citations: Vec<Citation>,
    pub finish_reason: String,
    pub usage: QueryUsage,
    pub timing: QueryTiming,
    pub generator: GeneratorInfo,
}

/// One step of a streamed answer.
#[derive(Debug)]
pub enum AnswerEvent {
    /// The numbered context, before generation starts.
    Sources(Vec<Citation>),
    Token(String),
    /// A `[n]` marker completed in the answer (first use of `n`).
    Citation(Citation),
    Done(AnswerDone),
    Error(Error),
}

/// One `/query` server-sent event on the wire: its event name and JSON data. The server
/// writes these (`http::query`) and `cairn ask --server` reads them, from this one type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum QueryEvent {
    Sources { citations: Vec<Citation> },
    Token { delta: String },
    Citation(Citation),
    Done(AnswerDone),
    Error(crate::service::ErrorBody),
}

impl QueryEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            QueryEvent::Sources { .. } => "sources",
            QueryEvent::Token { .. } => "token",
            QueryEvent::Citation(_) => "citation",
            QueryEvent::Done(_) => "done",
            QueryEvent::Error(_) => "error",
        }
    }

    /// The SSE data: the event's JSON.
    pub fn data(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v.get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_default()
    }

    /// Reads an event from its SSE name and data; `None` for a name this version does not
    /// know (a newer server's), `Some(Err)` for known names with data that does not fit.
    pub fn parse(name: &str, data: &str) -> Option<serde_json::Result<Self>> {
        const KNOWN: [&str; 5] = ["sources", "token", "citation", "done", "error"];
        if !KNOWN.contains(&name) {
            return None;
        }
        let data = match serde_json::from_str::<serde_json::Value>(data) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        Some(serde_json::from_value(
            serde_json::json!({"event": name, "data": data}),
        ))
    }
}

/// Most context chunks an answer may ask for (`/query`'s `limit`).
pub const MAX_ANSWER_CHUNKS: usize = 50;

/// The message used when nothing relevant was retrieved.
pub const NO_CONTEXT_ANSWER: &str =
    "I could not find anything relevant to this question in the knowledge base.";

/// Finds citation markers (`[1]`, `[2, 3]`, `[1][4]`) in streamed text.
#[derive(Debug, Default)]
pub struct CitationTracker {
    text: String,
    scanned: usize,
    seen: BTreeSet<usize>,
}

impl CitationTracker {
    /// Appends generated text; returns the citation numbers (1..=max) used for the first time.
    pub fn push(&mut self, delta: &str, max: usize) -> Vec<usize> {
        self.text.push_str(delta);
        let mut new = Vec::new();
        let bytes = self.text.as_bytes();
        let mut i = self.scanned;
        while i < bytes.len() {
            if bytes[i] != b'[' {
                i += 1;
                continue;
            }
            // Scan a candidate group: digits, commas and spaces up to `]`.
            let mut j = i + 1;
            while j < bytes.len()
                && (bytes[j].is_ascii_digit() || bytes[j] == b',' || bytes[j] == b' ')
            {
                j += 1;
            }
            if j == bytes.len() {
                // Possibly incomplete (`[1` so far): look again when more text arrives,
                // unless it is too long to be a marker.
                if j - i > 32 {
                    i = j;
                    continue;
                }
                break;
            }
            if bytes[j] == b']' {
                for part in self.text[i + 1..j].split(',') {
                    if let Ok(n) = part.trim().parse::<usize>() {
                        if (1..=max).contains(&n) && self.seen.insert(n) {
                            new.push(n);
                        }
                    }
                }
                i = j + 1;
            } else {
                i += 1;
            }
        }
        self.scanned = i;
        new
    }

    pub fn used(&self) -> Vec<usize> {
        self.seen.iter().copied().collect()
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// What `prepare` decided.
struct Prepared {
    citations: Vec<Citation>,
    started: Instant,
    embed_ms: f64,
    retrieve_ms: f64,
    generator: GeneratorInfo,
    plan: Plan,
}

enum Plan {
    /// No generator: sources only.
    RetrievalOnly,
    /// Nothing relevant: say so, do not ask the model.
    NoContext,
    Generate {
        generation: Generation,
        prompt_tokens: usize,
        started: Instant,
        /// The generation's span (OpenTelemetry GenAI attributes), open until the stream ends.
        span: tracing::Span,
    },
}

impl Cairn {
    /// The generator a request asks for, by backend or model name: `None` = retrieval only.
    /// The one resolution `/query` and the OpenAI-compatible route share.
    pub fn pick_generator(&self, name: Option<&str>) -> Result<Option<Arc<dyn Generator>>> {
        let configured = self.generator.clone();
        match name {
            None => Ok(configured),
            Some("none") => Ok(None),
            Some(n) => match configured {
                Some(g) if n == g.backend().as_str() || n == g.model() => Ok(Some(g)),
                Some(g) => Err(Error::Unavailable {
                    code: Code::GeneratorUnavailable,
                    message: format!(
                        "generator `{n}` is not configured; this server answers with `{}` ({}) or `none`",
                        g.backend().as_str(),
                        g.model()
                    ),
                }),
                None => Err(Error::Unavailable {
                    code: Code::GeneratorUnavailable,
                    message: format!(
                        "generator `{n}` is not configured; this server has no generator \
                         (start it with --generator llama or --generator openai), only `none`"
                    ),
                }),
            },
        }
    }

    /// A streamed answer. Fails before the first event on bad input, retrieval errors or a
    /// full generation queue (503); later failures are an `Error` event.
    pub async fn answer_stream(
        &self,
        req: QueryRequest,
        history: Vec<ChatMessage>,
    ) -> Result<BoxStream<'static, AnswerEvent>> {
        let prepared = self.prepare_answer(req, history).await?;
        Ok(answer_events(prepared))
    }

    /// A complete answer (the stream, collected).
    pub async fn answer(
        &self,
        req: QueryRequest,
        history: Vec<ChatMessage>,
    ) -> Result<QueryResponse> {
        let mut stream = self.answer_stream(req, history).await?;
        let mut citations = Vec::new();
        let mut text = String::new();
        while let Some(ev) = stream.next().await {
            match ev {
                AnswerEvent::Sources(c) => citations = c,
                AnswerEvent::Token(t) => text.push_str(&t),
                AnswerEvent::Citation(_) => {}
                AnswerEvent::Error(e) => return Err(e),
                AnswerEvent::Done(done) => {
                    for c in &mut citations {
                        c.used = done.used.contains(&c.n);
                    }
                    let answer = (done.finish_reason != "retrieval_only").then_some(text);
                    return Ok(QueryResponse {
                        answer,
                        citations,
                        finish_reason: done.finish_reason,
                        usage: done.usage,
                        timing: done.timing,
                        generator: done.generator,
                    });
                }
            }
        }
        Err(Error::internal("answer stream ended without a done event"))
    }

    async fn prepare_answer(
        &self,
        req: QueryRequest,
        history: Vec<ChatMessage>,
    ) -> Result<Prepared> {
        let started = Instant::now();
        let QueryRequest {
            mut search,
            options,
            closing,
        } = req;
        let gen = self.pick_generator(options.generator.as_deref())?;
        let params = self.gen_params(&options, gen.as_ref())?;
        // Scores are needed for the relevance gate whether or not the caller asked to see them.
        search.limit = Some(search.limit.unwrap_or(self.config.answer.context_chunks));
        search.explain = true;
        if search.offset.is_some_and(|o| o > 0) {
            return Err(Error::InvalidInput(
                "offset pages /search results; an answer reads the top of the ranking".into(),
            ));
        }
        // Context is ranked chunks unless the request groups (then each group's chunks, in
        // group order): `search.group_by` shapes what /search shows, not what the model reads.
        search.group_by.get_or_insert(crate::search::GroupBy::None);
        let question = search.query.trim().to_string();
        // The search plan refuses 0 and anything over the cap with the right bounds.
        let found = self.search_with_max(search, MAX_ANSWER_CHUNKS).await?;
        let embed_ms = found.timing.embed_ms;
        let retrieve_ms = found.took_ms;
        let generator = GeneratorInfo {
            backend: gen
                .as_ref()
                .map_or("none", |g| g.backend().as_str())
                .to_string(),
            model: gen.as_ref().map(|g| g.model().to_string()),
        };
        let a = &self.config.answer;
        let relevant = is_relevant(&found.results, a.min_similarity, a.min_similarity_keyword);
        let mut hits = match found.groups {
            Some(groups) => groups
                .into_iter()
                .flat_map(|g| g.hits)
                .take(MAX_ANSWER_CHUNKS)
                .collect(),
            None => found.results,
        };
        let Some(gen) = gen else {
            return Ok(Prepared {
                citations: number(&hits),
                started,
                embed_ms,
                retrieve_ms,
                generator,
                plan: Plan::RetrievalOnly,
            });
        };
        if !relevant {
            return Ok(Prepared {
                citations: Vec::new(),
                started,
                embed_ms,
                retrieve_ms,
                generator,
                plan: Plan::NoContext,
            });
        }
        let plan = self
            .start_generation(&gen, (&question, closing), &mut hits, history, params)
            .await?;
        Ok(Prepared {
            citations: number(&hits),
            started,
            embed_ms,
            retrieve_ms,
            generator,
            plan,
        })
    }

    /// The request's generation settings, else the configured ones, checked (and checked to
    /// leave room for a prompt in the generator's context).
    fn gen_params(
        &self,
        options: &AnswerOptions,
        gen: Option<&Arc<dyn Generator>>,
    ) -> Result<GenParams> {
        let gcfg = &self.config.generator;
        let max_tokens = options.max_tokens.unwrap_or(gcfg.max_tokens);
        let temperature = options.temperature.unwrap_or(gcfg.temperature);
        if max_tokens == 0 || max_tokens > 8192 {
            return Err(Error::InvalidInput(
                "max_tokens must be between 1 and 8192".into(),
            ));
        }
        if !temperature.is_finite() || !(0.0..=2.0).contains(&temperature) {
            return Err(Error::InvalidInput(
                "temperature must be between 0 and 2".into(),
            ));
        }
        if let Some(g) = gen {
            // Leave room for the instructions, the question and at least some context.
            if max_tokens as usize + 128 > g.context_tokens() {
                return Err(Error::InvalidInput(format!(
                    "max_tokens must leave room for the prompt: at most {} with this model's context of {} tokens",
                    g.context_tokens().saturating_sub(128),
                    g.context_tokens()
                )));
            }
        }
        Ok(GenParams {
            max_tokens,
            temperature,
        })
    }

    /// Packs the best hits that fit the generator's context (`hits` keeps those) into the
    /// prompt, and starts the generation.
    async fn start_generation(
        &self,
        gen: &Arc<dyn Generator>,
        (question, closing): (&str, Option<String>),
        hits: &mut Vec<SearchHit>,
        history: Vec<ChatMessage>,
        params: GenParams,
    ) -> Result<Plan> {
        let (max_tokens, temperature) = (params.max_tokens, params.temperature);
        let budget = gen.context_tokens() - max_tokens as usize;
        let instructions = self.config.answer.system_prompt.clone();
        let (messages, prompt_tokens, _kept) = {
            let g = gen.clone();
            let build = move |hits: &[SearchHit], history: &[ChatMessage]| {
                let mut m = vec![ChatMessage::new("system", instructions.clone())];
                m.extend(history.iter().cloned());
                let user = user_prompt(hits, question, closing.as_deref());
                m.push(ChatMessage::new("user", user));
                let n = g.prompt_tokens(&m)?;
                Ok::<_, Error>((m, n))
            };
            pack(hits, history, budget, build)?
        };
        tracing::debug!(chunks = hits.len(), prompt_tokens, budget, "prompt packed");
        let started = Instant::now();
        let span =
            crate::telemetry::generation_span(gen.backend(), gen.model(), max_tokens, temperature);
        let generation = gen
            .generate(messages, params)
            .instrument(span.clone())
            .await
            .inspect_err(|e| crate::telemetry::record_generation_error(&span, e))?;
        Ok(Plan::Generate {
            generation,
            prompt_tokens,
            started,
            span,
        })
    }
}

/// Whether retrieval found anything worth answering from: the best vector similarity reaches
/// `min_similarity`, or reaches the lower `min_with_keyword` while the top hit also matches
/// the question's words (BM25) — exact terms like "BM25" embed poorly with small models.
/// Keyword-only searches: any hit.
fn is_relevant(hits: &[SearchHit], min_similarity: f32, min_with_keyword: f32) -> bool {
    let best = hits
        .iter()
        .filter_map(|h| h.scores.as_ref()?.vector_distance)
        .map(|d| 1.0 - d)
        .fold(f32::NEG_INFINITY, f32::max);
    if !best.is_finite() {
        return !hits.is_empty();
    }
    let top_matches_words = hits
        .first()
        .and_then(|h| h.scores.as_ref())
        .is_some_and(|s| s.bm25_rank.is_some());
    best >= min_similarity || (top_matches_words && best >= min_with_keyword)
}

fn number(hits: &[SearchHit]) -> Vec<Citation> {
    hits.iter()
        .enumerate()
        .map(|(i, h)| Citation {
            n: i + 1,
            chunk_id: h.chunk_id.clone(),
            source_id: h.source_id.clone(),
            external_id: h.external_id.clone(),
            title: h.title.clone(),
            page: h.page,
            section: h.section.clone(),
            snippet: h.snippet.clone(),
            score: h.score,
            used: false,
        })
        .collect()
}

/// The user message: the question, the numbered passages, and the question again with the
/// citation rule (small models lose a question that only comes before long context), or the
/// caller's own closing instruction.
pub fn user_prompt(hits: &[SearchHit], question: &str, closing: Option<&str>) -> String {
    let mut s = format!("Question: {question}\n\nPassages:\n\n");
    for (i, h) in hits.iter().enumerate() {
        s.push_str(&format!("[{}] {}", i + 1, h.title));
        if let Some(sec) = &h.section {
            s.push_str(&format!(" — {sec}"));
        }
        if let Some(p) = h.page {
            s.push_str(&format!(" (page {p})"));
        }
        s.push('\n');
        s.push_str(h.text.trim());
        s.push_str("\n\n");
    }
    match closing {
        Some(c) => s.push_str(c),
        None => s.push_str(&format!(
            "Answer the question \"{question}\" in a few sentences, using only these passages and citing them like [1]."
        )),
    }
    s
}

type Built = (Vec<ChatMessage>, usize);

/// Fits the prompt into `budget` tokens: drops the oldest history first, then the
/// lowest-ranked chunks, and as a last resort shortens the single remaining chunk.
/// Returns the messages, their token count and how many chunks were kept.
fn pack(
    hits: &mut Vec<SearchHit>,
    mut history: Vec<ChatMessage>,
    budget: usize,
    build: impl Fn(&[SearchHit], &[ChatMessage]) -> Result<Built>,
) -> Result<(Vec<ChatMessage>, usize, usize)> {
    loop {
        let (m, n) = build(hits, &history)?;
        if n <= budget {
            return Ok((m, n, hits.len()));
        }
        if !history.is_empty() {
            history.remove(0);
        } else if hits.len() > 1 {
            // Find the largest prefix that fits: adding chunks only grows the prompt.
            let mut lo = 1;
            let mut hi = hits.len() - 1;
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if build(&hits[..mid], &history)?.1 <= budget {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            hits.truncate(lo);
        } else if let Some(h) = hits.first_mut() {
            let chars = h.text.chars().count();
            if chars < 64 {
                return Err(Error::InvalidInput(
                    "the question is too long for the model's context".into(),
                ));
            }
            h.text = h.text.chars().take(chars * 2 / 3).collect();
        } else {
            return Err(Error::InvalidInput(
                "the question is too long for the model's context".into(),
            ));
        }
    }
}

struct StreamState {
    pending: VecDeque<AnswerEvent>,
    citations: Vec<Citation>,
    tracker: CitationTracker,
    generation: Option<Generation>,
    prompt_tokens: usize,
    gen_started: Instant,
    started: Instant,
    embed_ms: f64,
    retrieve_ms: f64,
    ttft_ms: f64,
    generator: GeneratorInfo,
    finished: bool,
    /// The caller's span (the request), for the summary line logged when the stream ends.
    span: tracing::Span,
    /// The generation's span; `Span::none()` when the model is not called.
    gen_span: tracing::Span,
}

impl StreamState {
    fn done(&self, finish_reason: &str, usage: QueryUsage, generator_ttft_ms: f64) -> AnswerEvent {
        let generate_ms = if self.generation.is_some() {
            self.gen_started.elapsed().as_secs_f64() * 1e3
        } else {
            0.0
        };
        let timing = QueryTiming {
            embed_ms: self.embed_ms,
            retrieve_ms: self.retrieve_ms,
            generate_ms,
            ttft_ms: self.ttft_ms,
            generator_ttft_ms,
            total_ms: self.started.elapsed().as_secs_f64() * 1e3,
        };
        for (stage, ms) in [
            ("retrieve", timing.retrieve_ms),
            ("generate", timing.generate_ms),
            ("ttft", timing.ttft_ms),
        ] {
            if ms > 0.0 {
                metrics::histogram!("cairn_query_stage_seconds", "stage" => stage).record(ms / 1e3);
            }
        }
        crate::telemetry::record_generation_usage(
            &self.gen_span,
            usage.prompt_tokens,
            usage.completion_tokens,
            finish_reason,
        );
        self.span.in_scope(|| {
            tracing::info!(
                finish_reason,
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                embed_ms = timing.embed_ms,
                retrieve_ms = timing.retrieve_ms,
                generate_ms = timing.generate_ms,
                ttft_ms = timing.ttft_ms,
                total_ms = timing.total_ms,
                "answer finished"
            )
        });
        AnswerEvent::Done(AnswerDone {
            finish_reason: finish_reason.to_string(),
            usage,
            timing,
            used: self.tracker.used(),
            generator: self.generator.clone(),
        })
    }

    async fn next(&mut self) -> Option<AnswerEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.finished {
                return None;
            }
            let Some(gen) = self.generation.as_mut() else {
                self.finished = true;
                return None;
            };
            match gen.recv().await {
                Some(Ok(GenEvent::Token(t))) => {
                    if self.ttft_ms == 0.0 {
                        self.ttft_ms = self.started.elapsed().as_secs_f64() * 1e3;
                    }
                    let new = self.tracker.push(&t, self.citations.len());
                    self.pending.push_back(AnswerEvent::Token(t));
                    for n in new {
                        let mut c = self.citations[n - 1].clone();
                        c.used = true;
                        self.pending.push_back(AnswerEvent::Citation(c));
                    }
                }
                Some(Ok(GenEvent::Done(u))) => {
                    let usage = QueryUsage {
                        prompt_tokens: if u.prompt_tokens > 0 {
                            u.prompt_tokens
                        } else {
                            self.prompt_tokens
                        },
                        completion_tokens: u.completion_tokens,
                    };
                    let done = self.done(u.finish_reason, usage, u.ttft_ms);
                    self.pending.push_back(done);
                    self.finished = true;
                }
                Some(Err(e)) => {
                    crate::telemetry::record_generation_error(&self.gen_span, &e);
                    self.pending.push_back(AnswerEvent::Error(e));
                    self.finished = true;
                }
                None => {
                    self.pending.push_back(AnswerEvent::Error(Error::internal(
                        "the generator stopped without finishing",
                    )));
                    self.finished = true;
                }
            }
        }
    }
}

fn answer_events(p: Prepared) -> BoxStream<'static, AnswerEvent> {
    let mut st = StreamState {
        pending: VecDeque::new(),
        citations: p.citations.clone(),
        tracker: CitationTracker::default(),
        generation: None,
        prompt_tokens: 0,
        gen_started: Instant::now(),
        started: p.started,
        embed_ms: p.embed_ms,
        retrieve_ms: p.retrieve_ms,
        ttft_ms: 0.0,
        generator: p.generator,
        finished: false,
        span: tracing::Span::current(),
        gen_span: tracing::Span::none(),
    };
    st.pending.push_back(AnswerEvent::Sources(p.citations));
    match p.plan {
        Plan::RetrievalOnly => {
            let done = st.done("retrieval_only", QueryUsage::default(), 0.0);
            st.pending.push_back(done);
            st.finished = true;
        }
        Plan::NoContext => {
            st.pending
                .push_back(AnswerEvent::Token(NO_CONTEXT_ANSWER.to_string()));
            let done = st.done("no_context", QueryUsage::default(), 0.0);
            st.pending.push_back(done);
            st.finished = true;
        }
        Plan::Generate {
            generation,
            prompt_tokens,
            started,
            span,
        } => {
            st.gen_span = span;
            st.generation = Some(generation);
            st.prompt_tokens = prompt_tokens;
            st.gen_started = started;
        }
    }
    futures::stream::unfold(st, |mut st| async move {
        let ev = st.next().await?;
        Some((ev, st))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_events_round_trip_through_their_sse_form() {
        let c = Citation {
            n: 1,
            chunk_id: "c".into(),
            source_id: "s".into(),
            external_id: "e".into(),
            title: "t".into(),
            page: Some(2),
            section: None,
            snippet: "x".into(),
            score: 0.5,
            used: true,
        };
        let events = [
            QueryEvent::Sources {
                citations: vec![c.clone()],
            },
            QueryEvent::Token { delta: "hi".into() },
            QueryEvent::Citation(c),
            QueryEvent::Error(crate::service::ErrorBody {
                code: "timeout".into(),
                message: "m".into(),
                suggestions: None,
            }),
        ];
        for ev in events {
            let data = ev.data().to_string();
            let back = QueryEvent::parse(ev.name(), &data).unwrap().unwrap();
            assert_eq!(back, ev);
        }
        assert_eq!(
            QueryEvent::Token { delta: "d".into() }.data(),
            serde_json::json!({"delta": "d"})
        );
        assert!(QueryEvent::parse("later_event", "{}").is_none());
        assert!(QueryEvent::parse("token", "{\"nope\": 1}")
            .unwrap()
            .is_err());
    }

    #[test]
    fn citations_are_found_across_token_boundaries() {
        let mut t = CitationTracker::default();
        assert_eq!(t.push("Cairns mark trails [", 3), Vec::<usize>::new());
        assert_eq!(t.push("1", 3), Vec::<usize>::new());
        assert_eq!(t.push("] and [2, 3", 3), vec![1]);
        assert_eq!(t.push("][1][9] [x] [", 3), vec![2, 3]);
        assert_eq!(t.push("3]", 3), Vec::<usize>::new(), "already seen");
        assert_eq!(t.used(), vec![1, 2, 3]);
        assert_eq!(t.text(), "Cairns mark trails [1] and [2, 3][1][9] [x] [3]");
    }

    fn hit(i: usize, text: &str) -> SearchHit {
        SearchHit {
            chunk_id: format!("c{i}"),
            source_id: "s".into(),
            external_id: "e".into(),
            title: "t".into(),
            text: text.into(),
            snippet: String::new(),
            score: 1.0,
            page: None,
            section: None,
            ordinal: i as u32,
            char_start: 0,
            char_end: 0,
            scores: None,
        }
    }

    #[test]
    fn packing_drops_history_then_lowest_ranked_then_shortens() {
        // A "tokenizer" that counts bytes.
        let build = |h: &[SearchHit], hist: &[ChatMessage]| {
            let m: Vec<ChatMessage> = hist
                .iter()
                .cloned()
                .chain([ChatMessage::new("user", user_prompt(h, "q", None))])
                .collect();
            let n = m.iter().map(|m| m.content.len()).sum();
            Ok((m, n))
        };
        let mut hits: Vec<SearchHit> = (0..5).map(|i| hit(i, &"x".repeat(100))).collect();
        let history = vec![ChatMessage::new("user", "y".repeat(500))];
        let (m, n, kept) = pack(&mut hits, history.clone(), 450, build).unwrap();
        assert!(n <= 450);
        assert_eq!(m.len(), 1, "history dropped first");
        assert!((1..5).contains(&kept));
        assert_eq!(hits.len(), kept);
        assert_eq!(hits[0].chunk_id, "c0", "the best chunks stay");
        // One more chunk would not fit: the prefix is the largest that does.
        let mut all: Vec<SearchHit> = (0..5).map(|i| hit(i, &"x".repeat(100))).collect();
        all.truncate(kept + 1);
        assert!(build(&all, &[]).unwrap().1 > 450);

        let mut one = vec![hit(0, &"z".repeat(2000))];
        let (_, n, kept) = pack(&mut one, Vec::new(), 600, build).unwrap();
        assert!(n <= 600 && kept == 1 && one[0].text.len() < 2000);
        assert!(pack(&mut vec![hit(0, "z")], Vec::new(), 10, build).is_err());
    }

    #[test]
    fn relevance_needs_similarity_or_matching_words() {
        let scored = |d: Option<f32>, bm25_rank: Option<usize>| {
            let mut h = hit(0, "x");
            h.scores = Some(crate::search::Explain {
                vector_distance: d,
                bm25_rank,
                ..Default::default()
            });
            h
        };
        assert!(is_relevant(&[scored(Some(0.7), None)], 0.25, 0.15));
        assert!(!is_relevant(&[scored(Some(0.8), None)], 0.25, 0.15));
        assert!(is_relevant(&[scored(Some(0.8), Some(1))], 0.25, 0.15));
        assert!(!is_relevant(&[scored(Some(0.9), Some(1))], 0.25, 0.15));
        assert!(!is_relevant(&[], 0.25, 0.15));
        assert!(
            is_relevant(&[scored(None, Some(1))], 0.25, 0.15),
            "keyword mode"
        );
    }
}
