//! The `cairn` command line: one module per command group, each a thin layer that calls the
//! core (or a running server, with `--server`) and prints the result as text or JSON.
//!
//! - `args`: clap's definitions of every command and option;
//! - `serve`: the HTTP server; `keys`: API keys;
//! - `ingest`: files and folders, locally or to a server; `ask`: answers, locally or remote;
//! - `read`: search, sources, stats, concepts, graph, delete;
//! - `ops`: check/repair, eval, bench.

/// `println!` for commands that return `Result<_, Error>`: one write, and a closed pipe
/// (`cairn search --json | grep -q x`, `| head`) ends the command quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::out(&format!("{}\n", format_args!($($arg)*)))?
    };
}

pub mod args;
mod ask;
mod ingest;
mod keys;
mod names;
mod ops;
mod read;
mod serve;

use std::process::ExitCode;

use cairn::config::Config;
use cairn::error::Error;

use args::{Cli, Cmd};

/// Writes and flushes stdout; a closed pipe ends the command quietly (exit 0: the reader has
/// what it wanted).
pub fn out(s: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(e.into()),
    }
}

/// Runs one command.
pub async fn run(cli: Cli, config: Config) -> Result<ExitCode, Error> {
    let reuse = cli.data_dir.is_some();
    match cli.cmd {
        Cmd::Serve { insecure, .. } => serve::serve(config, insecure).await,
        Cmd::Keys { cmd } => keys::keys(&config, cmd),
        Cmd::Openapi => {
            let spec = cairn::http::openapi_spec();
            say!("{}", cairn::http::openapi::document(&spec));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ask(a) => ask::ask(config, a).await,
        Cmd::Ingest(a) => ingest::ingest(config, a).await,
        Cmd::Concepts { query, limit } => read::concepts(config, &query, limit).await,
        Cmd::Graph(a) => read::graph(config, a).await,
        Cmd::Search(a) => read::search(config, a).await,
        Cmd::Sources { json } => read::sources(config, json).await,
        Cmd::Delete { source, root } => read::delete(config, &source, root.as_deref()).await,
        Cmd::Stats { json } => read::stats(config, json).await,
        Cmd::Check { repair, json } => ops::check(config, repair, json).await,
        Cmd::Bench(a) => ops::bench(config, reuse, a).await,
        Cmd::Eval(a) => ops::eval(config, reuse, a).await,
    }
}
