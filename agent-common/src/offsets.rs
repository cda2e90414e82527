//! Kernel struct field offsets, resolved by the agent from `/sys/kernel/btf/vmlinux`
//! at start-up and handed to the probes as a read-only global before load.
//!
//! Rust probes cannot use CO-RE relocations, so this is how they read
//! `task_struct` and friends on any kernel. Offsets of nested fields are
//! pre-added by the agent (e.g. `fs_pwd_dentry` is `fs_struct.pwd` plus
//! `path.dentry`), which keeps the probes' pointer chasing short.

/// Byte offsets into kernel structs. Zero means "not resolved"; only the audit
/// fields may stay zero (kernels without `CONFIG_AUDIT`), and the probes then
/// report no login session.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.group_leader`
    pub task_group_leader: u32,
    /// `task_struct.start_boottime`
    pub task_start_boottime: u32,
    /// `task_struct.flags`
    pub task_flags: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `task_struct.fs`
    pub task_fs: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `task_struct.signal`
    pub task_signal: u32,
    /// `task_struct.comm`
    pub task_comm: u32,
    /// `task_struct.cred`
    pub task_cred: u32,
    /// `task_struct.cgroups`
    pub task_cgroups: u32,
    /// `task_struct.loginuid` (0: no audit support)
    pub task_loginuid: u32,
    /// `task_struct.sessionid` (0: no audit support)
    pub task_sessionid: u32,
    /// `signal_struct.pids[PIDTYPE_PGID]`
    pub signal_pgid: u32,
    /// `signal_struct.pids[PIDTYPE_SID]`
    pub signal_sid: u32,
    /// `signal_struct.flags`
    pub signal_flags: u32,
    /// `pid.numbers[0].nr`: the number in the initial pid namespace
    pub pid_nr: u32,
    /// `mm_struct.arg_start`
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`
    pub mm_arg_end: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `fs_struct.root.mnt`
    pub fs_root_mnt: u32,
    /// `fs_struct.root.dentry`
    pub fs_root_dentry: u32,
    /// `fs_struct.pwd.mnt`
    pub fs_pwd_mnt: u32,
    /// `fs_struct.pwd.dentry`
    pub fs_pwd_dentry: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.max_fds`
    pub fdt_max_fds: u32,
    /// `fdtable.fd`
    pub fdt_fd: u32,
    /// `file.f_path.mnt`
    pub file_path_mnt: u32,
    /// `file.f_path.dentry`
    pub file_path_dentry: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `file.f_pos`
    pub file_pos: u32,
    /// `file.f_mode`
    pub file_mode: u32,
    /// `inode.i_mode`
    pub inode_mode: u32,
    /// `inode.i_rdev`
    pub inode_rdev: u32,
    /// `inode.i_size`
    pub inode_size: u32,
    /// `dentry.d_sb`
    pub dentry_sb: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `linux_binprm.file`
    pub bprm_file: u32,
    /// `linux_binprm.filename`
    pub bprm_filename: u32,
    /// `linux_binprm.executable` (the script, for `#!` programs; 0 on
    /// kernels without it)
    pub bprm_executable: u32,
    /// `cred.uid.val`
    pub cred_uid: u32,
    /// `cred.gid.val`
    pub cred_gid: u32,
    /// `css_set.dfl_cgrp`: the task's cgroup v2 cgroup
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn`
    pub cgroup_kn: u32,
    /// `kernfs_node.id`: the cgroup id
    pub kernfs_node_id: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `dentry.d_parent`, which `d_name` (`hash_len`, `name`) and `d_inode`
    /// follow: the agent checks that they do, and walks read the four in one go
    pub dentry_links: u32,
    /// `vfsmount.mnt_root`
    pub vfsmount_root: u32,
    /// `mount.mnt` (the `vfsmount` embedded in a `struct mount`)
    pub mount_vfsmount: u32,
    /// `mount.mnt_parent`
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`
    pub mount_mountpoint: u32,
    /// Where in `struct pt_regs` the syscall arguments are, in order
    /// (`di`, `si`, `dx`, `r10`, `r8` on x86-64).
    pub syscall_args: [u32; crate::syscall::SYSCALL_ARGS],
    /// io_uring's requests; all 0 on a kernel without io_uring, where the
    /// agent attaches nothing that reads them.
    pub io_uring: IoUringOffsets,
}

/// Where a submitted io_uring request keeps what the probes read, from the
/// start of its `struct io_kiocb`. A request's arguments are in its command
/// (`io_kiocb.cmd`), laid out per operation; `io_kiocb.cmd` is pre-added to
/// the command fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoUringOffsets {
    /// `io_kiocb.opcode` (a `u8`)
    pub opcode: u32,
    /// `io_kiocb.flags` (`REQ_F_*`, a `u64`)
    pub flags: u32,
    /// `io_kiocb.cqe.fd`: the file descriptor, or a registered file's index
    pub fd: u32,
    /// `io_kiocb.cqe.res`: the result, once the request ran
    pub res: u32,
    /// `io_kiocb.ctx`
    pub ctx: u32,
    /// `io_ring_ctx.flags`: the ring's `IORING_SETUP_*` flags
    pub ctx_flags: u32,
    /// `io_ring_ctx.file_table.data.nr`: how many files are registered
    pub ctx_files_nr: u32,
    /// `io_ring_ctx.file_table.data.nodes`: the registered files' nodes
    pub ctx_files: u32,
    /// `io_rsrc_node.file_ptr`: a registered file, flags in its low bits
    pub rsrc_node_file: u32,
    /// `io_rw.kiocb.ki_pos`: where a write starts (-1: the file position)
    pub rw_pos: u32,
    /// `io_rw.addr`: the buffer, or the iovec array of a vectored write
    pub rw_addr: u32,
    /// `io_rw.len`: bytes, or a vectored write's iovec count
    pub rw_len: u32,
    /// `io_unlink.dfd`
    pub unlink_dfd: u32,
    /// `io_unlink.flags`
    pub unlink_flags: u32,
    /// `io_unlink.filename`
    pub unlink_filename: u32,
    /// `io_rename.old_dfd`
    pub rename_old_dfd: u32,
    /// `io_rename.new_dfd`
    pub rename_new_dfd: u32,
    /// `io_rename.oldpath`
    pub rename_old: u32,
    /// `io_rename.newpath`
    pub rename_new: u32,
    /// `io_rename.flags`
    pub rename_flags: u32,
    /// `filename.name`: the kernel's copy of a path the request was given
    pub filename_name: u32,
    /// `io_sync.off`: where a `fallocate` request starts
    pub sync_off: u32,
    /// `io_sync.len`: its length
    pub sync_len: u32,
    /// `io_sync.mode`: its `FALLOC_FL_*` mode
    pub sync_mode: u32,
    /// `io_uring_cmd.sqe`: a passthrough command's submission entry, whose
    /// fields the command reads as it runs
    pub cmd_sqe: u32,
    /// `io_uring_cmd.cmd_op`: which command
    pub cmd_op: u32,
    /// `io_ftrunc.len`: the length an `ftruncate` request cuts a file to
    pub ftrunc_len: u32,
    /// `io_splice.off_out`: where a `splice` request writes (-1: the file
    /// position)
    pub splice_off_out: u32,
    /// `io_splice.len`: how much it moves
    pub splice_len: u32,
    /// `io_open.dfd`
    pub open_dfd: u32,
    /// `io_open.filename`
    pub open_filename: u32,
    /// `io_open.how.flags`: the `open` flags
    pub open_flags: u32,
    /// `io_open.file_slot`: the registered slot opened into, plus one (0:
    /// an fd)
    pub open_file_slot: u32,
}

impl KernelOffsets {
    /// The all-zero value the probes are compiled with.
    // SAFETY: all fields are integers; zero is valid for each.
    pub const UNRESOLVED: KernelOffsets = unsafe { core::mem::zeroed() };
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 372);
