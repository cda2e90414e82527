//! `open`, `openat`, `openat2`, `open_by_handle_at` and `creat` with intent
//! to write: a block device opened for writing, or an existing regular file
//! opened with `O_TRUNC` (which `creat` implies).
//!
//! Exit reads the flags from the entry registers (see `syscall`); an open
//! that does not write costs it one register read. A truncating open by a
//! marked session's process is stopped there too (see
//! `guard::check_marked`). Only `openat2` has an entry probe, to keep its
//! flags (see there).

use agent_common::{
    block::RawBlockOpen,
    fs::{TruncateOp, SIZE_UNKNOWN},
    guard::GuardHook,
    EventKind, KernelOffsets,
};
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};

use crate::{
    files::{fd_file, Inode, S_IFBLK, S_IFREG},
    fs::report_file_truncation,
    guard,
    kernel::{read_u32, Btf},
    maps::offsets,
    record::Record,
    syscall::{arg, nr, numbers, remember, ret, take, EntryRegs},
};

/// From `<fcntl.h>`.
const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
pub const O_CREAT: u64 = 0o100;
pub const O_EXCL: u64 = 0o200;
pub const O_TRUNC: u64 = 0o1000;
/// `O_PATH` and `__O_TMPFILE`: opens that never truncate.
pub const O_PATH: u64 = 0o10000000;
pub const O_TMPFILE: u64 = 0o20000000;
/// Flags of an open that may destroy: for writing, or truncating.
const WRITING: u64 = O_WRONLY | O_RDWR | O_TRUNC;
/// What `creat` opens with (and `O_CREAT`).
const CREAT: u64 = O_WRONLY | O_TRUNC;
/// `FMODE_CREATED` from `<linux/fs.h>`: this open created the file.
const FMODE_CREATED: u32 = 1 << 20;

/// `openat2`'s flags are in user memory (`struct open_how` starts with them),
/// which another thread could rewrite while the call runs: read once here
/// and kept for the exit when the open may write.
#[tracepoint]
pub fn openat2_enter(ctx: TracePointContext) -> u32 {
    let flags = unsafe { bpf_probe_read_user(arg(&ctx, 2) as *const u64) }.unwrap_or(0);
    if flags & WRITING != 0 {
        remember(EventKind::BlockOpen, [flags, 0, 0]);
    }
    0
}

/// At `sys_exit_open`, `sys_exit_openat`, `sys_exit_openat2`,
/// `sys_exit_creat` and `sys_exit_open_by_handle_at` (whose flags are its
/// third argument, as `openat`'s).
#[tracepoint]
pub fn open_exit(ctx: TracePointContext) -> u32 {
    let fd = ret(&ctx);
    if fd < 0 {
        return 0;
    }
    let o = offsets();
    let regs = EntryRegs::current();
    let (nr, n) = (nr(&ctx), numbers());
    let flags = if nr == n.open {
        regs.arg(1, o)
    } else if nr == n.creat {
        CREAT
    } else if nr == n.openat2 {
        take(EventKind::BlockOpen).map_or(0, |call| call.args[0])
    } else {
        regs.arg(2, o)
    };
    if flags & WRITING == 0 {
        return 0;
    }
    let file = fd_file(Btf::current_task(), fd, o);
    let Some(inode) = existing_inode(file, o) else { return 0 };
    match inode.file_type(o) {
        S_IFBLK if flags & (O_WRONLY | O_RDWR) != 0 => block_open(fd, flags, file, inode, o),
        S_IFREG if flags & O_TRUNC != 0 => report_truncating_open(file, TruncateOp::OpenTrunc, fd, o),
        _ => {}
    }
    0
}

/// The inode of `file`, just opened, unless the open created it (then it
/// held nothing, and is no device) or there is no file (0).
#[inline(always)]
pub fn existing_inode(file: u64, o: &KernelOffsets) -> Option<Inode> {
    if read_u32(file, o.file_mode) & FMODE_CREATED != 0 {
        return None;
    }
    Inode::of(file, o)
}

/// Records that an open returning `fd` emptied `file` (0: a file no longer
/// found), and stops the process if its session is marked.
#[inline(always)]
pub fn report_truncating_open(file: u64, op: TruncateOp, fd: i64, o: &KernelOffsets) {
    report_file_truncation(file, op, fd, 0, SIZE_UNKNOWN, o);
    guard::check_marked(GuardHook::DestructiveCall);
}

#[inline(always)]
fn block_open(fd: i64, flags: u64, file: u64, inode: Inode, o: &KernelOffsets) {
    let Some(record) = Record::<RawBlockOpen>::start(EventKind::BlockOpen, o) else { return };
    let path = record.push_file_path(file, o);
    let fixed = record.fixed();
    fixed.ret = fd;
    fixed.dev = inode.rdev(o);
    fixed.flags = flags as u32;
    fixed.path = path;
    record.submit();
}
