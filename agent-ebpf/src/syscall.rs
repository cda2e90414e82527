//! A syscall's arguments: from its entry record, from the registers it was
//! entered with (at exit), and, for what only entry can know, kept in a map
//! from entry to exit.
//!
//! Records are emitted at exit, when the result is known; paths are read then
//! too (the caller's memory and fds are still there). Block-device writes are
//! the exception, recorded at entry (see `block`).

use agent_common::{Counter, EventKind, KernelOffsets, SyscallNumbers};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::map, maps::HashMap, programs::TracePointContext, EbpfContext,
};

use crate::{
    kernel::Btf,
    maps::{count, fixed_at_load, SharedCount},
};

/// Syscall arguments in `sys_enter_*` records start at 16, 8 bytes each
/// (see `events/syscalls/<name>/format`).
#[inline(always)]
pub fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    field(ctx, 16 + 8 * n)
}

/// `ret` in `sys_exit_*` records.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    field(ctx, 16)
}

/// `__syscall_nr` in `sys_enter_*` and `sys_exit_*` records.
#[inline(always)]
pub fn nr(ctx: &TracePointContext) -> i32 {
    field(ctx, 8)
}

/// A field of the tracepoint's record, read in place: the verifier lets a
/// tracepoint program load its record directly (aligned, inside the
/// record), which is cheaper than `read_at`'s helper call.
#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, offset: usize) -> T {
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

/// An int argument widened to 8 bytes: sign-extend the low half.
#[inline(always)]
pub fn as_int(raw: u64) -> i64 {
    raw as u32 as i32 as i64
}

/// Set by the agent before load (`EbpfLoader::set_global`).
#[no_mangle]
static SYSCALLS: SyscallNumbers = SyscallNumbers::UNSET;

/// The numbers of the syscalls an exit probe tells apart.
#[inline(always)]
pub fn numbers() -> &'static SyscallNumbers {
    fixed_at_load(&SYSCALLS)
}

/// The registers the current task entered its syscall with. The kernel
/// saves them at entry and leaves the argument registers alone until the
/// task returns, so an exit probe finds the arguments there.
#[derive(Clone, Copy)]
pub struct EntryRegs(Btf);

impl EntryRegs {
    #[inline(always)]
    pub fn current() -> EntryRegs {
        EntryRegs(Btf::current_task().pt_regs())
    }

    /// Argument `n` (counting from 0).
    #[inline(always)]
    pub fn arg(self, n: usize, o: &KernelOffsets) -> u64 {
        self.0.u64(o.syscall_args[n])
    }
}

/// What an entry probe saw that its exit cannot: a shrinking `ftruncate`'s
/// size before, `openat2`'s flags. Rare calls only: a map insert and delete
/// per syscall would cost every process on the host.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// The record family this call will produce, an [`EventKind`].
    pub kind: u32,
    pub _pad: u32,
    pub args: [u64; 3],
}

#[map]
static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16 * 1024, 0);

/// `PENDING`'s entries (an overwrite counts twice): the exits that may take
/// one (every `ftruncate`, every `openat2`) skip the lookup while it is 0.
static PENDING_ENTRIES: SharedCount = SharedCount::new();

#[inline(always)]
pub fn remember(kind: EventKind, args: [u64; 3]) {
    let pending = Pending { kind: kind as u32, _pad: 0, args };
    if PENDING.insert(&bpf_get_current_pid_tgid(), &pending, 0).is_err() {
        count(Counter::PendingTableFull);
        return;
    }
    // After the insert: this thread's exit, which alone takes the entry,
    // comes after this probe, so it never finds the count short of it.
    PENDING_ENTRIES.up();
}

/// The arguments kept for this thread, if they belong to `kind`.
#[inline(always)]
pub fn take(kind: EventKind) -> Option<Pending> {
    if PENDING_ENTRIES.is_zero() {
        return None;
    }
    let key = bpf_get_current_pid_tgid();
    let pending = unsafe { PENDING.get(&key) }.copied()?;
    if PENDING.remove(&key).is_ok() {
        PENDING_ENTRIES.down();
    }
    (pending.kind == kind as u32).then_some(pending)
}
