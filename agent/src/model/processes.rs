//! The process table: who is who, kept current by fork, exec and exit events.
//!
//! Seeded from `/proc` at start-up for processes that predate the agent;
//! after that only kernel events change it, so a process that lived a
//! millisecond is known exactly as the kernel saw it. A process is identified
//! by pid *and* start time: a reused pid replaces the old entry. Exited
//! processes stay for a grace period (late events still find their
//! ancestry), then go; the table never grows past its cap.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{escape, events::Task};

/// How long an exited process stays known.
pub const EXIT_GRACE: Duration = Duration::from_secs(30);
/// Most processes kept, live and exited together.
pub const TABLE_CAP: usize = 64 * 1024;
/// Most ancestors an event carries.
pub const ANCESTRY_CAP: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// Start, nanoseconds since boot (from `/proc`: to clock-tick precision).
    pub start_ns: u64,
    pub comm: Vec<u8>,
    /// Shared, not copied, by forks and ancestries.
    pub exe: Arc<[u8]>,
    pub argv: Arc<[Vec<u8>]>,
    pub exited: bool,
}

/// One ancestor of an event's process (the process itself first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ancestor {
    pub pid: u32,
    #[serde(serialize_with = "escape::serialize")]
    pub comm: Vec<u8>,
    #[serde(serialize_with = "escape::serialize")]
    pub exe: Arc<[u8]>,
    #[serde(serialize_with = "serialize_argv")]
    pub argv: Arc<[Vec<u8>]>,
}

fn serialize_argv<S: serde::Serializer>(argv: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(argv.iter().map(|a| escape::escape(a)))
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, Proc>,
    /// Exited processes in exit order: (when, pid, start).
    exited: VecDeque<(Instant, u32, u64)>,
}

impl ProcessTable {
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&Proc> {
        self.procs.get(&pid)
    }

    /// Adds a process found in `/proc` at start-up.
    pub fn seed(&mut self, proc: Proc) {
        self.procs.insert(proc.pid, proc);
    }

    /// The entry for `task`'s process, created from the event if the table
    /// has none or has an older process under the same pid.
    pub fn touch(&mut self, task: &Task) -> &mut Proc {
        let stale = self
            .procs
            .get(&task.pid)
            .is_none_or(|p| !same_start(p.start_ns, task.start_ns));
        if stale {
            self.insert(Proc {
                pid: task.pid,
                ppid: task.ppid,
                start_ns: task.start_ns,
                comm: task.comm.clone(),
                exe: Arc::default(),
                argv: Arc::default(),
                exited: false,
            });
        }
        self.procs.get_mut(&task.pid).expect("just ensured")
    }

    /// A new process: it runs its parent's program until it execs.
    pub fn fork(&mut self, parent: &Task, child_pid: u32, child_start_ns: u64) {
        let parent = self.touch(parent).clone();
        self.insert(Proc {
            pid: child_pid,
            ppid: parent.pid,
            start_ns: child_start_ns,
            exited: false,
            ..parent
        });
    }

    pub fn exec(&mut self, task: &Task, exe: impl Into<Arc<[u8]>>, argv: impl Into<Arc<[Vec<u8>]>>) {
        let proc = self.touch(task);
        proc.comm = task.comm.clone();
        proc.exe = exe.into();
        proc.argv = argv.into();
    }

    pub fn exit(&mut self, task: &Task, now: Instant) {
        let proc = self.touch(task);
        if !proc.exited {
            proc.exited = true;
            self.exited.push_back((now, task.pid, task.start_ns));
        }
    }

    /// Forgets processes that exited more than [`EXIT_GRACE`] before `now`.
    pub fn sweep(&mut self, now: Instant) {
        while let Some(&(when, pid, start)) = self.exited.front() {
            if now.duration_since(when) < EXIT_GRACE && self.procs.len() <= TABLE_CAP {
                break;
            }
            self.exited.pop_front();
            self.remove_if(pid, start);
        }
    }

    /// The process and its ancestors, up to and including the session leader
    /// `sid` (or init), at most [`ANCESTRY_CAP`].
    pub fn ancestry(&self, pid: u32, sid: u32) -> Vec<Ancestor> {
        let mut chain = Vec::new();
        let mut at = self.procs.get(&pid);
        while let Some(proc) = at {
            chain.push(Ancestor {
                pid: proc.pid,
                comm: proc.comm.clone(),
                exe: proc.exe.clone(),
                argv: proc.argv.clone(),
            });
            if chain.len() == ANCESTRY_CAP || proc.pid == sid || proc.pid <= 1 || proc.ppid == proc.pid {
                break;
            }
            at = self
                .procs
                .get(&proc.ppid)
                .filter(|parent| parent.start_ns <= proc.start_ns);
        }
        chain
    }

    fn insert(&mut self, proc: Proc) {
        if self.procs.len() >= TABLE_CAP {
            // Over the cap only when exits are not keeping up: drop the oldest exited.
            while let Some((_, pid, start)) = self.exited.pop_front() {
                if self.remove_if(pid, start) {
                    break;
                }
            }
        }
        self.procs.insert(proc.pid, proc);
    }

    /// Removes `pid` if it is still the process that started at `start`.
    fn remove_if(&mut self, pid: u32, start: u64) -> bool {
        let same = self
            .procs
            .get(&pid)
            .is_some_and(|p| p.exited && same_start(p.start_ns, start));
        if same {
            self.procs.remove(&pid);
        }
        same
    }
}

/// `/proc` gives start times in clock ticks (10 ms), the kernel in ns: equal
/// if they fall in the same tick.
fn same_start(a: u64, b: u64) -> bool {
    const TICK_NS: u64 = 10_000_000;
    a == b || a / TICK_NS == b / TICK_NS
}

/// Reads every process in `/proc` (errors skip that process: it exited).
pub fn scan_proc() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_proc(pid, ticks))
        .collect()
}

fn read_proc(pid: u32, ticks_per_sec: u64) -> Option<Proc> {
    let base = format!("/proc/{pid}");
    let stat = std::fs::read(format!("{base}/stat")).ok()?;
    let (comm, ppid, start_ticks) = parse_stat(&stat)?;
    let exe = std::fs::read_link(format!("{base}/exe"))
        .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
        .unwrap_or_default();
    let cmdline = std::fs::read(format!("{base}/cmdline")).unwrap_or_default();
    let argv = crate::events::Argv::parse(&cmdline, cmdline.len() as u32).argv;
    Some(Proc {
        pid,
        ppid,
        start_ns: start_ticks * (1_000_000_000 / ticks_per_sec.max(1)),
        comm,
        exe: exe.into(),
        argv: argv.into(),
        exited: false,
    })
}

/// `(comm, ppid, starttime)` from `/proc/PID/stat`; comm may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &[u8]) -> Option<(Vec<u8>, u32, u64)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = stat.get(open + 1..close)?.to_vec();
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state(0) ppid(1) ... starttime(19).
    Some((comm, fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: u32, ppid: u32, start_ns: u64, sid: u32) -> Task {
        Task {
            pid,
            tid: pid,
            ppid,
            uid: 0,
            gid: 0,
            comm: format!("p{pid}").into_bytes(),
            cgroup_id: 1,
            start_ns,
            login_uid: None,
            audit_session: None,
            pgid: pid,
            sid,
            kernel_thread: false,
            allowlisted: false,
        }
    }

    #[test]
    fn fork_exec_builds_ancestry_to_the_session_leader() {
        let mut t = ProcessTable::default();
        let shell = task(100, 1, 1_000, 100);
        t.exec(&shell, b"/bin/bash".to_vec(), vec![b"bash".to_vec()]);
        t.fork(&shell, 200, 2_000_000_000);
        let child = task(200, 100, 2_000_000_000, 100);
        t.exec(
            &child,
            b"/usr/bin/rm".to_vec(),
            vec![b"rm".to_vec(), b"-rf".to_vec()],
        );
        let chain = t.ancestry(200, 100);
        let pids: Vec<u32> = chain.iter().map(|a| a.pid).collect();
        assert_eq!(pids, [200, 100]);
        assert_eq!(&*chain[0].exe, b"/usr/bin/rm");
        assert_eq!(&*chain[1].argv, [b"bash".to_vec()]);
    }

    #[test]
    fn a_reused_pid_is_a_new_process() {
        let mut t = ProcessTable::default();
        t.exec(&task(300, 1, 5_000_000_000, 1), b"/old".to_vec(), vec![]);
        let reused = task(300, 1, 9_000_000_000, 1);
        assert!(
            t.touch(&reused).exe.is_empty(),
            "old exe must not leak into the new process"
        );
        assert_eq!(t.get(300).unwrap().start_ns, 9_000_000_000);
    }

    #[test]
    fn exited_processes_go_after_the_grace_period() {
        let mut t = ProcessTable::default();
        let p = task(400, 1, 1, 1);
        let now = Instant::now();
        t.exit(&p, now);
        t.sweep(now + Duration::from_secs(1));
        assert!(t.get(400).is_some(), "kept during the grace period");
        t.sweep(now + EXIT_GRACE + Duration::from_secs(1));
        assert!(t.get(400).is_none());
    }

    #[test]
    fn sweeping_does_not_remove_a_reused_pid() {
        let mut t = ProcessTable::default();
        let now = Instant::now();
        t.exit(&task(500, 1, 1_000_000_000, 1), now);
        t.touch(&task(500, 1, 8_000_000_000, 1));
        t.sweep(now + EXIT_GRACE * 2);
        assert_eq!(t.get(500).unwrap().start_ns, 8_000_000_000);
    }

    #[test]
    fn the_table_stays_under_its_cap() {
        let mut t = ProcessTable::default();
        let now = Instant::now();
        for pid in 0..(TABLE_CAP as u32 + 100) {
            let p = task(pid + 2, 1, u64::from(pid), 1);
            t.touch(&p);
            t.exit(&p, now);
        }
        assert!(t.len() <= TABLE_CAP, "{}", t.len());
    }

    #[test]
    fn parses_stat_with_a_hostile_comm() {
        let stat = b"42 (a) b (c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let (comm, ppid, start) = parse_stat(stat).unwrap();
        assert_eq!((comm.as_slice(), ppid, start), (&b"a) b (c"[..], 7, 12345));
    }

    #[test]
    fn scans_this_process_from_proc() {
        let me = std::process::id();
        let procs = scan_proc();
        let own = procs.iter().find(|p| p.pid == me).expect("own process");
        assert_eq!(own.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(!own.exe.is_empty());
    }
}
