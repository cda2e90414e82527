//! `levee-agent`: command line and wiring. The work lives in the library.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use agent::{
    output::{Format, Output},
    pipeline,
    probes::{LoadOptions, Probes, Wakeup},
};
use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "levee-agent",
    version,
    about = "Levee host agent: sees and stops mass data destruction"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the probes, score, alert and (in enforce mode) stop destruction
    /// until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Validate a policy file and print what is wrong with it, by line.
    CheckPolicy {
        /// The policy file.
        path: PathBuf,
    },
    /// Print the shipped default policy (documented line by line).
    DefaultPolicy,
    /// Sessions the in-kernel guard has marked in the running agent: their
    /// processes die at their next destructive call or exec.
    Marks {
        /// The agent's pid (default: the only running levee-agent).
        #[arg(long)]
        agent_pid: Option<u32>,
        #[command(subcommand)]
        action: MarksAction,
    },
}

#[derive(Subcommand)]
enum MarksAction {
    /// List marked sessions (one JSON object per line).
    List,
    /// Clear a session's mark (and its counters), e.g. `login:12`.
    Clear { session: String },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Print one JSON object per event and alert on stdout (logs stay on
    /// stderr). Without it, alerts are logged; events at debug level.
    #[arg(long)]
    json: bool,
    /// Policy file (TOML). Default: the shipped policy (`levee-agent default-policy`).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Kernel BTF used to find struct field offsets.
    #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
    btf: PathBuf,
    /// Collector to stream alerts to: `https://host:port` (or `http://` on
    /// loopback with --insecure-plaintext). Without it, alerts only go to the output.
    #[arg(long)]
    collector: Option<String>,
    /// CA that signed the collector's certificate (PEM).
    #[arg(long)]
    collector_ca: Option<PathBuf>,
    /// This agent's client certificate (PEM), for mutual TLS.
    #[arg(long, requires = "collector_key")]
    collector_cert: Option<PathBuf>,
    /// This agent's client key (PEM).
    #[arg(long, requires = "collector_cert")]
    collector_key: Option<PathBuf>,
    /// Name to verify on the collector's certificate, if not the URL's host.
    #[arg(long)]
    collector_domain: Option<String>,
    /// Allow an `http://` collector URL (loopback development only).
    #[arg(long)]
    insecure_plaintext: bool,
    /// Durable spool of alerts not yet acknowledged by the collector.
    #[arg(long, default_value = "/var/lib/levee/spool.redb")]
    spool: PathBuf,
    /// Most alerts the spool holds; past it the oldest are dropped (and counted).
    #[arg(long, default_value_t = 100_000)]
    spool_capacity: u64,
    /// This agent's id (default: the host name; with mutual TLS the collector
    /// uses the certificate's name instead).
    #[arg(long)]
    agent_id: Option<String>,
    /// Serve `/healthz`, `/readyz` and Prometheus `/metrics` here (HTTP).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds between heartbeats to the collector.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Size of the kernel-to-agent ring buffer in bytes (a power of two, at least 4096).
    #[arg(long, default_value_t = agent::probes::DEFAULT_RING_BUFFER_BYTES, value_parser = parse_ring_size)]
    ring_buffer_bytes: u32,
    /// Longest an event may wait in the kernel before the agent reads it
    /// while events come, batched with others so that traced processes are
    /// not interrupted to wake the agent at every event; after a quiet spell
    /// the first may wait up to 100 ms. What the in-kernel guard did is read
    /// at once. `0` wakes the agent at every event.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    batch_delay: std::time::Duration,
    /// A process in the host's mount namespace: in a container the agent
    /// reaches the host's files (protected directories, allowlisted programs,
    /// mounts, users) through its /proc/PID/root. With hostPID, init (1).
    #[arg(long, default_value_t = 1)]
    host_pid: u32,
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n.is_power_of_two() && n >= 4096 {
        Ok(n)
    } else {
        Err(format!("{n} is not a power of two of at least 4096"))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::CheckPolicy { path } => check_policy(&path),
        Command::DefaultPolicy => {
            print!("{}", agent::policy::DEFAULT_POLICY);
            Ok(())
        }
        Command::Marks { agent_pid, action } => marks(agent_pid, action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("levee-agent: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn marks(agent_pid: Option<u32>, action: MarksAction) -> anyhow::Result<()> {
    use agent::probes::marks;
    let agent = marks::find_agent(agent_pid)?;
    match action {
        MarksAction::List => {
            for mark in marks::list(agent)? {
                println!("{}", serde_json::to_string(&mark)?);
            }
        }
        MarksAction::Clear { session } => {
            if marks::clear(agent, &session)? {
                println!("cleared {session}");
            } else {
                anyhow::bail!("{session} was not marked");
            }
        }
    }
    Ok(())
}

fn check_policy(path: &std::path::Path) -> anyhow::Result<()> {
    match agent::policy::Policy::load(path) {
        Ok(policy) => {
            println!(
                "{}: valid ({:?} mode, {} protected path classes)",
                path.display(),
                policy.mode,
                policy.classes.len()
            );
            Ok(())
        }
        Err(e) => anyhow::bail!("{}", e.render()),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    agent::host::set_host_pid(args.host_pid);
    runtime.block_on(async {
        let probes = Probes::load(&LoadOptions {
            btf_path: args.btf,
            ring_buffer_bytes: args.ring_buffer_bytes,
            wakeup: if args.batch_delay.is_zero() {
                Wakeup::EveryRecord
            } else {
                Wakeup::Batched {
                    poll: args.batch_delay,
                }
            },
        })?;
        info!("probes attached");
        let format = if args.json { Format::Json } else { Format::Log };
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = sigint.recv() => info!("SIGINT: shutting down"),
                _ = sigterm.recv() => info!("SIGTERM: shutting down"),
            }
        };
        let host = agent::alert::host_name();
        let ship = args.collector.map(|url| pipeline::ShipSettings {
            collector: agent::ship::sender::Config {
                url,
                ca: args.collector_ca,
                identity: args.collector_cert.zip(args.collector_key),
                domain: args.collector_domain,
                insecure_plaintext: args.insecure_plaintext,
                agent_id: args.agent_id.unwrap_or_else(|| host.clone()),
                host,
                heartbeat: std::time::Duration::from_secs(args.heartbeat_secs.max(1)),
            },
            spool: args.spool,
            spool_capacity: args.spool_capacity,
            placement: agent::ship::wire::Placement::from_env(),
        });
        let settings = pipeline::Settings {
            policy: args.policy,
            ship,
            metrics: args.metrics_listen,
        };
        let losses = pipeline::run(probes, Output::new(format), settings, shutdown).await?;
        info!(lost = losses.total(), "stopped");
        Ok(())
    })
}
