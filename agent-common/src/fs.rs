//! Destroying files through the filesystem: removal, rename over, truncation.

use crate::{assert_record_layout, path::RawPath, EventHeader, TaskInfo};

/// `IORING_OP_RENAMEAT` from `<linux/io_uring.h>`: io_uring's `renameat2`.
pub const IORING_OP_RENAMEAT: u8 = 35;
/// `IORING_OP_UNLINKAT`: io_uring's `unlinkat`.
pub const IORING_OP_UNLINKAT: u8 = 36;
/// `IORING_OP_FTRUNCATE` (Linux 6.9): io_uring's `ftruncate`.
pub const IORING_OP_FTRUNCATE: u8 = 55;
/// `IORING_OP_OPENAT` and `IORING_OP_OPENAT2`: io_uring's `openat` and
/// `openat2`, which truncate an existing file opened with `O_TRUNC`.
pub const IORING_OP_OPENAT: u8 = 18;
pub const IORING_OP_OPENAT2: u8 = 28;

/// Which call removed the entry, as recorded in [`RawDeletion::op`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOp {
    Unlink = 1,
    Unlinkat = 2,
    /// `unlinkat` with `AT_REMOVEDIR`.
    UnlinkatDir = 3,
    Rmdir = 4,
    /// An io_uring `IORING_OP_UNLINKAT` request, recorded as it is submitted.
    IoUringUnlinkat = 5,
    /// The same with `AT_REMOVEDIR`.
    IoUringUnlinkatDir = 6,
}

impl DeleteOp {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Unlink,
            2 => Self::Unlinkat,
            3 => Self::UnlinkatDir,
            4 => Self::Rmdir,
            5 => Self::IoUringUnlinkat,
            6 => Self::IoUringUnlinkatDir,
            _ => return None,
        })
    }

    /// The syscall's name (`unlinkat_dir` for `unlinkat` with `AT_REMOVEDIR`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unlink => "unlink",
            Self::Unlinkat => "unlinkat",
            Self::UnlinkatDir => "unlinkat_dir",
            Self::Rmdir => "rmdir",
            Self::IoUringUnlinkat => "io_uring_unlinkat",
            Self::IoUringUnlinkatDir => "io_uring_unlinkat_dir",
        }
    }

    /// Whether it was recorded as an io_uring request was submitted,
    /// before it ran, so its record has no result.
    pub const fn recorded_at_submission(self) -> bool {
        matches!(self, Self::IoUringUnlinkat | Self::IoUringUnlinkatDir)
    }
}

/// A removal, recorded at syscall exit (an io_uring request: at submission).
/// Data: `path`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawDeletion {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// The syscall's return value: 0 or `-errno` (0 for an io_uring request).
    pub ret: i64,
    /// A [`DeleteOp`] as an integer.
    pub op: u32,
    /// The protected path class the guard counted it in (0: none), found
    /// from the directory's inode while walking up.
    pub class: u32,
    pub path: RawPath,
}
assert_record_layout!(RawDeletion, 120);

/// Which call renamed, as recorded in [`RawRename::op`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameOp {
    Rename = 1,
    Renameat = 2,
    Renameat2 = 3,
    /// An io_uring `IORING_OP_RENAMEAT` request, recorded as it is submitted.
    IoUringRenameat = 4,
}

impl RenameOp {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Rename,
            2 => Self::Renameat,
            3 => Self::Renameat2,
            4 => Self::IoUringRenameat,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Rename => "rename",
            Self::Renameat => "renameat",
            Self::Renameat2 => "renameat2",
            Self::IoUringRenameat => "io_uring_renameat",
        }
    }

    /// As [`DeleteOp::recorded_at_submission`].
    pub const fn recorded_at_submission(self) -> bool {
        matches!(self, Self::IoUringRenameat)
    }
}

/// A rename (`rename`, `renameat`, `renameat2`), recorded at syscall exit
/// (an io_uring request: at submission). Data: `from`, then `to`.
///
/// Whether `to` existed before cannot be seen from a tracepoint; the agent
/// treats a rename onto a protected path as a possible overwrite.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawRename {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// As [`RawDeletion::ret`].
    pub ret: i64,
    /// `renameat2` flags (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`, ...), else 0.
    pub flags: u32,
    /// A [`RenameOp`] as an integer.
    pub op: u32,
    pub from: RawPath,
    pub to: RawPath,
}
assert_record_layout!(RawRename, 136);

/// How a file was cut short, as recorded in [`RawTruncate::op`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncateOp {
    Truncate = 1,
    Ftruncate = 2,
    /// `open`, `openat`, `openat2` or `open_by_handle_at` with `O_TRUNC`,
    /// or `creat`, of a regular file that existed.
    OpenTrunc = 3,
    /// An io_uring `IORING_OP_FTRUNCATE` request that shrinks a file,
    /// recorded as it is submitted (a registered file) or starts (a plain
    /// fd).
    IoUringFtruncate = 4,
    /// An io_uring open (`IORING_OP_OPENAT`, `IORING_OP_OPENAT2`) with
    /// `O_CREAT` and `O_TRUNC` of a regular file that existed, recorded as
    /// its completion is posted (its result is the fd, or a registered
    /// slot's index, or 0 for a slot it was given); with no path when the
    /// file was no longer at that fd or slot.
    IoUringOpenTrunc = 5,
    /// An io_uring open with `O_TRUNC` recorded by name as it is submitted:
    /// one without `O_CREAT` (which only opens a file that exists), or one
    /// whose completion would come too late to judge it by (none on
    /// success, `IOSQE_CQE_SKIP_SUCCESS`, or a ring that posts completions
    /// only when its owner asks), which may create the file instead.
    IoUringOpenTruncSubmitted = 6,
}

impl TruncateOp {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Truncate,
            2 => Self::Ftruncate,
            3 => Self::OpenTrunc,
            4 => Self::IoUringFtruncate,
            5 => Self::IoUringOpenTrunc,
            6 => Self::IoUringOpenTruncSubmitted,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncate => "truncate",
            Self::Ftruncate => "ftruncate",
            Self::OpenTrunc => "open_trunc",
            Self::IoUringFtruncate => "io_uring_ftruncate",
            Self::IoUringOpenTrunc => "io_uring_open_trunc",
            Self::IoUringOpenTruncSubmitted => "io_uring_open_trunc_submitted",
        }
    }

    /// As [`DeleteOp::recorded_at_submission`].
    pub const fn recorded_at_submission(self) -> bool {
        matches!(self, Self::IoUringFtruncate | Self::IoUringOpenTruncSubmitted)
    }
}

/// `size_before` when the probe could not know it.
pub const SIZE_UNKNOWN: i64 = -1;

/// A truncation, recorded at syscall exit (an io_uring request: before it
/// runs). Data: `path`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawTruncate {
    pub header: EventHeader,
    pub task: TaskInfo,
    pub ret: i64,
    /// The new length.
    pub length: i64,
    /// The size before, or [`SIZE_UNKNOWN`].
    pub size_before: i64,
    /// A [`TruncateOp`] as an integer.
    pub op: u32,
    pub _pad: u32,
    pub path: RawPath,
}
assert_record_layout!(RawTruncate, 136);
