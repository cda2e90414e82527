//! Levee's kernel probes. Built only by `cargo xtask build-ebpf` for
//! `bpfel-unknown-none`; the agent embeds the resulting object.
//!
//! Only tracepoints and raw tracepoints are used: they are what every kernel
//! Levee supports offers, with no kprobes, fentry or BPF LSM needed.
//!
//! Layout: `maps` (shared maps and globals), `clock` (record times),
//! `kernel` and `task` (reading kernel memory), `files` (fd → file →
//! inode), `path` (rebuilding paths), `path_cache` (replaying the last
//! walk), `record` (building a ring-buffer
//! record), `syscall` (a syscall's arguments, read at exit from the
//! registers it was entered with), `guard` (per-session limits and kills),
//! then one module per probe family: `fs`, `io_uring`, `open`, `block`,
//! `process`.
#![no_std]
#![no_main]
// For atomic adds (`maps::atomic_add`), as aya-ebpf itself uses.
#![feature(asm_experimental_arch)]

mod block;
mod clock;
mod files;
mod fs;
mod guard;
mod io_uring;
mod kernel;
mod maps;
mod open;
mod path;
mod path_cache;
mod process;
mod record;
mod syscall;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No code path in the probes can panic once the verifier accepts them; this
    // only satisfies `no_std`.
    loop {}
}
