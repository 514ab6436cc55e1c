//! The external ids `cairn ingest` gives files, and how `cairn delete PATH` finds them again.
//!
//! A file's id is its path relative to a root folder (`--root`, default the current
//! directory) with `/` separators: the same tree gets the same ids from any machine, mount
//! point or container, and no server path reaches API clients through `external_id`. A file
//! outside the root keeps its absolute path. Data dirs written before relative ids held
//! absolute paths; a file whose old id is stored keeps it ([`Namer::legacy`]), so re-ingesting
//! such a folder updates its sources instead of adding every document twice.

use std::path::{Component, Path, PathBuf};

use cairn::error::{Error, Result};

/// Names files relative to one root.
pub struct Namer {
    root: PathBuf,
}

impl Namer {
    /// A namer for `root`, or the current directory without one.
    pub fn new(root: Option<&Path>) -> Result<Self> {
        let root = match root {
            Some(r) => r.to_path_buf(),
            None => std::env::current_dir()?,
        };
        let root = std::fs::canonicalize(&root)
            .map_err(|e| Error::InvalidInput(format!("--root {}: {e}", root.display())))?;
        Ok(Self { root })
    }

    /// The id of the file at `p`.
    pub fn name(&self, p: &Path) -> String {
        relative_name(&self.root, &absolute(p))
    }

    /// The id the file at `p` had before relative ids: its absolute path.
    pub fn legacy(p: &Path) -> String {
        absolute(p).display().to_string()
    }

    /// The ids `cairn delete ARG` tries, most specific first: the argument as given (a source
    /// id or an external id), then, for a path that exists, its id and its old absolute id.
    pub fn candidates(&self, arg: &str) -> Vec<String> {
        let mut out = vec![arg.to_string()];
        let p = Path::new(arg);
        if p.exists() {
            for c in [self.name(p), Self::legacy(p)] {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }
}

/// `p` made absolute with symbolic links resolved (as given when it cannot be resolved).
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// `abs` relative to `root` with `/` separators; `abs` itself when it is not under `root` (or
/// is `root`).
fn relative_name(root: &Path, abs: &Path) -> String {
    match abs.strip_prefix(root) {
        Ok(rel) if rel.components().next().is_some() => rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/"),
        _ => abs.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_under_the_root_are_named_by_their_relative_path() {
        let root = Path::new("/home/ann/papers");
        let name = |p: &str| relative_name(root, Path::new(p));
        assert_eq!(name("/home/ann/papers/a.pdf"), "a.pdf");
        assert_eq!(name("/home/ann/papers/2021/q1/b.md"), "2021/q1/b.md");
        // Outside the root (or the root itself): the absolute path, nothing guessed.
        assert_eq!(name("/srv/other/c.txt"), "/srv/other/c.txt");
        assert_eq!(
            name("/home/ann/papers-old/d.txt"),
            "/home/ann/papers-old/d.txt"
        );
        assert_eq!(name("/home/ann/papers"), "/home/ann/papers");
    }

    #[test]
    fn delete_tries_the_argument_first_and_paths_only_when_they_exist() {
        let n = Namer {
            root: PathBuf::from("/nonexistent-root"),
        };
        assert_eq!(n.candidates("src_0123"), ["src_0123"]);
        assert_eq!(n.candidates("no/such/file.pdf"), ["no/such/file.pdf"]);
    }
}
