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

pub fn alert(a: &Alert, agent_id: &str, node: Option<&str>) -> pb::Alert {
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
            tty: String::new(),
            remote_address: String::new(),
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
        kubernetes: a.kubernetes.as_ref().map(|k| pb::Kubernetes {
            pod_uid: k.pod_uid.clone().unwrap_or_default(),
            container_id: k.container_id.clone().unwrap_or_default(),
            node: node.unwrap_or_default().to_owned(),
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
