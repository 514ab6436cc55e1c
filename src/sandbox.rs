//! Extraction of untrusted files in a child process, bounded in time and memory.
//!
//! Why: the parsers are code we did not write, run on bytes from anyone who holds an `ingest`
//! key. A PDF with arrays nested 1,000 deep overflowed lopdf's recursive parser, and a stack
//! overflow aborts the whole process (`catch_unwind` cannot catch it); a parser that loops on
//! a worker thread can only be abandoned, never stopped, and its memory cannot be capped. A
//! child process can be both: files are extracted by `cairn __extract-worker` processes (the
//! same binary, `/proc/self/exe`), which read one file at a time on stdin and write its
//! extracted documents as JSON on stdout, under `RLIMIT_DATA` = `ingest.extract_memory_mb`, and
//! are killed at `ingest.extract_timeout_s`. A crash, an allocation past the budget or the
//! deadline becomes that one file's error (`unreadable_document`, `document_too_large`,
//! `extract_timeout`); the server and the other files of the upload go on.
//!
//! Workers are kept between files (a few idle ones, each replaced after 256 files or one over
//! 16 MiB): starting the 300 MB binary costs ~15–35 ms, far more than extracting a small file
//! (`cairn bench extract`, docs/benchmarks.md).
//!
//! The binary registers itself with [`set_worker_program`] at start-up. Without a registered
//! program (the library used on its own) a file is extracted in-process on a thread with a
//! large stack, and the deadline only abandons it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::blocking;
use crate::error::{Error, Result};
use crate::extract::{self, ExtractError, ExtractedDoc, FileType};

/// The first argument that makes `cairn` an extraction worker.
pub const WORKER_ARG: &str = "__extract-worker";

/// Stack of the in-process fallback thread: deep enough for any file the PDF nesting scan lets
/// through (the memory is only touched as deep as a parse goes).
const FALLBACK_STACK: usize = 256 * 1024 * 1024;

/// What a worker may print on stderr that we keep (to classify a crash).
const STDERR_KEEP: u64 = 64 * 1024;

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Registers the program started as the extraction worker (the running `cairn` binary).
/// Returns false if one was already registered.
pub fn set_worker_program(program: PathBuf) -> bool {
    PROGRAM.set(program).is_ok()
}

/// The running executable, as the worker program: `/proc/self/exe` still starts the binary
/// that is running after an upgrade replaced or deleted its file.
pub fn this_program() -> Option<PathBuf> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Some(proc_exe);
    }
    std::env::current_exe().ok()
}

/// What one file's extraction may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: u64,
}

/// The results of one file, as [`extract::extract`] gives them.
pub type Extracted = Vec<std::result::Result<ExtractedDoc, ExtractError>>;

/// Extracts one file within `limits`: in a worker process when one is registered, else on a
/// large-stack thread. `Err` only for a failure of the server itself (no process could start).
pub async fn extract(name: String, bytes: Vec<u8>, limits: Limits) -> Result<Extracted> {
    match PROGRAM.get() {
        Some(program) => in_worker(program, name, bytes, limits).await,
        None => in_thread(name, bytes, limits).await,
    }
}

/// The kind word of a file's errors: its type's short name.
fn kind_of(name: &str) -> &'static str {
    FileType::from_name(name).map_or("file", |t| t.as_str())
}

async fn in_thread(name: String, bytes: Vec<u8>, limits: Limits) -> Result<Extracted> {
    let kind = kind_of(&name);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("cairn-extract".into())
        .stack_size(FALLBACK_STACK)
        .spawn(move || {
            let _ = tx.send(span.in_scope(|| extract::extract(&name, &bytes)));
        })
        .map_err(|e| Error::internal(format!("cannot start an extraction thread: {e}")))?;
    match tokio::time::timeout(limits.timeout, rx).await {
        Ok(Ok(results)) => Ok(results),
        Ok(Err(_)) => Ok(vec![Err(crashed(
            kind,
            "the extraction thread ended without a result",
        ))]),
        Err(_) => Ok(vec![Err(timed_out(kind, limits))]),
    }
}

async fn in_worker(
    program: &Path,
    name: String,
    bytes: Vec<u8>,
    limits: Limits,
) -> Result<Extracted> {
    let kind = kind_of(&name);
    let worker = match take_idle(limits.memory_bytes) {
        Some(w) => w,
        None => Worker::spawn(program, limits.memory_bytes)?,
    };
    let pid = worker.child.id();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut worker = worker;
        let outcome = worker.exchange(&name, &bytes);
        let recycle = bytes.len() > RECYCLE_AFTER_BYTES;
        // A receiver gone (the deadline passed) leaves the worker to be reaped here.
        if let Err((worker, _, _)) = tx.send((worker, outcome, recycle)) {
            worker.close();
        }
    });
    let Ok(reply) = tokio::time::timeout(limits.timeout, rx).await else {
        // The exchange thread sees the pipe close, reaps the worker and drops it.
        kill(pid);
        return Ok(vec![Err(timed_out(kind, limits))]);
    };
    let (worker, outcome, recycle) =
        reply.map_err(|_| Error::internal("the extraction thread ended without a result"))?;
    match outcome {
        Outcome::Done(wire) => {
            if recycle || worker.files >= MAX_FILES_PER_WORKER {
                blocking(move || worker.close()).await?;
            } else {
                put_idle(worker);
            }
            Ok(wire.into_iter().map(WireResult::into_result).collect())
        }
        Outcome::Died(status, stderr) => {
            let error = classify_failure(kind, &status, &stderr, limits);
            tracing::warn!(%status, error = %error, "extraction worker failed");
            Ok(vec![Err(error)])
        }
    }
}

/// Files a worker extracts before it is replaced (what a parser leaks stays bounded).
const MAX_FILES_PER_WORKER: usize = 256;
/// A worker that read a file this large is replaced (its heap stays grown otherwise).
const RECYCLE_AFTER_BYTES: usize = 16 * 1024 * 1024;
/// Idle workers kept for the next files; more are closed.
const MAX_IDLE: usize = 4;

static IDLE: std::sync::Mutex<Vec<Worker>> = std::sync::Mutex::new(Vec::new());

fn take_idle(memory_bytes: u64) -> Option<Worker> {
    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
    let at = idle.iter().position(|w| w.memory_bytes == memory_bytes)?;
    Some(idle.swap_remove(at))
}

fn put_idle(worker: Worker) {
    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE {
        idle.push(worker);
    } else {
        drop(idle);
        // Closing waits for the exit: off the runtime.
        std::thread::spawn(move || worker.close());
    }
}

fn kill(pid: u32) {
    // SAFETY: a signal to our own child, which is not reaped before the exchange thread sees
    // it die, so the pid cannot belong to another process.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// How one exchange with a worker ended.
enum Outcome {
    Done(Vec<WireResult>),
    /// The worker died (or said something unreadable and was killed): its exit status and the
    /// end of what it printed on stderr.
    Died(std::process::ExitStatus, String),
}

/// A live worker process and its pipes; it extracts one file per request until its stdin
/// closes.
struct Worker {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// The end of what the worker printed on stderr, filled by a thread of its own.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    memory_bytes: u64,
    files: usize,
}

impl Worker {
    fn spawn(program: &Path, memory_bytes: u64) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(program);
        cmd.arg(WORKER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec the closure only calls setrlimit, which is
        // async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || set_limits(memory_bytes));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::internal(format!("cannot start the extraction worker: {e}")))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>> = Default::default();
        let tail = stderr.clone();
        let stderr_reader = std::thread::Builder::new()
            .name("cairn-extract-stderr".into())
            .spawn(move || keep_tail(&mut err_pipe, &tail))
            .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
        Ok(Self {
            child,
            stdin,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
            memory_bytes,
            files: 0,
        })
    }

    /// Sends one file and reads its results (blocking).
    fn exchange(&mut self, name: &str, bytes: &[u8]) -> Outcome {
        self.files += 1;
        let sent = write_frame(&mut self.stdin, name, bytes);
        let reply = sent.and_then(|()| read_reply(&mut self.stdout));
        match reply.map(|json| serde_json::from_slice::<Vec<WireResult>>(&json)) {
            Ok(Ok(wire)) => Outcome::Done(wire),
            Ok(Err(_)) | Err(_) => {
                kill(self.child.id());
                self.died()
            }
        }
    }

    /// Reaps a dead (or killed) worker: its status and stderr.
    fn died(&mut self) -> Outcome {
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(0));
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        Outcome::Died(status, String::from_utf8_lossy(&tail).into_owned())
    }

    /// Ends a worker: its stdin closes, it exits, it is reaped (blocking).
    fn close(mut self) {
        drop(self.stdin);
        if self.child.try_wait().ok().flatten().is_none() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            kill(self.child.id());
            let _ = self.child.wait();
        }
    }
}

/// Keeps the last [`STDERR_KEEP`] bytes a worker prints, until its stderr closes.
fn keep_tail(pipe: &mut impl Read, tail: &std::sync::Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            return;
        }
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        t.extend_from_slice(&buf[..n]);
        let over = t.len().saturating_sub(STDERR_KEEP as usize);
        t.drain(..over);
    }
}

/// A request: the name's length (u32 LE), the name, the file's length (u64 LE), the file.
fn write_frame(w: &mut impl Write, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&(name.len() as u32).to_le_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&(bytes.len() as u64).to_le_bytes())?;
    w.write_all(bytes)?;
    w.flush()
}

/// A reply: its length (u64 LE) and the JSON results.
fn read_reply(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let mut json = vec![0u8; u64::from_le_bytes(len) as usize];
    r.read_exact(&mut json)?;
    Ok(json)
}

/// The next request on a worker's stdin; `None` at a clean end of input.
fn read_request(r: &mut impl Read) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut name = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut name)?;
    let mut size = [0u8; 8];
    r.read_exact(&mut size)?;
    let size = usize::try_from(u64::from_le_bytes(size)).map_err(std::io::Error::other)?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(size)?;
    bytes.resize(size, 0);
    r.read_exact(&mut bytes)?;
    let name = String::from_utf8(name).map_err(std::io::Error::other)?;
    Ok(Some((name, bytes)))
}

/// In the child, before exec: the data limit (heap and private mappings) and no core dump.
fn set_limits(memory_bytes: u64) -> std::io::Result<()> {
    let limit = |value: u64| libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: plain syscalls on valid, initialised structs.
    let ok = unsafe {
        libc::setrlimit(libc::RLIMIT_DATA, &limit(memory_bytes)) == 0
            && libc::setrlimit(libc::RLIMIT_CORE, &limit(0)) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Why a worker ended without a result, from its exit status and what it printed.
fn classify_failure(
    kind: &'static str,
    status: &std::process::ExitStatus,
    stderr: &str,
    limits: Limits,
) -> ExtractError {
    use std::os::unix::process::ExitStatusExt;
    if stderr.contains("memory allocation of") || stderr.contains("out of memory") {
        let mib = limits.memory_bytes / (1024 * 1024);
        return ExtractError::TooLarge {
            kind,
            reason: format!("it needs more than {mib} MiB of memory (ingest.extract_memory_mb)"),
        };
    }
    if stderr.contains("overflowed its stack") {
        return crashed(
            kind,
            "the parser overflowed its stack (the file is nested too deep)",
        );
    }
    match status.signal() {
        Some(sig) => crashed(kind, &format!("the parser crashed (signal {sig})")),
        None => crashed(kind, &format!("the parser failed ({status})")),
    }
}

fn crashed(kind: &'static str, reason: &str) -> ExtractError {
    ExtractError::Corrupt {
        kind,
        reason: reason.to_string(),
    }
}

fn timed_out(kind: &'static str, limits: Limits) -> ExtractError {
    ExtractError::Timeout {
        kind,
        limit_s: limits.timeout.as_secs(),
    }
}

/// The worker: reads files from stdin, one request at a time, and writes each one's results
/// as JSON to stdout, until stdin closes. Runs before anything else in `main` (no config,
/// logging or models).
pub fn worker_main() -> ExitCode {
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    loop {
        let (name, bytes) = match read_request(&mut input) {
            Ok(Some(request)) => request,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                // Reading reserves the file's size fallibly: past the memory limit it ends here.
                if e.kind() == std::io::ErrorKind::OutOfMemory {
                    eprintln!("extract worker: out of memory reading the file");
                } else {
                    eprintln!("extract worker: cannot read the request: {e}");
                }
                return ExitCode::from(2);
            }
        };
        let wire: Vec<WireResult> = extract::extract(&name, &bytes)
            .into_iter()
            .map(WireResult::from)
            .collect();
        drop(bytes);
        let reply = serde_json::to_vec(&wire).map_err(std::io::Error::from);
        let written = reply.and_then(|json| {
            out.write_all(&(json.len() as u64).to_le_bytes())?;
            out.write_all(&json)?;
            out.flush()
        });
        if written.is_err() {
            return ExitCode::from(3);
        }
    }
}

/// One result on the wire between the worker and the server.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireResult {
    Ok(ExtractedDoc),
    Unsupported(String),
    Corrupt { kind: String, reason: String },
    TooLarge { kind: String, reason: String },
    Timeout { kind: String, limit_s: u64 },
    BadRecord { line: usize, reason: String },
    Empty,
}

/// The `&'static` kind word of a kind received from the worker.
fn static_kind(kind: &str) -> &'static str {
    const KINDS: [&str; 6] = ["txt", "md", "html", "pdf", "docx", "jsonl"];
    KINDS.into_iter().find(|k| *k == kind).unwrap_or("file")
}

impl From<std::result::Result<ExtractedDoc, ExtractError>> for WireResult {
    fn from(r: std::result::Result<ExtractedDoc, ExtractError>) -> Self {
        match r {
            Ok(doc) => WireResult::Ok(doc),
            Err(ExtractError::Unsupported(what)) => WireResult::Unsupported(what),
            Err(ExtractError::Corrupt { kind, reason }) => WireResult::Corrupt {
                kind: kind.into(),
                reason,
            },
            Err(ExtractError::TooLarge { kind, reason }) => WireResult::TooLarge {
                kind: kind.into(),
                reason,
            },
            Err(ExtractError::Timeout { kind, limit_s }) => WireResult::Timeout {
                kind: kind.into(),
                limit_s,
            },
            Err(ExtractError::BadRecord { line, reason }) => WireResult::BadRecord { line, reason },
            Err(ExtractError::Empty) => WireResult::Empty,
        }
    }
}

impl WireResult {
    fn into_result(self) -> std::result::Result<ExtractedDoc, ExtractError> {
        Err(match self {
            WireResult::Ok(doc) => return Ok(doc),
            WireResult::Unsupported(what) => ExtractError::Unsupported(what),
            WireResult::Corrupt { kind, reason } => ExtractError::Corrupt {
                kind: static_kind(&kind),
                reason,
            },
            WireResult::TooLarge { kind, reason } => ExtractError::TooLarge {
                kind: static_kind(&kind),
                reason,
            },
            WireResult::Timeout { kind, limit_s } => ExtractError::Timeout {
                kind: static_kind(&kind),
                limit_s,
            },
            WireResult::BadRecord { line, reason } => ExtractError::BadRecord { line, reason },
            WireResult::Empty => ExtractError::Empty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_through_their_frames() {
        let mut wire = Vec::new();
        write_frame(&mut wire, "dir/ü.pdf", b"%PDF-1.4").unwrap();
        write_frame(&mut wire, "b.txt", b"").unwrap();
        let mut r = &wire[..];
        let first = read_request(&mut r).unwrap().unwrap();
        assert_eq!(first, ("dir/ü.pdf".to_string(), b"%PDF-1.4".to_vec()));
        assert_eq!(
            read_request(&mut r).unwrap(),
            Some(("b.txt".into(), Vec::new()))
        );
        assert_eq!(read_request(&mut r).unwrap(), None, "a clean end of input");
        assert!(
            read_request(&mut &wire[..6]).is_err(),
            "a torn request is an error"
        );
        let mut reply = 3u64.to_le_bytes().to_vec();
        reply.extend_from_slice(b"[1]");
        assert_eq!(read_reply(&mut &reply[..]).unwrap(), b"[1]");
    }

    #[test]
    fn every_error_survives_the_wire() {
        let errors = vec![
            ExtractError::Unsupported(".xlsx".into()),
            ExtractError::Corrupt {
                kind: "pdf",
                reason: "r".into(),
            },
            ExtractError::TooLarge {
                kind: "docx",
                reason: "r".into(),
            },
            ExtractError::Timeout {
                kind: "html",
                limit_s: 7,
            },
            ExtractError::BadRecord {
                line: 3,
                reason: "r".into(),
            },
            ExtractError::Empty,
        ];
        for e in errors {
            let shown = e.to_string();
            let json = serde_json::to_string(&WireResult::from(Err(e))).unwrap();
            let back: WireResult = serde_json::from_str(&json).unwrap();
            assert_eq!(back.into_result().unwrap_err().to_string(), shown);
        }
        assert_eq!(static_kind("nope"), "file");
    }

    #[test]
    fn failures_are_classified() {
        use std::os::unix::process::ExitStatusExt;
        let limits = Limits {
            timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
        };
        let abort = std::process::ExitStatus::from_raw(libc::SIGABRT);
        let oom = classify_failure(
            "pdf",
            &abort,
            "memory allocation of 99 bytes failed",
            limits,
        );
        assert!(matches!(&oom, ExtractError::TooLarge { reason, .. } if reason.contains("64 MiB")));
        let deep = classify_failure(
            "pdf",
            &abort,
            "thread 'main' has overflowed its stack",
            limits,
        );
        assert!(deep.to_string().contains("nested too deep"), "{deep}");
        let segv = std::process::ExitStatus::from_raw(libc::SIGSEGV);
        assert!(classify_failure("pdf", &segv, "", limits)
            .to_string()
            .contains("signal 11"));
    }
}
