//! Acting on what scoring and the kernel guard found: keeping the guard's
//! maps in line with the policy, answering "is this allowlisted?", and
//! killing the offending unit in enforce mode.

pub mod devices;
pub mod kill;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

use agent_common::guard::{
    DirKey, Exemption, GuardConfig, GuardReason, Mark, ScriptPath, SessionId, CLASS_COUNT,
};
use serde::Serialize;
use tracing::{debug, warn};

use crate::{
    events::EventBody,
    model::{Attributed, SessionKey},
    policy::{Mode, Policy},
    probes::guard::GuardMaps,
    scoring::Verdict,
};

/// A session is acted on at most once in this long.
const ACT_COOLDOWN: Duration = Duration::from_secs(10);

/// What the agent did about an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionReport {
    /// Processes were killed (and the session marked in the kernel).
    Killed {
        kill: kill::KillReport,
        marked_session: bool,
    },
    /// Enforce mode, but the kill budget (`safety.max_kills_per_minute`) is spent.
    RateLimited { target: String },
    /// Monitor mode: what enforce mode would have killed.
    Monitored { would_kill: String },
}

pub struct Responder {
    guard: GuardMaps,
    agent_pid: u32,
    root_cgroup_id: u64,
    allowed_uids: HashSet<u32>,
    acted: HashMap<SessionKey, Instant>,
    kills: VecDeque<Instant>,
    pod_namespaces: HashMap<String, Option<String>>,
    resolved: Option<Resolved>,
    /// Sessions known to be marked in the kernel, by the kernel's key: a
    /// mark that disappears was cleared from outside (`levee-agent marks clear`).
    marked: HashMap<SessionId, SessionKey>,
}

/// What the policy's paths resolved to, last time.
#[derive(PartialEq, Eq)]
struct Resolved {
    dirs: HashMap<DirKey, u32>,
    exes: HashMap<DirKey, Exemption>,
    paths: HashSet<ScriptPath>,
}

impl Responder {
    pub fn new(guard: GuardMaps, root_cgroup_id: u64) -> Responder {
        Responder {
            guard,
            agent_pid: std::process::id(),
            root_cgroup_id,
            allowed_uids: HashSet::new(),
            acted: HashMap::new(),
            kills: VecDeque::new(),
            pod_namespaces: HashMap::new(),
            resolved: None,
            marked: HashMap::new(),
        }
    }

    /// Puts the policy into the kernel: mode, limits, protected directories
    /// and devices, allowlisted executables and users. At start and on reload.
    pub fn apply(&mut self, policy: &Policy) -> anyhow::Result<()> {
        let mut limits = [0u32; CLASS_COUNT];
        limits[0] = policy.guard.any_path_limit;
        for (i, class) in policy.classes.iter().enumerate() {
            limits[i + 1] = class.limit;
        }
        self.guard.set_config(GuardConfig {
            enforce: u32::from(policy.mode == Mode::Enforce),
            agent_pid: self.agent_pid,
            window_ns: policy.scoring.window().as_nanos() as u64,
            root_cgroup_id: self.root_cgroup_id,
            limits,
            protect_devices: u32::from(policy.guard.protect_devices),
            kill_marked_on_exec: u32::from(policy.guard.kill_marked_on_exec),
            exempt_lists: 0,
            dirs_epoch: 0,
        })?;
        self.allowed_uids = policy
            .allow
            .users
            .iter()
            .filter_map(|u| u.parse::<u32>().ok().or_else(|| crate::host::user_id(u)))
            .collect();
        self.guard.set_exempt_uids(&self.allowed_uids)?;
        self.guard.clear_exempt_cgroups()?;
        self.resolved = None;
        self.refresh_paths(policy)?;
        self.refresh_devices()
    }

    /// Re-resolves protected directories and allowlisted executables: paths
    /// appear, and are replaced (a new inode), while the agent runs. Cheap;
    /// the kernel maps are written only when something changed.
    pub fn refresh_paths(&mut self, policy: &Policy) -> anyhow::Result<()> {
        let mut dirs = HashMap::new();
        for (i, class) in policy.classes.iter().enumerate() {
            for path in &class.paths {
                if let Some(key) = inode_key(path) {
                    dirs.insert(key, i as u32 + 1);
                }
            }
        }
        let allow = &policy.allow.executables;
        let keyed = |paths: &[std::path::PathBuf], exemption| {
            paths
                .iter()
                .filter_map(|p| inode_key(p))
                .map(move |k| (k, exemption))
                .collect::<Vec<_>>()
        };
        // Allowlisted wins over never_kill: it covers both.
        let exes: HashMap<DirKey, Exemption> = keyed(&policy.safety.never_kill, Exemption::Spared)
            .into_iter()
            .chain(keyed(allow, Exemption::Allowlisted))
            .collect();
        let paths: HashSet<ScriptPath> = allow
            .iter()
            .filter_map(|p| ScriptPath::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())))
            .collect();
        let resolved = Resolved { dirs, exes, paths };
        if self.resolved.as_ref() != Some(&resolved) {
            self.guard.set_dirs(&resolved.dirs)?;
            self.guard.set_exempt_exes(&resolved.exes, &resolved.paths)?;
            debug!(
                protected_dirs = resolved.dirs.len(),
                allowlisted_exes = resolved.exes.len(),
                "kernel guard paths updated"
            );
            self.resolved = Some(resolved);
        }
        Ok(())
    }

    /// Rescans which block devices hold data (reads their first bytes).
    pub fn refresh_devices(&mut self) -> anyhow::Result<()> {
        Ok(self.guard.set_devices(&devices::scan())?)
    }

    /// Whether the event's process is allowlisted by `policy`. Allowlisted
    /// units and namespaces are also handed to the kernel, by cgroup.
    pub fn is_allowed(&mut self, event: &Attributed, policy: &Policy) -> bool {
        let task = &event.event.process;
        if task.allowlisted || self.allowed_uids.contains(&task.uid) {
            return true;
        }
        let Some(cgroup) = event.session.cgroup.as_deref() else {
            return false;
        };
        let by_unit = cgroup
            .unit
            .as_ref()
            .is_some_and(|u| policy.allow.units.contains(u));
        let by_namespace = !policy.allow.namespaces.is_empty()
            && cgroup.pod_uid.as_ref().is_some_and(|uid| {
                let namespace = self
                    .pod_namespaces
                    .entry(uid.clone())
                    .or_insert_with(|| pod_namespace(&crate::host::path(KUBELET_POD_LOGS.as_ref()), uid));
                namespace
                    .as_ref()
                    .is_some_and(|ns| policy.allow.namespaces.contains(ns))
            });
        if by_unit || by_namespace {
            if let Err(e) = self.guard.exempt_cgroup(task.cgroup_id) {
                warn!(error = %e, "cannot exempt an allowlisted cgroup in the kernel");
            }
            return true;
        }
        false
    }

    /// Acts on a verdict as the policy says; `None` when nothing is due.
    pub fn respond(
        &mut self,
        event: &Attributed,
        verdict: &Verdict,
        policy: &Policy,
    ) -> Option<ActionReport> {
        let kernel_acted =
            matches!(&event.event.body, EventBody::Guard(g) if g.reason != GuardReason::MarkedSession);
        if verdict.severity < policy.scoring.act_at && !kernel_acted {
            return None;
        }
        let task = &event.event.process;
        let key = &event.session.key;
        let cgroup = event.session.cgroup.as_ref().map(|c| c.path.as_str());
        let selector = kill::selector(policy.target, task.pid, task.pgid, key, cgroup);
        if policy.mode == Mode::Monitor {
            // Nothing is done, so every decision is reported as it comes.
            return Some(ActionReport::Monitored {
                would_kill: format!("{selector:?}"),
            });
        }
        let now = Instant::now();
        if self
            .acted
            .get(key)
            .is_some_and(|at| now.duration_since(*at) < ACT_COOLDOWN)
        {
            return None;
        }
        self.acted.retain(|_, at| now.duration_since(*at) < ACT_COOLDOWN);
        self.acted.insert(key.clone(), now);
        while self
            .kills
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.kills.pop_front();
        }
        if self.kills.len() >= policy.safety.max_kills_per_minute as usize {
            warn!(session = %key, "kill budget spent: not killing");
            return Some(ActionReport::RateLimited {
                target: format!("{selector:?}"),
            });
        }
        let guard = &self.guard;
        let allowed_uids = &self.allowed_uids;
        let exempt = |pid: u32| {
            guard.is_exempt_pid(pid) || kill::real_uid(pid).is_some_and(|uid| allowed_uids.contains(&uid))
        };
        let rails = kill::Rails {
            never_kill: &policy.safety.never_kill,
            exempt: &exempt,
        };
        let report = kill::kill(&selector, &rails);
        self.kills.extend(report.killed.iter().map(|_| now));
        // The kernel marked the session itself when it acted.
        let marked_session = kernel_acted || self.mark(event);
        Some(ActionReport::Killed {
            kill: report,
            marked_session,
        })
    }

    /// Notes that the kernel guard marked `event`'s session (a guard record).
    pub fn kernel_marked(&mut self, event: &Attributed) {
        if let Some(id) = event.session.key.kernel_id(event.event.process.cgroup_id) {
            self.marked.insert(id, event.session.key.clone());
        }
    }

    /// Sessions whose mark was cleared since the last call: their cooldown is
    /// forgotten here, and the caller should forget their scores.
    pub fn cleared_marks(&mut self) -> anyhow::Result<Vec<SessionKey>> {
        if self.marked.is_empty() {
            return Ok(Vec::new());
        }
        let now: HashSet<SessionId> = self.guard.marks()?.into_iter().map(|(id, _)| id).collect();
        let mut cleared = Vec::new();
        self.marked.retain(|id, key| {
            let kept = now.contains(id);
            if !kept {
                cleared.push(key.clone());
            }
            kept
        });
        for key in &cleared {
            self.acted.remove(key);
        }
        Ok(cleared)
    }

    /// Marks the event's session in the kernel, so its next destructive call
    /// (or exec) dies there.
    fn mark(&mut self, event: &Attributed) -> bool {
        let task = &event.event.process;
        let Some(session) = event.session.key.kernel_id(task.cgroup_id) else {
            return false;
        };
        let mark = Mark {
            boot_ns: nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
                .map(|t| std::time::Duration::from(t).as_nanos() as u64)
                .unwrap_or(0),
            reason: GuardReason::AgentDecision as u32,
            class: 0,
        };
        match self.guard.mark(session, mark) {
            Ok(()) => {
                self.marked.insert(session, event.session.key.clone());
                true
            }
            Err(e) => {
                warn!(error = %e, "cannot mark the session in the kernel");
                false
            }
        }
    }
}

/// Device and inode of a host path as the kernel's guard keys them, if it exists.
fn inode_key(path: &std::path::Path) -> Option<DirKey> {
    let meta = std::fs::metadata(crate::host::path(path)).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Some(DirKey {
        dev: devices::kernel_dev(major, minor),
        _pad: 0,
        ino: meta.ino(),
    })
}

/// Where kubelet keeps one directory per pod, named `<namespace>_<pod>_<uid>`.
const KUBELET_POD_LOGS: &str = "/var/log/pods";

/// A pod's namespace, from kubelet's pod log directories under `dir`.
fn pod_namespace(dir: &std::path::Path, uid: &str) -> Option<String> {
    std::fs::read_dir(dir).ok()?.filter_map(Result::ok).find_map(|e| {
        let name = e.file_name().into_string().ok()?;
        let (rest, pod_uid) = name.rsplit_once('_')?;
        (pod_uid == uid).then(|| rest.split_once('_').map(|(ns, _)| ns.to_owned()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_keys_use_the_kernel_device_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let key = inode_key(dir.path()).unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(key.ino, meta.ino());
        assert_eq!(key.dev >> 20, libc::major(meta.dev()));
        assert!(inode_key(std::path::Path::new("/nonexistent/levee")).is_none());
    }

    #[test]
    fn pod_namespaces_come_from_kubelet_log_directories() {
        let dir = tempfile::tempdir().unwrap();
        let uid = "0f8e3c4a-1b2d-4e5f-8a9b-0c1d2e3f4a5b";
        std::fs::create_dir(
            dir.path()
                .join(format!("kube-system_coredns-7db6d8ff4d-x2x9q_{uid}")),
        )
        .unwrap();
        std::fs::create_dir(
            dir.path()
                .join("default_web-1_11111111-2222-3333-4444-555555555555"),
        )
        .unwrap();
        assert_eq!(pod_namespace(dir.path(), uid).as_deref(), Some("kube-system"));
        assert_eq!(
            pod_namespace(dir.path(), "99999999-0000-0000-0000-000000000000"),
            None
        );
    }
}
