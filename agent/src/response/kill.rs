//! Killing the offending unit — a process, its process group, or its whole
//! session — with safety rails that no policy can turn off.
//!
//! Targets are found in `/proc` at the moment of the kill (the event stream
//! already attributed *who*; this finds *what is still running*). Each kill
//! goes through a pidfd opened after checking the process's start time, so a
//! reused pid is never hit.

use std::{
    collections::HashSet,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::policy::Target;

/// Which processes a kill aims at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Pid(u32),
    ProcessGroup(u32),
    AuditSession(u32),
    /// cgroup v2 path, as in `/proc/PID/cgroup`.
    Cgroup(String),
    PosixSession(u32),
}

/// What a kill did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KillReport {
    pub target: String,
    pub signal: &'static str,
    pub killed: Vec<KilledProcess>,
    /// Processes in the target the rails protected.
    pub spared: Vec<SparedProcess>,
    /// Processes that could not be signalled (and why).
    pub failed: Vec<SparedProcess>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KilledProcess {
    pub pid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SparedProcess {
    pub pid: u32,
    pub comm: String,
    pub reason: String,
}

/// The real uid of process `pid` (what the probes report as `uid`).
pub fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().next()?.parse().ok()
}

/// What may never be killed.
pub struct Rails<'a> {
    /// Executables never killed (from the policy).
    pub never_kill: &'a [PathBuf],
    /// Processes exempt by allowlist.
    pub exempt: &'a dyn Fn(u32) -> bool,
}

/// A process as `/proc` shows it now.
#[derive(Debug, Clone)]
struct Live {
    pid: u32,
    comm: String,
    pgid: u32,
    sid: u32,
    flags: u32,
    start: u64,
}

const PF_KTHREAD: u32 = 0x0020_0000;

pub fn selector(
    target: Target,
    pid: u32,
    pgid: u32,
    session: &crate::model::SessionKey,
    cgroup: Option<&str>,
) -> Selector {
    use crate::model::SessionKey;
    match target {
        Target::Process => Selector::Pid(pid),
        Target::ProcessGroup => Selector::ProcessGroup(pgid),
        Target::Session => match session {
            SessionKey::Login(id) => Selector::AuditSession(*id),
            SessionKey::Container(_) | SessionKey::Unit(_) | SessionKey::Cgroup(_) => {
                cgroup.map_or(Selector::ProcessGroup(pgid), |c| Selector::Cgroup(c.to_owned()))
            }
            SessionKey::Posix(sid) => Selector::PosixSession(*sid),
            SessionKey::Kernel => Selector::Pid(pid),
        },
    }
}

/// Sends SIGKILL to every process `selector` matches, except what the rails protect.
pub fn kill(selector: &Selector, rails: &Rails) -> KillReport {
    let me = std::process::id();
    let ancestors = ancestors_of(me);
    let mut report = KillReport {
        target: describe(selector),
        signal: "SIGKILL",
        ..Default::default()
    };
    for proc in live_processes().into_iter().filter(|p| matches(selector, p)) {
        let spare = |reason: &str| SparedProcess {
            pid: proc.pid,
            comm: proc.comm.clone(),
            reason: reason.into(),
        };
        let exe = std::fs::read_link(format!("/proc/{}/exe", proc.pid)).ok();
        let reason = if proc.pid <= 1 {
            Some("pid 1")
        } else if proc.flags & PF_KTHREAD != 0 {
            Some("kernel thread")
        } else if proc.pid == me {
            Some("the agent itself")
        } else if ancestors.contains(&proc.pid) {
            Some("an ancestor of the agent")
        } else if exe
            .as_deref()
            .is_some_and(|e| rails.never_kill.iter().any(|n| n == e))
        {
            Some("never_kill executable")
        } else if (rails.exempt)(proc.pid) {
            Some("allowlisted")
        } else {
            None
        };
        if let Some(reason) = reason {
            report.spared.push(spare(reason));
            continue;
        }
        match kill_one(&proc) {
            Ok(()) => report.killed.push(KilledProcess {
                pid: proc.pid,
                comm: proc.comm.clone(),
            }),
            Err(e) => report.failed.push(spare(&e)),
        }
    }
    report
}

fn describe(selector: &Selector) -> String {
    match selector {
        Selector::Pid(pid) => format!("process {pid}"),
        Selector::ProcessGroup(pgid) => format!("process group {pgid}"),
        Selector::AuditSession(id) => format!("login session {id}"),
        Selector::Cgroup(path) => format!("cgroup {path}"),
        Selector::PosixSession(sid) => format!("session {sid}"),
    }
}

fn matches(selector: &Selector, p: &Live) -> bool {
    match selector {
        Selector::Pid(pid) => p.pid == *pid,
        Selector::ProcessGroup(pgid) => p.pgid == *pgid,
        Selector::PosixSession(sid) => p.sid == *sid,
        Selector::AuditSession(id) => read_u32(&format!("/proc/{}/sessionid", p.pid)) == Some(*id),
        Selector::Cgroup(path) => std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid))
            .is_ok_and(|c| c.lines().any(|l| l.strip_prefix("0::") == Some(path.as_str()))),
    }
}

/// Opens a pidfd, re-checks the start time through it, then signals.
fn kill_one(proc: &Live) -> Result<(), String> {
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, proc.pid, 0) };
    if fd < 0 {
        return Err(format!("gone ({})", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd from pidfd_open, owned only here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The pidfd pins the process: if the start time still matches, it is the
    // same process that was selected.
    if stat(proc.pid).is_none_or(|now| now.start != proc.start) {
        return Err("gone (pid reused)".into());
    }
    // SAFETY: valid pidfd; null siginfo is allowed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

fn live_processes() -> Vec<Live> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}

fn stat(pid: u32) -> Option<Live> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let open = text.iter().position(|&b| b == b'(')?;
    let comm = String::from_utf8_lossy(text.get(open + 1..close)?).into_owned();
    let rest = std::str::from_utf8(text.get(close + 2..)?).ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state(0) ppid(1) pgrp(2) session(3) ... flags(6) ... starttime(19)
    Some(Live {
        pid,
        comm,
        pgid: f.get(2)?.parse().ok()?,
        sid: f.get(3)?.parse().ok()?,
        flags: f.get(6)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn ancestors_of(pid: u32) -> HashSet<u32> {
    let mut seen = HashSet::new();
    let mut at = pid;
    while at > 1 && seen.insert(at) {
        let Some(ppid) = std::fs::read_to_string(format!("/proc/{at}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
            })
        else {
            break;
        };
        at = ppid;
    }
    seen.remove(&pid);
    seen
}

fn read_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(Path::new(path)).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn no_exemptions(_: u32) -> bool {
        false
    }

    #[test]
    fn kills_a_real_process_group_and_spares_the_rails() {
        // A child in its own process group, which is all the selector matches.
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let pid = child.id();
        let rails = Rails {
            never_kill: &[],
            exempt: &no_exemptions,
        };
        let report = kill(&Selector::ProcessGroup(pid), &rails);
        assert_eq!(
            report.killed,
            [KilledProcess {
                pid,
                comm: "sleep".into()
            }]
        );
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }

    #[test]
    fn never_kills_pid_1_itself_or_its_ancestors() {
        let rails = Rails {
            never_kill: &[],
            exempt: &no_exemptions,
        };
        let me = std::process::id();
        let report = kill(&Selector::Pid(me), &rails);
        assert!(report.killed.is_empty());
        assert_eq!(report.spared[0].reason, "the agent itself");
        let report = kill(&Selector::Pid(1), &rails);
        assert!(report.killed.is_empty());
        assert_eq!(report.spared[0].reason, "pid 1");
        let parent = nix::unistd::getppid().as_raw() as u32;
        let report = kill(&Selector::Pid(parent), &rails);
        assert_eq!(report.spared[0].reason, "an ancestor of the agent");
    }

    #[test]
    fn never_kill_and_allowlist_rails_hold() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let sleep = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let never = [sleep];
        let report = kill(
            &Selector::Pid(pid),
            &Rails {
                never_kill: &never,
                exempt: &no_exemptions,
            },
        );
        assert_eq!(report.spared[0].reason, "never_kill executable");
        let exempt = move |p: u32| p == pid;
        let report = kill(
            &Selector::Pid(pid),
            &Rails {
                never_kill: &[],
                exempt: &exempt,
            },
        );
        assert_eq!(report.spared[0].reason, "allowlisted");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn kernel_threads_are_spared() {
        // kthreadd is pid 2 on Linux.
        let rails = Rails {
            never_kill: &[],
            exempt: &no_exemptions,
        };
        let report = kill(&Selector::Pid(2), &rails);
        assert!(report.killed.is_empty());
        assert_eq!(report.spared[0].reason, "kernel thread");
    }
}
