//! Building one ring-buffer record: a fixed part `T` (header, task, fields)
//! followed by variable data (paths, argv), in a per-CPU scratch buffer, then
//! sent with exactly the bytes used.
//!
//! Records are too large for the 512-byte BPF stack, and the ring buffer only
//! reserves constant sizes, hence the scratch buffer and `bpf_ringbuf_output`.

use core::marker::PhantomData;

use agent_common::{
    event::RECORD_MAX,
    path::{
        RawPath, DATA_CAP, NAME_CAP, PATH_FLAG_DIR_RESOLVED, PATH_FLAG_DIR_TRUNCATED, PATH_FLAG_NAME_TRUNCATED,
        PATH_FLAG_NAME_UNREADABLE,
    },
    Counter, EventHeader, EventKind, KernelOffsets, TaskInfo,
};
use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str},
    macros::map,
    maps::PerCpuArray,
};

use crate::{
    clock,
    maps::{count, wakeup_flags, Delivery, EVENTS},
    path::{self, PathRef},
    path_cache::{self, WalkKey},
    task,
};

/// The fixed part, the data area, and slack for one name read at the data
/// area's last offset: no record is longer.
const SCRATCH_LEN: usize = RECORD_MAX;
const MASK: usize = DATA_CAP - 1;

#[repr(C)]
pub struct Scratch {
    buf: [u8; SCRATCH_LEN],
    /// Bytes of data written so far. In map memory on purpose: see
    /// `path::write_components`.
    end: u32,
    /// Protected path class met by the last walk (0: none).
    class: u32,
    /// A walk's mount, see `path::write_components`.
    mount: path::Mount,
    /// The call's arguments, see [`Record::args`].
    args: [u64; 5],
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// A record of fixed part `T` being built.
pub struct Record<T: 'static> {
    scratch: *mut Scratch,
    _fixed: PhantomData<T>,
}

impl<T: 'static> Record<T> {
    /// Starts a record of `kind` about the current task, timed to the tick
    /// (see `clock`).
    #[inline(always)]
    pub fn start(kind: EventKind, o: &KernelOffsets) -> Option<Self> {
        Self::start_at(kind, clock::this_tick(), o)
    }

    /// Starts a record of `kind` about the current task, timed `boot_ns`.
    #[inline(always)]
    pub fn start_at(kind: EventKind, boot_ns: u64, o: &KernelOffsets) -> Option<Self> {
        let scratch = SCRATCH.get_ptr_mut(0)?;
        let record = Record { scratch, _fixed: PhantomData };
        record.set_end(0);
        unsafe { (&raw mut (*scratch).class).write_volatile(0) };
        let head = record.head();
        // SAFETY: every record type starts with EventHeader then TaskInfo
        // (`assert_record_layout!`), and the buffer is larger than any of them.
        unsafe {
            (*head.cast::<EventHeader>()).kind = kind as u32;
            task::fill(&mut *head.add(8).cast::<TaskInfo>(), boot_ns, o);
        }
        Some(record)
    }

    /// Keeps the call's arguments in map memory and reads them back, which
    /// the verifier cannot follow: what an exit chose per syscall (a
    /// constant `AT_FDCWD` here, a register there) becomes one unknown
    /// value, so the choices converge before the path walks instead of the
    /// verifier checking the rest of the probe once per choice.
    #[inline(always)]
    pub fn args(&self, args: [u64; 5]) -> [u64; 5] {
        let slot = unsafe { &raw mut (*self.scratch).args };
        unsafe {
            slot.write_volatile(args);
            slot.read_volatile()
        }
    }

    /// The fixed part, to fill in.
    #[inline(always)]
    pub fn fixed(&self) -> &mut T {
        unsafe { &mut *self.head().cast::<T>() }
    }

    #[inline(always)]
    fn head(&self) -> *mut u8 {
        unsafe { (*self.scratch).buf.as_mut_ptr() }
    }

    /// Start of the data area.
    #[inline(always)]
    fn data(&self) -> *mut u8 {
        unsafe { self.head().add(core::mem::size_of::<T>()) }
    }

    #[inline(always)]
    fn end_ptr(&self) -> *mut u32 {
        unsafe { &raw mut (*self.scratch).end }
    }

    #[inline(always)]
    fn end(&self) -> usize {
        unsafe { self.end_ptr().read_volatile() as usize }
    }

    #[inline(always)]
    fn set_end(&self, end: usize) {
        unsafe { self.end_ptr().write_volatile(end as u32) }
    }

    /// Appends a path named by a call: `name` as given, plus, when it is
    /// relative, the directory behind `dfd` (or the cwd for `AT_FDCWD`).
    #[inline(always)]
    pub fn push_path(&self, name: Name, dfd: i64, o: &KernelOffsets) -> RawPath {
        // Built from values at the end, never zeroed first: the compiler
        // zeroes with a byte-by-byte loop.
        let start = self.end();
        if start >= DATA_CAP {
            return path_of(0, 0, PATH_FLAG_NAME_UNREADABLE | PATH_FLAG_DIR_TRUNCATED);
        }
        let dst = unsafe { self.data().add(start & MASK) };
        let read = match name.space {
            Space::User => unsafe { bpf_probe_read_user_str(dst.cast(), NAME_CAP as u32, name.at as *const _) },
            Space::Kernel => unsafe { bpf_probe_read_kernel_str(dst.cast(), NAME_CAP as u32, name.at as *const _) },
        };
        if read <= 0 {
            return path_of(0, 0, PATH_FLAG_NAME_UNREADABLE);
        }
        let mut flags = if read as usize == NAME_CAP { PATH_FLAG_NAME_TRUNCATED } else { 0 };
        let name_len = read as usize - 1;
        self.set_end(start + name_len);
        let first = unsafe { *dst };
        if name_len == 0 || first == b'/' {
            return path_of(name_len, 0, flags);
        }
        let task = task::current();
        let Some(dir) = path::dirfd_path(task, dfd, o) else { return path_of(name_len, 0, flags) };
        flags |= PATH_FLAG_DIR_RESOLVED | self.walk(dir, task, o);
        path_of(name_len, self.end() - start - name_len, flags)
    }

    /// Appends the path of an open file (all components, no name); nothing,
    /// and a path flagged unresolved, for no file (0).
    #[inline(always)]
    pub fn push_file_path(&self, file: u64, o: &KernelOffsets) -> RawPath {
        if file == 0 {
            return path_of(0, 0, 0);
        }
        let start = self.end();
        let flags = PATH_FLAG_DIR_RESOLVED | self.walk(path::file_path(file, o), task::current(), o);
        path_of(0, self.end().saturating_sub(start), flags)
    }

    /// Appends the components of `from` up to the task's root: replayed
    /// when this CPU just walked the same directory (see `path_cache`).
    #[inline(always)]
    fn walk(&self, from: PathRef, task: u64, o: &KernelOffsets) -> u32 {
        let root = path::task_root(task, o);
        let class = unsafe { &raw mut (*self.scratch).class };
        let key = WalkKey::now(from, root, o);
        let now_ns = self.time();
        if path_cache::replay(&key, now_ns, self.data(), self.end_ptr(), class) {
            return 0;
        }
        let start = self.end();
        // A walk after one that found a class looks none up: not kept.
        let finds_class = unsafe { class.read_volatile() } == 0;
        let mount = unsafe { &raw mut (*self.scratch).mount };
        if path::write_components(from, root, self.data(), self.end_ptr(), class, mount) {
            return PATH_FLAG_DIR_TRUNCATED;
        }
        if finds_class {
            path_cache::keep(key, now_ns, self.data(), start, self.end() - start, self.class());
        }
        0
    }

    /// When the record was made (`TaskInfo::boot_ns`).
    #[inline(always)]
    fn time(&self) -> u64 {
        // SAFETY: as in `start_at`.
        unsafe { (*self.head().add(8).cast::<TaskInfo>()).boot_ns }
    }

    /// The protected path class the walks of this record met, 0 if none.
    #[inline(always)]
    pub fn class(&self) -> u32 {
        unsafe { (&raw const (*self.scratch).class).read_volatile() }
    }

    /// Appends up to `len` bytes of user memory (at most `NAME_CAP`). Returns
    /// how many were appended.
    #[inline(always)]
    pub fn push_user_bytes(&self, src: u64, len: usize) -> u32 {
        let start = self.end();
        if start >= DATA_CAP || len == 0 {
            return 0;
        }
        // Bounded for the verifier: the size must have a known maximum.
        let len = if len > NAME_CAP { NAME_CAP } else { len };
        let dst = unsafe { self.data().add(start & MASK) };
        if unsafe { bpf_probe_read_user(dst.cast(), len as u32, src as *const _) } < 0 {
            return 0;
        }
        self.set_end(start + len);
        len as u32
    }

    /// Sends the record (the fixed part and the data written) for the agent's
    /// next batch.
    #[inline(always)]
    pub fn submit(self) {
        self.send(Delivery::Batched)
    }

    /// Sends the record and wakes the agent.
    #[inline(always)]
    pub fn submit_now(self) {
        self.send(Delivery::Now)
    }

    #[inline(always)]
    fn send(self, delivery: Delivery) {
        let mut len = core::mem::size_of::<T>() + self.end();
        // Never true; it bounds `len` for the verifier.
        if len > SCRATCH_LEN {
            len = SCRATCH_LEN;
        }
        unsafe { (*self.head().cast::<EventHeader>()).len = len as u32 };
        let bytes = unsafe { core::slice::from_raw_parts(self.head().cast_const(), len) };
        if EVENTS.output::<[u8]>(bytes, wakeup_flags(delivery)).is_err() {
            count(Counter::RingBufferFull);
        }
    }
}

/// A path name a call was given, as a NUL-terminated string at `at`.
#[derive(Clone, Copy)]
pub struct Name {
    pub at: u64,
    pub space: Space,
}

/// Whose memory a [`Name`] is in.
#[derive(Clone, Copy)]
pub enum Space {
    /// The caller's: a syscall's argument.
    User,
    /// The kernel's: its copy of the name, made before the probe runs
    /// (io_uring requests), so the caller cannot change it under the probe.
    Kernel,
}

impl Name {
    #[inline(always)]
    pub fn user(at: u64) -> Name {
        Name { at, space: Space::User }
    }

    #[inline(always)]
    pub fn kernel(at: u64) -> Name {
        Name { at, space: Space::Kernel }
    }
}

#[inline(always)]
fn path_of(name_len: usize, dir_len: usize, flags: u32) -> RawPath {
    RawPath { name_len: name_len as u32, dir_len: dir_len as u32, flags, _pad: 0 }
}
