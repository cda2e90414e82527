//! What the agent knows about an event once it is decoded: plain Rust types,
//! no kernel layouts. Later stages (attribution, scoring, output) see only these.

pub mod clock;
pub mod decode;
mod path;

use std::time::SystemTime;

use agent_common::{
    block::BlockWriteOp,
    fs::{DeleteOp, RenameOp, TruncateOp},
    guard::{GuardHook, GuardReason},
};
use nix::errno::Errno;
use serde::{Serialize, Serializer};

pub use clock::BootClock;
pub use decode::{decode, DecodeError};

use crate::escape;

/// One decoded record from the probes.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    #[serde(flatten)]
    pub body: EventBody,
    /// The process that did it (for `fork`, the parent).
    pub process: Task,
}

/// What happened. Paths are absolute as seen from the process's root; a
/// `*_complete: false` path is only a suffix (see [`path`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A file or directory removed (or an attempt that failed).
    Deletion {
        #[serde(serialize_with = "serialize_delete_op")]
        op: DeleteOp,
        #[serde(serialize_with = "escape::serialize")]
        path: Vec<u8>,
        path_complete: bool,
        /// The protected path class the kernel guard counted it in (0: none;
        /// numbered as the policy's `path_class` entries, from 1).
        kernel_class: u32,
        #[serde(flatten)]
        outcome: Outcome,
    },
    /// A rename; `to` may have existed and been replaced.
    Rename {
        #[serde(serialize_with = "serialize_rename_op")]
        op: RenameOp,
        #[serde(serialize_with = "escape::serialize")]
        from: Vec<u8>,
        from_complete: bool,
        #[serde(serialize_with = "escape::serialize")]
        to: Vec<u8>,
        to_complete: bool,
        /// `renameat2` flags.
        flags: u32,
        #[serde(flatten)]
        outcome: Outcome,
    },
    /// A file cut short.
    Truncate {
        #[serde(serialize_with = "serialize_truncate_op")]
        op: TruncateOp,
        #[serde(serialize_with = "escape::serialize")]
        path: Vec<u8>,
        path_complete: bool,
        length: i64,
        /// Size before, where the probe could read it.
        size_before: Option<u64>,
        #[serde(flatten)]
        outcome: Outcome,
    },
    /// A program started (after a successful `execve`/`execveat`).
    Exec {
        #[serde(serialize_with = "escape::serialize")]
        exe: Vec<u8>,
        exe_complete: bool,
        #[serde(flatten)]
        argv: Argv,
    },
    /// A new process.
    Fork { child_pid: u32, child_start_ns: u64 },
    /// A process ended.
    Exit {
        /// Exit status when it exited normally.
        status: Option<u8>,
        /// The signal that killed it.
        signal: Option<u8>,
    },
    /// A block device opened for writing.
    BlockOpen {
        device: Device,
        #[serde(serialize_with = "escape::serialize")]
        path: Vec<u8>,
        path_complete: bool,
        /// `open` flags.
        flags: u32,
        #[serde(flatten)]
        outcome: Outcome,
    },
    /// The in-kernel guard acted (see `agent_common::guard`).
    Guard(GuardAction),
    /// A write on a block device, or an erasure of a range of one (a
    /// discard, a zeroing, an erasing `fallocate`), seen as it starts
    /// (through io_uring to a registered file: as it is submitted; see
    /// `agent_common::block::RawBlockWrite`).
    BlockWrite {
        #[serde(serialize_with = "serialize_block_write_op")]
        op: BlockWriteOp,
        device: Device,
        /// Byte offset on the device where the write starts.
        offset: u64,
        /// Bytes the call asks to write or erase.
        bytes: u64,
        fd: u32,
        /// `fd` is the index of an io_uring ring's registered file.
        fd_registered: bool,
    },
}

/// What the in-kernel guard did, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardAction {
    #[serde(serialize_with = "serialize_debug_snake")]
    pub reason: GuardReason,
    #[serde(serialize_with = "serialize_debug_snake")]
    pub hook: GuardHook,
    /// The session as the probes keyed it.
    pub session_kind: &'static str,
    pub session_id: u64,
    /// Path class index (0: any path); named by the policy.
    pub class: u32,
    pub count: u32,
    pub limit: u32,
    /// SIGKILL was sent (enforce mode).
    pub killed: bool,
    /// `bpf_send_signal`'s error, if it failed.
    pub signal_error: Option<String>,
    /// For device writes, the device.
    pub device: Option<Device>,
}

impl EventBody {
    /// The `type` this event has in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Deletion { .. } => "deletion",
            EventBody::Rename { .. } => "rename",
            EventBody::Truncate { .. } => "truncate",
            EventBody::Exec { .. } => "exec",
            EventBody::Fork { .. } => "fork",
            EventBody::Exit { .. } => "exit",
            EventBody::BlockOpen { .. } => "block_open",
            EventBody::Guard(_) => "guard",
            EventBody::BlockWrite { .. } => "block_write",
        }
    }
}

/// A block device, by number; `name` is filled in by attribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub major: u32,
    pub minor: u32,
    pub name: Option<String>,
}

/// The arguments of an exec, bounded: at most [`Argv::MAX_ARGS`] arguments of
/// at most [`Argv::MAX_ARG_BYTES`] each, from at most 4 KiB read in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Argv {
    #[serde(serialize_with = "serialize_args")]
    pub argv: Vec<Vec<u8>>,
    /// Something was cut: arguments, or bytes of one.
    pub argv_truncated: bool,
    /// Size of the whole argument area in the process.
    pub argv_bytes: u32,
}

impl Argv {
    pub const MAX_ARGS: usize = 64;
    pub const MAX_ARG_BYTES: usize = 1024;

    /// Splits the NUL-separated argument area, applying the bounds.
    pub fn parse(area: &[u8], total: u32) -> Argv {
        let mut truncated = (area.len() as u64) < u64::from(total);
        let area = area.strip_suffix(&[0]).unwrap_or(area);
        let mut argv = Vec::new();
        for arg in area.split(|&b| b == 0) {
            if argv.len() == Self::MAX_ARGS {
                truncated = true;
                break;
            }
            if arg.len() > Self::MAX_ARG_BYTES {
                truncated = true;
            }
            argv.push(arg[..arg.len().min(Self::MAX_ARG_BYTES)].to_vec());
        }
        if area.is_empty() {
            argv.clear();
        }
        Argv {
            argv,
            argv_truncated: truncated,
            argv_bytes: total,
        }
    }
}

/// A call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed(Errno),
    /// An io_uring request, seen as it was submitted: it runs later, and its
    /// result is not followed.
    Submitted,
}

impl Outcome {
    /// From a syscall return value: 0 or more is success, `-errno` a failure.
    pub fn from_ret(ret: i64) -> Self {
        if ret >= 0 {
            Outcome::Success
        } else {
            Outcome::Failed(Errno::from_raw(i32::try_from(-ret).unwrap_or(i32::MAX)))
        }
    }

    /// From a record's `ret`, which a record made as an io_uring request
    /// was submitted does not have.
    pub fn of(ret: i64, at_submission: bool) -> Self {
        if at_submission {
            Outcome::Submitted
        } else {
            Outcome::from_ret(ret)
        }
    }

    /// Whether what was asked may have been done: scoring counts these, an
    /// io_uring request's as much as a syscall's that returned success.
    pub fn may_have_happened(self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        match self {
            Outcome::Success => {
                map.serialize_entry("result", "ok")?;
                map.serialize_entry("errno", &None::<i32>)?;
            }
            Outcome::Failed(errno) => {
                map.serialize_entry("result", &format!("{errno:?}"))?;
                map.serialize_entry("errno", &Some(*errno as i32))?;
            }
            Outcome::Submitted => {
                map.serialize_entry("result", "submitted")?;
                map.serialize_entry("errno", &None::<i32>)?;
            }
        }
        map.end()
    }
}

/// The task that made the syscall, as the kernel saw it then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(serialize_with = "escape::serialize")]
    pub comm: Vec<u8>,
    pub cgroup_id: u64,
    /// Process start, nanoseconds since boot: with `pid`, a unique identity.
    pub start_ns: u64,
    /// Who logged in (`/proc/PID/loginuid`), if anyone.
    pub login_uid: Option<u32>,
    /// The audit (login) session (`/proc/PID/sessionid`), if any.
    pub audit_session: Option<u32>,
    /// Process group: the shell job.
    pub pgid: u32,
    /// POSIX session (`setsid`).
    pub sid: u32,
    pub kernel_thread: bool,
    /// The probes exempted the process (an allowlisted program or its child).
    pub allowlisted: bool,
}

pub(crate) fn serialize_time<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_nanos(*time))
}

/// `LimitCrossed` → `limit_crossed`.
fn serialize_debug_snake<S: Serializer, T: std::fmt::Debug>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    let mut out = String::new();
    for (i, c) in format!("{value:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    s.serialize_str(&out)
}

fn serialize_delete_op<S: Serializer>(op: &DeleteOp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(op.name())
}

fn serialize_block_write_op<S: Serializer>(op: &BlockWriteOp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(op.name())
}

fn serialize_rename_op<S: Serializer>(op: &RenameOp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(op.name())
}

fn serialize_truncate_op<S: Serializer>(op: &TruncateOp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(op.name())
}

fn serialize_args<S: Serializer>(args: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(args.iter().map(|a| escape::escape(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_splits_on_nul() {
        let argv = Argv::parse(b"rm\0-rf\0/srv\0", 12);
        assert_eq!(argv.argv, [b"rm".to_vec(), b"-rf".to_vec(), b"/srv".to_vec()]);
        assert!(!argv.argv_truncated);
    }

    #[test]
    fn argv_cut_in_the_kernel_is_flagged() {
        let argv = Argv::parse(b"cp\0a\0b", 9000);
        assert!(argv.argv_truncated);
        assert_eq!(argv.argv_bytes, 9000);
    }

    #[test]
    fn argv_bounds_count_and_length() {
        let long = vec![b'x'; Argv::MAX_ARG_BYTES + 5];
        let mut area = Vec::new();
        for _ in 0..Argv::MAX_ARGS + 3 {
            area.extend_from_slice(&long);
            area.push(0);
        }
        let argv = Argv::parse(&area, area.len() as u32);
        assert!(argv.argv_truncated);
        assert_eq!(argv.argv.len(), Argv::MAX_ARGS);
        assert!(argv.argv.iter().all(|a| a.len() == Argv::MAX_ARG_BYTES));
    }

    #[test]
    fn empty_argv() {
        assert!(Argv::parse(b"", 0).argv.is_empty());
    }
}
