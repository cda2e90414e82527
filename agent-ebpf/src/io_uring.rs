//! Destroying files and disks through io_uring. Its requests run in the
//! kernel (inline or in its io workers) and never pass the syscalls `fs` and
//! `block` hook, so unlinks, renames, shrinking `ftruncate`s, and writes to
//! (`write`, `splice`) and erasures of block devices (an erasing
//! `fallocate`, a discard command) are caught as they are submitted (one
//! on a plain fd as it runs, see below): recorded, counted or checked by
//! the guard and stopped there, from the kernel's copy of their arguments
//! (made before this probe runs, so the caller cannot change it under the
//! probe). A discard command's range is the exception: it stays in the
//! submission entry, in memory the caller shares.
//!
//! An open with `O_TRUNC` truncates a file that exists. Without `O_CREAT`
//! it opens only one that does, so it is recorded by name as it is
//! submitted. With `O_CREAT` only the open knows whether it made the file:
//! its io worker posts the completion as soon as the file is installed, and
//! there it is judged as `open`'s exit judges the syscall (see
//! `open::existing_inode`). It is taken by name at submission instead when
//! nothing would be posted on success (`IOSQE_CQE_SKIP_SUCCESS`), or when
//! the ring posts completions only once its owner asks for them
//! (`IORING_SETUP_DEFER_TASKRUN`, `IORING_SETUP_IOPOLL`): until then the
//! owner could close the fd, or put another file there. A file no longer
//! at its fd or slot at completion is recorded without a path. One whose
//! completion overflows a full completion ring posts it without the
//! tracepoint and is not seen.
//!
//! The file a device request or an `ftruncate` names by a plain fd is
//! looked up where the kernel looks it up, as the request runs
//! (`io_uring_file_get`). A registered file, and
//! the directory fd a deletion or rename is relative to, have no such
//! tracepoint: they are looked up here, at submission, and the kernel looks
//! again when the request runs. A request linked after one that fills that
//! slot or fd in the same batch is judged by what it held before: a write
//! to a device registered that way is not seen, and a deletion relative to
//! a directory opened that way has only its name.
//!
//! A submission is not yet the deed: the request runs later, and may fail.
//! The guard counts it all the same, as the last moment it has. Its kill
//! does not stop the rest of the batch the same `io_uring_enter` hands over:
//! the kernel takes that whatever the signal, and its workers run what it
//! took (see the README's *Stopping destruction*).

use agent_common::{
    block::{
        BlockWriteOp, BLOCK_URING_CMD_DISCARD, IORING_OP_FALLOCATE, IORING_OP_SPLICE, IORING_OP_URING_CMD,
        IORING_OP_WRITE, IORING_OP_WRITEV, IORING_OP_WRITEV_FIXED, IORING_OP_WRITE_FIXED,
    },
    fs::{
        DeleteOp, RenameOp, TruncateOp, IORING_OP_FTRUNCATE, IORING_OP_OPENAT, IORING_OP_OPENAT2, IORING_OP_RENAMEAT,
        IORING_OP_UNLINKAT,
    },
    guard::GuardHook,
    IoUringOffsets, KernelOffsets,
};
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{
    block::{position, record_if_block_device, Size, Write, FALLOC_ERASING},
    files::{fd_file, Inode, S_IFREG},
    fs::{report_deletion, report_file_truncation, report_named_truncation, report_rename, AT_REMOVEDIR},
    guard,
    kernel::{read_u32, read_u64, Btf},
    maps::offsets,
    open::{existing_inode, report_truncating_open, O_CREAT, O_EXCL, O_PATH, O_TMPFILE, O_TRUNC},
    record::Name,
    syscall::as_int,
};

/// `REQ_F_FIXED_FILE` from `io_uring_types.h`: `IOSQE_FIXED_FILE`, the
/// request names a registered file by its index.
const REQ_F_FIXED_FILE: u64 = 1;
/// `REQ_F_CQE_SKIP`: `IOSQE_CQE_SKIP_SUCCESS`, no completion is posted if
/// the request succeeds.
const REQ_F_CQE_SKIP: u64 = 1 << 6;
/// `IORING_SETUP_IOPOLL` and `IORING_SETUP_DEFER_TASKRUN` from
/// `<linux/io_uring.h>`: rings whose completions wait for their owner.
const IORING_SETUP_IOPOLL: u32 = 1;
const IORING_SETUP_DEFER_TASKRUN: u32 = 1 << 13;
/// `IORING_FILE_INDEX_ALLOC` from `<linux/io_uring.h>`: an open into
/// whichever registered slot is free, which its result names.
const IORING_FILE_INDEX_ALLOC: u32 = u32::MAX;
/// `FFS_MASK` from `io_uring/filetable.h`: a registered file's pointer
/// keeps two flags in its low bits.
const FFS_MASK: u64 = !0b11;
/// Where `struct io_uring_sqe` (`<linux/io_uring.h>`) keeps `addr` and
/// `addr3`: a block device's discard command's start and length.
const SQE_ADDR: u32 = 16;
const SQE_ADDR3: u32 = 48;

/// `io_uring_submit_req(req)` as a raw tracepoint: it passes the request
/// itself (`struct io_kiocb`) once its arguments are read and checked.
#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn io_uring_submit(ctx: RawTracePointContext) -> u32 {
    let req: u64 = ctx.arg(0);
    let o = offsets();
    let u = &o.io_uring;
    let opcode = opcode(req, u);
    match opcode {
        IORING_OP_UNLINKAT => {
            guard::check_marked(GuardHook::DestructiveCall);
            unlinkat(req, u, o);
        }
        IORING_OP_RENAMEAT => {
            guard::check_marked(GuardHook::DestructiveCall);
            renameat(req, u, o);
        }
        IORING_OP_OPENAT | IORING_OP_OPENAT2 => {
            if truncating_open(req, u) == Some(Judged::AtSubmission) {
                guard::check_marked(GuardHook::DestructiveCall);
                let dfd = as_int(read_u32(req, u.open_dfd) as u64);
                let name = path_name(read_u64(req, u.open_filename), u);
                report_named_truncation(TruncateOp::IoUringOpenTruncSubmitted, dfd, name, o);
            }
        }
        // A plain fd's request is checked where the kernel looks the fd up
        // (`io_uring_file_get`); a registered file's only here.
        IORING_OP_FTRUNCATE => {
            if let Some((_, file)) = registered(req, u) {
                ftruncate(req, file, o);
            }
        }
        _ => {
            let Some(request) = device_request(req, opcode, u) else { return 0 };
            if let Some((index, file)) = registered(req, u) {
                write(request, file, index, true, o);
            }
        }
    }
    0
}

/// `io_uring_file_get(req, fd)` as a raw tracepoint: the kernel looks up a
/// request's plain fd as the request runs, so this sees the file it will
/// write, even one a request linked before it opened.
#[raw_tracepoint(tracepoint = "io_uring_file_get")]
pub fn io_uring_file_get(ctx: RawTracePointContext) -> u32 {
    let req: u64 = ctx.arg(0);
    let fd: u64 = ctx.arg(1);
    let o = offsets();
    let u = &o.io_uring;
    let opcode = opcode(req, u);
    // Two calls, not one on an `Option` made before: the verifier refused
    // the spill of a `None`'s unset fields.
    if opcode == IORING_OP_FTRUNCATE {
        if own_plain_fd(req, fd, u) {
            ftruncate(req, fd_file(Btf::current_task(), as_int(fd), o), o);
        }
        return 0;
    }
    let Some(request) = device_request(req, opcode, u) else { return 0 };
    if own_plain_fd(req, fd, u) {
        write(request, fd_file(Btf::current_task(), as_int(fd), o), fd as u32, false, o);
    }
    0
}

/// `io_uring_complete(ctx, req, cqe)` as a raw tracepoint: an open with
/// `O_CREAT` and `O_TRUNC` has run, and its file is installed at the fd
/// or registered slot it returns (the completion is posted by the
/// submitter or one of its io workers, which share its fds). Every other
/// completion on the host costs a read of its opcode.
#[raw_tracepoint(tracepoint = "io_uring_complete")]
pub fn io_uring_complete(ctx: RawTracePointContext) -> u32 {
    let req: u64 = ctx.arg(1);
    let o = offsets();
    let u = &o.io_uring;
    let opcode = opcode(req, u);
    if opcode != IORING_OP_OPENAT && opcode != IORING_OP_OPENAT2 {
        return 0;
    }
    let res = read_u32(req, u.res) as i32 as i64;
    if truncating_open(req, u) != Some(Judged::AtCompletion) || res < 0 {
        return 0;
    }
    let file = match read_u32(req, u.open_file_slot) {
        0 => fd_file(Btf::current_task(), res, o),
        IORING_FILE_INDEX_ALLOC => registered_file(req, res as u32, u),
        slot => registered_file(req, slot - 1, u),
    };
    // A file gone from its fd or slot is still recorded, without a path.
    if file == 0 || existing_inode(file, o).is_some_and(|inode| inode.file_type(o) == S_IFREG) {
        report_truncating_open(file, TruncateOp::IoUringOpenTrunc, res, o);
    }
    0
}

/// When an io_uring open that may truncate is judged (see the module's
/// documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Judged {
    AtSubmission,
    AtCompletion,
}

/// When the open `req` is judged, if it may truncate: not if it has no
/// `O_TRUNC`, or flags with which nothing is truncated (an exclusive
/// create, `O_PATH`, `O_TMPFILE`).
#[inline(always)]
fn truncating_open(req: u64, u: &IoUringOffsets) -> Option<Judged> {
    let flags = read_u64(req, u.open_flags);
    let exclusive = flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL;
    if flags & O_TRUNC == 0 || flags & (O_PATH | O_TMPFILE) != 0 || exclusive {
        return None;
    }
    let posts_at_once = read_u64(req, u.flags) & REQ_F_CQE_SKIP == 0
        && read_u32(read_u64(req, u.ctx), u.ctx_flags) & (IORING_SETUP_IOPOLL | IORING_SETUP_DEFER_TASKRUN) == 0;
    Some(if flags & O_CREAT != 0 && posts_at_once { Judged::AtCompletion } else { Judged::AtSubmission })
}

/// Whether `fd` is the request's own file, named by a plain fd: a splice
/// looks its input up here too, and a request on a registered file
/// (checked at submission) looks up only that.
#[inline(always)]
fn own_plain_fd(req: u64, fd: u64, u: &IoUringOffsets) -> bool {
    read_u64(req, u.flags) & REQ_F_FIXED_FILE == 0 && fd as u32 == read_u32(req, u.fd)
}

#[inline(always)]
fn opcode(req: u64, u: &IoUringOffsets) -> u8 {
    // A u8: the three bytes above it belong to the next fields.
    (read_u32(req, u.opcode) & 0xff) as u8
}

/// A request that writes to or erases what it names, if that is a block
/// device.
#[derive(Clone, Copy)]
struct DeviceRequest {
    op: BlockWriteOp,
    size: Size,
    pos: Option<u64>,
}

/// What `req` asks of a device; `None` for requests that neither write
/// nor erase.
#[inline(always)]
fn device_request(req: u64, opcode: u8, u: &IoUringOffsets) -> Option<DeviceRequest> {
    let (op, size, pos) = match opcode {
        IORING_OP_WRITE | IORING_OP_WRITE_FIXED | IORING_OP_WRITEV | IORING_OP_WRITEV_FIXED => {
            let (at, len) = (read_u64(req, u.rw_addr), read_u32(req, u.rw_len) as u64);
            let pos = position(read_u64(req, u.rw_pos));
            match opcode {
                IORING_OP_WRITEV | IORING_OP_WRITEV_FIXED => {
                    (BlockWriteOp::IoUringWritev, Size::Iovecs { at, count: len }, pos)
                }
                _ => (BlockWriteOp::IoUringWrite, Size::Count(len), pos),
            }
        }
        IORING_OP_SPLICE => {
            let size = Size::Count(read_u64(req, u.splice_len));
            (BlockWriteOp::IoUringSplice, size, position(read_u64(req, u.splice_off_out)))
        }
        IORING_OP_FALLOCATE if read_u32(req, u.sync_mode) as u64 & FALLOC_ERASING != 0 => {
            let size = Size::Count(read_u64(req, u.sync_len));
            (BlockWriteOp::IoUringFallocate, size, Some(read_u64(req, u.sync_off)))
        }
        // Other files' commands (sockets, NVMe's character devices) may use
        // the same number: only a block device's is recorded.
        IORING_OP_URING_CMD if read_u32(req, u.cmd_op) == BLOCK_URING_CMD_DISCARD => {
            let sqe = read_u64(req, u.cmd_sqe);
            let size = Size::Count(read_u64(sqe, SQE_ADDR3));
            (BlockWriteOp::IoUringDiscard, size, Some(read_u64(sqe, SQE_ADDR)))
        }
        _ => return None,
    };
    Some(DeviceRequest { op, size, pos })
}

/// `request` to `file`, named `fd` (a registered file's index if
/// `fd_registered`): recorded and checked if it is a block device.
#[inline(always)]
fn write(request: DeviceRequest, file: u64, fd: u32, fd_registered: bool, o: &KernelOffsets) {
    let DeviceRequest { op, size, pos } = request;
    record_if_block_device(Write { op, file, fd, fd_registered, size, pos }, o);
}

/// An `ftruncate` request to `file`: as the syscall's, recorded and
/// checked by the guard when it shrinks the file.
#[inline(always)]
fn ftruncate(req: u64, file: u64, o: &KernelOffsets) {
    let length = read_u64(req, o.io_uring.ftrunc_len) as i64;
    let Some(inode) = Inode::of(file, o) else { return };
    let size = inode.size(o);
    if length < size {
        guard::check_marked(GuardHook::DestructiveCall);
        report_file_truncation(file, TruncateOp::IoUringFtruncate, 0, length, size, o);
    }
}

/// The registered file a request names (`IOSQE_FIXED_FILE`), with its
/// index; `None` for a plain fd.
#[inline(always)]
fn registered(req: u64, u: &IoUringOffsets) -> Option<(u32, u64)> {
    if read_u64(req, u.flags) & REQ_F_FIXED_FILE == 0 {
        return None;
    }
    let index = read_u32(req, u.fd);
    Some((index, registered_file(req, index, u)))
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
