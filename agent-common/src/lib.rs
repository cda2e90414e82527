//! Types shared by Levee's eBPF probes (`agent-ebpf`) and its userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data: the probes write these structs into
//! maps and the ring buffer, and the agent reads the same bytes back. Layouts are
//! pinned by `const` assertions so that a change on one side fails to compile
//! instead of silently mis-decoding on the other.
//!
//! Enumerations travel as integers in the raw structs (an out-of-range byte
//! pattern must never be undefined behaviour on the reading side); the agent turns
//! them into Rust enums while decoding.
#![no_std]

pub mod counters;
pub mod deletion;
pub mod event;
pub mod offsets;

pub use counters::Counter;
pub use deletion::{DeleteOp, RawDeletion, PATH_DATA_CAP};
pub use event::{EventHeader, EventKind, TaskInfo, COMM_LEN};
pub use offsets::KernelOffsets;

/// Implements `aya::Pod` (userspace only) for types the agent hands to the probes.
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: `#[repr(C)]`, `Copy`, integer fields only, no padding holes
            // that matter to the kernel: any bit pattern is a valid value.
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $t {}
        )*
    };
}
user_pod!(KernelOffsets);
