//! Rebuilding paths inside the kernel.
//!
//! `rm -rf` and `find -delete` call `unlinkat(dirfd, "name")`; the name alone
//! says nothing. The directory behind `dirfd` (or the working directory), or
//! an open file, is walked up dentry by dentry, crossing mounts, until the
//! task's root. Components are written innermost first; the agent reverses
//! them. This runs in the syscall, so it is right even when the process exits
//! right after.

use agent_common::{path::COMPONENT_CAP, path::DATA_CAP, KernelOffsets};
use aya_ebpf::helpers::generated::bpf_probe_read_kernel_str;

use crate::{files::fd_file, guard::dir_class, kernel::read_u64};

/// A `struct path`: mount and dentry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PathRef {
    pub vfsmount: u64,
    pub dentry: u64,
}

/// `AT_FDCWD` from `<fcntl.h>`.
pub const AT_FDCWD: i64 = -100;

/// Deepest directory the walk follows; deeper ones are flagged as truncated.
/// Bounded so the verifier can prove the loop ends.
const MAX_DEPTH: u32 = 96;

/// Where a component may start, masked so the verifier sees
/// `start + COMPONENT_CAP` inside the buffer.
const OFFSET_MASK: usize = DATA_CAP - 1;
const _: () = assert!(DATA_CAP.is_power_of_two());

/// The task's root directory (`fs->root`): where walks stop.
#[inline(always)]
pub fn task_root(task: u64, o: &KernelOffsets) -> PathRef {
    let fs = read_u64(task, o.task_fs);
    PathRef {
        vfsmount: read_u64(fs, o.fs_root_mnt),
        dentry: read_u64(fs, o.fs_root_dentry),
    }
}

/// An open file's path (`file->f_path`).
#[inline(always)]
pub fn file_path(file: u64, o: &KernelOffsets) -> PathRef {
    PathRef {
        vfsmount: read_u64(file, o.file_path_mnt),
        dentry: read_u64(file, o.file_path_dentry),
    }
}

/// The directory a `*at` syscall's name is relative to: the working directory
/// for `AT_FDCWD`, else the file open at `dfd`. `None` if `dfd` is not open.
#[inline(always)]
pub fn dirfd_path(task: u64, dfd: i64, o: &KernelOffsets) -> Option<PathRef> {
    if dfd == AT_FDCWD {
        let fs = read_u64(task, o.task_fs);
        return Some(PathRef {
            vfsmount: read_u64(fs, o.fs_pwd_mnt),
            dentry: read_u64(fs, o.fs_pwd_dentry),
        });
    }
    let file = fd_file(task, dfd, o);
    (file != 0).then(|| file_path(file, o))
}

/// Appends the components of `from` (itself first, then its parents) to
/// `data` at offset `*end`, each NUL-terminated, advancing `*end`. Returns whether
/// the walk stopped before the root.
///
/// The innermost protected path class met on the way up goes to `*class`
/// (left alone if none).
///
/// `end` must point into map memory, on purpose: the verifier does not track
/// map memory, so it re-enters each iteration as a fresh bounded scalar and
/// loop states converge. Kept in a register, its range would differ on every
/// iteration and the verifier would give up long before `MAX_DEPTH`.
#[inline(always)]
pub fn write_components(
    from: PathRef,
    root: PathRef,
    data: *mut u8,
    end: *mut u32,
    class: *mut u32,
    o: &KernelOffsets,
) -> bool {
    let mut at = from;
    for _ in 0..MAX_DEPTH {
        if unsafe { class.read_volatile() } == 0 {
            let found = dir_class(at.dentry, o);
            if found != 0 {
                unsafe { class.write_volatile(found) };
            }
        }
        if at == root {
            return false;
        }
        let mount = at.vfsmount - o.mount_vfsmount as u64;
        if at.dentry == read_u64(at.vfsmount, o.vfsmount_root) {
            // At the root of a mount: continue from where it is mounted.
            let parent = read_u64(mount, o.mount_parent);
            if parent == 0 || parent == mount {
                return false;
            }
            at = PathRef {
                vfsmount: parent + o.mount_vfsmount as u64,
                dentry: read_u64(mount, o.mount_mountpoint),
            };
            continue;
        }
        let parent = read_u64(at.dentry, o.dentry_parent);
        if parent == 0 || parent == at.dentry {
            return false;
        }
        let offset = unsafe { end.read_volatile() } as usize;
        if offset > DATA_CAP - COMPONENT_CAP {
            return true;
        }
        let name = read_u64(at.dentry, o.dentry_name);
        // The mask is a no-op after the check above; it is what lets the
        // verifier prove the write stays inside the buffer.
        let dst = unsafe { data.add(offset & OFFSET_MASK) };
        let n = unsafe { bpf_probe_read_kernel_str(dst.cast(), COMPONENT_CAP as u32, name as *const _) };
        if n <= 0 {
            return true;
        }
        unsafe { end.write_volatile((offset + n as usize) as u32) };
        at.dentry = parent;
    }
    true
}
