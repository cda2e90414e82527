//! Kernel struct field offsets, resolved by the agent from `/sys/kernel/btf/vmlinux`
//! at start-up and handed to the probes as a read-only global before load.
//!
//! Rust probes cannot use CO-RE relocations, so this is how they read
//! `task_struct` and friends on any kernel. Offsets of nested fields are
//! pre-added by the agent (e.g. `fs_pwd_dentry` is `fs_struct.pwd` plus
//! `path.dentry`), which keeps the probes' pointer chasing short.

/// Byte offsets into kernel structs. All zero means "not resolved": the agent
/// refuses to load the probes in that state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.fs`
    pub task_fs: u32,
    /// `task_struct.files`
    pub task_files: u32,
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
    /// `dentry.d_parent`
    pub dentry_parent: u32,
    /// `dentry.d_name.name`
    pub dentry_name: u32,
    /// `vfsmount.mnt_root`
    pub vfsmount_root: u32,
    /// `mount.mnt` (the `vfsmount` embedded in a `struct mount`)
    pub mount_vfsmount: u32,
    /// `mount.mnt_parent`
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`
    pub mount_mountpoint: u32,
    pub _pad: u32,
}

impl KernelOffsets {
    /// The all-zero value the probes are compiled with.
    pub const UNRESOLVED: KernelOffsets = KernelOffsets {
        task_real_parent: 0,
        task_tgid: 0,
        task_fs: 0,
        task_files: 0,
        fs_root_mnt: 0,
        fs_root_dentry: 0,
        fs_pwd_mnt: 0,
        fs_pwd_dentry: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_path_mnt: 0,
        file_path_dentry: 0,
        dentry_parent: 0,
        dentry_name: 0,
        vfsmount_root: 0,
        mount_vfsmount: 0,
        mount_parent: 0,
        mount_mountpoint: 0,
        _pad: 0,
    };
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 80);
