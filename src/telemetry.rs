//! Prometheus metrics: one process-wide recorder (the `metrics` facade), rendered at
//! `GET /metrics`. Core code records with the `metrics` macros and never sees the exporter.
//!
//! Names (all prefixed `cairn_`):
//! - `http_requests_total{method,route,status}`, `http_request_duration_seconds{...}` (histogram),
//!   `http_requests_in_flight` — recorded by the HTTP middleware; `route` is the matched route
//!   template (`/sources/{id}`), so ids never become labels.
//! - `search_stage_seconds{stage}` — embed, keyword, vector, fusion.
//! - `embed_batch_size` (histogram; search queries: per model call of the query batcher),
//!   `embed_texts_total`, `embed_seconds` (histogram).
//! - `ingest_sources_total{status}`, `ingest_chunks_total`; `store_commit_size` (histogram:
//!   writes per store commit, see `store/group.rs`), `store_commit_seconds` (histogram).
//! - gauges refreshed at scrape time: `sources`, `chunks{index}`, `store_bytes{index}`,
//!   `process_resident_memory_bytes`, and `search_quality{mode,metric}` from the last
//!   `cairn eval --report` when `telemetry.quality_report` names it.
//!
//! This module also sets up the process's `tracing` subscriber ([`init`]): JSON or pretty logs,
//! plus, when configured, OpenTelemetry trace export over OTLP/HTTP (cargo feature `otel`) and
//! Sentry error reporting (cargo feature `sentry`). Both are off by default, and a config
//! that asks for one in a binary built without it is refused at start (`Config::validate`).
//! Spans carry the OpenTelemetry names: `otel.name`/`otel.kind` on the request span, the
//! GenAI semantic-convention attributes (`gen_ai.*`) on the generation span.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Backend, Config};
use crate::error::{Error, Result};
use crate::eval::EvalResult;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds): fine below 10 ms so p50/p95/p99 of fast requests are readable.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the process-wide recorder once and returns its handle (None if another recorder
/// was installed first, e.g. by an embedding application).
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS)
                })
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// Resident set size of this process in bytes (Linux; 0 elsewhere).
pub fn process_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            pages * page.max(4096) as u64
        })
        .unwrap_or(0)
}

/// What `cairn eval --report FILE` writes and `telemetry.quality_report` reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityReport {
    pub dataset: String,
    pub split: String,
    /// Unix seconds when the evaluation finished.
    pub finished_at: u64,
    pub results: Vec<EvalResult>,
}

impl QualityReport {
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn read(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Sets `cairn_search_quality{mode,metric}` and `cairn_search_quality_timestamp_seconds`.
    pub fn record(&self) {
        for r in &self.results {
            let mode = r.mode.as_str();
            for (metric, v) in [
                ("ndcg_at_10", r.ndcg_at_10),
                ("recall_at_10", r.recall_at_10),
                ("recall_at_100", r.recall_at_100),
                ("mrr_at_10", r.mrr_at_10),
            ] {
                metrics::gauge!("cairn_search_quality", "mode" => mode, "metric" => metric, "dataset" => self.dataset.clone())
                    .set(v);
            }
        }
        metrics::gauge!("cairn_search_quality_timestamp_seconds").set(self.finished_at as f64);
    }
}

/// The span of one generation, named and attributed after the OpenTelemetry GenAI semantic
/// conventions (`chat {model}`, kind client). Usage and finish reason are recorded when the
/// generation ends ([`record_generation_usage`]).
pub fn generation_span(
    backend: Backend,
    model: &str,
    max_tokens: u32,
    temperature: f32,
) -> tracing::Span {
    let provider = match backend {
        Backend::Llama => "llama.cpp",
        Backend::Openai => "openai",
        Backend::None => "none",
    };
    tracing::info_span!(
        "generate",
        otel.name = %format!("chat {model}"),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider,
        gen_ai.request.model = %model,
        gen_ai.request.max_tokens = max_tokens,
        gen_ai.request.temperature = temperature as f64,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        "error.type" = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

pub fn record_generation_usage(span: &tracing::Span, input: usize, output: usize, finish: &str) {
    span.record("gen_ai.usage.input_tokens", input as u64);
    span.record("gen_ai.usage.output_tokens", output as u64);
    span.record("gen_ai.response.finish_reasons", finish);
}

pub fn record_generation_error(span: &tracing::Span, e: &Error) {
    span.record("error.type", e.code().as_str());
    span.record("otel.status_code", "ERROR");
}

/// Makes `span` the child of the caller's trace when a W3C `traceparent` was sent (with the
/// `otel` feature; without it there is no trace to join).
pub fn set_remote_parent(
    span: &tracing::Span,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) {
    #[cfg(feature = "otel")]
    if let Some(tp) = traceparent {
        otel::set_parent(span, tp, tracestate);
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, traceparent, tracestate);
}

/// Keeps exporters alive; dropping it flushes buffered spans and events.
#[derive(Default)]
pub struct TelemetryGuard {
    #[cfg(feature = "otel")]
    otel: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    #[cfg(feature = "sentry")]
    _sentry: Option<sentry::ClientInitGuard>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.otel.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: could not flush OpenTelemetry spans: {e}");
            }
        }
    }
}

type BoxLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Installs the global `tracing` subscriber: logs (JSON when `log.format` says so or stderr is
/// not a terminal) filtered by `CAIRN_LOG` / `log.level` (only `warn` for CLI commands), and,
/// for the server, the OTLP and Sentry layers the config asks for. Call it once, outside any
/// async runtime (the exporters own blocking HTTP clients).
pub fn init(config: &Config, serving: bool) -> Result<TelemetryGuard> {
    let default = if serving {
        config.log.level.clone()
    } else {
        "warn".to_string()
    };
    let filter = EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = match config.log.format.as_str() {
        "json" => true,
        "pretty" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: BoxLayer = if json {
        fmt.json()
            .flatten_event(true)
            // The whole span list, so a line logged deep inside (a search, the embedder, the
            // generator) still carries the request's id and caller.
            .with_current_span(false)
            .with_span_list(true)
            .boxed()
    } else {
        fmt.boxed()
    };
    #[allow(unused_mut)] // only the optional exporters add layers and guards
    let mut layers = vec![logs.with_filter(filter).boxed()];
    #[allow(unused_mut)]
    let mut guard = TelemetryGuard::default();
    let t = &config.telemetry;
    #[cfg(feature = "otel")]
    if serving && !t.otlp_endpoint.is_empty() {
        let (layer, provider) = otel::layer(t)?;
        layers.push(layer);
        guard.otel = Some(provider);
    }
    #[cfg(feature = "sentry")]
    if serving && !t.sentry_dsn.expose().is_empty() {
        let (layer, g) = sentry_layer(t)?;
        layers.push(layer);
        guard._sentry = Some(g);
    }
    let _ = t;
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| Error::internal(format!("tracing subscriber: {e}")))?;
    Ok(guard)
}

#[cfg(feature = "otel")]
mod otel {
    //! OTLP/HTTP (JSON) trace export through `tracing-opentelemetry`: every `tracing` span at
    //! `info` and above from the `cairn` crate becomes an OpenTelemetry span.
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::Layer;

    use super::BoxLayer;
    use crate::config::TelemetryConfig;
    use crate::error::{Error, Result};

    struct Carrier<'a> {
        traceparent: &'a str,
        tracestate: Option<&'a str>,
    }

    impl opentelemetry::propagation::Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.traceparent),
                "tracestate" => self.tracestate,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }

    pub fn set_parent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
        use opentelemetry::propagation::TextMapPropagator;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Carrier {
            traceparent,
            tracestate,
        });
        // An invalid header yields an empty context: the span starts a new trace.
        let _ = span.set_parent(cx);
    }

    pub fn layer(t: &TelemetryConfig) -> Result<(BoxLayer, SdkTracerProvider)> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(t.otlp_endpoint.clone())
            .build()
            .map_err(|e| Error::internal(format!("OTLP exporter: {e}")))?;
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(t.otlp_sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(t.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("cairn");
        // Only Cairn's own spans: LanceDB/lance spans would flood the collector.
        let only_cairn = Targets::new().with_target("cairn", LevelFilter::INFO);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(only_cairn)
            .boxed();
        Ok((layer, provider))
    }
}

/// Sentry: `error` events (internal errors, logged once by the HTTP middleware) become Sentry
/// events, `warn`/`info` lines become breadcrumbs, and panics are reported.
#[cfg(feature = "sentry")]
fn sentry_layer(t: &crate::config::TelemetryConfig) -> Result<(BoxLayer, sentry::ClientInitGuard)> {
    let dsn: sentry::types::Dsn = t
        .sentry_dsn
        .expose()
        .parse()
        .map_err(|e| Error::InvalidInput(format!("telemetry.sentry_dsn: {e}")))?;
    // Sentry's HTTP client (ureq + rustls) uses the process-wide crypto provider; another
    // component may have installed one already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut opts = sentry::ClientOptions::default();
    opts.dsn = Some(dsn);
    opts.release = sentry::release_name!();
    opts.send_default_pii = false;
    let guard = sentry::init(opts);
    use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
    use tracing_subscriber::filter::LevelFilter;
    let layer = vec![
        ErrorLayer::new().with_filter(LevelFilter::ERROR).boxed(),
        BreadcrumbLayer::new()
            .with_filter(LevelFilter::INFO)
            .boxed(),
    ]
    .boxed();
    Ok((layer, guard))
}
