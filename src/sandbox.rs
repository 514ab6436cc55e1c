//! Extraction of untrusted files in a child process, bounded in time and memory.
//!
//! Why: the parsers are code we did not write, run on bytes from anyone who holds an `ingest`
//! key. A PDF with arrays nested 1,000 deep overflowed lopdf's recursive parser, and a stack
//! overflow aborts the whole process (`catch_unwind` cannot catch it); a parser that loops on
//! a worker thread can only be abandoned, never stopped, and its memory cannot be capped. A
//! child process can be both: each file is extracted by `cairn __extract-worker` (the same
//! binary, `/proc/self/exe`), which reads the file on stdin and writes the extracted documents
//! as JSON on stdout, under `RLIMIT_DATA` = `ingest.extract_memory_mb`, and is killed at
//! `ingest.extract_timeout_s`. A crash, an allocation past the budget or the deadline becomes
//! that one file's error (`unreadable_document`, `document_too_large`, `extract_timeout`); the
//! server and the other files of the upload go on.
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        Some(program) => in_child(program, &name, &bytes, limits).await,
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

async fn in_child(program: &Path, name: &str, bytes: &[u8], limits: Limits) -> Result<Extracted> {
    let kind = kind_of(name);
    let mut child = worker_command(program, limits.memory_bytes)
        .spawn()
        .map_err(|e| Error::internal(format!("cannot start the extraction worker: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let header = encode_header(name);
    let io = async {
        let write = async {
            // A worker that dies early closes its stdin: its exit status tells why.
            let _ = stdin.write_all(&header).await;
            let _ = stdin.write_all(bytes).await;
            drop(stdin);
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut stderr = stderr.take(STDERR_KEEP);
        let read_out = stdout.read_to_end(&mut out);
        let read_err = stderr.read_to_end(&mut err);
        let ((), out_res, _) = tokio::join!(write, read_out, read_err);
        let status = child.wait().await;
        (status, out_res.map(|_| out), err)
    };
    let Ok((status, out, err)) = tokio::time::timeout(limits.timeout, io).await else {
        let _ = child.kill().await;
        return Ok(vec![Err(timed_out(kind, limits))]);
    };
    let status = status.map_err(|e| Error::internal(format!("extraction worker: {e}")))?;
    let out = out.map_err(|e| Error::internal(format!("extraction worker output: {e}")))?;
    if status.success() {
        if let Ok(wire) = serde_json::from_slice::<Vec<WireResult>>(&out) {
            return Ok(wire.into_iter().map(WireResult::into_result).collect());
        }
    }
    let error = classify_failure(kind, &status, &String::from_utf8_lossy(&err), limits);
    tracing::warn!(file = %name, %status, error = %error, "extraction worker failed");
    Ok(vec![Err(error)])
}

fn worker_command(program: &Path, memory_bytes: u64) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(WORKER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: between fork and exec the closure only calls setrlimit, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || set_limits(memory_bytes));
    }
    cmd
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

/// The worker's input: the file name's length (u32, little-endian) and the name; the file's
/// bytes follow.
fn encode_header(name: &str) -> Vec<u8> {
    let mut h = (name.len() as u32).to_le_bytes().to_vec();
    h.extend_from_slice(name.as_bytes());
    h
}

fn decode_input(input: &[u8]) -> Option<(&str, &[u8])> {
    let len = u32::from_le_bytes(input.get(..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(input.get(4..4 + len)?).ok()?;
    Some((name, &input[4 + len..]))
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

/// The worker: reads one file from stdin, extracts it, writes the results as JSON to stdout.
/// Runs before anything else in `main` (no config, logging or models).
pub fn worker_main() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        // Reading grows the buffer fallibly: past the memory limit this is where it ends.
        if e.kind() == std::io::ErrorKind::OutOfMemory {
            eprintln!("extract worker: out of memory reading the file");
        } else {
            eprintln!("extract worker: cannot read the file: {e}");
        }
        return ExitCode::from(2);
    }
    let Some((name, bytes)) = decode_input(&input) else {
        eprintln!("extract worker: malformed input");
        return ExitCode::from(2);
    };
    let wire: Vec<WireResult> = extract::extract(name, bytes)
        .into_iter()
        .map(WireResult::from)
        .collect();
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, &wire).map_err(std::io::Error::from);
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(3),
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
    fn header_round_trip() {
        let mut input = encode_header("dir/ü.pdf");
        input.extend_from_slice(b"%PDF-1.4");
        assert_eq!(decode_input(&input), Some(("dir/ü.pdf", &b"%PDF-1.4"[..])));
        assert_eq!(decode_input(&[1, 0]), None);
        assert_eq!(decode_input(&[9, 0, 0, 0, b'a']), None);
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
