//! `unlink`, `unlinkat` and `rmdir`: one record per call, at syscall exit.
//!
//! Entry keeps the arguments by thread; exit reads the name, resolves the
//! directory it was relative to and emits a [`RawDeletion`] with the result.

use agent_common::{
    deletion::{
        COMPONENT_CAP, NAME_CAP, PATH_FLAG_DIR_RESOLVED, PATH_FLAG_DIR_TRUNCATED, PATH_FLAG_NAME_TRUNCATED,
        PATH_FLAG_NAME_UNREADABLE,
    },
    Counter, DeleteOp, EventKind, RawDeletion, PATH_DATA_CAP,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user_str},
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};

use crate::{
    maps::{count, offsets, EVENTS},
    path::{self, AT_FDCWD},
    task,
};

/// `AT_REMOVEDIR` from `<fcntl.h>`.
const AT_REMOVEDIR: u64 = 0x200;

/// Offsets of the syscall arguments in `sys_enter_*` records (see
/// `events/syscalls/<name>/format`): each argument takes 8 bytes from 16.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
/// `ret` in `sys_exit_*` records.
const RET: usize = 16;

/// A deletion between syscall entry and exit.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    pathname: u64,
    dfd: i64,
    op: u32,
    _pad: u32,
}

/// A record being built: too large for the 512-byte BPF stack.
#[repr(C)]
struct Scratch {
    raw: RawDeletion,
    /// One component of slack so a component starting anywhere before
    /// `PATH_DATA_CAP` fits.
    data: [u8; PATH_DATA_CAP + COMPONENT_CAP],
    /// End of the path data written so far; in map memory on purpose (see
    /// `path::write_components`). Not sent: it sits after `data`.
    dir_end: u32,
}

/// Calls in flight, by thread.
#[map]
static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16 * 1024, 0);

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn unlink_enter(ctx: TracePointContext) -> u32 {
    remember(AT_FDCWD, arg(&ctx, ARG0), DeleteOp::Unlink)
}

#[tracepoint]
pub fn rmdir_enter(ctx: TracePointContext) -> u32 {
    remember(AT_FDCWD, arg(&ctx, ARG0), DeleteOp::Rmdir)
}

#[tracepoint]
pub fn unlinkat_enter(ctx: TracePointContext) -> u32 {
    // `dfd` is an int widened to 8 bytes: sign-extend the low half.
    let dfd = arg(&ctx, ARG0) as u32 as i32 as i64;
    let op = if arg(&ctx, ARG2) & AT_REMOVEDIR != 0 {
        DeleteOp::UnlinkatDir
    } else {
        DeleteOp::Unlinkat
    };
    remember(dfd, arg(&ctx, ARG1), op)
}

/// Attached to `sys_exit_unlink`, `sys_exit_unlinkat` and `sys_exit_rmdir`.
#[tracepoint]
pub fn deletion_exit(ctx: TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    let Some(pending) = (unsafe { PENDING.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING.remove(&key);
    let ret = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(0);
    emit(pending, ret);
    0
}

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(offset) }.unwrap_or(0)
}

#[inline(always)]
fn remember(dfd: i64, pathname: u64, op: DeleteOp) -> u32 {
    let pending = Pending {
        pathname,
        dfd,
        op: op as u32,
        _pad: 0,
    };
    if PENDING.insert(&bpf_get_current_pid_tgid(), &pending, 0).is_err() {
        count(Counter::PendingTableFull);
    }
    0
}

#[inline(always)]
fn emit(pending: Pending, ret: i64) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    let o = offsets();
    let raw = &mut scratch.raw;
    task::fill(&mut raw.task, &o);
    raw.header.kind = EventKind::Deletion as u32;
    raw.ret = ret;
    raw.op = pending.op;
    raw.path_flags = 0;
    raw.dir_len = 0;

    let data = scratch.data.as_mut_ptr();
    let read = unsafe { bpf_probe_read_user_str(data.cast(), NAME_CAP as u32, pending.pathname as *const _) };
    let name_len = if read > 0 { read as usize - 1 } else { 0 };
    if read <= 0 {
        raw.path_flags |= PATH_FLAG_NAME_UNREADABLE;
    } else if read as usize == NAME_CAP {
        raw.path_flags |= PATH_FLAG_NAME_TRUNCATED;
    }
    raw.name_len = name_len as u32;

    if name_len > 0 && scratch.data[0] != b'/' {
        let current = task::current();
        if let Some(dir) = path::dirfd_path(current, pending.dfd, &o) {
            let root = path::task_root(current, &o);
            // The walk advances `dir_end` in place; see `write_components`.
            scratch.dir_end = name_len as u32;
            let truncated = path::write_components(dir, root, data, &raw mut scratch.dir_end, &o);
            let end = unsafe { (&raw const scratch.dir_end).read_volatile() } as usize;
            let raw = &mut scratch.raw;
            raw.dir_len = end.saturating_sub(name_len) as u32;
            raw.path_flags |= PATH_FLAG_DIR_RESOLVED;
            if truncated {
                raw.path_flags |= PATH_FLAG_DIR_TRUNCATED;
            }
        }
    }

    let raw = &mut scratch.raw;
    let mut len = core::mem::size_of::<RawDeletion>() + name_len + raw.dir_len as usize;
    // Never true; it bounds `len` for the verifier.
    if len > core::mem::size_of::<Scratch>() {
        len = core::mem::size_of::<Scratch>();
    }
    raw.header.len = len as u32;
    let record = unsafe { core::slice::from_raw_parts((scratch as *const Scratch).cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(record, 0).is_err() {
        count(Counter::RingBufferFull);
    }
}
