//! Streams spooled alerts to the collector, in order, over one bidirectional
//! gRPC stream; removes them from the spool as acks come; reconnects with
//! exponential backoff and resends whatever was not acknowledged. Sends a
//! heartbeat with the agent's health at a fixed interval.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use prost::Message;
use proto::client::ClientTls;
use proto::v1::{
    agent_ingest_client::AgentIngestClient, agent_message::Kind, collector_message, AgentMessage,
    AlertEnvelope, Heartbeat, Hello,
};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::{info, warn};

use super::spool::Spool;
use crate::health::Health;

/// How to reach the collector.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://host:port`, or `http://` with `insecure_plaintext` on loopback.
    pub url: String,
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mutual TLS): the agent's identity.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Server name to verify, when it differs from the URL's host.
    pub domain: Option<String>,
    pub insecure_plaintext: bool,
    pub agent_id: String,
    pub host: String,
    pub heartbeat: Duration,
}

/// Alerts sent per batch from the spool.
const BATCH: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub async fn run(config: Config, spool: Arc<Spool>, wake: Arc<Notify>, health: Arc<Health>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect(&config).await {
            Ok(channel) => {
                info!(url = %config.url, "connected to the collector");
                let began = Instant::now();
                if let Err(e) = stream(&config, channel, &spool, &wake, &health).await {
                    warn!(error = %format!("{e:#}"), "collector stream broke; alerts stay spooled");
                }
                // A link that worked for a while is retried at once; one that
                // breaks as soon as it is up (refused, say) keeps backing off.
                if began.elapsed() >= BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
            }
            Err(e) => {
                warn!(url = %config.url, error = %format!("{e:#}"), "cannot reach the collector; alerts stay spooled")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect(config: &Config) -> anyhow::Result<Channel> {
    let tls = ClientTls {
        ca: config.ca.as_deref(),
        identity: config.identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        domain: config.domain.as_deref(),
    };
    let endpoint = proto::client::endpoint(&config.url, &tls, config.insecure_plaintext)?;
    Ok(endpoint.connect_timeout(Duration::from_secs(5)).connect().await?)
}

async fn stream(
    config: &Config,
    channel: Channel,
    spool: &Spool,
    wake: &Notify,
    health: &Health,
) -> anyhow::Result<()> {
    let (out, rx) = mpsc::channel::<AgentMessage>(BATCH * 2);
    let hello = Hello {
        agent_id: config.agent_id.clone(),
        host: config.host.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    out.send(AgentMessage {
        kind: Some(Kind::Hello(hello)),
    })
    .await?;
    let mut inbound = AgentIngestClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    // Everything still in the spool is unacknowledged: resend it all.
    let mut sent = 0u64;
    loop {
        for (seq, bytes) in spool.after(sent, BATCH)? {
            let alert =
                proto::v1::Alert::decode(bytes.as_slice()).context("a spooled alert does not decode")?;
            out.send(AgentMessage {
                kind: Some(Kind::Alert(AlertEnvelope {
                    seq,
                    alert: Some(alert),
                })),
            })
            .await?;
            sent = seq;
        }
        tokio::select! {
            ack = inbound.message() => match ack? {
                Some(proto::v1::CollectorMessage { kind: Some(collector_message::Kind::Ack(ack)) }) => spool.ack(ack.seq)?,
                Some(_) => {}
                None => bail!("the collector closed the stream"),
            },
            _ = heartbeat.tick() => {
                health.set_spool(spool.depth()?, spool.dropped()?);
                let beat = Heartbeat { time: Some(std::time::SystemTime::now().into()), health: Some(health.heartbeat()) };
                out.send(AgentMessage { kind: Some(Kind::Heartbeat(beat)) }).await?;
            }
            _ = wake.notified() => {}
            _ = poll.tick() => {}
        }
    }
}
