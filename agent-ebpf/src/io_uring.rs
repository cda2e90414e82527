//! Destroying files through io_uring. `IORING_OP_UNLINKAT` and
//! `IORING_OP_RENAMEAT` requests run in the kernel's io workers and never
//! pass the syscalls `fs` hooks, so they are caught as they are submitted:
//! recorded, counted by the guard and stopped there, from the kernel's copy
//! of their arguments (made before this probe runs, so the caller cannot
//! change it under the probe).
//!
//! A submission is not yet the deed: the request runs later, and may fail.
//! The guard counts it all the same, because one `io_uring_enter` can queue
//! thousands of deletions: a process killed at a submission exits with its
//! queued requests cancelled, and only those already running in a worker
//! finish.

use agent_common::{
    fs::{DeleteOp, RenameOp, IORING_OP_RENAMEAT, IORING_OP_UNLINKAT},
    guard::GuardHook,
    IoUringOffsets, KernelOffsets,
};
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{
    fs::{report_deletion, report_rename},
    guard,
    kernel::{read_u32, read_u64},
    maps::offsets,
    record::Name,
    syscall::as_int,
};

/// `AT_REMOVEDIR` from `<fcntl.h>`.
const AT_REMOVEDIR: u32 = 0x200;

/// `io_uring_submit_req(req)` as a raw tracepoint: it passes the request
/// itself (`struct io_kiocb`) once its arguments are read and checked.
#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn io_uring_submit(ctx: RawTracePointContext) -> u32 {
    let req: u64 = ctx.arg(0);
    let o = offsets();
    let u = &o.io_uring;
    // `opcode` is a u8: the three bytes above it belong to the next fields.
    let opcode = (read_u32(req, u.opcode) & 0xff) as u8;
    if opcode != IORING_OP_UNLINKAT && opcode != IORING_OP_RENAMEAT {
        return 0;
    }
    guard::check_marked(GuardHook::DestructiveCall);
    if opcode == IORING_OP_UNLINKAT {
        unlinkat(req, u, o);
    } else {
        renameat(req, u, o);
    }
    0
}

#[inline(always)]
fn unlinkat(req: u64, u: &IoUringOffsets, o: &KernelOffsets) {
    let dir = read_u32(req, u.unlink_flags) & AT_REMOVEDIR != 0;
    let op = if dir { DeleteOp::IoUringUnlinkatDir } else { DeleteOp::IoUringUnlinkat };
    let dfd = as_int(read_u32(req, u.unlink_dfd) as u64);
    report_deletion(op, dfd, path_name(read_u64(req, u.unlink_filename), u), 0, o);
}

#[inline(always)]
fn renameat(req: u64, u: &IoUringOffsets, o: &KernelOffsets) {
    let from = (as_int(read_u32(req, u.rename_old_dfd) as u64), path_name(read_u64(req, u.rename_old), u));
    let to = (as_int(read_u32(req, u.rename_new_dfd) as u64), path_name(read_u64(req, u.rename_new), u));
    report_rename(RenameOp::IoUringRenameat, [from, to], read_u32(req, u.rename_flags), 0, o);
}

/// The name a `struct filename` holds.
#[inline(always)]
fn path_name(filename: u64, u: &IoUringOffsets) -> Name {
    Name::kernel(read_u64(filename, u.filename_name))
}
