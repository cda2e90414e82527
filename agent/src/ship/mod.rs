//! Getting alerts to the collector without losing any: the durable [`spool`],
//! the `levee.v1` form ([`wire`]), and the [`sender`] that streams, collects
//! acks and reconnects.

pub mod sender;
pub mod spool;
pub mod wire;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

/// Agent health, as heartbeats report it.
#[derive(Default)]
pub struct Health {
    pub events: AtomicU64,
    pub alerts: AtomicU64,
    pub kills: AtomicU64,
    pub ring_buffer_full: AtomicU64,
    pub pending_table_full: AtomicU64,
    pub undecodable: AtomicU64,
    /// (policy version, mode)
    pub policy: Mutex<(String, String)>,
}

impl Health {
    pub fn set_policy(&self, policy: &crate::policy::Policy) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{policy:?}").hash(&mut h);
        let mode = format!("{:?}", policy.mode).to_lowercase();
        if let Ok(mut p) = self.policy.lock() {
            *p = (format!("{:016x}", h.finish()), mode);
        }
    }

    pub fn set_losses(&self, losses: &crate::output::Losses) {
        self.ring_buffer_full
            .store(losses.ring_buffer_full, Ordering::Relaxed);
        self.pending_table_full
            .store(losses.pending_table_full, Ordering::Relaxed);
        self.undecodable.store(losses.undecodable, Ordering::Relaxed);
    }

    pub fn snapshot(&self, spool: &spool::Spool) -> proto::v1::AgentHealth {
        let (policy_version, mode) = self.policy.lock().map(|p| p.clone()).unwrap_or_default();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        proto::v1::AgentHealth {
            events: get(&self.events),
            ring_buffer_full: get(&self.ring_buffer_full),
            pending_table_full: get(&self.pending_table_full),
            undecodable: get(&self.undecodable),
            spool_depth: spool.depth().unwrap_or(0),
            spool_dropped: spool.dropped().unwrap_or(0),
            alerts: get(&self.alerts),
            kills: get(&self.kills),
            policy_version,
            mode,
        }
    }
}
