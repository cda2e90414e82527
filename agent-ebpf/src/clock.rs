//! When a record was made: the boot clock (`CLOCK_BOOTTIME`, which the agent
//! turns into wall time).
//!
//! Reading the clock is an ordered TSC read, slow in a virtual machine: it
//! took an eighth of a deletion's probe here. Routine records therefore read
//! it once per tick per CPU and reuse that value for the rest of the tick
//! (`jiffies`, which the verifier inlines into a load): their time is at
//! most a tick early (4 ms at HZ=250) and never later than the event, finer
//! than anything scores or reports need. What is timed to the moment (the guard acting,
//! which the SOC and the latency benchmark measure from) reads it exactly.

use aya_ebpf::{
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_boot_ns},
    macros::map,
    maps::PerCpuArray,
};

/// The clock as last read on a CPU, and the tick it was read in.
#[repr(C)]
pub struct Reading {
    jiffies: u64,
    boot_ns: u64,
}

#[map]
static LAST_READING: PerCpuArray<Reading> = PerCpuArray::with_max_entries(1, 0);

/// The clock, exactly.
#[inline(always)]
pub fn exact() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The clock to within a tick (see the module's documentation).
#[inline(always)]
pub fn this_tick() -> u64 {
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(last) = LAST_READING.get_ptr_mut(0) else { return exact() };
    // A program preempted on this CPU may run another in between: the
    // reading is stored time first, tick second, and loaded in the other
    // order, so a tick that matches never comes with an older tick's time.
    unsafe {
        if (&raw const (*last).jiffies).read_volatile() == jiffies {
            return (&raw const (*last).boot_ns).read_volatile();
        }
        let now = exact();
        (&raw mut (*last).boot_ns).write_volatile(now);
        (&raw mut (*last).jiffies).write_volatile(jiffies);
        now
    }
}
