//! Write syscalls on block devices: `write`, `pwrite64`, `writev`, `pwritev`,
//! `pwritev2`.
//!
//! Each write's fd is checked at entry (fd → file → inode type): this sees a
//! device fd however the process got it (opened, inherited, duplicated).
//! Writes the kernel makes for a filesystem (journal, writeback) never pass
//! through these syscalls, so they are never taken for a user's raw write.

use agent_common::{block::RawBlockWrite, EventKind};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    files::{fd_file, Inode, S_IFBLK},
    guard,
    kernel::{read_u64, Btf},
    maps::offsets,
    record::Record,
    syscall::{arg, remember, ret, take},
};

#[tracepoint]
pub fn write_enter(ctx: TracePointContext) -> u32 {
    keep_if_block_device(arg(&ctx, 0), arg(&ctx, 2), None);
    0
}

#[tracepoint]
pub fn pwrite64_enter(ctx: TracePointContext) -> u32 {
    keep_if_block_device(arg(&ctx, 0), arg(&ctx, 2), Some(arg(&ctx, 3)));
    0
}

/// `writev`: the iovecs are not read, so no requested size.
#[tracepoint]
pub fn writev_enter(ctx: TracePointContext) -> u32 {
    keep_if_block_device(arg(&ctx, 0), 0, None);
    0
}

/// `pwritev` and `pwritev2` (where a position of -1 means the file position).
#[tracepoint]
pub fn pwritev_enter(ctx: TracePointContext) -> u32 {
    let pos = arg(&ctx, 3);
    keep_if_block_device(arg(&ctx, 0), 0, (pos as i64 != -1).then_some(pos));
    0
}

#[inline(always)]
fn keep_if_block_device(fd: u64, requested: u64, pos: Option<u64>) {
    let o = offsets();
    let file = fd_file(Btf::current_task(), fd as u32 as i64, &o);
    let Some(inode) = Inode::of(file, &o) else { return };
    if inode.file_type(&o) != S_IFBLK {
        return;
    }
    let dev = inode.rdev(&o);
    guard::check_device_write(dev);
    let offset = pos.unwrap_or_else(|| read_u64(file, o.file_pos));
    remember(EventKind::BlockWrite, [fd, requested, offset, dev as u64]);
}

/// At the exits of all five write syscalls.
#[tracepoint]
pub fn block_write_exit(ctx: TracePointContext) -> u32 {
    let Some(call) = take(EventKind::BlockWrite) else { return 0 };
    let o = offsets();
    let Some(record) = Record::<RawBlockWrite>::start(EventKind::BlockWrite, &o) else { return 0 };
    let fixed = record.fixed();
    fixed.ret = ret(&ctx);
    fixed.fd = call.args[0] as u32;
    fixed.requested = call.args[1];
    fixed.offset = call.args[2];
    fixed.dev = call.args[3] as u32;
    record.submit();
    0
}
