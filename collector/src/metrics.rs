//! The collector's own health and Prometheus metrics.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

pub struct Metrics {
    registry: Registry,
    pub alerts_stored: Counter,
    pub duplicates: Counter,
    pub agents_connected: Gauge,
    pub subscribers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("levee_collector");
        let metrics = Metrics {
            alerts_stored: Counter::default(),
            duplicates: Counter::default(),
            agents_connected: Gauge::default(),
            subscribers: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "alerts_stored",
            "Alerts stored (new ids)",
            metrics.alerts_stored.clone(),
        );
        registry.register(
            "duplicate_alerts",
            "Alerts received again and ignored (resends)",
            metrics.duplicates.clone(),
        );
        registry.register(
            "agents_connected",
            "Agent streams open",
            metrics.agents_connected.clone(),
        );
        registry.register(
            "subscribers",
            "SOC subscriptions open",
            metrics.subscribers.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

impl telemetry::Probe for Metrics {
    /// Serving: the endpoint answers only while the process runs.
    fn healthy(&self) -> bool {
        true
    }

    /// The store is open before the endpoint starts.
    fn ready(&self) -> bool {
        true
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }
}
