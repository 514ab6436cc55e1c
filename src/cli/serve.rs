//! `cairn serve`: the HTTP server until SIGINT/SIGTERM, then a graceful stop.

use std::process::ExitCode;
use std::sync::Arc;

use cairn::config::Config;
use cairn::error::Error;
use cairn::service::Cairn;

pub async fn serve(config: Config, insecure: bool) -> Result<ExitCode, Error> {
    let addr = config.server.addr;
    if config.auth.mode == cairn::config::AuthMode::Disabled {
        if !addr.ip().is_loopback() && !insecure {
            return Err(Error::InvalidInput(format!(
                "refusing to serve {addr} without authentication: use --auth api_key (create keys \
                 with `cairn keys create`), bind a loopback address, or pass --insecure"
            )));
        }
        tracing::warn!(addr = %addr, "authentication is disabled: every client has every scope");
    }
    let mut cairn = Cairn::open(config).await?;
    cairn.load_generator().await?;
    let cairn = Arc::new(cairn);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::InvalidInput(format!(
            "cannot listen on {addr}: {e} (is another server using the port? try --addr)"
        ))
    })?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, data_dir = %cairn.config.data_dir.display(), "cairn listening");
    // A machine-readable line for scripts and tests that bind port 0.
    println!("cairn listening on http://{local}");
    cairn::http::serve(cairn.clone(), listener, shutdown_signal()).await?;
    // A write whose client went away runs on in its own task: let it finish before exiting.
    cairn.store.wait_idle().await;
    tracing::info!("shutting down: in-flight requests and writes finished");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
