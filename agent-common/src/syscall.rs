//! What the probes need to read a syscall's arguments at its exit.
//!
//! Exit probes read the arguments from the registers the task entered the
//! syscall with (saved on its kernel stack, untouched until it returns)
//! instead of keeping them in a map from entry: a map insert and delete per
//! syscall were the largest part of the probes' cost. One exit probe serves
//! related syscalls whose arguments sit in different places, so it tells them
//! apart by number.

/// Numbers of the syscalls an exit probe must tell apart, set by the agent
/// for its architecture before load. Absent ones are -1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallNumbers {
    pub rmdir: i32,
    pub unlinkat: i32,
    pub renameat: i32,
    pub renameat2: i32,
    pub ftruncate: i32,
    pub open: i32,
    pub openat2: i32,
    pub creat: i32,
}

impl SyscallNumbers {
    /// What the probes are compiled with: matches no syscall.
    pub const UNSET: SyscallNumbers = SyscallNumbers {
        rmdir: -1,
        unlinkat: -1,
        renameat: -1,
        renameat2: -1,
        ftruncate: -1,
        open: -1,
        openat2: -1,
        creat: -1,
    };
}

/// Syscall arguments the probes read, at most.
pub const SYSCALL_ARGS: usize = 5;
