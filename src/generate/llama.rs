//! Local generation with llama.cpp (`llama-cpp-2`): a GGUF model loaded once at start, its
//! chat template read from the GGUF metadata, decoding on a blocking thread.
//!
//! llama.cpp's backend can be initialised once per process, so it lives in a `OnceLock`, with
//! the CPU kernels chosen for it (`kernels`);
//! contexts are created per generation (cheap next to decoding) under a lock, because creating
//! two contexts of one model at the same time is not sound in llama.cpp.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use futures::future::BoxFuture;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use tokio::sync::mpsc;

use super::{
    kernels, ChatMessage, CpuKernels, GenEvent, GenParams, GenStats, GenUsage, Generation,
    Generator, Slot, Slots, Utf8Pieces,
};
use crate::config::{Backend, GeneratorConfig};
use crate::error::{Code, Error, Result};

type Loaded = (LlamaBackend, CpuKernels);
static BACKEND: OnceLock<Loaded> = OnceLock::new();
/// Serialises the backend's initialisation; a failed one is not kept, so a later load with a
/// corrected `cpu_variant` can succeed.
static BACKEND_INIT: Mutex<()> = Mutex::new(());
/// Serialises context creation (see the module docs).
static CONTEXT_LOCK: Mutex<()> = Mutex::new(());

/// The process's llama.cpp backend. The first load chooses the CPU kernels (`cpu_variant`);
/// they stay for the life of the process, so a later load naming others is refused.
fn backend(cpu_variant: &str) -> Result<&'static Loaded> {
    let unavailable = |message: String| Error::Unavailable {
        code: Code::GeneratorUnavailable,
        message: format!("llama.cpp: {message}"),
    };
    let loaded = |l: &'static Loaded| match cpu_variant {
        "auto" => Ok(l),
        v if v == l.1.variant => Ok(l),
        v => Err(unavailable(format!(
            "generator.cpu_variant = {v:?}, but this process already runs the {} kernels",
            l.1.variant
        ))),
    };
    if let Some(l) = BACKEND.get() {
        return loaded(l);
    }
    let _init = BACKEND_INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = BACKEND.get() {
        return loaded(l);
    }
    let kernels = kernels::load(cpu_variant).map_err(unavailable)?;
    let mut b = LlamaBackend::init().map_err(|e| unavailable(e.to_string()))?;
    // llama.cpp logs every tensor at load; Cairn reports what matters itself.
    b.void_logs();
    Ok(BACKEND.get_or_init(|| (b, kernels)))
}

/// The GGUF file to load: the configured path, else the first `*.gguf` under `models/llm/`.
pub fn locate_model(configured: Option<&str>) -> Result<PathBuf> {
    let unavailable = |message: String| Error::Unavailable {
        code: Code::GeneratorUnavailable,
        message,
    };
    if let Some(p) = configured {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(unavailable(format!(
                "GGUF model {} does not exist (run scripts/setup for the default model)",
                p.display()
            )))
        };
    }
    let first_in = |dir: PathBuf| {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        found.sort();
        found.into_iter().next()
    };
    let roots = crate::embed::models_roots();
    roots
        .into_iter()
        .find_map(|r| first_in(r.join("llm")))
        .ok_or_else(|| {
            unavailable(
                "no GGUF model configured and none in models/llm/: run scripts/setup, or pass \
             --llm-model PATH.gguf"
                    .into(),
            )
        })
}

pub struct LlamaGenerator {
    model: Arc<LlamaModel>,
    template: LlamaChatTemplate,
    name: String,
    n_ctx: usize,
    threads: i32,
    slots: Slots,
    kernels: CpuKernels,
}

impl LlamaGenerator {
    /// Loads the model (blocking: call from a blocking thread).
    pub fn load(cfg: &GeneratorConfig) -> Result<Self> {
        let path = locate_model(cfg.model.as_deref())?;
        let (backend, kernels) = backend(&cfg.cpu_variant)?;
        let params = LlamaModelParams::default().with_n_gpu_layers(cfg.gpu_layers);
        let started = Instant::now();
        let model = LlamaModel::load_from_file(backend, &path, &params).map_err(|e| {
            Error::Unavailable {
                code: Code::GeneratorUnavailable,
                message: format!("could not load GGUF model {}: {e}", path.display()),
            }
        })?;
        // The model's own template; llama.cpp recognises the common families by their text.
        let template = match model.chat_template(None) {
            Ok(t) => t,
            Err(_) => LlamaChatTemplate::new("chatml").map_err(Error::internal)?,
        };
        let n_ctx = cfg.context_tokens.min(model.n_ctx_train() as usize);
        let threads = if cfg.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.threads
        } as i32;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "llama".into());
        tracing::info!(
            model = %path.display(),
            n_ctx,
            threads,
            gpu_layers = cfg.gpu_layers,
            cpu_variant = %kernels.variant,
            cpu_features = %kernels.features.join(" "),
            ms = started.elapsed().as_millis() as u64,
            "llama model loaded"
        );
        Ok(Self {
            model: Arc::new(model),
            template,
            name,
            n_ctx,
            threads,
            slots: Slots::new(cfg.max_concurrent, cfg.queue_timeout_ms),
            kernels: kernels.clone(),
        })
    }

    fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        let chat = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidInput(format!("message contains a NUL byte: {e}")))?;
        self.model
            .apply_chat_template(&self.template, &chat, true)
            .map_err(|e| Error::internal(format!("chat template: {e}")))
    }

    fn tokenize(&self, prompt: &str) -> Vec<llama_cpp_2::token::LlamaToken> {
        self.model.vocab().tokenize(prompt.as_bytes(), true, true)
    }
}

impl Generator for LlamaGenerator {
    fn backend(&self) -> Backend {
        Backend::Llama
    }

    fn model(&self) -> &str {
        &self.name
    }

    fn context_tokens(&self) -> usize {
        self.n_ctx
    }

    fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize> {
        Ok(self.tokenize(&self.render(messages)?).len())
    }

    fn generate(
        &self,
        messages: Vec<ChatMessage>,
        params: GenParams,
    ) -> BoxFuture<'_, Result<Generation>> {
        Box::pin(async move {
            let prompt = self.render(&messages)?;
            let tokens = self.tokenize(&prompt);
            if tokens.len() + params.max_tokens as usize > self.n_ctx {
                return Err(Error::InvalidInput(format!(
                    "the prompt ({} tokens) and max_tokens ({}) exceed the model's context of {} tokens",
                    tokens.len(),
                    params.max_tokens,
                    self.n_ctx
                )));
            }
            let slot = self.slots.acquire().await?;
            // Capacity 1: the model never runs more than a token ahead of its reader, so a
            // dropped reader stops it within one token.
            let (tx, rx) = mpsc::channel(1);
            let job = Job {
                model: self.model.clone(),
                n_ctx: self.n_ctx,
                threads: self.threads,
                tokens,
                params,
            };
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    let tx2 = tx.clone();
                    if let Err(e) = job.run(&slot, &tx) {
                        let _ = tx2.blocking_send(Err(e));
                    }
                })
            });
            Ok(rx)
        })
    }

    fn stats(&self) -> GenStats {
        self.slots.stats()
    }

    fn cpu_kernels(&self) -> Option<&CpuKernels> {
        Some(&self.kernels)
    }
}

struct Job {
    model: Arc<LlamaModel>,
    n_ctx: usize,
    threads: i32,
    tokens: Vec<llama_cpp_2::token::LlamaToken>,
    params: GenParams,
}

/// Prompt tokens per prefill step: llama.cpp's own micro-batch (`n_ubatch`, 512), so the
/// steps compute exactly what one call over the whole prompt would.
const PREFILL_STEP: usize = 512;

impl Job {
    /// One generation: a fresh context, the prompt's prefill, then tokens until a stop, the
    /// token budget, or the reader leaving.
    fn run(self, slot: &Slot, tx: &mpsc::Sender<Result<GenEvent>>) -> Result<()> {
        let started = Instant::now();
        let mut ctx = self.context()?;
        let Some(idx) = self.prefill(&mut ctx, tx)? else {
            tracing::debug!("generation cancelled during prefill: the reader left");
            return Ok(());
        };
        let usage = self.decode(&mut ctx, idx, slot, tx, started)?;
        record(&usage, started.elapsed().as_secs_f64());
        let _ = tx.blocking_send(Ok(GenEvent::Done(usage)));
        Ok(())
    }

    /// A context of the job's size, created under [`CONTEXT_LOCK`] (see the module docs).
    fn context(&self) -> Result<llama_cpp_2::context::LlamaContext<'_>> {
        // Initialised by `load`, with the configured variant.
        let (backend, _) = backend("auto")?;
        let n_ctx = NonZeroU32::new(self.n_ctx as u32);
        let ctx_params = LlamaContextParams::default()
            .with_n_ctx(n_ctx)
            .with_n_batch(self.n_ctx as u32)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let _guard = CONTEXT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        self.model
            .new_context(backend, ctx_params)
            .map_err(|e| Error::internal(format!("llama context: {e}")))
    }

    /// Feeds the prompt in steps of [`PREFILL_STEP`] tokens, stopping between steps when the
    /// reader has left (a disconnected client no longer costs a long prompt's whole prefill).
    /// Returns the batch index of the last prompt token's logits, or `None` when cancelled.
    fn prefill(
        &self,
        ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
        tx: &mpsc::Sender<Result<GenEvent>>,
    ) -> Result<Option<i32>> {
        let last = self.tokens.len() - 1;
        let mut batch = LlamaBatch::new(PREFILL_STEP.min(self.tokens.len()).max(1), 1);
        for (step, part) in self.tokens.chunks(PREFILL_STEP).enumerate() {
            if tx.is_closed() {
                return Ok(None);
            }
            batch.clear();
            for (j, t) in part.iter().enumerate() {
                let i = step * PREFILL_STEP + j;
                batch
                    .add(*t, i as i32, &[0], i == last)
                    .map_err(Error::internal)?;
            }
            ctx.decode(&mut batch)
                .map_err(|e| Error::internal(format!("llama prefill: {e}")))?;
        }
        Ok(Some(batch.n_tokens() - 1))
    }

    /// Greedy at temperature 0, else top-k 40, top-p 0.95 and the temperature.
    fn sampler(&self) -> LlamaSampler {
        if self.params.temperature <= 0.0 {
            return LlamaSampler::greedy();
        }
        LlamaSampler::chain_simple([
            LlamaSampler::top_k(40),
            LlamaSampler::top_p(0.95, 1),
            LlamaSampler::temp(self.params.temperature),
            LlamaSampler::dist(rand_seed()),
        ])
    }

    /// Samples and streams tokens after the prefill (`idx`: the batch index of the logits to
    /// sample first).
    fn decode(
        &self,
        ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
        mut idx: i32,
        slot: &Slot,
        tx: &mpsc::Sender<Result<GenEvent>>,
        started: Instant,
    ) -> Result<GenUsage> {
        let mut sampler = self.sampler();
        let vocab = self.model.vocab();
        let mut pieces = Utf8Pieces::default();
        let mut pos = self.tokens.len() as i32;
        let mut usage = GenUsage {
            prompt_tokens: self.tokens.len(),
            finish_reason: "length",
            ..Default::default()
        };
        let mut single = LlamaBatch::new(1, 1);
        while usage.completion_tokens < self.params.max_tokens as usize {
            if tx.is_closed() {
                usage.finish_reason = "cancelled";
                break;
            }
            let token = sampler.sample(ctx, idx);
            if vocab.is_eog(token) {
                usage.finish_reason = "stop";
                break;
            }
            usage.completion_tokens += 1;
            slot.count_token();
            if usage.completion_tokens == 1 {
                usage.ttft_ms = started.elapsed().as_secs_f64() * 1e3;
            }
            let text = pieces.push(&vocab.token_to_piece(token, false, None));
            if !text.is_empty() && tx.blocking_send(Ok(GenEvent::Token(text))).is_err() {
                usage.finish_reason = "cancelled";
                break;
            }
            if usage.completion_tokens >= self.params.max_tokens as usize {
                break;
            }
            single.clear();
            single
                .add(token, pos, &[0], true)
                .map_err(Error::internal)?;
            pos += 1;
            idx = 0;
            ctx.decode(&mut single)
                .map_err(|e| Error::internal(format!("llama decode: {e}")))?;
        }
        Ok(usage)
    }
}

/// A finished generation's metrics and debug line.
fn record(usage: &GenUsage, secs: f64) {
    metrics::histogram!("cairn_generate_seconds", "backend" => "llama").record(secs);
    if secs > 0.0 && usage.completion_tokens > 0 {
        metrics::gauge!("cairn_generate_tokens_per_second", "backend" => "llama")
            .set(usage.completion_tokens as f64 / secs);
    }
    tracing::debug!(
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        finish = usage.finish_reason,
        ms = secs * 1e3,
        "generation finished"
    );
}

fn rand_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id()
}
