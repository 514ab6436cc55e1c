//! `[generator]` and `[answer]`: which model answers and how the prompt is built, and the
//! [`Secret`] type that keeps API keys and DSNs out of logs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A secret string: never printed by `Debug`/`Display`, serialised as `"***"`.
#[derive(Clone, PartialEq, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Figment layers the defaults through serde; an unset secret stays empty, a set one
        // must never round-trip into logs or `config` dumps.
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// Which text generator answers `/query` and `/v1/chat/completions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Retrieval-only answers: the sources, no text. Always available.
    #[default]
    None,
    /// A local GGUF model through llama.cpp (cargo feature `llama`).
    Llama,
    /// Any OpenAI-compatible Chat Completions endpoint.
    Openai,
}

impl Backend {
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::Llama => "llama",
            Backend::Openai => "openai",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Backend::None),
            "llama" => Ok(Backend::Llama),
            "openai" => Ok(Backend::Openai),
            other => Err(format!("unknown generator `{other}` (none, llama, openai)")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// `none` (retrieval only), `llama` (local GGUF) or `openai` (remote API).
    pub backend: Backend,
    /// llama: path of the GGUF file (default: the first `*.gguf` under `models/llm/`).
    /// openai: the model name sent upstream.
    pub model: Option<String>,
    /// openai: base URL of the API, up to and including `/v1`.
    pub base_url: String,
    /// openai: API key. Also read from `CAIRN_OPENAI_API_KEY` or `api_key_file`. Never logged.
    pub api_key: Secret,
    /// openai: file holding the API key (e.g. a mounted secret).
    pub api_key_file: Option<PathBuf>,
    /// Context window in tokens. llama: the context allocated (capped at the model's training
    /// context). openai: the budget Cairn packs the prompt into.
    pub context_tokens: usize,
    /// llama: decode threads (0 = number of cores).
    pub threads: usize,
    /// llama: layers offloaded to the GPU (needs the `cuda` feature; 0 = CPU only).
    pub gpu_layers: u32,
    /// llama: which of llama.cpp's CPU kernels to load in a `llama-cpu-variants` build: `auto`
    /// (the best this CPU runs), or a variant (`x64`, `sse42`, `haswell`, `skylakex`, ...; see
    /// `cairn stats`). A static build has one set, compiled in.
    pub cpu_variant: String,
    /// Generations running at once; more wait in a queue.
    pub max_concurrent: usize,
    /// How long a generation waits for a slot before the caller gets 503 + Retry-After.
    pub queue_timeout_ms: u64,
    /// Default `max_tokens` of an answer.
    pub max_tokens: u32,
    /// Default sampling temperature (0 = greedy, reproducible).
    pub temperature: f32,
    /// openai: seconds to establish the connection.
    pub connect_timeout_s: u64,
    /// openai: seconds without a byte from upstream before the generation fails.
    pub read_timeout_s: u64,
    /// openai: retries on 429/5xx/connection errors before the first token.
    pub retries: u32,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            backend: Backend::None,
            model: None,
            base_url: "https://api.openai.com/v1".into(),
            api_key: Secret::default(),
            api_key_file: None,
            context_tokens: 4096,
            threads: 0,
            gpu_layers: 0,
            cpu_variant: "auto".into(),
            max_concurrent: 1,
            queue_timeout_ms: 30_000,
            max_tokens: 512,
            temperature: 0.0,
            connect_timeout_s: 10,
            read_timeout_s: 60,
            retries: 2,
        }
    }
}

/// How `/query` turns search results into a prompt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnswerConfig {
    /// Chunks retrieved for an answer (before the context budget drops the lowest-ranked).
    pub context_chunks: usize,
    /// Cosine similarity the best retrieved chunk must reach for the question to be answered
    /// at all; below it Cairn says it found nothing relevant instead of asking the model.
    pub min_similarity: f32,
    /// A lower bar that is enough when the top chunk also matches the question's words (BM25).
    pub min_similarity_keyword: f32,
    /// Seconds between SSE keep-alive comments while the model is silent.
    pub keepalive_s: u64,
    /// Instructions given to the model before the numbered context.
    pub system_prompt: String,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        Self {
            context_chunks: 8,
            min_similarity: 0.25,
            min_similarity_keyword: 0.15,
            keepalive_s: 10,
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
        }
    }
}

pub const DEFAULT_SYSTEM_PROMPT: &str = "You answer questions using only the numbered context passages you are given. \
Cite the passages that support each sentence with their numbers in square brackets, like [1] or [2]. \
If the passages do not contain the answer, say that the knowledge base does not contain it. Be concise.";
