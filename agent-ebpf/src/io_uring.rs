//! Destroying files and disks through io_uring. Its requests run in the
//! kernel (inline or in its io workers) and never pass the syscalls `fs` and
//! `block` hook, so unlinks, renames and writes to block devices are caught
//! as they are submitted: recorded, counted or checked by the guard and
//! stopped there, from the kernel's copy of their arguments (made before
//! this probe runs, so the caller cannot change it under the probe).
//!
//! The file a request names (its fd, registered file or directory fd) is
//! looked up here, at submission; the kernel looks it up again when the
//! request runs. A request linked after one that opens or replaces that
//! file in the same batch is therefore judged by what the fd or slot held
//! before: a write to a device opened that way is not seen, and a deletion
//! relative to a directory opened that way has only its name.
//!
//! A submission is not yet the deed: the request runs later, and may fail.
//! The guard counts it all the same, as the last moment it has. Its kill
//! does not stop the rest of the batch the same `io_uring_enter` hands over:
//! the kernel takes that whatever the signal, and its workers run what it
//! took (see the README's *Stopping destruction*).

use agent_common::{
    block::{BlockWriteOp, IORING_OP_WRITE, IORING_OP_WRITEV, IORING_OP_WRITEV_FIXED, IORING_OP_WRITE_FIXED},
    fs::{DeleteOp, RenameOp, IORING_OP_RENAMEAT, IORING_OP_UNLINKAT},
    guard::GuardHook,
    IoUringOffsets, KernelOffsets,
};
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{
    block::{position, record_if_block_device, Size, Write},
    files::fd_file,
    fs::{report_deletion, report_rename, AT_REMOVEDIR},
    guard,
    kernel::{read_u32, read_u64, Btf},
    maps::offsets,
    record::Name,
    syscall::as_int,
};

/// `REQ_F_FIXED_FILE` from `io_uring_types.h`: `IOSQE_FIXED_FILE`, the
/// request names a registered file by its index.
const REQ_F_FIXED_FILE: u64 = 1;
/// `FFS_MASK` from `io_uring/filetable.h`: a registered file's pointer
/// keeps two flags in its low bits.
const FFS_MASK: u64 = !0b11;

/// `io_uring_submit_req(req)` as a raw tracepoint: it passes the request
/// itself (`struct io_kiocb`) once its arguments are read and checked.
#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn io_uring_submit(ctx: RawTracePointContext) -> u32 {
    let req: u64 = ctx.arg(0);
    let o = offsets();
    let u = &o.io_uring;
    // `opcode` is a u8: the three bytes above it belong to the next fields.
    let opcode = (read_u32(req, u.opcode) & 0xff) as u8;
    match opcode {
        IORING_OP_UNLINKAT => {
            guard::check_marked(GuardHook::DestructiveCall);
            unlinkat(req, u, o);
        }
        IORING_OP_RENAMEAT => {
            guard::check_marked(GuardHook::DestructiveCall);
            renameat(req, u, o);
        }
        IORING_OP_WRITE | IORING_OP_WRITE_FIXED => write(req, BlockWriteOp::IoUringWrite, u, o),
        IORING_OP_WRITEV | IORING_OP_WRITEV_FIXED => write(req, BlockWriteOp::IoUringWritev, u, o),
        _ => {}
    }
    0
}

/// A write request: recorded and checked if its file is a block device.
#[inline(always)]
fn write(req: u64, op: BlockWriteOp, u: &IoUringOffsets, o: &KernelOffsets) {
    let fd = read_u32(req, u.fd);
    let fd_registered = read_u64(req, u.flags) & REQ_F_FIXED_FILE != 0;
    let file =
        if fd_registered { registered_file(req, fd, u) } else { fd_file(Btf::current_task(), as_int(fd as u64), o) };
    let (at, len) = (read_u64(req, u.rw_addr), read_u32(req, u.rw_len) as u64);
    let size = if op == BlockWriteOp::IoUringWritev { Size::Iovecs { at, count: len } } else { Size::Count(len) };
    let pos = position(read_u64(req, u.rw_pos));
    record_if_block_device(Write { op, file, fd, fd_registered, size, pos }, o);
}

/// The file registered at `index` in the request's ring (`io_slot_file`),
/// or 0.
#[inline(always)]
fn registered_file(req: u64, index: u32, u: &IoUringOffsets) -> u64 {
    let ctx = read_u64(req, u.ctx);
    if index >= read_u32(ctx, u.ctx_files_nr) {
        return 0;
    }
    let node = read_u64(read_u64(ctx, u.ctx_files) + index as u64 * 8, 0);
    read_u64(node, u.rsrc_node_file) & FFS_MASK
}

#[inline(always)]
fn unlinkat(req: u64, u: &IoUringOffsets, o: &KernelOffsets) {
    let dir = read_u32(req, u.unlink_flags) as u64 & AT_REMOVEDIR != 0;
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
