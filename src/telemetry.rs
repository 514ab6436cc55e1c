//! Prometheus metrics: one process-wide recorder (the `metrics` facade), rendered at
//! `GET /metrics`. Core code records with the `metrics` macros and never sees the exporter.
//!
//! Names (all prefixed `cairn_`):
//! - `http_requests_total{method,route,status}`, `http_request_duration_seconds{...}` (histogram),
//!   `http_requests_in_flight` — recorded by the HTTP middleware; `route` is the matched route
//!   template (`/sources/{id}`), so ids never become labels.
//! - `search_stage_seconds{stage}` — embed, keyword, vector, fusion.
//! - `embed_batch_size` (histogram), `embed_texts_total`, `embed_seconds` (histogram).
//! - `ingest_sources_total{status}`, `ingest_chunks_total`.
//! - gauges refreshed at scrape time: `sources`, `chunks{index}`, `store_bytes{index}`,
//!   `process_resident_memory_bytes`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
