//! The envelope every ring-buffer record starts with.

/// Length of `task_struct.comm` in the kernel.
pub const COMM_LEN: usize = 16;

/// Largest fixed part of any record; the variable data follows it.
pub const RECORD_HEAD_CAP: usize = 256;

/// Longest record the probes send: the fixed part, the data area, and slack
/// for one name read at the data area's last offset.
pub const RECORD_MAX: usize = RECORD_HEAD_CAP + crate::path::DATA_CAP + crate::path::NAME_CAP;

/// `task_struct.sessionid` and `loginuid` when unset: no login session.
pub const AUDIT_UNSET: u32 = u32::MAX;

/// [`TaskInfo::flags`]: the task is a kernel thread.
pub const TASK_FLAG_KTHREAD: u32 = 1 << 0;
/// [`TaskInfo::flags`]: the process is exempt from the guard (an allowlisted
/// program or its child), as the probes knew at the event.
pub const TASK_FLAG_EXEMPT: u32 = 1 << 1;

/// What a ring-buffer record holds. Numbers are grouped by family and never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// unlink, unlinkat, rmdir: [`crate::fs::RawDeletion`].
    Deletion = 100,
    /// rename, renameat, renameat2: [`crate::fs::RawRename`].
    Rename = 101,
    /// truncate, shrinking ftruncate, `O_TRUNC` open of an existing file: [`crate::fs::RawTruncate`].
    Truncate = 102,
    /// A successful exec: [`crate::process::RawExec`].
    Exec = 200,
    /// A new process (not a thread): [`crate::process::RawFork`].
    Fork = 201,
    /// A process ended (its last thread): [`crate::process::RawExit`].
    Exit = 202,
    /// A block device opened for writing: [`crate::block::RawBlockOpen`].
    BlockOpen = 300,
    /// A write on a block device (a syscall, or an io_uring request): [`crate::block::RawBlockWrite`].
    BlockWrite = 301,
    /// The in-kernel guard acted: [`crate::guard::RawGuard`].
    Guard = 500,
}

impl EventKind {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            100 => Self::Deletion,
            101 => Self::Rename,
            102 => Self::Truncate,
            200 => Self::Exec,
            201 => Self::Fork,
            202 => Self::Exit,
            300 => Self::BlockOpen,
            301 => Self::BlockWrite,
            500 => Self::Guard,
            _ => return None,
        })
    }
}

/// First bytes of every record: what follows, and how many bytes the record has.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] as an integer.
    pub kind: u32,
    /// Total record length in bytes, header included.
    pub len: u32,
}

/// Who made the syscall, read in the kernel at the moment of the event, so it is
/// right even for a process that exits a millisecond later.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TaskInfo {
    /// `bpf_ktime_get_boot_ns`: nanoseconds since boot, suspend included;
    /// never later than the event and normally within a kernel tick before
    /// it, except in guard and exit records, which are exact (see the
    /// probes' `clock`).
    pub boot_ns: u64,
    /// When the process started (`task_struct.start_boottime` of the thread-group
    /// leader): with `pid`, identifies the process across pid reuse.
    pub start_ns: u64,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `task_struct.loginuid`: who logged in, [`AUDIT_UNSET`] if nobody.
    pub loginuid: u32,
    /// `task_struct.sessionid`: the audit (login) session, [`AUDIT_UNSET`] if none.
    pub audit_session: u32,
    /// Process group (the shell job), in the initial pid namespace.
    pub pgid: u32,
    /// POSIX session id (`setsid`), in the initial pid namespace.
    pub sid: u32,
    /// `TASK_FLAG_*` bits.
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 8);
const _: () = assert!(core::mem::size_of::<TaskInfo>() == 80);
const _: () = assert!(core::mem::align_of::<TaskInfo>() == 8);
