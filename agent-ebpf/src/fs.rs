//! Destroying files through the filesystem: `unlink`, `unlinkat`, `rmdir`,
//! `rename*`, `truncate` and `ftruncate` (and the records open files'
//! truncations share, see `open` and `io_uring`).
//!
//! Entry probes stop a marked session's processes (see
//! `guard::check_marked`); exits read the arguments from the entry
//! registers (see `syscall`) and report.

use agent_common::{
    fs::{DeleteOp, RawDeletion, RawRename, RawTruncate, RenameOp, TruncateOp, SIZE_UNKNOWN},
    guard::GuardHook,
    EventKind, KernelOffsets,
};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    files::{fd_file, Inode},
    guard,
    kernel::Btf,
    maps::offsets,
    path::AT_FDCWD,
    path_cache,
    record::{Name, Record},
    syscall::{arg, as_int, nr, numbers, remember, ret, take, EntryRegs},
};

/// `AT_REMOVEDIR` from `<fcntl.h>`.
pub const AT_REMOVEDIR: u64 = 0x200;

/// At the entry of every call here but `ftruncate`: a marked session's
/// process is killed (on FUSE and SMB mounts, before the call reaches the
/// server; see `guard::check_marked`).
#[tracepoint]
pub fn destructive_enter(_ctx: TracePointContext) -> u32 {
    guard::check_marked(GuardHook::DestructiveCall);
    0
}

/// At `sys_exit_unlink`, `sys_exit_unlinkat` and `sys_exit_rmdir`.
#[tracepoint]
pub fn deletion_exit(ctx: TracePointContext) -> u32 {
    let o = offsets();
    let regs = EntryRegs::current();
    let (nr, n) = (nr(&ctx), numbers());
    let (op, dfd, name) = if nr == n.unlinkat {
        let op = if regs.arg(2, o) & AT_REMOVEDIR != 0 { DeleteOp::UnlinkatDir } else { DeleteOp::Unlinkat };
        (op, as_int(regs.arg(0, o)), regs.arg(1, o))
    } else if nr == n.rmdir {
        (DeleteOp::Rmdir, AT_FDCWD, regs.arg(0, o))
    } else {
        (DeleteOp::Unlink, AT_FDCWD, regs.arg(0, o))
    };
    report_deletion(op, dfd, Name::user(name), ret(&ctx), o);
    0
}

/// Records the removal of `name` (relative to `dfd`) by `op`, which
/// returned `ret`, and counts it for the guard if it succeeded.
#[inline(always)]
pub fn report_deletion(op: DeleteOp, dfd: i64, name: Name, ret: i64, o: &KernelOffsets) {
    let Some(record) = Record::<RawDeletion>::start(EventKind::Deletion, o) else { return };
    let [op, dfd, at, ret, _] = record.args([op as u64, dfd as u64, name.at, ret as u64, 0]);
    let path = record.push_path(Name { at, ..name }, dfd as i64, o);
    let class = record.class();
    let fixed = record.fixed();
    fixed.ret = ret as i64;
    fixed.op = op as u32;
    fixed.class = class;
    fixed.path = path;
    let succeeded = fixed.ret == 0;
    let (subject, time) = (guard::Subject::of(&fixed.task), fixed.task.boot_ns);
    // Sent first: the guard's own records reuse the scratch buffer.
    record.submit();
    if succeeded {
        if [DeleteOp::Rmdir, DeleteOp::UnlinkatDir, DeleteOp::IoUringUnlinkatDir].map(|d| d as u64).contains(&op) {
            path_cache::directories_moved();
        }
        guard::count_deletion(&subject, class, time);
    }
}

/// At `sys_exit_rename`, `sys_exit_renameat` and `sys_exit_renameat2`.
#[tracepoint]
pub fn rename_exit(ctx: TracePointContext) -> u32 {
    let o = offsets();
    let regs = EntryRegs::current();
    let (nr, n) = (nr(&ctx), numbers());
    let (op, old_dfd, old, new_dfd, new, flags) = if nr == n.renameat || nr == n.renameat2 {
        let (op, flags) =
            if nr == n.renameat2 { (RenameOp::Renameat2, regs.arg(4, o) as u32) } else { (RenameOp::Renameat, 0) };
        (op, as_int(regs.arg(0, o)), regs.arg(1, o), as_int(regs.arg(2, o)), regs.arg(3, o), flags)
    } else {
        (RenameOp::Rename, AT_FDCWD, regs.arg(0, o), AT_FDCWD, regs.arg(1, o), 0)
    };
    report_rename(op, [(old_dfd, Name::user(old)), (new_dfd, Name::user(new))], flags, ret(&ctx), o);
    0
}

/// Records a rename by `op` of `from` to `to` (each a name and the `dfd` it
/// is relative to), which returned `ret`.
#[inline(always)]
pub fn report_rename(op: RenameOp, [from, to]: [(i64, Name); 2], flags: u32, ret: i64, o: &KernelOffsets) {
    let Some(record) = Record::<RawRename>::start(EventKind::Rename, o) else { return };
    let [old_dfd, old, new_dfd, new, flags] =
        record.args([from.0 as u64, from.1.at, to.0 as u64, to.1.at, flags as u64]);
    let from = record.push_path(Name { at: old, ..from.1 }, old_dfd as i64, o);
    let to = record.push_path(Name { at: new, ..to.1 }, new_dfd as i64, o);
    let fixed = record.fixed();
    fixed.ret = ret;
    fixed.flags = flags as u32;
    fixed.op = op as u32;
    fixed.from = from;
    fixed.to = to;
    record.submit();
    if ret == 0 {
        path_cache::directories_moved();
    }
}

/// Only shrinking calls are kept: databases extend files with `ftruncate`
/// all the time, and that destroys nothing. The size before is only known
/// here.
#[tracepoint]
pub fn ftruncate_enter(ctx: TracePointContext) -> u32 {
    let fd = arg(&ctx, 0) as u32 as i64;
    let length = arg(&ctx, 1) as i64;
    let o = offsets();
    let Some(inode) = Inode::of(fd_file(Btf::current_task(), fd, o), o) else { return 0 };
    let size = inode.size(o);
    if length < size {
        guard::check_marked(GuardHook::DestructiveCall);
        remember(EventKind::Truncate, [fd as u64, length as u64, size as u64]);
    }
    0
}

/// At `sys_exit_truncate` and `sys_exit_ftruncate`.
#[tracepoint]
pub fn truncate_exit(ctx: TracePointContext) -> u32 {
    let o = offsets();
    let ftruncate = nr(&ctx) == numbers().ftruncate;
    let (fd, length, size_before, name) = if ftruncate {
        let Some(call) = take(EventKind::Truncate) else { return 0 };
        (call.args[0] as i64, call.args[1] as i64, call.args[2] as i64, 0)
    } else {
        let regs = EntryRegs::current();
        (AT_FDCWD, regs.arg(1, o) as i64, SIZE_UNKNOWN, regs.arg(0, o))
    };
    let Some(record) = Record::<RawTruncate>::start(EventKind::Truncate, o) else { return 0 };
    let [fd, length, size_before, name, _] = record.args([fd as u64, length as u64, size_before as u64, name, 0]);
    let (fd, length, size_before) = (fd as i64, length as i64, size_before as i64);
    let (op, path) = if ftruncate {
        (TruncateOp::Ftruncate, record.push_file_path(fd_file(Btf::current_task(), fd, o), o))
    } else {
        (TruncateOp::Truncate, record.push_path(Name::user(name), fd, o))
    };
    let fixed = record.fixed();
    fixed.ret = ret(&ctx);
    fixed.op = op as u32;
    fixed.length = length;
    fixed.size_before = size_before;
    fixed.path = path;
    record.submit();
    0
}

/// Records, before it happens, a truncation by `op` of the file `name`
/// names (relative to `dfd`), whose size is not known.
#[inline(always)]
pub fn report_named_truncation(op: TruncateOp, dfd: i64, name: Name, o: &KernelOffsets) {
    let Some(record) = Record::<RawTruncate>::start(EventKind::Truncate, o) else { return };
    let path = record.push_path(name, dfd, o);
    let fixed = record.fixed();
    fixed.ret = 0;
    fixed.op = op as u32;
    fixed.length = 0;
    fixed.size_before = SIZE_UNKNOWN;
    fixed.path = path;
    record.submit();
}

/// Records a truncation of the open `file` (the path is the file's own).
#[inline(always)]
pub fn report_file_truncation(file: u64, op: TruncateOp, ret: i64, length: i64, size_before: i64, o: &KernelOffsets) {
    let Some(record) = Record::<RawTruncate>::start(EventKind::Truncate, o) else { return };
    let path = record.push_file_path(file, o);
    let fixed = record.fixed();
    fixed.ret = ret;
    fixed.op = op as u32;
    fixed.length = length;
    fixed.size_before = size_before;
    fixed.path = path;
    record.submit();
}
