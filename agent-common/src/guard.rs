//! The in-kernel guard: per-session destruction counters with hard limits,
//! session marks, and what the agent tells the probes about policy.
//!
//! The probes count, per session and path class, the entries a session
//! removes in a window. Crossing a class's limit kills the process at once
//! (in enforce mode) and marks the session; a marked session's processes are
//! killed at their next destructive syscall or exec. Userspace sees every
//! such decision as a [`RawGuard`] record, and can set and clear marks.

use crate::{assert_record_layout, EventHeader, TaskInfo};

/// Path classes the guard counts: class 0 is "any path", 1.. are the
/// policy's protected classes.
pub const CLASS_COUNT: usize = 8;
/// Class 0: every deletion counts here.
pub const CLASS_ANY: u32 = 0;

/// How the guard treats a program (`EXEMPT_EXES`, by inode) and, from its
/// exec on, its process (`EXEMPT_PIDS`): the maps' values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption {
    /// Allowlisted: never counted nor killed; its children inherit it.
    Allowlisted = 1,
    /// `safety.never_kill`: counted and reported, never killed; not inherited
    /// (sparing sshd must not spare every login shell it starts).
    Spared = 2,
}

/// How the probes identify a session, mirroring the agent's session key.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// Audit (login) session id.
    Login = 1,
    /// A cgroup other than the root: a container, a unit.
    Cgroup = 2,
    /// POSIX session id.
    Posix = 3,
}

impl SessionKind {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Login,
            2 => Self::Cgroup,
            3 => Self::Posix,
            _ => return None,
        })
    }
}

/// Length of an allowlisted script path as a map key, NUL-padded.
pub const SCRIPT_PATH_LEN: usize = 256;

/// An allowlisted executable's absolute path, NUL-padded: the key the probes
/// look the `execve` filename up by. Aligned so the probes can clear it a
/// word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScriptPath(pub [u8; SCRIPT_PATH_LEN]);

impl ScriptPath {
    /// `None` if the path does not fit.
    pub fn new(path: &[u8]) -> Option<ScriptPath> {
        let mut key = [0u8; SCRIPT_PATH_LEN];
        (path.len() < SCRIPT_PATH_LEN).then(|| {
            key[..path.len()].copy_from_slice(path);
            ScriptPath(key)
        })
    }
}

/// Key of the per-session maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId {
    /// A [`SessionKind`] as an integer.
    pub kind: u32,
    pub _pad: u32,
    pub id: u64,
}

/// Counts of one session in the current window.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SessionCounts {
    /// Start of the window, boot-time ns.
    pub window_start: u64,
    pub counts: [u32; CLASS_COUNT],
}

/// Why a session is marked.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// When, boot-time ns.
    pub boot_ns: u64,
    /// A [`GuardReason`] as an integer.
    pub reason: u32,
    /// The class whose limit was crossed (for limits).
    pub class: u32,
}

/// Global guard settings, one entry in the `GUARD` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// 1: kill; 0: monitor (mark and report, never kill).
    pub enforce: u32,
    /// The agent's own pid: never killed.
    pub agent_pid: u32,
    /// Counting window, ns.
    pub window_ns: u64,
    /// The root cgroup's id: processes there have no cgroup session.
    pub root_cgroup_id: u64,
    /// Deletions per window per class; 0 means no limit.
    pub limits: [u32; CLASS_COUNT],
    /// 1: kill on the first raw write to a protected device.
    pub protect_devices: u32,
    /// 1: a marked session's processes are killed at exec too (a shell loop
    /// running one `rm` per file loses nothing more).
    pub kill_marked_on_exec: u32,
    /// Which of the exemption maps the agent fills hold entries
    /// (`EXEMPT_LIST_*` bits): the probes skip lookups in empty ones. Set
    /// before a map's first entry goes in, cleared after its last goes.
    pub exempt_lists: u32,
    /// Changed by the agent after every change to the protected
    /// directories: a walk the probes kept from before, with the protected
    /// class it found, is never replayed (see the probes' `path_cache`).
    pub dirs_epoch: u32,
}

/// Who changes the number of marked sessions. Each writer keeps its own
/// net count in its slot of the `MARK_COUNTS` array map, and the slots'
/// wrapping sum is the number of marks: while it is 0, destructive calls
/// skip the `MARKED` lookup. With one shared count, a probe's new mark made
/// while the agent read, changed and wrote the count back would drop out of
/// it, and that session's processes would not be stopped.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkCounter {
    /// Marks the probes made (one atomic add each).
    Probes = 0,
    /// Marks the agent made, less the marks it cleared.
    Agent = 1,
    /// Less the marks `levee-agent marks clear` cleared: only ever lowered,
    /// so two such commands racing can only leave the sum too high, which
    /// costs lookups, never a missed mark.
    MarksCommand = 2,
}

impl MarkCounter {
    pub const COUNT: u32 = 3;
}

/// [`GuardConfig::exempt_lists`]: allowlisted users are listed.
pub const EXEMPT_LIST_UIDS: u32 = 1;
/// [`GuardConfig::exempt_lists`]: allowlisted cgroups are listed.
pub const EXEMPT_LIST_CGROUPS: u32 = 2;

/// A protected directory, by device and inode (the agent stats the policy's
/// paths). Kernel `dev_t` encoding, as `super_block.s_dev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Why the guard acted, in [`RawGuard::reason`] and [`Mark::reason`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardReason {
    /// The session crossed a class's limit.
    LimitCrossed = 1,
    /// The session was already marked.
    MarkedSession = 2,
    /// A raw write to a device holding a filesystem or partition table.
    ProtectedDevice = 3,
    /// The agent marked the session (its own scoring).
    AgentDecision = 4,
}

impl GuardReason {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::LimitCrossed,
            2 => Self::MarkedSession,
            3 => Self::ProtectedDevice,
            4 => Self::AgentDecision,
            _ => return None,
        })
    }
}

/// Where the guard acted, in [`RawGuard::hook`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardHook {
    /// After a deletion completed.
    Deletion = 1,
    /// At entry of a destructive syscall (at exit of a truncating open).
    DestructiveCall = 2,
    /// At entry of a raw device write.
    DeviceWrite = 3,
    /// At entry of `execve`/`execveat`.
    Exec = 4,
}

impl GuardHook {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Deletion,
            2 => Self::DestructiveCall,
            3 => Self::DeviceWrite,
            4 => Self::Exec,
            _ => return None,
        })
    }
}

/// A guard decision. No data area.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawGuard {
    pub header: EventHeader,
    pub task: TaskInfo,
    pub session: SessionId,
    /// A [`GuardReason`].
    pub reason: u32,
    /// A [`GuardHook`].
    pub hook: u32,
    pub class: u32,
    /// The session's count in `class` when the limit was crossed.
    pub count: u32,
    pub limit: u32,
    /// 1 if SIGKILL was sent.
    pub killed: u32,
    /// `bpf_send_signal`'s result (0, or `-errno`); 0 when not killed.
    pub signal_ret: i32,
    /// For device writes, the device (kernel `dev_t`).
    pub dev: u32,
}
assert_record_layout!(RawGuard, 136);
