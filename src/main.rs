//! `callbridge` command line: `callbridge serve [--config PATH] [--listen ADDR]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::info;

use callbridge::config::Config;

#[derive(Parser)]
#[command(name = "callbridge", version, about = "Real-time audio media server for phone calls and AI speech engines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Config file read over the embedded default (config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address; overrides `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", callbridge::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Serve { config, listen } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let mut cfg = match &config {
                Some(p) => Config::load(p).with_context(|| format!("loading {}", p.display()))?,
                None => Config::embedded(),
            };
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            // One worker: a current-thread runtime (no work stealing, no
            // cross-thread wake-ups); otherwise the multi-threaded scheduler.
            let mut rt = if cfg.server.worker_threads == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                if cfg.server.worker_threads > 1 {
                    b.worker_threads(cfg.server.worker_threads);
                }
                b
            };
            rt.enable_all();
            rt.build()?.block_on(run(cfg, config))
        }
    }
}

async fn run(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    info!(
        config = %path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<embedded default>".into()),
        "effective configuration (secrets redacted):\n{}",
        toml::to_string(&cfg.redacted()).unwrap_or_default()
    );
    let listeners = callbridge::server::Listeners::bind(&cfg, cfg.server.listen).await.context("binding listeners")?;
    let addr = listeners.public.local_addr()?;
    if let Some(admin) = &listeners.admin {
        info!(addr = %admin.local_addr()?, "admin listener (/metrics, /v1/numbers)");
    }
    let state =
        callbridge::server::build_state(cfg, callbridge::config::Secrets::from_env()).context("starting callbridge")?;
    let carriers: Vec<&str> = state.carriers.iter().map(|c| c.carrier()).collect();
    info!(%addr, ?carriers, "callbridge listening (carrier webhooks and streams, /v1, /healthz, /metrics)");
    callbridge::server::serve(state, listeners, shutdown_signal()).await?;
    info!("callbridge stopped");
    Ok(())
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
        () = ctrl_c => {},
        () = term => {},
    }
    info!("shutdown signal received: refusing new calls, draining live ones");
}
