//! Removal of a directory entry: `unlink`, `unlinkat` (with or without
//! `AT_REMOVEDIR`) and `rmdir`.

use crate::{EventHeader, TaskInfo};

/// Which syscall removed the entry, as recorded in [`RawDeletion::op`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOp {
    Unlink = 1,
    Unlinkat = 2,
    /// `unlinkat` with `AT_REMOVEDIR`.
    UnlinkatDir = 3,
    Rmdir = 4,
}

impl DeleteOp {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Unlink),
            2 => Some(Self::Unlinkat),
            3 => Some(Self::UnlinkatDir),
            4 => Some(Self::Rmdir),
            _ => None,
        }
    }

    /// The syscall's name (`unlinkat_dir` for `unlinkat` with `AT_REMOVEDIR`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unlink => "unlink",
            Self::Unlinkat => "unlinkat",
            Self::UnlinkatDir => "unlinkat_dir",
            Self::Rmdir => "rmdir",
        }
    }
}

/// Bytes available after a [`RawDeletion`] for the path data. The user-supplied
/// name takes at most `PATH_MAX` (4096) of them; the directory components of a
/// relative name fill the rest, each at most `NAME_MAX + 1` (256) bytes.
pub const PATH_DATA_CAP: usize = 8192;
/// Longest name the probes read from user memory, NUL included (`PATH_MAX`).
pub const NAME_CAP: usize = 4096;
/// Longest single directory component, NUL included (`NAME_MAX + 1`).
pub const COMPONENT_CAP: usize = 256;

/// The deleted name was relative and the directory it was relative to was
/// resolved: `dir_len` bytes of components follow the name.
pub const PATH_FLAG_DIR_RESOLVED: u32 = 1 << 0;
/// The walk up the directory tree stopped before reaching the root (too deep,
/// or the buffer was full): the directory part is a suffix of the real one.
pub const PATH_FLAG_DIR_TRUNCATED: u32 = 1 << 1;
/// The name could not be read from user memory.
pub const PATH_FLAG_NAME_UNREADABLE: u32 = 1 << 2;
/// The name filled `NAME_CAP` and may have been cut.
pub const PATH_FLAG_NAME_TRUNCATED: u32 = 1 << 3;

/// A deletion as the probe records it at syscall exit.
///
/// Followed in the record by `name_len` bytes of the name exactly as the caller
/// passed it (no NUL), then `dir_len` bytes of directory components, each
/// NUL-terminated, innermost first (`c\0b\0a\0` for `/a/b/c`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawDeletion {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// The syscall's return value: 0 or `-errno`.
    pub ret: i64,
    /// A [`DeleteOp`] as an integer.
    pub op: u32,
    /// `PATH_FLAG_*` bits.
    pub path_flags: u32,
    pub name_len: u32,
    pub dir_len: u32,
}

const _: () = assert!(core::mem::size_of::<RawDeletion>() == 88);
const _: () = assert!(core::mem::offset_of!(RawDeletion, task) == 8);
