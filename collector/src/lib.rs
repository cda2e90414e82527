//! Levee's collector: agents stream alerts in ([`ingest`]), the collector
//! stores them once ([`store`]), and SOC clients subscribe, list and get
//! ([`soc`]). [`server`] assembles the gRPC server with TLS, health and
//! reflection; [`silence`] raises `agent-silent` alerts.

pub mod auth;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod silence;
pub mod soc;
pub mod store;

use std::sync::Arc;

use proto::v1::StoredAlert;
use tokio::sync::broadcast;

/// What the services share: the store, and the live feed of new alerts.
#[derive(Clone)]
pub struct Hub {
    pub store: Arc<store::Store>,
    pub live: broadcast::Sender<StoredAlert>,
    pub metrics: Arc<metrics::Metrics>,
    /// Held from storing an alert to broadcasting it, so the live feed is in
    /// cursor order: a subscriber skips anything not after its cursor, and
    /// would lose an alert broadcast after a newer one.
    publishing: Arc<tokio::sync::Mutex<()>>,
}

impl Hub {
    pub fn new(store: store::Store) -> Hub {
        let (live, _) = broadcast::channel(4096);
        Hub {
            store: Arc::new(store),
            live,
            metrics: Arc::default(),
            publishing: Arc::default(),
        }
    }

    /// Stores an alert and, if it is new, tells live subscribers. Returns its
    /// cursor, or `None` for a duplicate.
    pub async fn publish(&self, alert: proto::v1::Alert) -> Result<Option<u64>, store::StoreError> {
        let _in_order = self.publishing.lock().await;
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.insert(&alert))
            .await
            .expect("the store task does not panic")?;
        let Some(stored) = stored else {
            self.metrics.duplicates.inc();
            return Ok(None);
        };
        self.metrics.alerts_stored.inc();
        let cursor = stored.cursor;
        // No subscriber is fine: they replay from the store when they come.
        let _ = self.live.send(stored);
        Ok(Some(cursor))
    }
}
