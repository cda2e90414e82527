//! `AgentIngest.Stream`: alerts and heartbeats in, cumulative acks out. An
//! alert is acknowledged only once it is stored, so an agent that loses the
//! connection resends what was not acked, and duplicates are dropped by id.

use std::pin::Pin;

use proto::v1::{
    agent_ingest_server::AgentIngest, agent_message::Kind, collector_message, Ack, AgentMessage,
    CollectorMessage,
};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::{auth::peer_identity, Hub};

pub struct Ingest {
    pub hub: Hub,
    /// Refuse agents without a verified client certificate.
    pub require_client_cert: bool,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<CollectorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentIngest for Ingest {
    type StreamStream = AckStream;

    async fn stream(&self, request: Request<Streaming<AgentMessage>>) -> Result<Response<AckStream>, Status> {
        let certified = peer_identity(&request);
        if self.require_client_cert && certified.is_none() {
            return Err(Status::unauthenticated(
                "agents must present a client certificate",
            ));
        }
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(AgentMessage {
                kind: Some(Kind::Hello(hello)),
            }) => hello,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        // A certificate's identity wins over what the agent says it is. A
        // DaemonSet often mounts one certificate on every node: its agents
        // are told apart by host (authenticated by the certificate alike).
        let agent_id = match certified {
            Some(name) if hello.host.is_empty() => name,
            Some(name) => format!("{name}@{}", hello.host),
            None => hello.agent_id,
        };
        let host = hello.host;
        info!(%agent_id, %host, version = %hello.version, "agent connected");
        let (tx, rx) = mpsc::channel(256);
        let hub = self.hub.clone();
        tokio::spawn(async move {
            hub.metrics.agents_connected.inc();
            let result = serve(&hub, &mut inbound, &agent_id, &host, &tx).await;
            hub.metrics.agents_connected.dec();
            if let Err(e) = result {
                warn!(%agent_id, error = %e, "agent stream ended");
                let _ = tx.send(Err(e)).await;
            } else {
                info!(%agent_id, "agent disconnected");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve(
    hub: &Hub,
    inbound: &mut Streaming<AgentMessage>,
    agent_id: &str,
    host: &str,
    tx: &mpsc::Sender<Result<CollectorMessage, Status>>,
) -> Result<(), Status> {
    heartbeat(hub, agent_id, host, None).await?;
    while let Some(message) = inbound.message().await? {
        match message.kind {
            Some(Kind::Alert(envelope)) => {
                let mut alert = envelope
                    .alert
                    .ok_or_else(|| Status::invalid_argument("alert envelope without alert"))?;
                if alert.id.is_empty() {
                    return Err(Status::invalid_argument("alert without id"));
                }
                alert.agent_id = agent_id.to_owned();
                alert.source = "agent".into();
                hub.publish(alert)
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?;
                let ack = CollectorMessage {
                    kind: Some(collector_message::Kind::Ack(Ack { seq: envelope.seq })),
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return Ok(());
                }
            }
            Some(Kind::Heartbeat(beat)) => heartbeat(hub, agent_id, host, beat.health).await?,
            Some(Kind::Hello(_)) => return Err(Status::invalid_argument("Hello twice")),
            None => return Err(Status::invalid_argument("empty message")),
        }
    }
    Ok(())
}

async fn heartbeat(
    hub: &Hub,
    agent_id: &str,
    host: &str,
    health: Option<proto::v1::AgentHealth>,
) -> Result<(), Status> {
    let store = hub.store.clone();
    let (agent, host) = (agent_id.to_owned(), host.to_owned());
    let was_silent = tokio::task::spawn_blocking(move || store.heartbeat(&agent, &host, health.as_ref()))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
    if was_silent {
        info!(%agent_id, "agent reporting again");
    }
    Ok(())
}
