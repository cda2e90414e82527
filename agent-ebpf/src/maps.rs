//! Maps and globals shared by every probe.

use agent_common::{Counter, KernelOffsets};
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};

/// Every record for the agent. The agent may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// What the probes could not deliver, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Set by the agent from BTF before load (`EbpfLoader::set_global`).
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets::UNRESOLVED;

/// The kernel struct offsets. A volatile read, or the compiler would fold the
/// all-zero initial value into the code.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&raw const OFFSETS) }
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer can race this increment.
        unsafe { *slot += 1 };
    }
}
