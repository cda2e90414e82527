//! Who is making the current syscall.

use agent_common::{
    event::{AUDIT_UNSET, TASK_FLAG_EXEMPT, TASK_FLAG_KTHREAD},
    KernelOffsets, TaskInfo,
};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns},
};

use crate::kernel::Btf;

/// `PF_KTHREAD` from `<linux/sched.h>`.
const PF_KTHREAD: u32 = 0x0020_0000;

/// The current `task_struct` pointer, as a number for [`crate::kernel::read_u64`].
#[inline(always)]
pub fn current() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// Fills `info` from the current task.
#[inline(always)]
pub fn fill(info: &mut TaskInfo, o: &KernelOffsets) {
    let task = Btf::current_task();
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    info.boot_ns = boot_ns();
    info.cgroup_id = cgroup_id();
    info.tid = pid_tgid as u32;
    info.pid = (pid_tgid >> 32) as u32;
    info.uid = uid_gid as u32;
    info.gid = (uid_gid >> 32) as u32;
    info.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    info.start_ns = task.ptr(o.task_group_leader).u64(o.task_start_boottime);
    info.ppid = task.ptr(o.task_real_parent).u32(o.task_tgid);
    info.flags = flags(task, info.pid, o);
    // Offset 0 means the kernel has no audit fields: no login session.
    info.loginuid = if o.task_loginuid != 0 { task.u32(o.task_loginuid) } else { AUDIT_UNSET };
    info.audit_session = audit_session(task, o);
    info.sid = sid(task, o);
    info.pgid = signal_pid(task, o.signal_pgid, o);
}

#[inline(always)]
pub fn boot_ns() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
pub fn cgroup_id() -> u64 {
    unsafe { bpf_get_current_cgroup_id() }
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
