//! Reading kernel memory at offsets resolved from BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;

/// Reads a pointer-sized field at `base + offset`; 0 when unreadable, which
/// every caller treats as "stop".
#[inline(always)]
pub fn read_u64(base: u64, offset: u32) -> u64 {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const u64) }.unwrap_or(0)
}

#[inline(always)]
pub fn read_u32(base: u64, offset: u32) -> u32 {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const u32) }.unwrap_or(0)
}
