//! The envelope every ring-buffer record starts with.

/// Length of `task_struct.comm` in the kernel.
pub const COMM_LEN: usize = 16;

/// What a ring-buffer record holds. Numbers are grouped by family and never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A file or directory removal: unlink, unlinkat, rmdir. Body: [`crate::RawDeletion`].
    Deletion = 100,
}

impl EventKind {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        match raw {
            100 => Some(Self::Deletion),
            _ => None,
        }
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
    /// `bpf_ktime_get_boot_ns`: nanoseconds since boot, suspend included.
    pub boot_ns: u64,
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
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 8);
const _: () = assert!(core::mem::size_of::<TaskInfo>() == 56);
const _: () = assert!(core::mem::align_of::<TaskInfo>() == 8);
