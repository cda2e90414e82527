//! Write syscalls on block devices: `write`, `pwrite64`, `writev`, `pwritev`,
//! `pwritev2`, `sendfile`, `splice` (and the record and check io_uring's
//! writes share, see `io_uring`), a shared `mmap` of a device that is or
//! may become writable (its writes are stores, no call at all), and the
//! calls that erase a range of a device without writing it: the
//! `BLKDISCARD`, `BLKSECDISCARD` and `BLKZEROOUT` ioctls (what `blkdiscard`
//! makes) and an erasing `fallocate`. An SSD discards a whole disk in
//! seconds.
//!
//! Each call's fd is checked at entry (fd → file → inode type): this sees a
//! device fd however the process got it (opened, inherited, duplicated; for
//! io_uring's see there).
//! Writes the kernel makes for a filesystem (journal, writeback) never pass
//! through these syscalls, so they are never taken for a user's raw write.
//!
//! Recorded at entry, with the bytes asked for: the bytes written are only
//! known at exit, and an exit probe would cost every write on the host
//! (sockets, pipes, logs) a second dispatch for the few that hit a device.

use agent_common::{
    block::{BlockWriteOp, RawBlockWrite},
    EventKind, KernelOffsets,
};
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_probe_read_user, generated::bpf_loop},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    files::{fd_file, Inode, S_IFBLK},
    guard,
    kernel::{read_u32, read_u64, Btf},
    maps::offsets,
    record::Record,
    syscall::arg,
};

/// How many bytes a call asks to write, erase or map.
#[derive(Clone, Copy)]
pub enum Size {
    /// A count or length argument (`write`, `sendfile`, an erased range,
    /// a mapping).
    Count(u64),
    /// Vectored writes: an array of `count` iovecs in the caller's memory,
    /// summed only once the fd is known to be a device.
    Iovecs { at: u64, count: u64 },
}

#[tracepoint]
pub fn write_enter(ctx: TracePointContext) -> u32 {
    syscall_write(BlockWriteOp::Write, arg(&ctx, 0), Size::Count(arg(&ctx, 2)), None);
    0
}

#[tracepoint]
pub fn pwrite64_enter(ctx: TracePointContext) -> u32 {
    syscall_write(BlockWriteOp::Pwrite64, arg(&ctx, 0), Size::Count(arg(&ctx, 2)), Some(arg(&ctx, 3)));
    0
}

#[tracepoint]
pub fn writev_enter(ctx: TracePointContext) -> u32 {
    let size = Size::Iovecs { at: arg(&ctx, 1), count: arg(&ctx, 2) };
    syscall_write(BlockWriteOp::Writev, arg(&ctx, 0), size, None);
    0
}

/// `pwritev` and `pwritev2` (where a position of -1 means the file position).
#[tracepoint]
pub fn pwritev_enter(ctx: TracePointContext) -> u32 {
    let pos = arg(&ctx, 3);
    let size = Size::Iovecs { at: arg(&ctx, 1), count: arg(&ctx, 2) };
    syscall_write(BlockWriteOp::Pwritev, arg(&ctx, 0), size, position(pos));
    0
}

/// From `<linux/fs.h>`: the ioctls that erase a range of a block device.
const BLKDISCARD: u32 = 0x1277;
const BLKSECDISCARD: u32 = 0x127d;
const BLKZEROOUT: u32 = 0x127f;

/// At every `ioctl` on the host (terminals, sockets): all but the erasing
/// three cost one compare.
#[tracepoint]
pub fn ioctl_enter(ctx: TracePointContext) -> u32 {
    // The command is an `unsigned int`; the record's slot is 8 bytes wide.
    let op = match arg(&ctx, 1) as u32 {
        BLKDISCARD => BlockWriteOp::Discard,
        BLKSECDISCARD => BlockWriteOp::SecureDiscard,
        BLKZEROOUT => BlockWriteOp::ZeroOut,
        _ => return 0,
    };
    // `uint64_t range[2]`, start and length, in the caller's memory. The
    // kernel copies it after this probe; unreadable, the call fails with
    // `EFAULT`, but the device is still checked.
    let [start, len] = unsafe { bpf_probe_read_user(arg(&ctx, 2) as *const [u64; 2]) }.unwrap_or([0, 0]);
    syscall_write(op, arg(&ctx, 0), Size::Count(len), Some(start));
    0
}

/// `FALLOC_FL_*` from `<linux/falloc.h>`: the modes that leave a range
/// reading as zeros. A block device takes no other (`EOPNOTSUPP`).
const FALLOC_FL_PUNCH_HOLE: u64 = 0x02;
const FALLOC_FL_ZERO_RANGE: u64 = 0x10;
const FALLOC_FL_WRITE_ZEROES: u64 = 0x80;
pub const FALLOC_ERASING: u64 = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | FALLOC_FL_WRITE_ZEROES;

/// `fallocate(fd, mode, offset, len)`: recorded only on a block device.
/// The same modes on a regular file destroy its data as an overwrite
/// does, and, like overwrites, are not followed.
#[tracepoint]
pub fn fallocate_enter(ctx: TracePointContext) -> u32 {
    if arg(&ctx, 1) & FALLOC_ERASING == 0 {
        return 0;
    }
    syscall_write(BlockWriteOp::Fallocate, arg(&ctx, 0), Size::Count(arg(&ctx, 3)), Some(arg(&ctx, 2)));
    0
}

/// `sendfile(out_fd, in_fd, offset, count)`: writes at `out_fd`'s position.
#[tracepoint]
pub fn sendfile_enter(ctx: TracePointContext) -> u32 {
    syscall_write(BlockWriteOp::Sendfile, arg(&ctx, 0), Size::Count(arg(&ctx, 3)), None);
    0
}

/// `splice(fd_in, off_in, fd_out, off_out, len, flags)`: writes at
/// `*off_out`, or `fd_out`'s position when that is null.
#[tracepoint]
pub fn splice_enter(ctx: TracePointContext) -> u32 {
    let at = arg(&ctx, 3);
    // Read only when given; unreadable, the call fails with `EFAULT`.
    let pos = if at == 0 { None } else { Some(unsafe { bpf_probe_read_user(at as *const u64) }.unwrap_or(0)) };
    syscall_write(BlockWriteOp::Splice, arg(&ctx, 2), Size::Count(arg(&ctx, 4)), pos);
    0
}

/// From `<sys/mman.h>`. `MAP_SHARED_VALIDATE` (3) has `MAP_SHARED`'s bit.
const PROT_WRITE: u64 = 0x2;
const MAP_SHARED: u64 = 0x1;
const MAP_ANONYMOUS: u64 = 0x20;
/// `FMODE_WRITE` from `<linux/fs.h>`: the file is open for writing.
const FMODE_WRITE: u32 = 0x2;

/// `mmap(addr, len, prot, flags, fd, off)`: a shared mapping of a file
/// writes through to it once writable, which it is made now or may be made
/// later (`mprotect`) when the file is open for writing; `madvise`'s
/// `MADV_REMOVE` also punches holes through it. Every other `mmap`
/// (private ones: each program's libraries; anonymous ones, whose `fd`
/// the kernel ignores) costs two compares.
#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    let (prot, flags) = (arg(&ctx, 2), arg(&ctx, 3));
    if flags & MAP_SHARED == 0 || flags & MAP_ANONYMOUS != 0 {
        return 0;
    }
    let o = offsets();
    let fd = arg(&ctx, 4) as u32;
    let file = fd_file(Btf::current_task(), fd as i64, o);
    if prot & PROT_WRITE == 0 && read_u32(file, o.file_mode) & FMODE_WRITE == 0 {
        return 0;
    }
    let size = Size::Count(arg(&ctx, 1));
    record_if_block_device(
        Write { op: BlockWriteOp::Mmap, file, fd, fd_registered: false, size, pos: Some(arg(&ctx, 5)) },
        o,
    );
    0
}

/// Where a write starts, given as `pos`: -1 means the file position.
#[inline(always)]
pub fn position(pos: u64) -> Option<u64> {
    (pos as i64 != -1).then_some(pos)
}

#[inline(always)]
fn syscall_write(op: BlockWriteOp, fd: u64, size: Size, pos: Option<u64>) {
    let o = offsets();
    let file = fd_file(Btf::current_task(), fd as u32 as i64, o);
    record_if_block_device(Write { op, file, fd: fd as u32, fd_registered: false, size, pos }, o);
}

/// A write about to happen.
#[derive(Clone, Copy)]
pub struct Write {
    pub op: BlockWriteOp,
    /// The `struct file` written to (0: none).
    pub file: u64,
    /// As the caller named the file (see `RawBlockWrite::fd`).
    pub fd: u32,
    pub fd_registered: bool,
    pub size: Size,
    /// Where it starts; `None`: the file position.
    pub pos: Option<u64>,
}

/// Records `write` and stops it if it is a raw write to (or erases) a block
/// device the guard protects (see `guard::check_device_write`).
#[inline(always)]
pub fn record_if_block_device(write: Write, o: &KernelOffsets) {
    let Write { op, file, fd, fd_registered, size, pos } = write;
    let Some(inode) = Inode::of(file, o) else { return };
    if inode.file_type(o) != S_IFBLK {
        return;
    }
    let dev = inode.rdev(o);
    let offset = pos.unwrap_or_else(|| read_u64(file, o.file_pos));
    let bytes = match size {
        Size::Count(count) => count,
        Size::Iovecs { at, count } => iovec_bytes(at, count),
    };
    if let Some(record) = Record::<RawBlockWrite>::start(EventKind::BlockWrite, o) {
        let fixed = record.fixed();
        fixed.offset = offset;
        fixed.bytes = bytes;
        fixed.dev = dev;
        fixed.fd = fd;
        fixed.op = op as u32;
        fixed.fd_registered = fd_registered as u32;
        // Sent first: the guard's own records reuse the scratch buffer.
        record.submit();
    }
    guard::check_device_write(dev);
}

/// `UIO_MAXIOV`: the most iovecs a vectored write takes (more fail with
/// `EINVAL`).
const UIO_MAXIOV: u64 = 1024;

/// A sum of iovec lengths in progress, on the caller's stack.
#[repr(C)]
struct IovecSum {
    at: u64,
    bytes: u64,
}

/// The lengths of `count` iovecs at `at`, as they are now: a thread of the
/// caller could still change them before the kernel reads them. One iovec
/// per `bpf_loop` iteration, so the verifier checks the step once.
#[inline(always)]
fn iovec_bytes(at: u64, count: u64) -> u64 {
    let mut sum = IovecSum { at, bytes: 0 };
    let count = if count > UIO_MAXIOV { UIO_MAXIOV } else { count };
    // A function reference, as in `path::write_components`.
    let step: unsafe extern "C" fn(u64, *mut c_void) -> i64 = add_iovec;
    unsafe { bpf_loop(count as u32, step as *mut c_void, (&raw mut sum).cast(), 0) };
    sum.bytes
}

/// Adds iovec `i`'s length. Returns 0 to go on, 1 to stop (`bpf_loop`'s
/// contract): an unreadable iovec fails the write with `EFAULT`.
#[inline(never)]
unsafe extern "C" fn add_iovec(i: u64, sum: *mut c_void) -> i64 {
    let sum = unsafe { &mut *sum.cast::<IovecSum>() };
    // `struct iovec { void *iov_base; size_t iov_len; }`: 16 bytes, length second.
    let len = sum.at.wrapping_add(i.wrapping_mul(16)).wrapping_add(8);
    match unsafe { bpf_probe_read_user(len as *const u64) } {
        Ok(len) => {
            sum.bytes = sum.bytes.saturating_add(len);
            0
        }
        Err(_) => 1,
    }
}
