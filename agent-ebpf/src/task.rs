//! Who is making the current syscall.
//!
//! Every field is a BTF-typed load from the current `task_struct` (see
//! [`Btf`]) rather than a `bpf_get_current_*` helper: each record reads a
//! dozen of them, and a helper call costs more than the load it wraps.

use agent_common::{
    event::{AUDIT_UNSET, TASK_FLAG_EXEMPT, TASK_FLAG_KTHREAD},
    KernelOffsets, TaskInfo,
};
use aya_ebpf::helpers::generated::bpf_get_current_task;

use crate::kernel::Btf;

/// `PF_KTHREAD` from `<linux/sched.h>`.
const PF_KTHREAD: u32 = 0x0020_0000;
/// `SIGNAL_GROUP_EXIT` from `<linux/sched/signal.h>`.
const SIGNAL_GROUP_EXIT: u32 = 0x0000_0004;

/// The current `task_struct` pointer, as a number for [`crate::kernel::read_u64`].
#[inline(always)]
pub fn current() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// Fills `info` from the current task, at time `boot_ns`.
#[inline(always)]
pub fn fill(info: &mut TaskInfo, boot_ns: u64, o: &KernelOffsets) {
    let task = Btf::current_task();
    let cred = task.ptr(o.task_cred);
    info.boot_ns = boot_ns;
    info.cgroup_id = cgroup_id(task, o);
    info.tid = task.u32(o.task_pid);
    info.pid = pid(task, o);
    info.uid = cred.u32(o.cred_uid);
    info.gid = cred.u32(o.cred_gid);
    // Two loads: a rename at this very moment may be read half old, half
    // new, as it may through `/proc`; byte 15 is always the terminating NUL.
    let comm = [task.u64(o.task_comm), task.u64(o.task_comm + 8)];
    // SAFETY: `comm` is 16 bytes at an 8-aligned offset of an 8-aligned struct.
    unsafe { (&raw mut info.comm).cast::<[u64; 2]>().write(comm) };
    info.start_ns = task.ptr(o.task_group_leader).u64(o.task_start_boottime);
    info.ppid = task.ptr(o.task_real_parent).u32(o.task_tgid);
    info.flags = flags(task, info.pid, o);
    // Offset 0 means the kernel has no audit fields: no login session.
    info.loginuid = if o.task_loginuid != 0 { task.u32(o.task_loginuid) } else { AUDIT_UNSET };
    info.audit_session = audit_session(task, o);
    info.sid = sid(task, o);
    info.pgid = signal_pid(task, o.signal_pgid, o);
}

/// The process id of `task` (the kernel's tgid).
#[inline(always)]
pub fn pid(task: Btf, o: &KernelOffsets) -> u32 {
    task.u32(o.task_tgid)
}

/// The uid `task` acts as (`current_uid()` for the current task).
#[inline(always)]
pub fn uid(task: Btf, o: &KernelOffsets) -> u32 {
    task.ptr(o.task_cred).u32(o.cred_uid)
}

/// The id of `task`'s cgroup v2 cgroup, as `bpf_get_current_cgroup_id`
/// gives it for the current task.
#[inline(always)]
pub fn cgroup_id(task: Btf, o: &KernelOffsets) -> u64 {
    task.ptr(o.task_cgroups).ptr(o.css_set_dfl_cgrp).ptr(o.cgroup_kn).u64(o.kernfs_node_id)
}

/// `TASK_FLAG_*` bits of `task`, whose process is `pid`.
#[inline(always)]
pub fn flags(task: Btf, pid: u32, o: &KernelOffsets) -> u32 {
    let kthread = if task.u32(o.task_flags) & PF_KTHREAD != 0 { TASK_FLAG_KTHREAD } else { 0 };
    let exempt = if crate::guard::is_exempt_pid(pid) { TASK_FLAG_EXEMPT } else { 0 };
    kthread | exempt
}

/// The audit session of `task`, or [`AUDIT_UNSET`].
#[inline(always)]
pub fn audit_session(task: Btf, o: &KernelOffsets) -> u32 {
    if o.task_sessionid != 0 {
        task.u32(o.task_sessionid)
    } else {
        AUDIT_UNSET
    }
}

/// Whether `task`'s process is being killed: a fatal signal was sent to it
/// (`SIGNAL_GROUP_EXIT`), and it dies when it returns to user mode.
#[inline(always)]
pub fn dying(task: Btf, o: &KernelOffsets) -> bool {
    task.ptr(o.task_signal).u32(o.signal_flags) & SIGNAL_GROUP_EXIT != 0
}

/// The POSIX session of `task`.
#[inline(always)]
pub fn sid(task: Btf, o: &KernelOffsets) -> u32 {
    signal_pid(task, o.signal_sid, o)
}

/// The number of the pid `task`'s process shares at `slot` of
/// `signal_struct.pids` (its session or process group).
#[inline(always)]
fn signal_pid(task: Btf, slot: u32, o: &KernelOffsets) -> u32 {
    task.ptr(o.task_signal).ptr(slot).u32(o.pid_nr)
}
