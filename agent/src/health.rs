//! What the agent reports about itself: Prometheus metrics on `/metrics`,
//! liveness and readiness for Kubernetes, and the health in heartbeats to the
//! collector. One source for all three.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{output::Losses, policy::Policy};

/// The main loop ticks every second; this long without a tick is unhealthy.
const STALL: Duration = Duration::from_secs(15);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabel {
    severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

pub struct Health {
    registry: Registry,
    events: Family<Kind, Counter>,
    alerts: Family<SeverityLabel, Counter>,
    kills: Counter,
    drops: Family<Reason, Gauge>,
    spool_depth: Gauge,
    spool_dropped: Gauge,
    /// Totals for heartbeats (families cannot be summed from outside).
    events_total: AtomicU64,
    alerts_total: AtomicU64,
    losses: Mutex<Losses>,
    last_tick: AtomicU64,
    ready: AtomicBool,
    /// (policy version, mode)
    policy: Mutex<(String, String)>,
}

impl Default for Health {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("levee_agent");
        let events = Family::<Kind, Counter>::default();
        let alerts = Family::<SeverityLabel, Counter>::default();
        let kills = Counter::default();
        let drops = Family::<Reason, Gauge>::default();
        let spool_depth = Gauge::default();
        let spool_dropped = Gauge::default();
        registry.register("events", "Events decoded, by kind", events.clone());
        registry.register("alerts", "Alerts raised, by severity", alerts.clone());
        registry.register("kills", "Processes killed by the agent", kills.clone());
        registry.register(
            "dropped_events",
            "Events lost before decoding, by reason (totals)",
            drops.clone(),
        );
        registry.register(
            "spool_depth",
            "Alerts spooled, not yet acknowledged by the collector",
            spool_depth.clone(),
        );
        registry.register(
            "spool_dropped",
            "Alerts dropped from a full spool (total)",
            spool_dropped.clone(),
        );
        Health {
            registry,
            events,
            alerts,
            kills,
            drops,
            spool_depth,
            spool_dropped,
            events_total: AtomicU64::new(0),
            alerts_total: AtomicU64::new(0),
            losses: Mutex::new(Losses::default()),
            last_tick: AtomicU64::new(now_secs()),
            ready: AtomicBool::new(false),
            policy: Mutex::new(Default::default()),
        }
    }
}

impl Health {
    pub fn event(&self, kind: &'static str) {
        self.events.get_or_create(&Kind { kind }).inc();
        self.events_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn alert(&self, severity: &'static str, killed: u64) {
        self.alerts.get_or_create(&SeverityLabel { severity }).inc();
        self.alerts_total.fetch_add(1, Ordering::Relaxed);
        self.kills.inc_by(killed);
    }

    pub fn set_losses(&self, losses: &Losses) {
        for (reason, total) in [
            ("ring_buffer_full", losses.ring_buffer_full),
            ("pending_table_full", losses.pending_table_full),
            ("undecodable", losses.undecodable),
        ] {
            self.drops.get_or_create(&Reason { reason }).set(total as i64);
        }
        if let Ok(mut l) = self.losses.lock() {
            *l = losses.clone();
        }
    }

    pub fn set_spool(&self, depth: u64, dropped: u64) {
        self.spool_depth.set(depth as i64);
        self.spool_dropped.set(dropped as i64);
    }

    pub fn set_policy(&self, policy: &Policy) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{policy:?}").hash(&mut h);
        let mode = format!("{:?}", policy.mode).to_lowercase();
        if let Ok(mut p) = self.policy.lock() {
            *p = (format!("{:016x}", h.finish()), mode);
        }
    }

    /// The main loop is alive.
    pub fn tick(&self) {
        self.last_tick.store(now_secs(), Ordering::Relaxed);
    }

    /// Probes attached and policy applied.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The health a heartbeat carries.
    pub fn heartbeat(&self) -> proto::v1::AgentHealth {
        let (policy_version, mode) = self.policy.lock().map(|p| p.clone()).unwrap_or_default();
        let losses = self.losses.lock().map(|l| l.clone()).unwrap_or_default();
        proto::v1::AgentHealth {
            events: self.events_total.load(Ordering::Relaxed),
            ring_buffer_full: losses.ring_buffer_full,
            pending_table_full: losses.pending_table_full,
            undecodable: losses.undecodable,
            spool_depth: self.spool_depth.get().max(0) as u64,
            spool_dropped: self.spool_dropped.get().max(0) as u64,
            alerts: self.alerts_total.load(Ordering::Relaxed),
            kills: self.kills.get(),
            policy_version,
            mode,
        }
    }
}

impl telemetry::Probe for Health {
    fn healthy(&self) -> bool {
        now_secs().saturating_sub(self.last_tick.load(Ordering::Relaxed)) <= STALL.as_secs()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
