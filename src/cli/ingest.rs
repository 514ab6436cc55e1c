//! `cairn ingest`: files and folders into the data dir, or uploaded to a `--server`.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use cairn::config::Config;
use cairn::error::{Code, Error};
use cairn::extract::FileType;
use cairn::service::{source_id_of, Cairn, IngestFile, IngestReport, IngestStatus};

use super::args::{IngestArgs, RemoteArgs};
use super::names::Namer;

/// `cairn ingest`: into the data dir, or uploaded to `--server`.
pub async fn ingest(config: Config, a: IngestArgs) -> Result<ExitCode, Error> {
    let namer = Namer::new(a.root.as_deref())?;
    let found = collect_files(&a.paths, &namer);
    match &a.server {
        Some(url) => ingest_remote(&config, found, url, &a.remote, a.json).await,
        None => ingest_local(config, found, a.json).await,
    }
}

/// The files to ingest, each with its external id; the unsupported files skipped in folders;
/// the paths that do not exist.
struct Found {
    files: Vec<PathBuf>,
    names: Vec<String>,
    skipped: usize,
    missing: Vec<(String, String)>,
}

impl Found {
    /// Names files by the absolute path they were first ingested under (before relative ids)
    /// where `stored` says the store holds a source under it.
    async fn keep_legacy_names<F, Fut>(&mut self, stored: F) -> Result<(), Error>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<HashSet<String>, Error>>,
    {
        let old: Vec<(usize, String)> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, p)| (i, Namer::legacy(p)))
            .filter(|(i, old)| *old != self.names[*i])
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let have = stored(old.iter().map(|(_, o)| source_id_of(o)).collect()).await?;
        let mut kept = 0;
        for (i, o) in old {
            if have.contains(&source_id_of(&o)) {
                self.names[i] = o;
                kept += 1;
            }
        }
        if kept > 0 {
            eprintln!(
                "note: {kept} files keep the absolute path they were first ingested under as \
                 their id (delete them and ingest again for relative ids)"
            );
        }
        Ok(())
    }
}

/// Files to ingest: named files as given; folders walked recursively, keeping supported types.
fn collect_files(paths: &[PathBuf], namer: &Namer) -> Found {
    let mut files = Vec::new();
    let mut skipped = 0;
    let mut missing = Vec::new();
    for p in paths {
        if p.is_dir() {
            for e in walkdir::WalkDir::new(p)
                .sort_by_file_name()
                .into_iter()
                .filter_map(|e| e.ok())
            {
                if !e.file_type().is_file() {
                    continue;
                }
                let hidden = e.file_name().to_string_lossy().starts_with('.');
                if !hidden && FileType::from_name(&e.file_name().to_string_lossy()).is_some() {
                    files.push(e.into_path());
                } else {
                    skipped += 1;
                }
            }
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            missing.push((
                p.display().to_string(),
                "no such file or directory".to_string(),
            ));
        }
    }
    let names = files.iter().map(|p| namer.name(p)).collect();
    Found {
        files,
        names,
        skipped,
        missing,
    }
}

struct Progress {
    bar: Option<ProgressBar>,
    json: bool,
}

impl Progress {
    fn new(total: usize, json: bool) -> Self {
        let bar = if !json && std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} files {msg} [{elapsed_precise}, eta {eta}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Some(b)
        } else {
            None
        };
        Self { bar, json }
    }

    fn report(&self, r: &IngestReport) {
        let line = match (&r.error, r.status) {
            (Some(e), _) => format!("failed     {}: {} ({})", r.file, e.message, e.code),
            (None, s) => format!("{:<10} {} ({} chunks)", s.as_str(), r.file, r.chunks),
        };
        match &self.bar {
            Some(b) => {
                if r.error.is_some() {
                    b.println(line);
                }
                b.set_message(r.file.rsplit('/').next().unwrap_or_default().to_string());
            }
            None if self.json => {}
            None => eprintln!("{line}"),
        }
    }

    fn file_done(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn summarize(reports: &[IngestReport], skipped: usize, json: bool) -> ExitCode {
    let count = |s: IngestStatus| reports.iter().filter(|r| r.status == s).count();
    let failed = count(IngestStatus::Failed);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "created": count(IngestStatus::Created),
                "updated": count(IngestStatus::Updated),
                "unchanged": count(IngestStatus::Unchanged),
                "failed": failed,
                "skipped": skipped,
                "chunks": reports.iter().map(|r| r.chunks as u64).sum::<u64>(),
                "sources": reports,
            })
        );
    } else {
        println!(
            "{} created, {} updated, {} unchanged, {} failed, {} skipped (unsupported or hidden)",
            count(IngestStatus::Created),
            count(IngestStatus::Updated),
            count(IngestStatus::Unchanged),
            failed,
            skipped
        );
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// How files are grouped into one ingest call (or one upload): the same rule both ways.
struct BatchRule {
    /// A larger file fails on its own (`payload_too_large`), unread.
    max_file_bytes: u64,
    max_files: usize,
    /// A batch is closed once its files reach this many bytes.
    max_bytes: u64,
}

/// Reads files in groups under a [`BatchRule`], so a folder of large PDFs never sits in memory
/// all at once.
struct Batches<'a> {
    files: &'a [PathBuf],
    names: &'a [String],
    at: usize,
    rule: BatchRule,
}

/// One group: the files read, the files that failed before being sent, and how many files
/// of the list the group covers.
struct Batch {
    files: Vec<IngestFile>,
    failed: Vec<IngestReport>,
    covered: usize,
}

impl Batches<'_> {
    fn next_batch(&mut self) -> Option<Batch> {
        if self.at >= self.files.len() {
            return None;
        }
        let mut b = Batch {
            files: Vec::new(),
            failed: Vec::new(),
            covered: 0,
        };
        let mut bytes = 0u64;
        let max = self.rule.max_file_bytes;
        while self.at < self.files.len()
            && b.files.len() < self.rule.max_files
            && bytes < self.rule.max_bytes
        {
            let (p, name) = (&self.files[self.at], self.names[self.at].clone());
            self.at += 1;
            b.covered += 1;
            let read = match std::fs::metadata(p).map(|m| m.len()) {
                Ok(n) if n > max => Err((
                    Code::PayloadTooLarge,
                    format!("file is {n} bytes; the limit is {max} (ingest.max_file_bytes)"),
                )),
                _ => std::fs::read(p).map_err(|e| (Code::UnreadableDocument, e.to_string())),
            };
            match read {
                Ok(data) => {
                    bytes += data.len() as u64;
                    b.files.push(IngestFile {
                        name,
                        bytes: data,
                        metadata: Default::default(),
                    });
                }
                Err((code, why)) => b.failed.push(failed_report(&name, code.as_str(), &why)),
            }
        }
        Some(b)
    }
}

async fn ingest_local(config: Config, mut found: Found, json: bool) -> Result<ExitCode, Error> {
    let rule = BatchRule {
        max_file_bytes: config.ingest.max_file_bytes,
        max_files: config.ingest.batch_sources.max(1),
        max_bytes: config.ingest.max_batch_bytes,
    };
    let cairn = Cairn::open(config).await?;
    let c = &cairn;
    found
        .keep_legacy_names(|ids| async move { c.existing_sources(&ids).await })
        .await?;
    let progress = Progress::new(found.files.len(), json);
    let mut reports = missing_reports(found.missing, &progress);
    let batches = Batches {
        files: &found.files,
        names: &found.names,
        at: 0,
        rule,
    };
    let report = |r: &IngestReport| progress.report(r);
    send_batches(batches, &progress, &mut reports, |files| {
        cairn.ingest_files(files, &report)
    })
    .await?;
    cairn.optimize().await?;
    Ok(summarize(&reports, found.skipped, json))
}

/// A failed report for each path that does not exist.
fn missing_reports(missing: Vec<(String, String)>, progress: &Progress) -> Vec<IngestReport> {
    missing
        .into_iter()
        .map(|(name, why)| {
            let r = failed_report(&name, Code::NotFound.as_str(), &why);
            progress.report(&r);
            r
        })
        .collect()
}

fn failed_report(file: &str, code: &str, message: &str) -> IngestReport {
    IngestReport::failure(
        file,
        cairn::service::ErrorBody {
            code: code.into(),
            message: message.into(),
            suggestions: None,
        },
    )
}

/// Sends every batch with `send` (an ingest call or an upload), reporting the files that
/// failed before being sent and counting progress; `send` reports what it ingests.
async fn send_batches<F, Fut>(
    mut batches: Batches<'_>,
    progress: &Progress,
    reports: &mut Vec<IngestReport>,
    mut send: F,
) -> Result<(), Error>
where
    F: FnMut(Vec<IngestFile>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<IngestReport>, Error>>,
{
    while let Some(b) = batches.next_batch() {
        for r in b.failed {
            progress.report(&r);
            reports.push(r);
        }
        if !b.files.is_empty() {
            reports.extend(send(b.files).await?);
        }
        (0..b.covered).for_each(|_| progress.file_done());
    }
    progress.finish();
    Ok(())
}

async fn ingest_remote(
    config: &Config,
    mut found: Found,
    url: &str,
    remote: &RemoteArgs,
    json: bool,
) -> Result<ExitCode, Error> {
    let client = reqwest::Client::new();
    let endpoint = format!("{}/sources", url.trim_end_matches('/'));
    found
        .keep_legacy_names(|ids| remote_existing(&client, &endpoint, remote, ids))
        .await?;
    let progress = Progress::new(found.files.len(), json);
    let mut reports = missing_reports(found.missing, &progress);
    // Each request stays under the server's default upload limit; a file that alone would
    // not fails here, as it would there.
    let upload = config.server.max_upload_bytes as u64;
    let rule = BatchRule {
        max_file_bytes: config.ingest.max_file_bytes.min(upload),
        max_files: 64,
        max_bytes: (upload / 2).max(1),
    };
    let batches = Batches {
        files: &found.files,
        names: &found.names,
        at: 0,
        rule,
    };
    let (client, endpoint, shown) = (&client, endpoint.as_str(), &progress);
    send_batches(batches, &progress, &mut reports, move |files| async move {
        let out = upload_batch(client, endpoint, remote, files).await?;
        out.iter().for_each(|r| shown.report(r));
        Ok(out)
    })
    .await?;
    Ok(summarize(&reports, found.skipped, json))
}

/// Which of `ids` the server holds (`GET /sources/{id}`); none when the key may not read
/// sources.
async fn remote_existing(
    client: &reqwest::Client,
    endpoint: &str,
    remote: &RemoteArgs,
    ids: Vec<String>,
) -> Result<HashSet<String>, Error> {
    let mut out = HashSet::new();
    for id in ids {
        let url = format!("{endpoint}/{id}");
        let r = remote
            .authorize(client.get(&url))
            .send()
            .await
            .map_err(|e| Error::InvalidInput(format!("cannot reach {endpoint}: {e}")))?;
        match r.status().as_u16() {
            200 => {
                out.insert(id);
            }
            401 | 403 => break,
            _ => {}
        }
    }
    Ok(out)
}

/// One multipart upload; the server's per-file reports.
async fn upload_batch(
    client: &reqwest::Client,
    endpoint: &str,
    remote: &RemoteArgs,
    files: Vec<IngestFile>,
) -> Result<Vec<IngestReport>, Error> {
    let mut form = reqwest::multipart::Form::new();
    for f in files {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(f.bytes).file_name(f.name),
        );
    }
    let resp = remote
        .authorize(client.post(endpoint))
        .multipart(form)
        .send()
        .await
        .map_err(|e| Error::InvalidInput(format!("cannot reach {endpoint}: {e}")))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    let list = body
        .get("sources")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    if list.is_empty() && !status.is_success() {
        let msg = body
            .pointer("/error/message")
            .and_then(|m| m.as_str())
            .unwrap_or("request failed")
            .to_string();
        return Err(Error::InvalidInput(format!(
            "server answered {status}: {msg}"
        )));
    }
    Ok(list
        .into_iter()
        .map(|item| {
            serde_json::from_value::<IngestReport>(item.clone()).unwrap_or_else(|e| {
                failed_report(
                    &item.to_string(),
                    "bad_response",
                    &format!("unexpected report from the server: {e}"),
                )
            })
        })
        .collect())
}
