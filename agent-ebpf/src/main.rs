//! Levee's kernel probes. Built only by `cargo xtask build-ebpf` for
//! `bpfel-unknown-none`; the agent embeds the resulting object.
//!
//! Only tracepoints are used: they are the one attach type every kernel Levee
//! supports offers (no kprobes, fentry or BPF LSM needed).
#![no_std]
#![no_main]

mod deletion;
mod kernel;
mod maps;
mod path;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No code path in the probes can panic once the verifier accepts them; this
    // only satisfies `no_std`.
    loop {}
}
