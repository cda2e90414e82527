//! Rebuilding paths inside the kernel.
//!
//! `rm -rf` and `find -delete` call `unlinkat(dirfd, "name")`; the name alone
//! says nothing. The directory behind `dirfd` (or the working directory), or
//! an open file, is walked up dentry by dentry, crossing mounts, until the
//! task's root. Components are written innermost first; the agent reverses
//! them. This runs in the syscall, so it is right even when the process exits
//! right after.

use agent_common::{path::COMPONENT_CAP, path::DATA_CAP, KernelOffsets};
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_loop, bpf_probe_read_kernel_str},
    },
};

use crate::{
    files::fd_file,
    guard::{dir_class, has_protected_dirs},
    kernel::{read_u32, read_u64, Btf},
    maps::offsets,
};

/// A `struct path`: mount and dentry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PathRef {
    pub vfsmount: u64,
    pub dentry: u64,
}

/// `AT_FDCWD` from `<fcntl.h>`.
pub const AT_FDCWD: i64 = -100;

/// Deepest directory the walk follows; deeper ones are flagged as truncated.
/// Costs the verifier nothing (see `write_components`); a tree nested
/// deeper than this under a protected directory would hide its class.
const MAX_DEPTH: u32 = 1024;

/// Where a component may start, masked so the verifier sees
/// `start + COMPONENT_CAP` inside the buffer.
const OFFSET_MASK: usize = DATA_CAP - 1;
const _: () = assert!(DATA_CAP.is_power_of_two());

/// The task's root directory (`fs->root`): where walks stop.
#[inline(always)]
pub fn task_root(task: u64, o: &KernelOffsets) -> PathRef {
    let fs = read_u64(task, o.task_fs);
    PathRef { vfsmount: read_u64(fs, o.fs_root_mnt), dentry: read_u64(fs, o.fs_root_dentry) }
}

/// An open file's path (`file->f_path`).
#[inline(always)]
pub fn file_path(file: u64, o: &KernelOffsets) -> PathRef {
    PathRef { vfsmount: read_u64(file, o.file_path_mnt), dentry: read_u64(file, o.file_path_dentry) }
}

/// The directory a `*at` syscall's name is relative to: the working directory
/// for `AT_FDCWD`, else the file open at `dfd`. `None` if `dfd` is not open.
#[inline(always)]
pub fn dirfd_path(task: u64, dfd: i64, o: &KernelOffsets) -> Option<PathRef> {
    if dfd == AT_FDCWD {
        let fs = read_u64(task, o.task_fs);
        return Some(PathRef { vfsmount: read_u64(fs, o.fs_pwd_mnt), dentry: read_u64(fs, o.fs_pwd_dentry) });
    }
    let file = fd_file(Btf::current_task(), dfd, o);
    (file != 0).then(|| file_path(file, o))
}

/// Appends the components of `from` (itself first, then its parents) to
/// `data` at offset `*end`, each NUL-terminated, advancing `*end`. Returns whether
/// the walk stopped before the root.
///
/// The innermost protected path class met on the way up goes to `*class`
/// (left alone if none). `*mount` is room for what the walk reads once per
/// mount.
///
/// One directory per `bpf_loop` iteration: the verifier checks the step once
/// rather than once per possible depth, which kept every probe with a walk
/// within a few percent of its instruction limit. `end`, `class` and `mount`
/// point into map memory, whose contents the verifier does not track, so the
/// step's states converge at once (on the stack, their values would make
/// each iteration a new state to check).
#[inline(always)]
pub fn write_components(
    from: PathRef,
    root: PathRef,
    data: *mut u8,
    end: *mut u32,
    class: *mut u32,
    mount: *mut Mount,
) -> bool {
    // No mount: the first step reads its own, whatever it is.
    unsafe { (&raw mut (*mount).vfsmount).write_volatile(u64::MAX) };
    let mut walk = Walk { at: from, root, data, end, class, mount, state: 0 };
    // The callback must reach the loader as a function reference, never as a
    // number: a cast through an integer would lose its relocation.
    let step: unsafe extern "C" fn(u64, *mut c_void) -> i64 = step;
    unsafe { bpf_loop(MAX_DEPTH, step as *mut c_void, (&raw mut walk).cast(), 0) };
    walk.state & ENDED == 0 || walk.state & FULL != 0
}

/// A walk in progress, on the caller's stack.
#[repr(C)]
struct Walk {
    at: PathRef,
    root: PathRef,
    data: *mut u8,
    end: *mut u32,
    class: *mut u32,
    mount: *mut Mount,
    /// `ENDED` | `FULL` bits. One word: two zeroed fields would compile to
    /// a byte-by-byte loop.
    state: u64,
}

/// [`Walk::state`]: the walk reached the root, or could go no higher.
const ENDED: u64 = 1;
/// [`Walk::state`]: a name did not fit; the walk goes on to find the class.
const FULL: u64 = 2;

/// What holds for every directory of the mount a walk is on: read once per
/// mount rather than once per directory.
#[repr(C)]
pub struct Mount {
    vfsmount: u64,
    /// `vfsmount.mnt_root`: where the walk crosses to the parent mount.
    root: u64,
    /// The filesystem's device (`super_block.s_dev`).
    dev: u32,
    /// Whether protected directories live on `dev` (1): directories
    /// elsewhere skip the lookup.
    protected: u32,
}

/// A dentry's `d_parent`, `d_name` and `d_inode`, read in one go (the agent
/// checks that they lie so, see `KernelOffsets::dentry_links`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Links {
    parent: u64,
    /// The name's length and hash (salted with the parent's address).
    hash_len: u64,
    name: u64,
    inode: u64,
}

impl Links {
    #[inline(always)]
    pub fn of(dentry: u64, o: &KernelOffsets) -> Links {
        let at = (dentry + o.dentry_links as u64) as *const Links;
        unsafe { bpf_probe_read_kernel(at) }.unwrap_or(Links { parent: 0, hash_len: 0, name: 0, inode: 0 })
    }
}

/// One directory up. Returns 0 to go on, 1 to stop (`bpf_loop`'s contract).
/// Names stop at the first that does not fit; the protected class is still
/// looked for up to the root, so nesting deeper than the record can hold
/// hides nothing from the guard.
#[inline(never)]
unsafe extern "C" fn step(_: u64, walk: *mut c_void) -> i64 {
    let walk = unsafe { &mut *walk.cast::<Walk>() };
    let o = offsets();
    let at = walk.at;
    let links = Links::of(at.dentry, o);
    // Volatile: map memory, read and written as such (see `write_components`).
    let mount = walk.mount;
    if at.vfsmount != unsafe { (&raw const (*mount).vfsmount).read_volatile() } {
        let dev = read_u32(read_u64(at.dentry, o.dentry_sb), o.sb_dev);
        let fresh = Mount {
            vfsmount: at.vfsmount,
            root: read_u64(at.vfsmount, o.vfsmount_root),
            dev,
            protected: has_protected_dirs(dev) as u32,
        };
        unsafe { mount.write_volatile(fresh) };
    }
    let Mount { root: mount_root, dev, protected, .. } = unsafe { mount.read_volatile() };
    if protected != 0 && unsafe { walk.class.read_volatile() } == 0 {
        let found = dir_class(dev, links.inode, o);
        if found != 0 {
            unsafe { walk.class.write_volatile(found) };
        }
    }
    if at == walk.root {
        walk.state |= ENDED;
        return 1;
    }
    if at.dentry == mount_root {
        // At the root of a mount: continue from where it is mounted.
        let mnt = at.vfsmount - o.mount_vfsmount as u64;
        let parent = read_u64(mnt, o.mount_parent);
        if parent == 0 || parent == mnt {
            walk.state |= ENDED;
            return 1;
        }
        walk.at = PathRef { vfsmount: parent + o.mount_vfsmount as u64, dentry: read_u64(mnt, o.mount_mountpoint) };
        return 0;
    }
    let parent = links.parent;
    if parent == 0 || parent == at.dentry {
        walk.state |= ENDED;
        return 1;
    }
    walk.at.dentry = parent;
    if walk.state & FULL != 0 {
        return 0;
    }
    let offset = unsafe { walk.end.read_volatile() } as usize;
    let name = links.name;
    // The mask is a no-op after the check; it is what lets the verifier
    // prove the write stays inside the buffer.
    let n = if offset > DATA_CAP - COMPONENT_CAP {
        0
    } else {
        let dst = unsafe { walk.data.add(offset & OFFSET_MASK) };
        unsafe { bpf_probe_read_kernel_str(dst.cast(), COMPONENT_CAP as u32, name as *const _) }
    };
    if n <= 0 {
        walk.state |= FULL;
    } else {
        unsafe { walk.end.write_volatile((offset + n as usize) as u32) };
    }
    0
}
