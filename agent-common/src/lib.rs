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
//!
//! Every record is `EventHeader`, then `TaskInfo`, then its own fields, then a
//! variable-length data area (paths, argv) described by those fields.
#![no_std]

pub mod block;
pub mod counters;
pub mod event;
pub mod fs;
pub mod guard;
pub mod hooks;
pub mod offsets;
pub mod path;
pub mod process;
pub mod syscall;

pub use counters::Counter;
pub use event::{EventHeader, EventKind, TaskInfo, COMM_LEN};
pub use offsets::{IoUringOffsets, KernelOffsets};
pub use syscall::SyscallNumbers;

/// Implements `aya::Pod` (userspace only) for types the agent hands to the probes.
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: `#[repr(C)]`, `Copy`, integer fields only: any bit
            // pattern is a valid value.
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $t {}
        )*
    };
}
user_pod!(
    KernelOffsets,
    SyscallNumbers,
    guard::GuardConfig,
    guard::SessionId,
    guard::SessionCounts,
    guard::Mark,
    guard::DirKey,
    guard::ScriptPath,
);

/// Asserts at compile time that a record type starts with the common envelope,
/// so the probes can fill it generically.
#[macro_export]
macro_rules! assert_record_layout {
    ($t:ty, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        const _: () = assert!(core::mem::offset_of!($t, header) == 0);
        const _: () = assert!(core::mem::offset_of!($t, task) == 8);
        const _: () = assert!(core::mem::size_of::<$t>() <= $crate::event::RECORD_HEAD_CAP);
    };
}
