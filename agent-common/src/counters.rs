//! Per-CPU counters the probes keep for what they could not deliver.

/// Index into the probes' `COUNTERS` per-CPU array. The agent sums the CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A record was lost because the ring buffer was full.
    RingBufferFull = 0,
    /// What a syscall's entry saw could not be kept for its exit (map full),
    /// so its exit produced no record: a shrinking `ftruncate`, a
    /// block-device write, or a writing `openat2`.
    PendingTableFull = 1,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 2] = [Counter::RingBufferFull, Counter::PendingTableFull];
    /// Number of slots in the `COUNTERS` map.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    pub const fn name(self) -> &'static str {
        match self {
            Counter::RingBufferFull => "ring_buffer_full",
            Counter::PendingTableFull => "pending_table_full",
        }
    }
}
