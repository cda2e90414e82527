//! Arguments kept from a syscall's entry to its exit, by thread.
//!
//! Records are emitted at exit, when the result is known; paths are read then
//! too (the caller's memory and fds are still there). One table serves every
//! family: a thread is in one syscall at a time.

use agent_common::{Counter, EventKind};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::map, maps::HashMap, programs::TracePointContext};

use crate::maps::count;

/// Syscall arguments in `sys_enter_*` records start at 16, 8 bytes each
/// (see `events/syscalls/<name>/format`).
#[inline(always)]
pub fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
}

/// `ret` in `sys_exit_*` records.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0)
}

/// An int argument widened to 8 bytes: sign-extend the low half.
#[inline(always)]
pub fn int_arg(ctx: &TracePointContext, n: usize) -> i64 {
    arg(ctx, n) as u32 as i32 as i64
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// The record family this call will produce, an [`EventKind`].
    pub kind: u32,
    /// Family-specific operation (e.g. a `DeleteOp`).
    pub op: u32,
    pub args: [u64; 5],
}

#[map]
static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16 * 1024, 0);

#[inline(always)]
pub fn remember(kind: EventKind, op: u32, args: [u64; 5]) {
    let pending = Pending { kind: kind as u32, op, args };
    if PENDING.insert(&bpf_get_current_pid_tgid(), &pending, 0).is_err() {
        count(Counter::PendingTableFull);
    }
}

/// The arguments kept for this thread, if they belong to `kind`.
#[inline(always)]
pub fn take(kind: EventKind) -> Option<Pending> {
    let key = bpf_get_current_pid_tgid();
    let pending = unsafe { PENDING.get(&key) }.copied()?;
    let _ = PENDING.remove(&key);
    (pending.kind == kind as u32).then_some(pending)
}
