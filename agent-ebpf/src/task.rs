//! Who is making the current syscall.

use agent_common::{KernelOffsets, TaskInfo};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns},
};

use crate::kernel::{read_u32, read_u64};

/// The current `task_struct` pointer.
#[inline(always)]
pub fn current() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// Fills `info` from the current task.
#[inline(always)]
pub fn fill(info: &mut TaskInfo, offsets: &KernelOffsets) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    info.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    info.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    info.tid = pid_tgid as u32;
    info.pid = (pid_tgid >> 32) as u32;
    info.uid = uid_gid as u32;
    info.gid = (uid_gid >> 32) as u32;
    info.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let parent = read_u64(current(), offsets.task_real_parent);
    info.ppid = if parent == 0 {
        0
    } else {
        read_u32(parent, offsets.task_tgid)
    };
}
