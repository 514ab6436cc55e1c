//! Cairn: one self-contained binary that turns a folder of documents into a searchable,
//! answerable knowledge base. See `docs/architecture.md` for how the layers fit together:
//! `http` (thin axum handlers) → `service` (ingest, search, sources) → `store` (LanceDB +
//! tantivy, kept consistent by a journal) and `embed` (ONNX models), with `extract` and `chunk`
//! turning files into token-bounded chunks. `answer` adds retrieval-augmented generation over
//! `generate` (llama.cpp or an OpenAI-compatible API).

pub mod answer;
pub mod auth;
pub mod bench;
pub mod chunk;
pub mod concepts;
pub mod config;
pub mod embed;
pub mod error;
pub mod eval;
pub mod extract;
pub mod generate;
pub mod graph;
pub mod http;
pub mod rerank;
pub mod sandbox;
pub mod search;
pub mod service;
pub mod sse;
pub mod store;
pub mod telemetry;
pub mod testdata;

/// Runs a blocking closure on the blocking pool, carrying the current span (so its log lines
/// keep the request id).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> error::Result<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| error::Error::internal(format!("blocking task failed: {e}")))
}
