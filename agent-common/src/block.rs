//! Raw access to block devices: opening one for writing, and writing to it
//! or erasing a range of it.

use crate::{assert_record_layout, path::RawPath, EventHeader, TaskInfo};

/// A block device opened for writing, recorded at syscall exit. Data: `path`
/// (of the device node).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawBlockOpen {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// The new file descriptor, or `-errno`.
    pub ret: i64,
    /// The device, as the kernel encodes `dev_t` (`major << 20 | minor`).
    pub dev: u32,
    /// The `open` flags.
    pub flags: u32,
    pub path: RawPath,
}
assert_record_layout!(RawBlockOpen, 120);

/// io_uring's writes, from `<linux/io_uring.h>`: `IORING_OP_WRITEV`,
/// `IORING_OP_WRITE_FIXED`, `IORING_OP_WRITE` and `IORING_OP_WRITEV_FIXED`
/// (the fixed ones write from registered buffers).
pub const IORING_OP_WRITEV: u8 = 2;
pub const IORING_OP_WRITE_FIXED: u8 = 5;
pub const IORING_OP_WRITE: u8 = 23;
pub const IORING_OP_WRITEV_FIXED: u8 = 61;
/// io_uring's `splice`: writes what a pipe holds to the request's file.
pub const IORING_OP_SPLICE: u8 = 30;
/// io_uring's requests that may erase without writing: `fallocate`, and a
/// passthrough command (`IORING_OP_URING_CMD`), which on a block device is
/// a discard ([`BLOCK_URING_CMD_DISCARD`]).
pub const IORING_OP_FALLOCATE: u8 = 17;
pub const IORING_OP_URING_CMD: u8 = 46;
/// `_IO(0x12, 0)` from `<linux/fs.h>` (Linux 6.12): discard a range.
pub const BLOCK_URING_CMD_DISCARD: u32 = 0x1200;

/// Which call wrote, as recorded in [`RawBlockWrite::op`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockWriteOp {
    Write = 1,
    Pwrite64 = 2,
    Writev = 3,
    /// `pwritev` or `pwritev2`.
    Pwritev = 4,
    /// io_uring's `IORING_OP_WRITE` or `IORING_OP_WRITE_FIXED`.
    IoUringWrite = 5,
    /// io_uring's `IORING_OP_WRITEV` or `IORING_OP_WRITEV_FIXED`.
    IoUringWritev = 6,
    /// The `BLKDISCARD` ioctl: the device may drop the range's data.
    Discard = 7,
    /// The `BLKSECDISCARD` ioctl: a discard the device must make unrecoverable.
    SecureDiscard = 8,
    /// The `BLKZEROOUT` ioctl: the range is zeroed.
    ZeroOut = 9,
    /// `fallocate` punching a hole in, or zeroing, a range of the device.
    Fallocate = 10,
    /// io_uring's `IORING_OP_FALLOCATE`, as [`Self::Fallocate`].
    IoUringFallocate = 11,
    /// io_uring's discard command (`BLOCK_URING_CMD_DISCARD`).
    IoUringDiscard = 12,
    /// `sendfile` to the device.
    Sendfile = 13,
    /// `splice` from a pipe to the device.
    Splice = 14,
    /// A shared `mmap` of the device, writable or open for writing (so
    /// `mprotect` can make it writable): the writes are stores to memory
    /// the kernel writes back.
    Mmap = 15,
    /// io_uring's `IORING_OP_SPLICE` to the device.
    IoUringSplice = 16,
}

impl BlockWriteOp {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Write,
            2 => Self::Pwrite64,
            3 => Self::Writev,
            4 => Self::Pwritev,
            5 => Self::IoUringWrite,
            6 => Self::IoUringWritev,
            7 => Self::Discard,
            8 => Self::SecureDiscard,
            9 => Self::ZeroOut,
            10 => Self::Fallocate,
            11 => Self::IoUringFallocate,
            12 => Self::IoUringDiscard,
            13 => Self::Sendfile,
            14 => Self::Splice,
            15 => Self::Mmap,
            16 => Self::IoUringSplice,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Pwrite64 => "pwrite64",
            Self::Writev => "writev",
            Self::Pwritev => "pwritev",
            Self::IoUringWrite => "io_uring_write",
            Self::IoUringWritev => "io_uring_writev",
            Self::Discard => "blkdiscard",
            Self::SecureDiscard => "blksecdiscard",
            Self::ZeroOut => "blkzeroout",
            Self::Fallocate => "fallocate",
            Self::IoUringFallocate => "io_uring_fallocate",
            Self::IoUringDiscard => "io_uring_discard",
            Self::Sendfile => "sendfile",
            Self::Splice => "splice",
            Self::Mmap => "mmap",
            Self::IoUringSplice => "io_uring_splice",
        }
    }
}

/// A `write`, `pwrite64`, `writev`, `pwritev`, `pwritev2`, `sendfile` or
/// `splice` to a block device, a shared `mmap` of one that may be written
/// through, or a call
/// that erases a range of one without writing it (the
/// `BLKDISCARD`, `BLKSECDISCARD` and `BLKZEROOUT` ioctls, an erasing
/// `fallocate`), recorded at syscall entry, before it runs: every write on
/// the host would otherwise pay a second (exit) probe for the few that hit a
/// device. An io_uring write or erasure is recorded as it is submitted (to
/// a registered file) or starts (to a plain fd). No data area.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawBlockWrite {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Byte offset on the device where the write starts.
    pub offset: u64,
    /// Bytes the call asks to write or erase (for vectored writes, the
    /// iovecs' sum).
    pub bytes: u64,
    /// The device, as the kernel encodes `dev_t` (`major << 20 | minor`).
    pub dev: u32,
    /// The file descriptor, or with `fd_registered` the index of an io_uring
    /// ring's registered file.
    pub fd: u32,
    /// A [`BlockWriteOp`] as an integer.
    pub op: u32,
    /// 1 when `fd` is a registered file's index (`IOSQE_FIXED_FILE`).
    pub fd_registered: u32,
}
assert_record_layout!(RawBlockWrite, 120);

/// Kernel `dev_t` → (major, minor).
pub const fn split_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xfffff)
}
