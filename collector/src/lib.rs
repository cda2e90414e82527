//! Levee's collector: agents stream alerts in ([`ingest`]), the collector
//! stores them once ([`store`]), and SOC clients subscribe, list and get
//! ([`soc`]). [`server`] assembles the gRPC server with TLS, health and
//! reflection; [`silence`] raises `agent-silent` alerts.

pub mod auth;
pub mod ingest;
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
}

impl Hub {
    pub fn new(store: store::Store) -> Hub {
        let (live, _) = broadcast::channel(4096);
        Hub {
            store: Arc::new(store),
            live,
        }
    }

    /// Stores an alert and, if it is new, tells live subscribers.
    pub async fn publish(&self, alert: proto::v1::Alert) -> Result<Option<u64>, store::StoreError> {
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.insert(&alert))
            .await
            .expect("the store task does not panic")?;
        Ok(stored.map(|stored| {
            let cursor = stored.cursor;
            // No subscriber is fine: they replay from the store when they come.
            let _ = self.live.send(stored);
            cursor
        }))
    }
}
