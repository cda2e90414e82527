//! The session: the unit Levee scores and, in enforce mode, stops.

use std::{fmt, sync::Arc};

use agent_common::guard::{SessionId, SessionKind};
use serde::{Serialize, Serializer};

use super::CgroupInfo;
use crate::events::Task;

/// What a person would name as "who did this", most specific first.
///
/// The in-kernel guard keys sessions by the same rule (login, else any
/// cgroup but the root, else POSIX session), so both sides count and stop
/// the same unit; [`SessionKey::kernel_id`] gives the kernel's key.
///
/// An unset audit session (4294967295, what cargo, CI and most daemons run
/// with) is no session at all: such processes fall through to their
/// container, their systemd unit, or their POSIX session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionKey {
    /// A kernel thread.
    Kernel,
    /// A login (audit session id): ssh, console, `su -`.
    Login(u32),
    /// A container, by id.
    Container(Arc<str>),
    /// A systemd unit (a service, a cron job's scope).
    Unit(Arc<str>),
    /// Another cgroup than the root, named by its path.
    Cgroup(Arc<str>),
    /// A POSIX session (`setsid`): a terminal, a detached daemon.
    Posix(u32),
}

impl SessionKey {
    /// The in-kernel guard's key for this session; `cgroup_id` is the
    /// event's cgroup (what the probes key cgroup sessions by).
    pub fn kernel_id(&self, cgroup_id: u64) -> Option<SessionId> {
        let (kind, id) = match self {
            SessionKey::Kernel => return None,
            SessionKey::Login(id) => (SessionKind::Login, u64::from(*id)),
            SessionKey::Container(_) | SessionKey::Unit(_) | SessionKey::Cgroup(_) => {
                (SessionKind::Cgroup, cgroup_id)
            }
            SessionKey::Posix(sid) => (SessionKind::Posix, u64::from(*sid)),
        };
        Some(SessionId {
            kind: kind as u32,
            _pad: 0,
            id,
        })
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionKey::Kernel => f.write_str("kernel"),
            SessionKey::Login(id) => write!(f, "login:{id}"),
            SessionKey::Container(id) => write!(f, "container:{id}"),
            SessionKey::Unit(unit) => write!(f, "unit:{unit}"),
            SessionKey::Cgroup(path) => write!(f, "cgroup:{path}"),
            SessionKey::Posix(sid) => write!(f, "sid:{sid}"),
        }
    }
}

impl Serialize for SessionKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Who an event belongs to.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub key: SessionKey,
    /// The login user's name, when there is a login and the name is known.
    pub login_user: Option<Arc<str>>,
    /// The cgroup and what it says (container, pod, unit).
    pub cgroup: Option<Arc<CgroupInfo>>,
}

impl Session {
    pub fn new(task: &Task, cgroup: Option<Arc<CgroupInfo>>, login_user: Option<Arc<str>>) -> Session {
        let key = if task.kernel_thread {
            SessionKey::Kernel
        } else if let Some(id) = task.audit_session {
            SessionKey::Login(id)
        } else if let Some(id) = cgroup.as_ref().and_then(|c| c.container_id.as_deref()) {
            SessionKey::Container(id.into())
        } else if let Some(unit) = cgroup.as_ref().and_then(|c| c.unit.as_deref()) {
            SessionKey::Unit(unit.into())
        } else if let Some(path) = cgroup.as_ref().map(|c| c.path.as_str()).filter(|p| *p != "/") {
            SessionKey::Cgroup(path.into())
        } else {
            SessionKey::Posix(task.sid)
        };
        Session {
            key,
            login_user,
            cgroup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(audit_session: Option<u32>, sid: u32) -> Task {
        Task {
            pid: 10,
            tid: 10,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: b"sh".to_vec(),
            cgroup_id: 1,
            start_ns: 0,
            login_uid: audit_session.map(|_| 1000),
            audit_session,
            pgid: 10,
            sid,
            kernel_thread: false,
            allowlisted: false,
        }
    }

    fn cgroup(path: &str) -> Option<Arc<CgroupInfo>> {
        Some(Arc::new(CgroupInfo::parse(path)))
    }

    #[test]
    fn a_login_wins() {
        let s = Session::new(&task(Some(7), 10), cgroup("/system.slice/sshd.service"), None);
        assert_eq!(s.key.to_string(), "login:7");
    }

    #[test]
    fn no_audit_session_falls_back_to_container_unit_then_posix_session() {
        let id = "a".repeat(64);
        let container = Session::new(
            &task(None, 10),
            cgroup(&format!("/system.slice/docker-{id}.scope")),
            None,
        );
        assert_eq!(container.key, SessionKey::Container(id.into()));
        let unit = Session::new(&task(None, 10), cgroup("/system.slice/cron.service"), None);
        assert_eq!(unit.key.to_string(), "unit:cron.service");
        let other = Session::new(&task(None, 10), cgroup("/user.slice"), None);
        assert_eq!(other.key.to_string(), "cgroup:/user.slice");
        let posix = Session::new(&task(None, 42), cgroup("/"), None);
        assert_eq!(posix.key.to_string(), "sid:42");
        assert_eq!(posix.key.kernel_id(1).unwrap().id, 42);
    }

    #[test]
    fn kernel_threads_are_their_own_session() {
        let mut t = task(None, 0);
        t.kernel_thread = true;
        assert_eq!(Session::new(&t, None, None).key, SessionKey::Kernel);
    }
}
