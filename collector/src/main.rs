//! `levee-collector`: command line and wiring.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use collector::server::{serve, Config, TlsFiles};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "levee-collector",
    version,
    about = "Levee collector: stores agents' alerts and serves them to the SOC"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// SQLite database file.
    #[arg(long, default_value = "/var/lib/levee/collector.db")]
    database: PathBuf,
    /// Server certificate (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA for client certificates (PEM): agents must present one (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// File holding the SOC bearer token.
    #[arg(long)]
    soc_token_file: Option<PathBuf>,
    /// Serve without TLS, on a loopback address only (development).
    #[arg(long)]
    insecure_plaintext: bool,
    /// Serve `/healthz`, `/readyz` and Prometheus `/metrics` here (HTTP).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Seconds without a heartbeat after which an agent is reported silent.
    #[arg(long, default_value_t = 90)]
    silent_after_secs: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee-collector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let soc_token = cli
        .soc_token_file
        .map(|p| std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display())))
        .transpose()?
        .map(|t| t.trim().to_owned());
    let tls = cli.tls_cert.zip(cli.tls_key).map(|(cert, key)| TlsFiles {
        cert,
        key,
        client_ca: cli.client_ca,
    });
    let config = Config {
        listen: cli.listen,
        database: cli.database,
        tls,
        soc_token,
        insecure_plaintext: cli.insecure_plaintext,
        silent_after: Duration::from_secs(cli.silent_after_secs),
        metrics: cli.metrics_listen,
    };
    if let Some(dir) = config.database.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        serve(config, shutdown).await
    })
}
