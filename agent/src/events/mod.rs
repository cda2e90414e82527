//! What the agent knows about an event once it is decoded: plain Rust types,
//! no kernel layouts. Later stages (attribution, scoring, output) see only these.

pub mod clock;
pub mod decode;
mod path;

use std::time::SystemTime;

use agent_common::DeleteOp;
use nix::errno::Errno;
use serde::{Serialize, Serializer};

pub use clock::BootClock;
pub use decode::{decode, DecodeError};

/// One decoded record from the probes.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Deletion(Deletion),
}

/// A file or directory removed (or an attempt that failed).
#[derive(Debug, Clone, Serialize)]
pub struct Deletion {
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    #[serde(serialize_with = "serialize_op")]
    pub op: DeleteOp,
    /// Absolute path as seen from the process's root directory.
    #[serde(serialize_with = "crate::escape::serialize")]
    pub path: Vec<u8>,
    /// False when the kernel could not rebuild the whole path (name unreadable,
    /// directory deeper than the probe walks): `path` is then a suffix.
    pub path_complete: bool,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub process: Process,
}

/// The syscall's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed(Errno),
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
        }
        map.end()
    }
}

/// The process that made the syscall, as the kernel saw it then.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(serialize_with = "crate::escape::serialize")]
    pub comm: Vec<u8>,
    pub cgroup_id: u64,
}

fn serialize_time<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_nanos(*time))
}

fn serialize_op<S: Serializer>(op: &DeleteOp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(op.name())
}
