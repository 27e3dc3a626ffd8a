//! `confab-server`: parses flags, sets up logging, runs until SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;
use confab_server::{Cli, Server};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc malloc. Each argon2 hash (login, register)
/// takes 19 MiB; glibc raises its mmap threshold after the first such block
/// is freed and from then on keeps them in per-thread arenas (hashes run on
/// the blocking pool's threads), so a server that had served 300 logins
/// stayed ~800-990 MiB resident for good. jemalloc returns that memory:
/// 22 MiB resident at 1,000 idle sockets after the same logins
/// (BENCHMARKS.md, idle). It costs ~0.4 KB more per idle socket (size
/// classes round a few per-socket blocks up).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Also the `main` of `confab-server-fault` (src/bin/), hence `pub`.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs go to stderr, structured key=value; RUST_LOG overrides the level.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let delete_stream = cli.delete_cluster_stream;
    let config = cli.into_config();
    if delete_stream {
        let cluster = config
            .cluster
            .as_ref()
            .context("--delete-cluster-stream needs --nats-url")?;
        let name = confab_server::cluster::stream_name(&cluster.name)?;
        let deleted = confab_server::cluster::delete_stream(cluster).await?;
        println!(
            "JetStream stream {name}: {}",
            if deleted { "deleted" } else { "not found" }
        );
        return Ok(());
    }
    let data_dir = config.data_dir.display().to_string();
    let server = Server::bind(config)
        .await
        .context("starting confab-server")?;
    // Tests and scripts parse this exact line (stdout is line-buffered).
    println!("confab-server listening on {}", server.url());
    tracing::info!(addr = %server.local_addr(), data_dir, "listening");
    if let Some(addr) = server.metrics_addr() {
        tracing::info!(%addr, "serving /metrics");
    }
    server.serve(shutdown_signal()).await.context("serving")?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
