//! When a record was made: the boot clock (`CLOCK_BOOTTIME`, which the agent
//! turns into wall time).
//!
//! Reading the clock is an ordered TSC read, slow in a virtual machine: it
//! took an eighth of a deletion's probe here. Routine records therefore read
//! it once per tick per CPU and reuse that value for the rest of the tick
//! (`jiffies`, which the verifier inlines into a load): their time is never
//! later than the event and normally at most a tick early (4 ms at HZ=250;
//! more if the tick that advances `jiffies` is itself late), finer than
//! anything scores or reports need. What is timed to the moment reads
//! it exactly: the guard acting (the SOC's and the latency benchmark's
//! start) and a process's exit (where a kill's latency ends).

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

/// The clock, exactly; kept as this CPU's reading, so the records that
/// follow in this tick are never timed before it.
#[inline(always)]
pub fn exact() -> u64 {
    let jiffies = unsafe { bpf_jiffies64() };
    let now = read();
    if let Some(last) = LAST_READING.get_ptr_mut(0) {
        keep(last, jiffies, now);
    }
    now
}

/// The clock to within a tick (see the module's documentation).
#[inline(always)]
pub fn this_tick() -> u64 {
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(last) = LAST_READING.get_ptr_mut(0) else { return read() };
    if unsafe { (&raw const (*last).jiffies).read_volatile() } == jiffies {
        return unsafe { (&raw const (*last).boot_ns).read_volatile() };
    }
    let now = read();
    keep(last, jiffies, now);
    now
}

#[inline(always)]
fn read() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Stores a reading taken at or after tick `jiffies` began.
///
/// Programs on one CPU do not interleave (they run without preemption, and
/// a tracepoint program that would nest in another is skipped). Were one
/// to run between these stores, the order (time first, tick second, loaded
/// the other way round) still never hands out a time later than the event.
#[inline(always)]
fn keep(last: *mut Reading, jiffies: u64, now: u64) {
    unsafe {
        (&raw mut (*last).boot_ns).write_volatile(now);
        (&raw mut (*last).jiffies).write_volatile(jiffies);
    }
}
