//! Cross-encoder re-ranking through the same ONNX Runtime as the embedder.
//!
//! A cross-encoder reads the query and a candidate together and scores their relevance, which
//! ranks better than comparing two separately made embeddings but costs one model run per
//! candidate, so only the top `search.rerank_candidates` fused hits are re-scored.
//!
//! No registry reachable from an air-gapped build ships a cross-encoder, so none is bundled:
//! `scripts/build-reranker` fine-tunes one from all-MiniLM-L6-v2 (see `docs/models.md`), or any
//! folder with a cross-encoder `model.onnx` (output `logits`) and its tokenizer files can be
//! copied in and named by `models.reranker`. Without one, `rerank: true` is refused with
//! `reranker_unavailable`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fastembed::{RerankInitOptionsUserDefined, TextRerank, UserDefinedRerankingModel};

use crate::config::ModelsConfig;
use crate::embed::{init_runtime, locate_runtime, models_roots, read_model_file, tokenizer_files};
use crate::error::{Code, Error, Result};

/// Default folder name of the reranker under `models/`.
pub const DEFAULT_RERANKER_DIR: &str = "reranker";

/// Scores (query, passage) pairs; higher is more relevant. Blocking: call it from a blocking
/// thread.
pub trait Reranker: Send + Sync {
    fn name(&self) -> &str;
    /// One score per passage, in input order.
    fn score(&self, query: &str, passages: &[String]) -> Result<Vec<f32>>;
}

/// How to get a reranker, for the 422 that says none is installed.
pub fn install_hint() -> String {
    format!(
        "no cross-encoder reranker is installed. Build one with `scripts/build-reranker` (it \
         fine-tunes all-MiniLM-L6-v2 on CPU and prints the folder) and set models.reranker to \
         that folder (or CAIRN_MODELS__RERANKER), or copy a cross-encoder folder (model.onnx \
         with a `logits` output, tokenizer.json, config.json, special_tokens_map.json, \
         tokenizer_config.json) to models/{DEFAULT_RERANKER_DIR}/"
    )
}

/// The reranker folder: `models.reranker`, else `models/reranker` if it holds a model.
/// `Ok(None)` when none is configured or present.
pub fn locate(cfg: &ModelsConfig) -> Result<Option<PathBuf>> {
    match &cfg.reranker {
        Some(p) if p.join("model.onnx").is_file() => Ok(Some(p.clone())),
        Some(p) => Err(Error::Unavailable {
            code: Code::RerankerUnavailable,
            message: format!(
                "models.reranker = {} has no model.onnx; {}",
                p.display(),
                install_hint()
            ),
        }),
        None => Ok(models_roots()
            .into_iter()
            .map(|r| r.join(DEFAULT_RERANKER_DIR))
            .find(|p| p.join("model.onnx").is_file())),
    }
}

pub struct OnnxReranker {
    name: String,
    batch_size: usize,
    model: Mutex<TextRerank>,
}

impl OnnxReranker {
    /// Loads the reranker if one is configured or installed.
    pub fn load(cfg: &ModelsConfig) -> Result<Option<Self>> {
        let Some(dir) = locate(cfg)? else {
            return Ok(None);
        };
        crate::embed::serial_tokenizers();
        let env = init_runtime(&locate_runtime(cfg)?)?;
        Self::from_dir(&dir, cfg, env).map(Some)
    }

    fn from_dir(
        dir: &Path,
        cfg: &ModelsConfig,
        env: ort::environment::Environment,
    ) -> Result<Self> {
        const CODE: Code = Code::RerankerUnavailable;
        let files = tokenizer_files(dir, CODE)?;
        let model =
            UserDefinedRerankingModel::new(read_model_file(dir, "model.onnx", CODE)?, files);
        let mut opts = RerankInitOptionsUserDefined::new()
            .with_max_length(cfg.max_length)
            .with_environment(env);
        if cfg.threads > 0 {
            opts = opts.with_intra_threads(cfg.threads);
        }
        let m =
            TextRerank::try_new_from_user_defined(model, opts).map_err(|e| Error::Unavailable {
                code: Code::RerankerUnavailable,
                message: format!("cannot load the reranker {}: {e}", dir.display()),
            })?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "reranker".into());
        Ok(Self {
            name,
            batch_size: cfg.batch_size.max(1),
            model: Mutex::new(m),
        })
    }
}

impl Reranker for OnnxReranker {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, query: &str, passages: &[String]) -> Result<Vec<f32>> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let docs: Vec<&str> = passages.iter().map(String::as_str).collect();
        let mut m = self
            .model
            .lock()
            .map_err(|_| Error::internal("reranker lock poisoned"))?;
        let ranked = m
            .rerank(query, docs.as_slice(), false, Some(self.batch_size))
            .map_err(|e| Error::Embedding(format!("reranker: {e}")))?;
        let mut out = vec![f32::NEG_INFINITY; passages.len()];
        for r in ranked {
            out[r.index] = r.score;
        }
        Ok(out)
    }
}
