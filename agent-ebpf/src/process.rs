//! Process lifecycle: exec, fork (processes, not threads), exit (of the last
//! thread).

use agent_common::{
    guard::GuardHook,
    process::{RawExec, RawExit, RawFork, ARGV_CAP},
    EventKind,
};
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    clock, guard,
    kernel::{read_u32, read_u64, Btf},
    maps::offsets,
    record::Record,
    syscall::field,
    task,
};

/// `sys_enter_execve` and `sys_enter_execveat`: a marked session's process
/// dies here, before the new program runs a single instruction.
#[tracepoint]
pub fn execve_enter(_ctx: TracePointContext) -> u32 {
    guard::check_marked(GuardHook::Exec);
    0
}

/// `group_dead` in the `sched_process_exit` record.
const EXIT_GROUP_DEAD: usize = 32;

/// `sched/sched_process_exec`: the new program is in place and has not run.
/// Its argv is read from the new memory image, so it is what the program sees.
#[tracepoint]
pub fn exec(_ctx: TracePointContext) -> u32 {
    let o = offsets();
    let Some(record) = Record::<RawExec>::start(EventKind::Exec, o) else { return 0 };
    let mm = Btf::current_task().ptr(o.task_mm);
    let arg_start = mm.u64(o.mm_arg_start);
    let total = mm.u64(o.mm_arg_end).saturating_sub(arg_start);
    let want = if total > ARGV_CAP as u64 { ARGV_CAP } else { total as usize };
    let argv_len = record.push_user_bytes(arg_start, want);
    let exe = record.push_file_path(mm.u64(o.mm_exe_file), o);
    let fixed = record.fixed();
    fixed.argv_len = argv_len;
    fixed.argv_total = if total > u32::MAX as u64 { u32::MAX } else { total as u32 };
    fixed.exe = exe;
    record.submit();
    0
}

/// `sched_process_exec(task, old_pid, bprm)` as a raw tracepoint, for the
/// `linux_binprm`: allowlisted programs are recognised here, by inode or by
/// the path they were run by.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn exec_allowlist(ctx: RawTracePointContext) -> u32 {
    let o = offsets();
    guard::exempt_if_allowlisted(ctx.arg(2), task::pid(Btf::current_task(), o), o);
    0
}

/// `sched_process_fork(parent, child)` as a raw tracepoint: the classic one
/// gives only thread ids, and threads are not processes.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn fork(ctx: RawTracePointContext) -> u32 {
    let o = offsets();
    let child: u64 = ctx.arg(1);
    let child_pid = read_u32(child, o.task_pid);
    if child_pid != read_u32(child, o.task_tgid) {
        return 0;
    }
    guard::inherit_exemption(read_u32(ctx.arg(0), o.task_tgid), child_pid);
    let Some(record) = Record::<RawFork>::start(EventKind::Fork, o) else { return 0 };
    let fixed = record.fixed();
    fixed.child_pid = child_pid;
    fixed.child_start_ns = read_u64(child, o.task_start_boottime);
    record.submit();
    0
}

/// `sched/sched_process_exit`, reported only when the whole process is gone.
#[tracepoint]
pub fn exit(ctx: TracePointContext) -> u32 {
    if field::<u8>(&ctx, EXIT_GROUP_DEAD) == 0 {
        return 0;
    }
    let o = offsets();
    guard::forget_exemption(task::pid(Btf::current_task(), o));
    // Timed exactly: a kill's latency is measured to it.
    let Some(record) = Record::<RawExit>::start_at(EventKind::Exit, clock::exact(), o) else { return 0 };
    record.fixed().exit_code = Btf::current_task().u32(o.task_exit_code);
    record.submit();
    0
}
