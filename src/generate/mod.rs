//! Text generators behind one small trait: a local GGUF model through llama.cpp (feature
//! `llama`) and any OpenAI-compatible Chat Completions API.
//!
//! A generation is a channel of events produced by a task the generator owns (a blocking
//! thread for llama.cpp, an async task for HTTP). Dropping the receiver is how callers cancel:
//! the producer checks the channel before every token, so a client that disconnects stops the
//! model within one token. Each generation holds a slot (a semaphore permit) until it ends;
//! when every slot is taken, callers queue for `queue_timeout_ms` and then get
//! [`Error::Busy`] (503 + `Retry-After`).

#[cfg(feature = "llama")]
mod kernels;
#[cfg(feature = "llama")]
pub mod llama;
pub mod openai;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::config::{Backend, GeneratorConfig};
use crate::error::{Error, Result};

/// One chat message (`system`, `user` or `assistant`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// Sampling settings of one generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenParams {
    pub max_tokens: u32,
    /// 0 = greedy (reproducible).
    pub temperature: f32,
}

/// What a generation produces, in order: tokens, then exactly one `Done` (or an error).
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// A piece of text (one or more model tokens, always whole UTF-8 characters).
    Token(String),
    Done(GenUsage),
}

/// Token counts and the generator's own latency of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GenUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// From the start of the generation (slot held) to its first token.
    pub ttft_ms: f64,
    /// Why it stopped: `stop` (end of text), `length` (max_tokens) or `cancelled`.
    pub finish_reason: &'static str,
}

/// The receiving end of a generation. Drop it to cancel.
pub type Generation = mpsc::Receiver<Result<GenEvent>>;

/// Counters of one generator since start.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct GenStats {
    /// Generations running now.
    pub active: usize,
    /// Completion tokens produced since start.
    pub tokens_generated: u64,
    pub generations: u64,
}

/// The llama.cpp CPU kernels a local generator runs (see `kernels`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CpuKernels {
    /// The CPU variant loaded (`haswell`, `x64`, ...; `generator.cpu_variant`), or `static`
    /// in a build with one set of kernels linked in.
    pub variant: String,
    /// What the kernels were compiled with, as ggml names it (`AVX2`, `FMA`, `OPENMP`, ...).
    pub features: Vec<String>,
}

/// A text generator.
pub trait Generator: Send + Sync {
    fn backend(&self) -> Backend;
    /// The model name reported to clients (`/v1/models`, answers).
    fn model(&self) -> &str;
    /// The context window the prompt and the answer must fit in together.
    fn context_tokens(&self) -> usize;
    /// Tokens the prompt of `messages` takes once rendered: exact for llama.cpp (the model's
    /// own template and tokenizer), a conservative estimate for remote APIs.
    fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize>;
    /// Starts a generation once a slot is free.
    fn generate(
        &self,
        messages: Vec<ChatMessage>,
        params: GenParams,
    ) -> BoxFuture<'_, Result<Generation>>;
    fn stats(&self) -> GenStats;
    /// The CPU kernels of a local model; `None` for remote APIs.
    fn cpu_kernels(&self) -> Option<&CpuKernels> {
        None
    }
    /// Whether the generator can answer now (a loaded model; a reachable API).
    fn ready(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// Loads the configured generator; `None` for the retrieval-only `none` backend.
pub async fn load(cfg: &GeneratorConfig) -> Result<Option<Arc<dyn Generator>>> {
    match cfg.backend {
        Backend::None => Ok(None),
        Backend::Openai => Ok(Some(Arc::new(openai::OpenAiGenerator::new(cfg)?))),
        Backend::Llama => load_llama(cfg).await,
    }
}

#[cfg(feature = "llama")]
async fn load_llama(cfg: &GeneratorConfig) -> Result<Option<Arc<dyn Generator>>> {
    let cfg = cfg.clone();
    let g = tokio::task::spawn_blocking(move || llama::LlamaGenerator::load(&cfg))
        .await
        .map_err(Error::internal)??;
    Ok(Some(Arc::new(g)))
}

#[cfg(not(feature = "llama"))]
async fn load_llama(_: &GeneratorConfig) -> Result<Option<Arc<dyn Generator>>> {
    Err(Error::Unavailable {
        code: crate::error::Code::GeneratorUnavailable,
        message: "this cairn binary was built without the `llama` feature; rebuild with \
                  `cargo build --release --features llama`, or use `--generator openai`"
            .into(),
    })
}

/// Generation slots and counters shared by the backends.
pub struct Slots {
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    active: Arc<AtomicUsize>,
    tokens: Arc<AtomicU64>,
    generations: AtomicU64,
}

/// A held slot: counts as active until dropped, and counts the tokens produced under it.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    active: Arc<AtomicUsize>,
    tokens: Arc<AtomicU64>,
}

impl Slot {
    pub fn count_token(&self) {
        self.tokens.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cairn_generate_tokens_total").increment(1);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("cairn_generations_active").decrement(1.0);
    }
}

impl Slots {
    pub fn new(max_concurrent: usize, queue_timeout_ms: u64) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            queue_timeout: Duration::from_millis(queue_timeout_ms),
            active: Default::default(),
            tokens: Default::default(),
            generations: AtomicU64::new(0),
        }
    }

    /// Waits up to the queue timeout for a free slot.
    pub async fn acquire(&self) -> Result<Slot> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(Error::internal("generator closed")),
                    Err(_) => {
                        metrics::counter!("cairn_generate_rejected_total").increment(1);
                        return Err(Error::Busy { retry_after_s: 5 });
                    }
                }
            }
        };
        self.active.fetch_add(1, Ordering::SeqCst);
        self.generations.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("cairn_generations_active").increment(1.0);
        Ok(Slot {
            _permit: permit,
            active: self.active.clone(),
            tokens: self.tokens.clone(),
        })
    }

    pub fn stats(&self) -> GenStats {
        GenStats {
            active: self.active.load(Ordering::SeqCst),
            tokens_generated: self.tokens.load(Ordering::Relaxed),
            generations: self.generations.load(Ordering::Relaxed),
        }
    }
}

/// Splits a byte stream of model pieces into whole UTF-8 characters.
#[derive(Default)]
pub struct Utf8Pieces {
    pending: Vec<u8>,
}

impl Utf8Pieces {
    /// Appends bytes and returns the longest complete UTF-8 prefix (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Invalid bytes (not merely incomplete): replace them rather than stall forever.
            Err(_) => {
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return s;
            }
        };
        let rest = self.pending.split_off(valid);
        String::from_utf8(std::mem::replace(&mut self.pending, rest)).expect("validated prefix")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_pieces_hold_back_partial_characters() {
        let mut p = Utf8Pieces::default();
        let snow = "é☃".as_bytes();
        assert_eq!(p.push(&snow[..1]), "");
        assert_eq!(p.push(&snow[1..3]), "é");
        assert_eq!(p.push(&snow[3..]), "☃");
        assert_eq!(p.push(b"ok"), "ok");
        assert_eq!(p.push(&[0xff, b'a']), "\u{fffd}a");
    }

    #[tokio::test]
    async fn slots_queue_then_refuse_with_retry_after() {
        let slots = Slots::new(1, 20);
        let held = slots.acquire().await.unwrap();
        assert_eq!(slots.stats().active, 1);
        match slots.acquire().await {
            Err(Error::Busy { retry_after_s }) => assert!(retry_after_s > 0),
            other => panic!("expected busy, got {:?}", other.map(|_| ())),
        }
        drop(held);
        assert_eq!(slots.stats().active, 0);
        let _again = slots.acquire().await.expect("free after release");
        assert_eq!(slots.stats().generations, 2);
    }
}
