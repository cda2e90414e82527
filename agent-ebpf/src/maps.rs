//! Maps and globals shared by every probe.

use core::cell::UnsafeCell;

use agent_common::{event::RECORD_MAX, Counter, KernelOffsets};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};

/// Every record for the agent. The agent may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// What the probes could not deliver, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Unread bytes in [`EVENTS`] at which a routine record wakes the agent, at
/// least `RECORD_MAX`; at `RECORD_MAX` a record wakes it whenever it has
/// (nearly) caught up, as the kernel's default does. Set by the agent before load.
#[no_mangle]
static WAKE_BYTES: u64 = RECORD_MAX as u64;

/// Set by the agent from BTF before load (`EbpfLoader::set_global`).
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets::UNRESOLVED;

/// The kernel struct offsets (see [`fixed_at_load`]).
#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    fixed_at_load(&OFFSETS)
}

/// A global the agent sets before load, as the compiler must read it: its
/// initial value would otherwise be folded into the code. An empty `asm`
/// hides where the reference points, so only the fields a probe uses are
/// loaded; a volatile copy of the whole struct loaded all of them (about
/// 90 instructions at the start of every probe and path step).
#[inline(always)]
pub fn fixed_at_load<T>(global: &'static T) -> &'static T {
    let mut at: *const T = global;
    // SAFETY: the asm is empty, so `at` comes out as `global` went in.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) at, options(pure, nomem, nostack, preserves_flags));
        &*at
    }
}

/// How a record is delivered to the agent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The agent reads it in its next batch: a wake-up per record would cost
    /// the traced process an interrupt and the agent a context switch.
    Batched,
    /// The agent must act on it now: wake it.
    Now,
}

/// `bpf_ringbuf_output` flags for a record delivered as `delivery`.
#[inline(always)]
pub fn wakeup_flags(delivery: Delivery) -> u64 {
    // Set at load: the verifier sees it as a constant.
    let threshold = *fixed_at_load(&WAKE_BYTES);
    if delivery == Delivery::Now {
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    // Only records sent while the unread bytes are within one record of the
    // threshold wake the agent: a wake-up is an interrupt on the producing
    // CPU (a VM exit on a virtual machine). No record is longer than the
    // window, so at least one lands in it on the way past the threshold;
    // past it the agent is awake and reading, and what a race leaves unread
    // its poll finds. One unsigned comparison: threshold - RECORD_MAX <=
    // unread < threshold.
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if unread.wrapping_sub(threshold - RECORD_MAX as u64) < RECORD_MAX as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer can race this increment.
        unsafe { *slot += 1 };
    }
}

/// Adds `delta` to `*target` in one atomic instruction: Rust offers no
/// atomic add on this target (it lacks compare-and-swap), BPF does.
///
/// # Safety
///
/// `target` must point to an 8-aligned `u64` in map or global memory this
/// program may write.
#[inline(always)]
pub unsafe fn atomic_add(target: *mut u64, delta: u64) {
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {d}", p = in(reg) target, d = in(reg) delta) };
}

/// A `u64` global of the program that probes on several CPUs change at once,
/// by atomic adds, and read by volatile loads: a count of a map's entries
/// that lets probes skip the lookup while it is 0, or an epoch.
pub struct SharedCount(UnsafeCell<u64>);

// SAFETY: only changed by atomic adds and read by volatile loads.
unsafe impl Sync for SharedCount {}

impl SharedCount {
    pub const fn new() -> SharedCount {
        SharedCount(UnsafeCell::new(0))
    }

    #[inline(always)]
    pub fn up(&self) {
        // SAFETY: an 8-aligned u64 global of this program.
        unsafe { atomic_add(self.0.get(), 1) }
    }

    /// Wrapping: -1.
    #[inline(always)]
    pub fn down(&self) {
        // SAFETY: as for `up`.
        unsafe { atomic_add(self.0.get(), u64::MAX) }
    }

    /// A volatile read: set at run time, never the constant initial value.
    #[inline(always)]
    pub fn get(&self) -> u64 {
        unsafe { self.0.get().read_volatile() }
    }

    #[inline(always)]
    pub fn is_zero(&self) -> bool {
        self.get() == 0
    }
}
