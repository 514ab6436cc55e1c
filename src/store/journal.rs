//! The write journal (a file per write in flight, fsynced before the write starts and removed
//! after it), filesystem flushes, and the crash points the crash tests stop at.

use std::io::Write;

use super::*;

#[derive(Serialize, Deserialize)]
struct JournalEntry {
    op: String,
    sources: Vec<String>,
}

/// Flushes the data dir's filesystem. LanceDB's local writes are not fsynced on their own, so
/// without this an acknowledged write would survive a process crash but not a power cut.
pub(super) fn sync_fs(dir: &Path) {
    #[cfg(target_os = "linux")]
    if let Ok(f) = std::fs::File::open(dir) {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which stays open for the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "syncfs failed");
        }
    }
    #[cfg(not(target_os = "linux"))]
    fsync_dir(dir);
}

/// Bytes available to this process on the filesystem holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string for the call, and statvfs fills `st` when it
    // returns 0 (only then is `st` read).
    let st = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

pub(super) fn fsync_dir(p: &Path) {
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.sync_all();
    }
}

impl Store {
    pub(super) fn journal_files(&self) -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.join("journal"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        v.sort();
        Ok(v)
    }

    pub(super) async fn replay_journal(&self) -> Result<()> {
        for f in self.journal_files()? {
            let entry: Option<JournalEntry> = std::fs::read(&f)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match entry {
                Some(e) => {
                    tracing::warn!(op = %e.op, sources = e.sources.len(), "replaying interrupted write");
                    self.reconcile(&e.sources).await?;
                }
                // A journal file torn before its fsync means nothing was written after it.
                None => tracing::warn!(file = %f.display(), "dropping unreadable journal entry"),
            }
            std::fs::remove_file(&f)?;
        }
        fsync_dir(&self.dir.join("journal"));
        Ok(())
    }

    pub(super) fn journal_begin(&self, op: &str, sources: &[String]) -> Result<PathBuf> {
        let path = self
            .dir
            .join("journal")
            .join(format!("{}.json", uuid::Uuid::now_v7()));
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(&JournalEntry {
            op: op.into(),
            sources: sources.to_vec(),
        })?;
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&body).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            // Nothing was written yet; a torn entry (a full disk) must not stay behind.
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        fsync_dir(&self.dir.join("journal"));
        Ok(path)
    }

    pub(super) fn journal_end(&self, path: &Path) -> Result<()> {
        std::fs::remove_file(path)?;
        Ok(())
    }
}

/// How long a write's steps took, logged at debug level when it ends (what a slow write
/// spends its time on: `CAIRN_LOG=info,cairn::store=debug`).
pub(super) struct Laps {
    op: &'static str,
    start: std::time::Instant,
    last: std::time::Instant,
    steps: Vec<(&'static str, u128)>,
}

impl Laps {
    pub(super) fn new(op: &'static str) -> Self {
        let now = std::time::Instant::now();
        Self {
            op,
            start: now,
            last: now,
            steps: Vec::new(),
        }
    }

    /// Ends the step `name` now.
    pub(super) fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((name, (now - self.last).as_millis()));
        self.last = now;
    }

    pub(super) fn log(&self, sources: usize) {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(n, ms)| format!("{n}={ms}"))
            .collect();
        tracing::debug!(
            op = self.op,
            sources,
            ms = self.start.elapsed().as_millis() as u64,
            steps = %steps.join(" "),
            "store write"
        );
    }
}

/// Test hook for the crash test: when `CAIRN_CRASH_AT` names this point, the process aborts
/// here (as a kill -9 would). Compiled in always; costs one env lookup per write.
pub(super) fn crash_point(name: &str) {
    if let Ok(at) = std::env::var("CAIRN_CRASH_AT") {
        if at == name {
            // Count-based: CAIRN_CRASH_AFTER=N lets N writes pass first.
            let n: usize = std::env::var("CAIRN_CRASH_AFTER")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            static HITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            if HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= n {
                eprintln!("cairn: crash point {name} reached, aborting");
                std::process::abort();
            }
        }
    }
}
