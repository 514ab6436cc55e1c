//! The `cairn` binary: the extraction worker's entry, then configuration, telemetry and the
//! runtime around one command of `cli`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cairn::config::{Config, Overrides};
use cli::args::{Cli, Cmd, GenArgs};

/// Turns transparent huge pages off for this process and the extraction workers it starts
/// (`server.huge_pages = false`, the default). mimalloc asks for them on its arenas, and a huge
/// page stays resident while any 4 KiB of it is in use: under a steady write load RSS grew ~35%
/// in four minutes with them and ~13% without, as with glibc malloc; searches cost ~7% more
/// CPU without them (docs/benchmarks.md, "Reliability").
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// mimalloc instead of glibc malloc: a search allocates many small strings and vectors on
/// several threads, where glibc's arenas cost about an eighth of a keyword search's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // An extraction worker (`cairn::sandbox`) reads one file on stdin and does nothing else.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == cairn::sandbox::WORKER_ARG)
    {
        return cairn::sandbox::worker_main();
    }
    if let Some(program) = cairn::sandbox::this_program() {
        cairn::sandbox::set_worker_program(program);
    }
    let cli = Cli::parse();
    let (addr, gen, auth) = match &cli.cmd {
        Cmd::Serve {
            addr, gen, auth, ..
        } => (*addr, gen.clone(), *auth),
        Cmd::Ask(a) => (None, a.gen.clone(), None),
        Cmd::Bench(b) => (None, b.gen.clone(), None),
        Cmd::Eval(e) => (None, e.gen.clone(), None),
        _ => (None, GenArgs::default(), None),
    };
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        addr,
        generator: gen.generator,
        llm_model: gen.llm_model,
        llm_base_url: gen.llm_base_url,
        auth,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !config.server.huge_pages {
        no_transparent_huge_pages();
    }
    let _telemetry = match cairn::telemetry::init(&config, matches!(cli.cmd, Cmd::Serve { .. })) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(cli, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
