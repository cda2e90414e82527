//! Alerts: one self-contained, explained record per decision, for people and
//! for the SOC.

use std::{sync::Arc, time::SystemTime};

use serde::Serialize;

use crate::{
    events::{GuardAction, Task},
    model::{Ancestor, Attributed, Origin, Session},
    policy::{Mode, Severity},
    response::ActionReport,
    scoring::{Destructive, Evidence, Feature, Verdict},
};

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: String,
    #[serde(serialize_with = "crate::events::serialize_time")]
    pub time: SystemTime,
    pub host: Arc<str>,
    pub severity: Severity,
    pub score: f64,
    pub summary: String,
    pub mode: &'static str,
    pub session: Session,
    /// The login's terminal and remote address, where known.
    pub origin: Origin,
    /// The process whose event raised the alert.
    pub process: Task,
    pub ancestry: Vec<Ancestor>,
    /// What drove the score, each with its contribution.
    pub features: Vec<Feature>,
    pub evidence: Evidence,
    /// The in-kernel guard's decision, when it made one.
    pub guard: Option<GuardAction>,
    /// What the agent did.
    pub action: Option<ActionReport>,
    /// MITRE ATT&CK technique ids.
    pub mitre: Vec<&'static str>,
    pub kubernetes: Option<Kubernetes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kubernetes {
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

impl Alert {
    pub fn new(
        host: Arc<str>,
        mode: Mode,
        event: &Attributed,
        origin: Origin,
        verdict: Verdict,
        action: Option<ActionReport>,
    ) -> Alert {
        let cgroup = event.session.cgroup.as_deref();
        let kubernetes = cgroup
            .filter(|c| c.pod_uid.is_some() || c.container_id.is_some())
            .map(|c| Kubernetes {
                pod_uid: c.pod_uid.clone(),
                container_id: c.container_id.clone(),
            });
        let summary = summary(event, &verdict, action.as_ref());
        Alert {
            id: uuid::Uuid::new_v4().to_string(),
            time: event.event.time,
            host,
            severity: verdict.severity,
            score: verdict.score,
            summary,
            mode: match mode {
                Mode::Monitor => "monitor",
                Mode::Enforce => "enforce",
            },
            session: event.session.clone(),
            origin,
            process: event.event.process.clone(),
            ancestry: event.ancestry.clone(),
            mitre: mitre(&verdict),
            features: verdict.features,
            evidence: verdict.evidence,
            guard: verdict.guard,
            action,
            kubernetes,
        }
    }
}

/// The host an alert names: the Kubernetes node (`NODE_NAME`, from the
/// downward API) where there is one (inside a pod the host name is the
/// pod's), else the host name.
pub fn host_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            nix::unistd::gethostname().map_or_else(|_| "unknown".into(), |h| h.to_string_lossy().into_owned())
        })
}

/// ATT&CK techniques the evidence shows.
fn mitre(verdict: &Verdict) -> Vec<&'static str> {
    let e = &verdict.evidence;
    let mut ids = Vec::new();
    if e.deletions > 0 || e.bytes_destroyed > 0 {
        ids.push("T1485"); // Data Destruction
    }
    if e.protected.keys().any(|class| class.contains("backup")) {
        ids.push("T1490"); // Inhibit System Recovery
    }
    let raw_device = e.raw_device_bytes > 0
        || e.commands.contains(&Destructive::DdToDevice)
        || verdict.guard.as_ref().is_some_and(|g| g.device.is_some());
    if raw_device {
        ids.push("T1561.001"); // Disk Content Wipe
    }
    if e.commands.contains(&Destructive::DeviceWipe) {
        ids.push("T1561.002"); // Disk Structure Wipe
    }
    if e.commands.contains(&Destructive::Shred) {
        ids.push("T1070.004"); // File Deletion
    }
    ids
}

fn summary(event: &Attributed, verdict: &Verdict, action: Option<&ActionReport>) -> String {
    let who = match &event.session.login_user {
        Some(user) => format!("{} ({user})", event.session.key),
        None => event.session.key.to_string(),
    };
    let top = verdict
        .features
        .iter()
        .max_by(|a, b| a.contribution.total_cmp(&b.contribution))
        .map_or("activity", |f| f.name.as_str());
    let did = match action {
        Some(ActionReport::Killed { kill, .. }) => {
            format!("; killed {} process(es) of {}", kill.killed.len(), kill.target)
        }
        Some(ActionReport::RateLimited { .. }) => "; kill budget spent, nothing killed".into(),
        Some(ActionReport::Monitored { .. }) => "; monitor mode, nothing killed".into(),
        None => String::new(),
    };
    let deleted = verdict.evidence.deletions;
    format!(
        "{:?} destruction by {who}: {deleted} deletions, driven by {top}{did}",
        verdict.severity
    )
    .to_lowercase()
}
