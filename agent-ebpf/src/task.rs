//! Who is making the current syscall.

use agent_common::{
    event::{AUDIT_UNSET, TASK_FLAG_EXEMPT, TASK_FLAG_KTHREAD},
    KernelOffsets, TaskInfo,
};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns},
};

use crate::kernel::{read_u32, read_u64};

/// `PF_KTHREAD` from `<linux/sched.h>`.
const PF_KTHREAD: u32 = 0x0020_0000;

/// The current `task_struct` pointer.
#[inline(always)]
pub fn current() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// Fills `info` from the current task.
#[inline(always)]
pub fn fill(info: &mut TaskInfo, o: &KernelOffsets) {
    let task = current();
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    info.boot_ns = boot_ns();
    info.cgroup_id = cgroup_id();
    info.tid = pid_tgid as u32;
    info.pid = (pid_tgid >> 32) as u32;
    info.uid = uid_gid as u32;
    info.gid = (uid_gid >> 32) as u32;
    info.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    info.start_ns = read_u64(read_u64(task, o.task_group_leader), o.task_start_boottime);
    info.ppid = read_u32(read_u64(task, o.task_real_parent), o.task_tgid);
    info.flags = flags(task, o) | if crate::guard::is_exempt_pid(info.pid) { TASK_FLAG_EXEMPT } else { 0 };
    // Offset 0 means the kernel has no audit fields: no login session.
    info.loginuid = if o.task_loginuid != 0 { read_u32(task, o.task_loginuid) } else { AUDIT_UNSET };
    (info.audit_session, info.sid) = audit_and_sid(task, o);
    let signal = read_u64(task, o.task_signal);
    info.pgid = read_u32(read_u64(signal, o.signal_pgid), o.pid_nr);
}

#[inline(always)]
pub fn boot_ns() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
pub fn cgroup_id() -> u64 {
    unsafe { bpf_get_current_cgroup_id() }
}

/// `TASK_FLAG_*` bits of `task`.
#[inline(always)]
pub fn flags(task: u64, o: &KernelOffsets) -> u32 {
    if read_u32(task, o.task_flags) & PF_KTHREAD != 0 {
        TASK_FLAG_KTHREAD
    } else {
        0
    }
}

/// The audit session (or [`AUDIT_UNSET`]) and the POSIX session of `task`.
#[inline(always)]
pub fn audit_and_sid(task: u64, o: &KernelOffsets) -> (u32, u32) {
    let audit = if o.task_sessionid != 0 { read_u32(task, o.task_sessionid) } else { AUDIT_UNSET };
    let signal = read_u64(task, o.task_signal);
    (audit, read_u32(read_u64(signal, o.signal_sid), o.pid_nr))
}
