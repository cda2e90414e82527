//! Process lifecycle: exec, fork, exit.

use crate::{assert_record_layout, path::RawPath, EventHeader, TaskInfo};

/// Most argv bytes an exec record carries.
pub const ARGV_CAP: usize = 4096;

/// A successful exec, recorded in the new program before it runs. `task` is
/// the process after the exec. Data: `argv_len` bytes of the argument area
/// (NUL-separated arguments), then `exe`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawExec {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Bytes of the argument area captured (at most [`ARGV_CAP`]).
    pub argv_len: u32,
    /// Size of the whole argument area; larger than `argv_len` when cut.
    pub argv_total: u32,
    /// The executable, from `mm->exe_file`.
    pub exe: RawPath,
}
assert_record_layout!(RawExec, 112);

/// A new process. `task` is the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawFork {
    pub header: EventHeader,
    pub task: TaskInfo,
    pub child_pid: u32,
    pub _pad: u32,
    /// The child's start time, as [`TaskInfo::start_ns`].
    pub child_start_ns: u64,
}
assert_record_layout!(RawFork, 104);

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawExit {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// `task_struct.exit_code`: `status << 8`, or the signal that killed it.
    pub exit_code: u32,
    pub _pad: u32,
}
assert_record_layout!(RawExit, 96);
