//! Raw access to block devices: opening one for writing, and writing to it.

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

/// A `write`, `pwrite64`, `writev`, `pwritev` or `pwritev2` on a block device,
/// recorded at syscall entry, before the write runs: every write on the host
/// would otherwise pay a second (exit) probe for the few that hit a device.
/// No data area.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawBlockWrite {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Byte offset on the device where the write starts.
    pub offset: u64,
    /// Bytes the call asks to write (for vectored writes, the iovecs' sum).
    pub bytes: u64,
    /// The device, as the kernel encodes `dev_t` (`major << 20 | minor`).
    pub dev: u32,
    pub fd: u32,
}
assert_record_layout!(RawBlockWrite, 112);

/// Kernel `dev_t` → (major, minor).
pub const fn split_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xfffff)
}
