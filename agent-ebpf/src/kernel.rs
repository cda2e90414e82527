//! Reading kernel memory at offsets resolved from BTF.

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};

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

/// A kernel struct pointer whose type the verifier knows from kernel BTF:
/// the current task, and the struct pointers read through it. Its fields are
/// plain loads, which the verifier checks against the type and makes
/// fault-safe (a null pointer reads as 0), instead of a helper call each: on
/// these machines a helper call and its mitigated return cost more than the
/// read, and every record reads a dozen task fields.
///
/// The verifier accepts such a load only at an offset it knows (the offsets
/// are a frozen read-only global, so it does) that falls inside a field of
/// exactly the size read. A pointer that is not to a struct, or one moved by a
/// variable amount, is a plain number to it: read those with [`read_u64`].
#[derive(Clone, Copy)]
pub struct Btf(*const u8);

impl Btf {
    /// The current `task_struct`.
    #[inline(always)]
    pub fn current_task() -> Btf {
        Btf(unsafe { bpf_get_current_task_btf() }.cast_const().cast())
    }

    /// The user registers of a task (this pointer's): for a task in a
    /// syscall, what it entered the syscall with.
    #[inline(always)]
    pub fn pt_regs(self) -> Btf {
        Btf(unsafe { bpf_task_pt_regs(self.0.cast_mut().cast()) } as *const u8)
    }

    /// A struct pointer field.
    #[inline(always)]
    pub fn ptr(self, offset: u32) -> Btf {
        Btf(self.load::<*const u8>(offset))
    }

    #[inline(always)]
    pub fn u64(self, offset: u32) -> u64 {
        self.load(offset)
    }

    #[inline(always)]
    pub fn u32(self, offset: u32) -> u32 {
        self.load(offset)
    }

    /// Volatile: the compiler must neither merge nor widen these loads, or
    /// the verifier would find them straddling fields.
    #[inline(always)]
    fn load<T>(self, offset: u32) -> T {
        unsafe { core::ptr::read_volatile(self.0.add(offset as usize).cast::<T>()) }
    }
}
