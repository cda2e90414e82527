//! The last directory walk on each CPU, kept to be replayed.
//!
//! `rm -rf`, `git checkout` and `cargo clean` delete file after file by a
//! name relative to one directory (a `dirfd`, or the working directory);
//! walking that directory up to the root again for each file cost more than
//! the rest of the deletion's probe. A walk is replayed, its components
//! copied, when it starts at the same dentry under the same root, that
//! dentry still has the same parent, name and inode, and since it was kept:
//!
//! - no directory was renamed or removed and no mount changed (`MOVES`,
//!   bumped at the exits of those calls, and when io_uring's renames and
//!   directory removals are submitted: a deletion made while one is still
//!   in its call or queued, whose effect may already show, can get the old
//!   path);
//! - the agent did not change the protected directories (whose class the
//!   walk found, `GuardConfig::dirs_epoch`);
//! - at most `KEEP_NS` passed, on the records' clock (see `clock`: a tick
//!   early at most). What moves directories out of the probes' sight
//!   (io_uring's queued requests, 32-bit syscalls, the in-kernel NFS and SMB servers, a
//!   network or FUSE filesystem's server, unmounts the kernel makes itself)
//!   therefore shows in records at most that and a tick late.
//!
//! Only walks that looked the protected class up themselves, wrote every
//! name, and fit in `KEPT_CAP` are kept.

use agent_common::{
    path::{COMPONENT_CAP, DATA_CAP, NAME_CAP},
    KernelOffsets,
};
use aya_ebpf::{
    cty::c_void,
    helpers::generated::bpf_probe_read_kernel,
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};

use crate::{
    guard,
    maps::SharedCount,
    path::{Links, PathRef},
};

/// Longest walk kept: `PATH_MAX`, within the record's slack past the data
/// area, so a replay at any masked offset stays inside the buffer.
const KEPT_CAP: usize = NAME_CAP;
/// How long a walk is replayed (see the module's documentation).
const KEEP_NS: u64 = 10_000_000;
const MASK: usize = DATA_CAP - 1;

/// Bumped at the exit of every rename, directory removal and mount change
/// (at submission for io_uring's).
static MOVES: SharedCount = SharedCount::new();

/// After a call that may have moved directories (a rename, a removed
/// directory, a mount change): no walk kept before it is replayed.
#[inline(always)]
pub fn directories_moved() {
    MOVES.up();
}

/// At the exits of `mount`, `umount2`, `move_mount` and `pivot_root`, which
/// move directories to new paths or out of reach.
#[tracepoint]
pub fn mount_exit(_ctx: TracePointContext) -> u32 {
    directories_moved();
    0
}

/// What a walk's result depends on, besides the time.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WalkKey {
    from: PathRef,
    root: PathRef,
    /// `from`'s dentry as it was: a dentry freed and reused for another
    /// directory has another parent, name or inode.
    start: Links,
    moves: u64,
    dirs_epoch: u64,
}

impl WalkKey {
    #[inline(always)]
    pub fn now(from: PathRef, root: PathRef, o: &KernelOffsets) -> WalkKey {
        WalkKey {
            from,
            root,
            start: Links::of(from.dentry, o),
            moves: MOVES.get(),
            dirs_epoch: guard::dirs_epoch() as u64,
        }
    }
}

/// A CPU's last walk.
#[repr(C)]
pub struct Kept {
    key: WalkKey,
    /// When the walk was made (boot clock, to the tick).
    at_ns: u64,
    /// Bytes of `components`; above `KEPT_CAP` while nothing is kept.
    len: u32,
    /// The protected class the walk found (0: none).
    class: u32,
    components: [u8; KEPT_CAP],
}

#[map]
static KEPT: PerCpuArray<Kept> = PerCpuArray::with_max_entries(1, 0);

/// Appends the components this CPU kept for `key`, if they are still good,
/// to `data` at `*end` as the walk would (advancing `*end`, and setting
/// `*class` if it is 0). Returns whether it did.
#[inline(always)]
pub fn replay(key: &WalkKey, now_ns: u64, data: *mut u8, end: *mut u32, class: *mut u32) -> bool {
    let Some(kept) = KEPT.get_ptr(0) else { return false };
    let kept = unsafe { &*kept };
    let start = unsafe { end.read_volatile() } as usize;
    let len = kept.len as usize;
    // The walk would have written every name from here too: each starts
    // within the room a name needs.
    if len > KEPT_CAP || start + len > DATA_CAP - COMPONENT_CAP {
        return false;
    }
    if now_ns.wrapping_sub(kept.at_ns) >= KEEP_NS || kept.key != *key {
        return false;
    }
    // Read again: from the check above the compiler would know the mask
    // changes nothing and drop it, and the verifier needs it.
    let offset = unsafe { end.read_volatile() } as usize & MASK;
    let dst = unsafe { data.add(offset) };
    let copied =
        unsafe { bpf_probe_read_kernel(dst.cast::<c_void>(), len as u32, kept.components.as_ptr().cast::<c_void>()) };
    if copied < 0 {
        return false;
    }
    unsafe {
        end.write_volatile((start + len) as u32);
        if class.read_volatile() == 0 {
            class.write_volatile(kept.class);
        }
    }
    true
}

/// Keeps the `len` bytes of components at `data[start..]` that a walk for
/// `key` wrote at `now_ns`, finding `class`.
#[inline(always)]
pub fn keep(key: WalkKey, now_ns: u64, data: *const u8, start: usize, len: usize, class: u32) {
    let Some(kept) = KEPT.get_ptr_mut(0) else { return };
    let kept = unsafe { &mut *kept };
    kept.len = u32::MAX;
    if len > KEPT_CAP {
        return;
    }
    let src = unsafe { data.add(start & MASK) };
    let copied = unsafe {
        bpf_probe_read_kernel(kept.components.as_mut_ptr().cast::<c_void>(), len as u32, src.cast::<c_void>())
    };
    if copied < 0 {
        return;
    }
    kept.key = key;
    kept.at_ns = now_ns;
    kept.class = class;
    kept.len = len as u32;
}
