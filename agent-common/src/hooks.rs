//! Where Levee's probes run: the one registry of what it hooks, read by the
//! agent to attach its programs and by the benchmarks to measure what the
//! same hooks cost with programs that do nothing.

/// Where a program attaches.
#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// `syscalls/<name>`.
    Syscall(&'static str),
    /// A classic tracepoint: category and name.
    Tracepoint(&'static str, &'static str),
    /// A raw tracepoint, by name.
    Raw(&'static str),
    /// A raw tracepoint of io_uring's, by name: attached only when every
    /// io_uring field the probes read resolves from the kernel's BTF (see
    /// `KernelBtf::io_uring_offsets`) and the ones before it attached; the
    /// agent runs on without them, and logs why.
    IoUring(&'static str),
}

/// Every program and where it runs: the one registry of what Levee hooks.
/// One program may serve several hooks (the exits of related syscalls).
pub const ATTACHMENTS: &[(&str, Hook)] = &[
    ("destructive_enter", Hook::Syscall("sys_enter_unlink")),
    ("destructive_enter", Hook::Syscall("sys_enter_unlinkat")),
    ("destructive_enter", Hook::Syscall("sys_enter_rmdir")),
    ("deletion_exit", Hook::Syscall("sys_exit_unlink")),
    ("deletion_exit", Hook::Syscall("sys_exit_unlinkat")),
    ("deletion_exit", Hook::Syscall("sys_exit_rmdir")),
    ("destructive_enter", Hook::Syscall("sys_enter_rename")),
    ("destructive_enter", Hook::Syscall("sys_enter_renameat")),
    ("destructive_enter", Hook::Syscall("sys_enter_renameat2")),
    ("rename_exit", Hook::Syscall("sys_exit_rename")),
    ("rename_exit", Hook::Syscall("sys_exit_renameat")),
    ("rename_exit", Hook::Syscall("sys_exit_renameat2")),
    ("destructive_enter", Hook::Syscall("sys_enter_truncate")),
    ("ftruncate_enter", Hook::Syscall("sys_enter_ftruncate")),
    ("truncate_exit", Hook::Syscall("sys_exit_truncate")),
    ("truncate_exit", Hook::Syscall("sys_exit_ftruncate")),
    ("openat2_enter", Hook::Syscall("sys_enter_openat2")),
    ("open_exit", Hook::Syscall("sys_exit_open")),
    ("open_exit", Hook::Syscall("sys_exit_openat")),
    ("open_exit", Hook::Syscall("sys_exit_openat2")),
    ("open_exit", Hook::Syscall("sys_exit_creat")),
    ("open_exit", Hook::Syscall("sys_exit_open_by_handle_at")),
    ("write_enter", Hook::Syscall("sys_enter_write")),
    ("pwrite64_enter", Hook::Syscall("sys_enter_pwrite64")),
    ("writev_enter", Hook::Syscall("sys_enter_writev")),
    ("pwritev_enter", Hook::Syscall("sys_enter_pwritev")),
    ("pwritev_enter", Hook::Syscall("sys_enter_pwritev2")),
    ("sendfile_enter", Hook::Syscall("sys_enter_sendfile64")),
    ("splice_enter", Hook::Syscall("sys_enter_splice")),
    ("mmap_enter", Hook::Syscall("sys_enter_mmap")),
    ("ioctl_enter", Hook::Syscall("sys_enter_ioctl")),
    ("fallocate_enter", Hook::Syscall("sys_enter_fallocate")),
    ("execve_enter", Hook::Syscall("sys_enter_execve")),
    ("execve_enter", Hook::Syscall("sys_enter_execveat")),
    ("mount_exit", Hook::Syscall("sys_exit_mount")),
    ("mount_exit", Hook::Syscall("sys_exit_umount")),
    ("mount_exit", Hook::Syscall("sys_exit_move_mount")),
    ("mount_exit", Hook::Syscall("sys_exit_pivot_root")),
    ("io_uring_submit", Hook::IoUring("io_uring_submit_req")),
    ("io_uring_file_get", Hook::IoUring("io_uring_file_get")),
    ("io_uring_complete", Hook::IoUring("io_uring_complete")),
    ("exec", Hook::Tracepoint("sched", "sched_process_exec")),
    ("exec_allowlist", Hook::Raw("sched_process_exec")),
    ("fork", Hook::Raw("sched_process_fork")),
    ("exit", Hook::Tracepoint("sched", "sched_process_exit")),
];
