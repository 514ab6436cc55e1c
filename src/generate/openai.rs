//! Generation through any OpenAI-compatible Chat Completions endpoint, always streamed.
//!
//! Connect and read timeouts are separate (a slow first token is not a dead connection), and
//! 429, 5xx and connection failures are retried with backoff (honouring `Retry-After`) only
//! before the first token: after that a retry would repeat text the caller has already seen.
//! Prompt size is estimated conservatively (about 3 bytes per token) since the remote
//! tokenizer is unknown; the upstream's own `usage` is reported when it sends one.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{ChatMessage, GenEvent, GenParams, GenStats, GenUsage, Generation, Generator, Slots};
use crate::config::{Backend, GeneratorConfig, Secret};
use crate::error::{Error, Result};
use crate::sse::SseDecoder;

pub struct OpenAiGenerator {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Secret,
    context_tokens: usize,
    read_timeout: Duration,
    retries: u32,
    slots: Slots,
}

impl OpenAiGenerator {
    pub fn new(cfg: &GeneratorConfig) -> Result<Self> {
        let model =
            cfg.model.clone().filter(|m| !m.is_empty()).ok_or_else(|| {
                Error::InvalidInput("the openai generator needs a model name".into())
            })?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_s))
            .build()
            .map_err(Error::internal)?;
        Ok(Self {
            client,
            url: format!("{}/chat/completions", cfg.base_url.trim_end_matches('/')),
            model,
            api_key: cfg.api_key.clone(),
            context_tokens: cfg.context_tokens,
            read_timeout: Duration::from_secs(cfg.read_timeout_s),
            retries: cfg.retries,
            slots: Slots::new(cfg.max_concurrent, cfg.queue_timeout_ms),
        })
    }
}

/// Conservative token estimate for an unknown tokenizer: ~3 bytes per token plus per-message
/// overhead (OpenAI's own accounting adds 3–4 tokens per message).
pub fn estimate_tokens(messages: &[ChatMessage]) -> usize {
    3 + messages
        .iter()
        .map(|m| 4 + m.role.len().div_ceil(3) + m.content.len().div_ceil(3))
        .sum::<usize>()
}

impl Generator for OpenAiGenerator {
    fn backend(&self) -> Backend {
        Backend::Openai
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn context_tokens(&self) -> usize {
        self.context_tokens
    }

    fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize> {
        Ok(estimate_tokens(messages))
    }

    fn generate(
        &self,
        messages: Vec<ChatMessage>,
        params: GenParams,
    ) -> BoxFuture<'_, Result<Generation>> {
        Box::pin(async move {
            let slot = self.slots.acquire().await?;
            let started = Instant::now();
            let body = json!({
                "model": self.model,
                "messages": messages,
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
            });
            let resp = self.send_with_retries(&body).await?;
            let (tx, rx) = mpsc::channel(16);
            let estimate = estimate_tokens(&messages);
            let read_timeout = self.read_timeout;
            let span = tracing::Span::current();
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let r = relay(resp, &tx, &slot, read_timeout, estimate, started).await;
                    if let Err(e) = r {
                        let _ = tx.send(Err(e)).await;
                    }
                },
                span,
            ));
            Ok(rx)
        })
    }

    fn stats(&self) -> GenStats {
        self.slots.stats()
    }

    /// Reachable: the API answers `GET /models` with anything but a server error (an auth
    /// error still proves the network path; the first real call reports it).
    fn ready(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let url = self.url.replace("/chat/completions", "/models");
            let mut req = self.client.get(&url).timeout(Duration::from_secs(5));
            if !self.api_key.expose().is_empty() {
                req = req.bearer_auth(self.api_key.expose());
            }
            match req.send().await {
                Ok(r) if !r.status().is_server_error() => Ok(()),
                Ok(r) => Err(Error::Upstream(format!(
                    "the generator API answered {}",
                    r.status()
                ))),
                Err(e) => Err(Error::Upstream(format!(
                    "the generator API is unreachable: {}",
                    without_url(&e)
                ))),
            }
        })
    }
}

impl OpenAiGenerator {
    /// POSTs the request; retries 429/5xx/connection errors with backoff.
    async fn send_with_retries(&self, body: &Value) -> Result<reqwest::Response> {
        let mut attempt = 0;
        loop {
            let mut req = self.client.post(&self.url).json(body);
            if !self.api_key.expose().is_empty() {
                req = req.bearer_auth(self.api_key.expose());
            }
            let outcome = tokio::time::timeout(self.read_timeout, req.send()).await;
            let (retryable, wait, err) = match outcome {
                Err(_) => (
                    true,
                    None,
                    Error::UpstreamTimeout(format!(
                        "the generator API sent no response within {} s",
                        self.read_timeout.as_secs()
                    )),
                ),
                Ok(Err(e)) => (
                    true,
                    None,
                    Error::Upstream(format!(
                        "could not reach the generator API: {}",
                        without_url(&e)
                    )),
                ),
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp),
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let wait = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 30.0)));
                    let text = resp.text().await.unwrap_or_default();
                    let detail = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                        .unwrap_or_else(|| text.chars().take(200).collect());
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    (
                        retryable,
                        wait,
                        Error::Upstream(format!("the generator API answered {status}: {detail}")),
                    )
                }
            };
            if !retryable || attempt >= self.retries {
                metrics::counter!("cairn_generate_upstream_errors_total").increment(1);
                return Err(err);
            }
            attempt += 1;
            let backoff = wait.unwrap_or(Duration::from_millis(250 << attempt.min(6)));
            tracing::warn!(attempt, wait_ms = backoff.as_millis() as u64, error = %err, "retrying the generator api");
            tokio::time::sleep(backoff).await;
        }
    }
}

/// A reqwest error's message without the URL (which may carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    s
}

/// Reads the upstream SSE stream and forwards tokens until `[DONE]` or the caller goes away.
async fn relay(
    resp: reqwest::Response,
    tx: &mpsc::Sender<Result<GenEvent>>,
    slot: &super::Slot,
    read_timeout: Duration,
    prompt_estimate: usize,
    started: Instant,
) -> Result<()> {
    let mut body = resp.bytes_stream();
    let mut decoder = SseDecoder::default();
    let mut usage = GenUsage {
        prompt_tokens: prompt_estimate,
        finish_reason: "stop",
        ..Default::default()
    };
    let mut upstream_usage: Option<(usize, usize)> = None;
    loop {
        let chunk = tokio::select! {
            c = tokio::time::timeout(read_timeout, body.next()) => c,
            // The caller went away: stop reading (dropping the body closes the upstream stream).
            _ = tx.closed() => return Ok(()),
        };
        let bytes = match chunk {
            Err(_) => {
                return Err(Error::UpstreamTimeout(format!(
                    "the generator API sent nothing for {} s",
                    read_timeout.as_secs()
                )))
            }
            Ok(None) => {
                return Err(Error::Upstream(
                    "the generator API closed the stream before [DONE]".into(),
                ))
            }
            Ok(Some(Err(e))) => {
                return Err(Error::Upstream(format!(
                    "reading the generator API: {}",
                    without_url(&e)
                )))
            }
            Ok(Some(Ok(b))) => b,
        };
        for ev in decoder.push(&bytes) {
            if ev.data.trim() == "[DONE]" {
                if let Some((p, c)) = upstream_usage {
                    usage.prompt_tokens = p;
                    usage.completion_tokens = c;
                }
                let secs = started.elapsed().as_secs_f64();
                metrics::histogram!("cairn_generate_seconds", "backend" => "openai").record(secs);
                if secs > 0.0 && usage.completion_tokens > 0 {
                    metrics::gauge!("cairn_generate_tokens_per_second", "backend" => "openai")
                        .set(usage.completion_tokens as f64 / secs);
                }
                let _ = tx.send(Ok(GenEvent::Done(usage))).await;
                return Ok(());
            }
            let v: Value = serde_json::from_str(&ev.data).map_err(|_| {
                Error::Upstream("the generator API sent a malformed event (not JSON)".into())
            })?;
            if let Some(msg) = v.get("error") {
                let m = msg["message"].as_str().unwrap_or("unknown error");
                return Err(Error::Upstream(format!("the generator API failed: {m}")));
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                let p = u["prompt_tokens"].as_u64().unwrap_or(0) as usize;
                let c = u["completion_tokens"].as_u64().unwrap_or(0) as usize;
                upstream_usage = Some((p, c));
            }
            let Some(choices) = v.get("choices").and_then(Value::as_array) else {
                if v.get("usage").is_some() {
                    continue;
                }
                return Err(Error::Upstream(
                    "the generator API sent an event without choices".into(),
                ));
            };
            let Some(choice) = choices.first() else {
                continue;
            };
            if let Some(r) = choice["finish_reason"].as_str() {
                usage.finish_reason = if r == "length" { "length" } else { "stop" };
            }
            if let Some(text) = choice["delta"]["content"].as_str() {
                if text.is_empty() {
                    continue;
                }
                usage.completion_tokens += 1;
                slot.count_token();
                if usage.completion_tokens == 1 {
                    usage.ttft_ms = started.elapsed().as_secs_f64() * 1e3;
                }
                if tx
                    .send(Ok(GenEvent::Token(text.to_string())))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
    }
}
