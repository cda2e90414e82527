//! The SOC API: subscribe from a cursor (replay from the store, then live,
//! with nothing lost in between), list, get, and agents.

use std::pin::Pin;

use proto::v1::{
    soc_server::Soc, Filters, GetAlertRequest, ListAgentsRequest, ListAgentsResponse, ListAlertsRequest,
    ListAlertsResponse, StoredAlert, SubscribeRequest,
};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status};

use crate::{store::Store, Hub};

/// Alerts read from the store per query while replaying.
const PAGE: u32 = 500;

pub struct SocService {
    pub hub: Hub,
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<StoredAlert, Status>> + Send>>;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

async fn page(
    store: &std::sync::Arc<Store>,
    after: u64,
    limit: u32,
    filters: &Filters,
) -> Result<Vec<StoredAlert>, Status> {
    let (store, filters) = (store.clone(), filters.clone());
    tokio::task::spawn_blocking(move || store.after(after, limit, &filters))
        .await
        .map_err(internal)?
        .map_err(internal)
}

fn matches(alert: &StoredAlert, filters: &Filters) -> bool {
    alert.alert.as_ref().is_some_and(|a| {
        a.severity >= filters.min_severity && (filters.host.is_empty() || a.host == filters.host)
    })
}

/// Sends every alert after `cursor` matching `filters`, then live ones, until
/// the subscriber goes away.
async fn follow(
    hub: &Hub,
    mut cursor: u64,
    filters: &Filters,
    tx: &mpsc::Sender<Result<StoredAlert, Status>>,
) {
    // Listen before replaying, so nothing stored meanwhile is missed; live
    // alerts at or below the replayed cursor are skipped.
    let mut live = hub.live.subscribe();
    loop {
        // Replay everything stored after `cursor`.
        loop {
            let batch = match page(&hub.store, cursor, PAGE, filters).await {
                Ok(batch) => batch,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let done = batch.len() < PAGE as usize;
            for alert in batch {
                cursor = alert.cursor;
                if tx.send(Ok(alert)).await.is_err() {
                    return;
                }
            }
            if done {
                break;
            }
        }
        // Then live, until the subscriber falls too far behind.
        loop {
            match live.recv().await {
                Ok(alert) if alert.cursor > cursor => {
                    cursor = alert.cursor;
                    if matches(&alert, filters) && tx.send(Ok(alert)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // Missed some live alerts: they are in the store.
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[tonic::async_trait]
impl Soc for SocService {
    type SubscribeStream = AlertStream;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<AlertStream>, Status> {
        let request = request.into_inner();
        let filters = request.filters.unwrap_or_default();
        let hub = self.hub.clone();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            hub.metrics.subscribers.inc();
            follow(&hub, request.from_cursor, &filters, &tx).await;
            hub.metrics.subscribers.dec();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        let r = request.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit.min(10_000) };
        let alerts = page(
            &self.hub.store,
            r.after_cursor,
            limit,
            &r.filters.unwrap_or_default(),
        )
        .await?;
        Ok(Response::new(ListAlertsResponse { alerts }))
    }

    async fn get_alert(&self, request: Request<GetAlertRequest>) -> Result<Response<StoredAlert>, Status> {
        let id = request.into_inner().id;
        let store = self.hub.store.clone();
        let found = tokio::task::spawn_blocking(move || store.get(&id))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        found
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such alert"))
    }

    async fn list_agents(
        &self,
        _: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let store = self.hub.store.clone();
        let agents = tokio::task::spawn_blocking(move || store.agents())
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(Response::new(ListAgentsResponse { agents }))
    }
}
