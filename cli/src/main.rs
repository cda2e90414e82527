//! `levee`: follow and query a Levee collector.
//!
//! `levee alerts tail` follows alerts live (a table, or `--json` lines) and
//! resumes from `--from <cursor>`; `levee alerts list` pages through stored
//! alerts; `levee agents` shows each agent's last heartbeat and drop counters.

use std::{path::PathBuf, process::ExitCode, time::SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};
use proto::client::ClientTls;
use proto::v1::{
    soc_client::SocClient, Filters, ListAgentsRequest, ListAlertsRequest, Severity, StoredAlert,
    SubscribeRequest,
};
use tonic::{
    metadata::MetadataValue, service::interceptor::InterceptedService, transport::Channel, Request, Status,
};

#[derive(Parser)]
#[command(name = "levee", version, about = "Follow and query a Levee collector")]
struct Cli {
    /// Collector URL.
    #[arg(
        long,
        env = "LEVEE_COLLECTOR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    collector: String,
    /// CA that signed the collector's certificate (PEM).
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Client certificate and key (PEM), instead of a token.
    #[arg(long, requires = "key", global = true)]
    cert: Option<PathBuf>,
    #[arg(long, requires = "cert", global = true)]
    key: Option<PathBuf>,
    /// File holding the SOC bearer token (or set LEVEE_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Alerts.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Agents: last heartbeat, health and drop counters.
    Agents {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Follow alerts live, after replaying those after `--from`.
    Tail(View),
    /// Print stored alerts after `--from`.
    List {
        #[command(flatten)]
        view: View,
        /// Most alerts to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(clap::Args)]
struct View {
    /// Start after this cursor (0: from the beginning).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only alerts at least this severe: info, low, medium, high, critical.
    #[arg(long)]
    min_severity: Option<String>,
    /// Only alerts from this host.
    #[arg(long)]
    host: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("levee: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

type Client = SocClient<InterceptedService<Channel, Auth>>;

#[derive(Clone)]
struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let tls = ClientTls {
        ca: cli.ca.as_deref(),
        identity: cli.cert.as_deref().zip(cli.key.as_deref()),
        domain: None,
    };
    // Plaintext is the collector's choice (it serves it on loopback only).
    let endpoint = proto::client::endpoint(&cli.collector, &tls, true)?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", cli.collector))?;
    let token = match &cli.token_file {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => std::env::var("LEVEE_TOKEN").ok(),
    };
    let header = token
        .map(|t| format!("Bearer {}", t.trim()).parse())
        .transpose()
        .context("token")?;
    Ok(SocClient::with_interceptor(channel, Auth(header)))
}

fn filters(view: &View) -> anyhow::Result<Filters> {
    let min_severity = match view.min_severity.as_deref() {
        None => Severity::Unspecified,
        Some(name) => Severity::from_str_name(&format!("SEVERITY_{}", name.to_uppercase()))
            .with_context(|| format!("unknown severity {name:?}"))?,
    };
    Ok(Filters {
        min_severity: min_severity as i32,
        host: view.host.clone().unwrap_or_default(),
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut client = client(&cli).await?;
    match &cli.command {
        Command::Alerts {
            command: AlertsCommand::Tail(view),
        } => {
            let request = SubscribeRequest {
                from_cursor: view.from,
                filters: Some(filters(view)?),
            };
            let mut stream = client.subscribe(request).await?.into_inner();
            header(view.json);
            while let Some(alert) = stream.message().await? {
                print(&alert, view.json);
            }
        }
        Command::Alerts {
            command: AlertsCommand::List { view, limit },
        } => {
            let request = ListAlertsRequest {
                after_cursor: view.from,
                limit: *limit,
                filters: Some(filters(view)?),
            };
            let alerts = client.list_alerts(request).await?.into_inner().alerts;
            header(view.json);
            for alert in &alerts {
                print(alert, view.json);
            }
        }
        Command::Agents { json } => {
            let agents = client
                .list_agents(ListAgentsRequest {})
                .await?
                .into_inner()
                .agents;
            if !json {
                println!(
                    "{:<24} {:<20} {:<22} {:>7} {:>10} {:>8}  state",
                    "AGENT", "HOST", "LAST HEARTBEAT", "SPOOL", "RB DROPS", "ALERTS"
                );
            }
            for agent in agents {
                let health = agent.health.clone().unwrap_or_default();
                if *json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "agent_id": agent.agent_id, "host": agent.host, "last_heartbeat": time(agent.last_heartbeat.as_ref()),
                            "silent": agent.silent, "spool_depth": health.spool_depth, "spool_dropped": health.spool_dropped,
                            "ring_buffer_full": health.ring_buffer_full, "alerts": health.alerts, "kills": health.kills,
                            "policy_version": health.policy_version, "mode": health.mode,
                        })
                    );
                } else {
                    println!(
                        "{:<24} {:<20} {:<22} {:>7} {:>10} {:>8}  {}",
                        agent.agent_id,
                        agent.host,
                        time(agent.last_heartbeat.as_ref()),
                        health.spool_depth,
                        health.ring_buffer_full,
                        health.alerts,
                        if agent.silent { "SILENT" } else { "ok" }
                    );
                }
            }
        }
    }
    Ok(())
}

/// Seconds for the table; nanoseconds for `--json` (machines compare them).
fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

fn precise_time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .map(|t| humantime::format_rfc3339_nanos(t).to_string())
        .unwrap_or_default()
}

fn header(json: bool) {
    if !json {
        println!(
            "{:>7}  {:<20}  {:<8}  {:<16}  {:<22}  SUMMARY",
            "CURSOR", "TIME", "SEVERITY", "HOST", "SESSION"
        );
    }
}

fn print(stored: &StoredAlert, json: bool) {
    let Some(alert) = &stored.alert else { return };
    let severity = Severity::try_from(alert.severity).map_or("?".into(), |s| {
        s.as_str_name().trim_start_matches("SEVERITY_").to_lowercase()
    });
    let session = alert.session.as_ref().map(|s| s.key.clone()).unwrap_or_default();
    if json {
        let features: Vec<_> = alert
            .features
            .iter()
            .map(|f| serde_json::json!({"name": f.name, "value": f.value, "contribution": f.contribution}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "cursor": stored.cursor, "id": alert.id, "time": precise_time(alert.time.as_ref()), "severity": severity,
                "host": alert.host, "agent_id": alert.agent_id, "session": session, "summary": alert.summary,
                "features": features, "mitre": alert.mitre, "action": alert.action.as_ref().map(|a| a.kind.clone()),
                "source": alert.source,
            })
        );
    } else {
        println!(
            "{:>7}  {:<20}  {:<8}  {:<16}  {:<22}  {}",
            stored.cursor,
            time(alert.time.as_ref()),
            severity,
            alert.host,
            session,
            alert.summary
        );
    }
}
