//! Destroying files through the filesystem: `unlink`, `unlinkat`, `rmdir`,
//! `rename*`, `truncate` and `ftruncate`.

use agent_common::{
    fs::{DeleteOp, RawDeletion, RawRename, RawTruncate, TruncateOp, SIZE_UNKNOWN},
    guard::GuardHook,
    EventKind,
};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    files::{fd_file, Inode},
    guard,
    maps::offsets,
    path::AT_FDCWD,
    record::Record,
    syscall::{arg, int_arg, remember, ret, take},
    task,
};

/// `AT_REMOVEDIR` from `<fcntl.h>`.
const AT_REMOVEDIR: u64 = 0x200;
const CWD: u64 = AT_FDCWD as u64;

#[tracepoint]
pub fn unlink_enter(ctx: TracePointContext) -> u32 {
    guard::check_marked(GuardHook::DestructiveCall);
    remember(EventKind::Deletion, DeleteOp::Unlink as u32, [CWD, arg(&ctx, 0), 0, 0, 0]);
    0
}

#[tracepoint]
pub fn rmdir_enter(ctx: TracePointContext) -> u32 {
    guard::check_marked(GuardHook::DestructiveCall);
    remember(EventKind::Deletion, DeleteOp::Rmdir as u32, [CWD, arg(&ctx, 0), 0, 0, 0]);
    0
}

#[tracepoint]
pub fn unlinkat_enter(ctx: TracePointContext) -> u32 {
    guard::check_marked(GuardHook::DestructiveCall);
    let op = if arg(&ctx, 2) & AT_REMOVEDIR != 0 { DeleteOp::UnlinkatDir } else { DeleteOp::Unlinkat };
    remember(EventKind::Deletion, op as u32, [int_arg(&ctx, 0) as u64, arg(&ctx, 1), 0, 0, 0]);
    0
}

/// At `sys_exit_unlink`, `sys_exit_unlinkat` and `sys_exit_rmdir`.
#[tracepoint]
pub fn deletion_exit(ctx: TracePointContext) -> u32 {
    let Some(call) = take(EventKind::Deletion) else { return 0 };
    let o = offsets();
    let Some(record) = Record::<RawDeletion>::start(EventKind::Deletion, &o) else { return 0 };
    let path = record.push_user_path(call.args[1], call.args[0] as i64, &o);
    let class = record.class();
    let fixed = record.fixed();
    fixed.ret = ret(&ctx);
    fixed.op = call.op;
    fixed.class = class;
    fixed.path = path;
    let succeeded = fixed.ret == 0;
    let subject = guard::Subject::of(&fixed.task);
    // Sent first: the guard's own record reuses the scratch buffer.
    record.submit();
    if succeeded {
        guard::count_deletion(&subject, class);
    }
    0
}

#[tracepoint]
pub fn rename_enter(ctx: TracePointContext) -> u32 {
    guard::check_marked(GuardHook::DestructiveCall);
    remember(EventKind::Rename, 0, [CWD, arg(&ctx, 0), CWD, arg(&ctx, 1), 0]);
    0
}

#[tracepoint]
pub fn renameat_enter(ctx: TracePointContext) -> u32 {
    guard::check_marked(GuardHook::DestructiveCall);
    let (old_dfd, new_dfd) = (int_arg(&ctx, 0) as u64, int_arg(&ctx, 2) as u64);
    remember(EventKind::Rename, 0, [old_dfd, arg(&ctx, 1), new_dfd, arg(&ctx, 3), 0]);
    0
}

#[tracepoint]
pub fn renameat2_enter(ctx: TracePointContext) -> u32 {
    guard::check_marked(GuardHook::DestructiveCall);
    let (old_dfd, new_dfd) = (int_arg(&ctx, 0) as u64, int_arg(&ctx, 2) as u64);
    remember(EventKind::Rename, 0, [old_dfd, arg(&ctx, 1), new_dfd, arg(&ctx, 3), arg(&ctx, 4)]);
    0
}

/// At `sys_exit_rename`, `sys_exit_renameat` and `sys_exit_renameat2`.
#[tracepoint]
pub fn rename_exit(ctx: TracePointContext) -> u32 {
    let Some(call) = take(EventKind::Rename) else { return 0 };
    let o = offsets();
    let Some(record) = Record::<RawRename>::start(EventKind::Rename, &o) else { return 0 };
    let from = record.push_user_path(call.args[1], call.args[0] as i64, &o);
    let to = record.push_user_path(call.args[3], call.args[2] as i64, &o);
    let fixed = record.fixed();
    fixed.ret = ret(&ctx);
    fixed.flags = call.args[4] as u32;
    fixed.from = from;
    fixed.to = to;
    record.submit();
    0
}

#[tracepoint]
pub fn truncate_enter(ctx: TracePointContext) -> u32 {
    guard::check_marked(GuardHook::DestructiveCall);
    let length = arg(&ctx, 1);
    remember(EventKind::Truncate, TruncateOp::Truncate as u32, [CWD, arg(&ctx, 0), length, SIZE_UNKNOWN as u64, 0]);
    0
}

/// Only shrinking calls are kept: databases extend files with `ftruncate`
/// all the time, and that destroys nothing.
#[tracepoint]
pub fn ftruncate_enter(ctx: TracePointContext) -> u32 {
    let fd = arg(&ctx, 0) as u32 as i64;
    let length = arg(&ctx, 1) as i64;
    let o = offsets();
    let Some(inode) = Inode::of(fd_file(task::current(), fd, &o), &o) else { return 0 };
    let size = inode.size(&o);
    if length < size {
        guard::check_marked(GuardHook::DestructiveCall);
        remember(EventKind::Truncate, TruncateOp::Ftruncate as u32, [fd as u64, 0, length as u64, size as u64, 0]);
    }
    0
}

/// At `sys_exit_truncate` and `sys_exit_ftruncate`.
#[tracepoint]
pub fn truncate_exit(ctx: TracePointContext) -> u32 {
    let Some(call) = take(EventKind::Truncate) else { return 0 };
    let o = offsets();
    let Some(record) = Record::<RawTruncate>::start(EventKind::Truncate, &o) else { return 0 };
    let path = if call.op == TruncateOp::Ftruncate as u32 {
        record.push_file_path(fd_file(task::current(), call.args[0] as i64, &o), &o)
    } else {
        record.push_user_path(call.args[1], call.args[0] as i64, &o)
    };
    let fixed = record.fixed();
    fixed.ret = ret(&ctx);
    fixed.op = call.op;
    fixed.length = call.args[2] as i64;
    fixed.size_before = call.args[3] as i64;
    fixed.path = path;
    record.submit();
    0
}
