//! An [`Alert`] as the `levee.v1` message the collector stores.

use proto::v1 as pb;

use crate::{alert::Alert, escape::escape, policy::Severity, response::ActionReport};

pub fn severity(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Low => pb::Severity::Low,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// Where the agent runs, from the downward API (`NODE_NAME`, `POD_NAME`).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub node: Option<String>,
    pub pod: Option<String>,
}

impl Placement {
    pub fn from_env() -> Placement {
        Placement {
            node: std::env::var("NODE_NAME").ok(),
            pod: std::env::var("POD_NAME").ok(),
        }
    }
}

pub fn alert(a: &Alert, agent_id: &str, placement: &Placement) -> pb::Alert {
    let cgroup = a.session.cgroup.as_deref();
    pb::Alert {
        id: a.id.clone(),
        time: Some(a.time.into()),
        host: a.host.to_string(),
        agent_id: agent_id.to_owned(),
        severity: severity(a.severity) as i32,
        score: a.score,
        summary: a.summary.clone(),
        mode: a.mode.to_owned(),
        session: Some(pb::Session {
            key: a.session.key.to_string(),
            login_user: a.session.login_user.as_deref().unwrap_or_default().to_owned(),
            login_uid: a.process.login_uid,
            audit_session: a.process.audit_session,
            tty: a.origin.tty.clone().unwrap_or_default(),
            remote_address: a.origin.remote_address.clone().unwrap_or_default(),
            cgroup: cgroup.map(|c| c.path.clone()).unwrap_or_default(),
            unit: cgroup.and_then(|c| c.unit.clone()).unwrap_or_default(),
        }),
        process: Some(pb::Process {
            pid: a.process.pid,
            ppid: a.process.ppid,
            uid: a.process.uid,
            gid: a.process.gid,
            comm: escape(&a.process.comm),
            pgid: a.process.pgid,
            sid: a.process.sid,
            cgroup_id: a.process.cgroup_id,
        }),
        ancestry: a
            .ancestry
            .iter()
            .map(|p| pb::Ancestor {
                pid: p.pid,
                comm: escape(&p.comm),
                exe: escape(&p.exe),
                argv: p.argv.iter().map(|arg| escape(arg)).collect(),
            })
            .collect(),
        evidence: Some(pb::Evidence {
            deletions: a.evidence.deletions,
            protected: a
                .evidence
                .protected
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            distinct_dirs: a.evidence.distinct_dirs,
            bytes_destroyed: a.evidence.bytes_destroyed,
            raw_device_bytes: a.evidence.raw_device_bytes,
            commands: a
                .evidence
                .commands
                .iter()
                .map(|c| {
                    serde_json::to_value(c)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect(),
            sample_paths: a.evidence.sample_paths.clone(),
        }),
        features: a
            .features
            .iter()
            .map(|f| pb::Feature {
                name: f.name.clone(),
                value: f.value,
                contribution: f.contribution,
            })
            .collect(),
        action: Some(action(a)),
        mitre: a.mitre.iter().map(|m| (*m).to_owned()).collect(),
        kubernetes: (a.kubernetes.is_some() || placement.node.is_some()).then(|| pb::Kubernetes {
            pod_uid: a
                .kubernetes
                .as_ref()
                .and_then(|k| k.pod_uid.clone())
                .unwrap_or_default(),
            container_id: a
                .kubernetes
                .as_ref()
                .and_then(|k| k.container_id.clone())
                .unwrap_or_default(),
            node: placement.node.clone().unwrap_or_default(),
            agent_pod: placement.pod.clone().unwrap_or_default(),
            ..Default::default()
        }),
        source: "agent".into(),
    }
}

fn action(a: &Alert) -> pb::Action {
    let kernel_guard = a
        .guard
        .as_ref()
        .map(|g| {
            format!(
                "{:?} at {:?}: count {} of limit {}, killed: {}",
                g.reason, g.hook, g.count, g.limit, g.killed
            )
        })
        .unwrap_or_default();
    let mut action = pb::Action {
        kind: "none".into(),
        kernel_guard,
        ..Default::default()
    };
    match &a.action {
        None => {}
        Some(ActionReport::Killed { kill, marked_session }) => {
            action.kind = "killed".into();
            action.target = kill.target.clone();
            action.signal = kill.signal.into();
            action.marked_session = *marked_session;
            let outcome = |pid, comm: &str, outcome: String| pb::ProcessOutcome {
                pid,
                comm: comm.to_owned(),
                outcome,
            };
            action.processes = kill
                .killed
                .iter()
                .map(|p| outcome(p.pid, &p.comm, "killed".into()))
                .chain(
                    kill.spared
                        .iter()
                        .map(|p| outcome(p.pid, &p.comm, format!("spared: {}", p.reason))),
                )
                .chain(
                    kill.failed
                        .iter()
                        .map(|p| outcome(p.pid, &p.comm, format!("failed: {}", p.reason))),
                )
                .collect();
        }
        Some(ActionReport::RateLimited { target }) => {
            action.kind = "rate_limited".into();
            action.target = target.clone();
        }
        Some(ActionReport::Monitored { would_kill }) => {
            action.kind = "monitored".into();
            action.target = would_kill.clone();
        }
    }
    action
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::Task,
        model::{Origin, Session},
        scoring::Evidence,
    };

    fn host_alert() -> Alert {
        let process = Task {
            pid: 10,
            tid: 10,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: b"rm".to_vec(),
            cgroup_id: 1,
            start_ns: 0,
            login_uid: None,
            audit_session: None,
            pgid: 10,
            sid: 10,
            kernel_thread: false,
            allowlisted: false,
        };
        Alert {
            id: "a".into(),
            time: std::time::SystemTime::UNIX_EPOCH,
            host: "node-1".into(),
            severity: Severity::High,
            score: 80.0,
            summary: String::new(),
            mode: "enforce",
            session: Session::new(&process, None, None),
            origin: Origin {
                tty: Some("pts/3".into()),
                remote_address: Some("203.0.113.7:52100".into()),
            },
            process,
            ancestry: vec![],
            features: vec![],
            evidence: Evidence::default(),
            guard: None,
            action: None,
            mitre: vec!["T1485"],
            kubernetes: None,
        }
    }

    #[test]
    fn the_agents_node_and_pod_are_in_every_alert_on_kubernetes() {
        let placement = Placement {
            node: Some("node-1".into()),
            pod: Some("levee-agent-x7k2p".into()),
        };
        let wire = alert(&host_alert(), "node-1", &placement);
        let k8s = wire
            .kubernetes
            .expect("kubernetes metadata for a host process too");
        assert_eq!(
            (k8s.node.as_str(), k8s.agent_pod.as_str()),
            ("node-1", "levee-agent-x7k2p")
        );
        assert!(k8s.pod_uid.is_empty(), "the destruction came from no pod");
        assert_eq!(wire.severity, pb::Severity::High as i32);
        assert!(
            alert(&host_alert(), "h", &Placement::default())
                .kubernetes
                .is_none(),
            "no Kubernetes, no metadata"
        );
    }

    #[test]
    fn the_logins_terminal_and_remote_address_reach_the_wire() {
        let session = alert(&host_alert(), "h", &Placement::default()).session.unwrap();
        assert_eq!(
            (session.tty.as_str(), session.remote_address.as_str()),
            ("pts/3", "203.0.113.7:52100")
        );
    }
}
