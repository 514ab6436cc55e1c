//! Operations: API keys, the gauges read at scrape time, stats and health.

use std::time::{Duration, Instant};

use super::*;

impl Cairn {
    /// Creates an API key (shown once in the result).
    pub fn create_key(
        &self,
        name: &str,
        tier: &str,
        scopes: Vec<crate::auth::Scope>,
        expires_at: Option<i64>,
    ) -> Result<crate::auth::keys::NewKey> {
        self.auth.check_tier(tier)?;
        self.auth.keys.create(name, tier, scopes, expires_at)
    }

    pub fn list_keys(&self) -> Result<Vec<crate::auth::keys::KeyInfo>> {
        self.auth.keys.list()
    }

    pub fn revoke_key(&self, id: &str) -> Result<()> {
        self.auth.keys.revoke(id)
    }

    /// Sets the gauges read at scrape time: store sizes, LanceDB's cache sizes, process RSS
    /// and, when `telemetry.quality_report` is set, the last evaluation's retrieval quality.
    pub async fn refresh_gauges(&self) {
        if let Ok(s) = self.stats().await {
            metrics::gauge!("cairn_sources").set(s.sources as f64);
            metrics::gauge!("cairn_chunks", "index" => "vector").set(s.chunks_vector as f64);
            metrics::gauge!("cairn_chunks", "index" => "keyword").set(s.chunks_keyword as f64);
            metrics::gauge!("cairn_store_bytes", "index" => "vector")
                .set(s.index_bytes.vector as f64);
            metrics::gauge!("cairn_store_bytes", "index" => "keyword")
                .set(s.index_bytes.keyword as f64);
        }
        let (index, metadata) = self.store.cache_bytes().await;
        metrics::gauge!("cairn_store_cache_bytes", "cache" => "index").set(index as f64);
        metrics::gauge!("cairn_store_cache_bytes", "cache" => "metadata").set(metadata as f64);
        metrics::gauge!("cairn_process_resident_memory_bytes")
            .set(crate::telemetry::process_rss_bytes() as f64);
        let full = self.store.out_of_space();
        metrics::gauge!("cairn_storage_full").set(if full { 1.0 } else { 0.0 });
        if let Some(free) = crate::store::free_bytes(self.store.dir()) {
            metrics::gauge!("cairn_storage_free_bytes").set(free as f64);
        }
        if let Some(path) = &self.config.telemetry.quality_report {
            match crate::telemetry::QualityReport::read(path) {
                Ok(r) => r.record(),
                // Not written yet: no gauge until the first `cairn eval --report`.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    path = %path.display(),
                    "cannot read telemetry.quality_report"
                ),
            }
        }
    }

    pub async fn stats(&self) -> Result<Stats> {
        let s: StoreStats = self.store.stats().await?;
        let ann = match s.ann_index {
            Some(a) => AnnInfo {
                state: a.kind,
                min_rows: self.config.index.ann_min_rows,
                indexed_rows: a.indexed_rows,
                unindexed_rows: a.unindexed_rows,
                memory_rows: s.memory_index_rows,
            },
            None => AnnInfo {
                state: "exact".into(),
                min_rows: self.config.index.ann_min_rows,
                indexed_rows: 0,
                unindexed_rows: s.chunks_vector,
                memory_rows: s.memory_index_rows,
            },
        };
        Ok(Stats {
            sources: s.sources,
            chunks: s.chunks_vector,
            chunks_vector: s.chunks_vector,
            chunks_keyword: s.chunks_keyword,
            index_bytes: IndexBytes {
                vector: s.vector_bytes,
                keyword: s.keyword_bytes,
            },
            embedding_model: self.embedder.name().to_string(),
            embedding_dim: self.embedder.dim(),
            ann_index: ann,
            graph: GraphStats {
                concepts: s.concepts,
                edges: s.concept_edges,
                mentions: s.mentions,
            },
            reranker: self.reranker.as_ref().map(|r| r.name().to_string()),
            generator: GeneratorStats {
                backend: self
                    .generator
                    .as_ref()
                    .map_or("none", |g| g.backend().as_str()),
                model: self.generator.as_ref().map(|g| g.model().to_string()),
                context_tokens: self.generator.as_ref().map(|g| g.context_tokens()),
                cpu_kernels: self
                    .generator
                    .as_ref()
                    .and_then(|g| g.cpu_kernels().cloned()),
                counters: self
                    .generator
                    .as_ref()
                    .map(|g| g.stats())
                    .unwrap_or_default(),
            },
        })
    }

    /// Probes each component: the store (a count), the keyword index (a search) and the
    /// embedder (an embedding).
    /// Readiness: every component answers within its deadline. Each is timed.
    pub async fn health(&self) -> Health {
        let deadline = Duration::from_secs(5);
        let timed = |name: &'static str, r: std::result::Result<(), String>, t: Instant| {
            let latency_ms = t.elapsed().as_secs_f64() * 1e3;
            (
                name,
                match r {
                    Ok(()) => ComponentHealth {
                        status: "ok",
                        latency_ms,
                        error: None,
                        detail: None,
                    },
                    Err(e) => ComponentHealth {
                        status: "error",
                        latency_ms,
                        error: Some(e),
                        detail: None,
                    },
                },
            )
        };
        let within =
            |what: &str, r: std::result::Result<Result<()>, tokio::time::error::Elapsed>| match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "{what} did not answer within {} s",
                    deadline.as_secs()
                )),
            };
        let mut components = HashMap::new();
        let t = Instant::now();
        let r = tokio::time::timeout(deadline, async {
            self.store.count_sources().await.map(|_| ())
        })
        .await;
        let (n, c) = timed("store", within("the store", r), t);
        components.insert(n, c);
        let t = Instant::now();
        let kw = self.store.keywords().clone();
        let r = tokio::time::timeout(deadline, async move {
            blocking(move || kw.search("health", 1, &Default::default(), 1.0).map(|_| ())).await?
        })
        .await;
        let (n, c) = timed("keyword_index", within("the keyword index", r), t);
        components.insert(n, c);
        let t = Instant::now();
        let r = tokio::time::timeout(deadline, async {
            let v = self.embed(vec!["health".into()]).await?;
            if v.first().is_some_and(|x| x.len() == self.embedder.dim()) {
                Ok(())
            } else {
                Err(Error::internal("embedder returned a wrong-sized vector"))
            }
        })
        .await;
        let (n, c) = timed("embedder", within("the embedder", r), t);
        components.insert(n, c);
        components.insert("storage", self.storage_health());
        if let Some(g) = &self.generator {
            let t = Instant::now();
            let r = tokio::time::timeout(deadline, g.ready()).await;
            let (n, mut c) = timed("generator", within("the generator", r), t);
            c.detail = g.cpu_kernels().map(|k| {
                format!(
                    "llama.cpp CPU kernels {}: {}",
                    k.variant,
                    k.features.join(" ")
                )
            });
            components.insert(n, c);
        }
        Health {
            // A full disk stops writes only: the replica still serves reads.
            ok: components.values().all(|c| c.status != "error"),
            components,
        }
    }

    /// `full` while the last write failed for lack of space, with the free space now.
    fn storage_health(&self) -> ComponentHealth {
        let full = self.store.out_of_space();
        ComponentHealth {
            status: if full { "full" } else { "ok" },
            latency_ms: 0.0,
            error: full.then(|| {
                let free = crate::store::free_bytes(self.store.dir())
                    .map(|b| format!("{} MiB free", b >> 20))
                    .unwrap_or_else(|| "free space unknown".into());
                format!(
                    "the last write failed for lack of space on the data dir's disk ({free}); \
                     reads go on, writes answer 507 `insufficient_storage` until space is freed"
                )
            }),
            detail: None,
        }
    }
}
