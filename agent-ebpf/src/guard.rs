//! The in-kernel guard: counts what each session destroys and kills at hard
//! limits without waiting for userspace (see `agent_common::guard`).
//!
//! Never acts on pid 1, kernel threads, the agent, or what the agent exempted
//! (allowlisted processes, cgroups, users); never kills `never_kill` programs.

use agent_common::{
    event::{AUDIT_UNSET, TASK_FLAG_EXEMPT, TASK_FLAG_KTHREAD},
    guard::{
        DirKey, Exemption, GuardConfig, GuardHook, GuardReason, Mark, MarkCounter, RawGuard, ScriptPath, SessionCounts,
        SessionId, SessionKind, CLASS_ANY, CLASS_COUNT, EXEMPT_LIST_CGROUPS, EXEMPT_LIST_UIDS, SCRIPT_PATH_LEN,
    },
    EventKind, KernelOffsets, TaskInfo,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_probe_read_kernel_str, bpf_send_signal},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};

use crate::{
    clock,
    kernel::{read_u32, read_u64, Btf},
    maps::{atomic_add, offsets, SharedCount},
    record::Record,
    task,
};

const SIGKILL: u32 = 9;

#[map]
pub static GUARD: Array<GuardConfig> = Array::with_max_entries(1, 0);
#[map]
static SESSIONS: LruHashMap<SessionId, SessionCounts> = LruHashMap::with_max_entries(16 * 1024, 0);
/// Marked sessions; the agent reads, sets and clears them.
#[map]
static MARKED: HashMap<SessionId, Mark> = HashMap::with_max_entries(4096, 0);
/// The number of marks, one net count per writer (see `MarkCounter`).
#[map]
static MARK_COUNTS: Array<u64> = Array::with_max_entries(MarkCounter::COUNT, 0);
/// Protected directories → path class (1..CLASS_COUNT).
#[map]
static PROTECTED_DIRS: HashMap<DirKey, u32> = HashMap::with_max_entries(1024, 0);
/// The devices `PROTECTED_DIRS` has directories on: walks skip the
/// per-directory lookup on every other filesystem.
#[map]
static PROTECTED_DIR_DEVS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);
/// Devices holding a filesystem or partition table (kernel `dev_t`).
#[map]
static PROTECTED_DEVICES: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);
/// Allowlisted and spared processes (tgid → `Exemption`); allowlisted users
/// (uid) and cgroups (id).
#[map]
static EXEMPT_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);
/// The allowlisted processes in `EXEMPT_PIDS`: every record skips the
/// lookup while there are none (the programs spared by default, such as
/// sshd, are not allowlisted). Only the probes write `EXEMPT_PIDS`, each
/// process's entry at its own fork, exec and exit, which never run at once.
static ALLOWLISTED_PIDS: SharedCount = SharedCount::new();
#[map]
static EXEMPT_UIDS: HashMap<u32, u32> = HashMap::with_max_entries(256, 0);
#[map]
static EXEMPT_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);
/// Allowlisted and never-killed executables and scripts, by device and
/// inode (→ `Exemption`).
#[map]
static EXEMPT_EXES: HashMap<DirKey, u32> = HashMap::with_max_entries(256, 0);

/// Allowlisted executables and scripts, by the absolute path they are run by.
#[map]
static EXEMPT_PATHS: HashMap<ScriptPath, u32> = HashMap::with_max_entries(256, 0);
/// Room to build a path key (too large for the stack).
#[map]
static PATH_KEY: PerCpuArray<ScriptPath> = PerCpuArray::with_max_entries(1, 0);

/// At a successful exec (`bprm` in hand): a process running an allowlisted
/// executable or script, by inode or by the path it was run by, is exempt
/// from here on, before it can delete anything.
#[inline(always)]
pub fn exempt_if_allowlisted(bprm: u64, pid: u32, o: &KernelOffsets) {
    // A script's own file, where the kernel keeps it; else (older kernels,
    // where only the interpreter is left) scripts are known by path alone.
    let script = if o.bprm_executable != 0 { read_u64(bprm, o.bprm_executable) } else { 0 };
    let file = if script != 0 { script } else { read_u64(bprm, o.bprm_file) };
    let inode = read_u64(file, o.file_inode);
    let key =
        DirKey { dev: read_u32(read_u64(inode, o.inode_sb), o.sb_dev), _pad: 0, ino: read_u64(inode, o.inode_ino) };
    let by_inode = unsafe { EXEMPT_EXES.get(&key) }.copied().unwrap_or(0);
    // Allowlisted wins over spared, as in the agent's maps.
    let allowlisted = Exemption::Allowlisted as u32;
    let exemption = if by_inode != allowlisted && allowlisted_path(read_u64(bprm, o.bprm_filename)) {
        allowlisted
    } else {
        by_inode
    };
    if exemption != 0 {
        set_exemption(pid, exemption);
    } else if exemption_of(pid) == Exemption::Spared as u32 {
        // A spared program that runs another is spared no more.
        set_exemption(pid, 0);
    }
}

/// Whether `filename` (`linux_binprm.filename`, the kernel's copy of what
/// `execve` was given) is an allowlisted path.
#[inline(always)]
fn allowlisted_path(filename: u64) -> bool {
    let Some(key) = PATH_KEY.get_ptr_mut(0) else { return false };
    let key = unsafe { &mut *key };
    // Word by word, volatile: a plain `[0; N]` compiles to a byte-by-byte loop.
    let words = key.0.as_mut_ptr().cast::<u64>();
    for i in 0..SCRIPT_PATH_LEN / 8 {
        unsafe { words.add(i).write_volatile(0) };
    }
    let read =
        unsafe { bpf_probe_read_kernel_str(key.0.as_mut_ptr().cast(), SCRIPT_PATH_LEN as u32, filename as *const _) };
    read > 0 && unsafe { EXEMPT_PATHS.get(key) }.is_some()
}

/// Process `pid`'s `Exemption` as a number, 0 if none.
#[inline(always)]
fn exemption_of(pid: u32) -> u32 {
    unsafe { EXEMPT_PIDS.get(&pid) }.copied().unwrap_or(0)
}

/// Sets process `pid`'s `Exemption` (0: none), keeping `ALLOWLISTED_PIDS`
/// never short of the allowlisted entries: counted before one exists,
/// uncounted after it is gone.
#[inline(always)]
fn set_exemption(pid: u32, exemption: u32) {
    let old = exemption_of(pid);
    if old == exemption {
        return;
    }
    let allowlisted = Exemption::Allowlisted as u32;
    if exemption == allowlisted {
        ALLOWLISTED_PIDS.up();
    }
    let done =
        if exemption == 0 { EXEMPT_PIDS.remove(&pid).is_ok() } else { EXEMPT_PIDS.insert(&pid, &exemption, 0).is_ok() };
    // Taken back: a failed insert of an allowlisted entry, or an allowlisted
    // entry replaced or removed.
    if (!done && exemption == allowlisted) || (done && old == allowlisted) {
        ALLOWLISTED_PIDS.down();
    }
}

/// Whether the probes exempted process `pid` (allowlisted, or a child of one).
#[inline(always)]
pub fn is_exempt_pid(pid: u32) -> bool {
    !ALLOWLISTED_PIDS.is_zero() && exemption_of(pid) == Exemption::Allowlisted as u32
}

/// At fork: children of allowlisted processes are allowlisted.
#[inline(always)]
pub fn inherit_exemption(parent: u32, child: u32) {
    if is_exempt_pid(parent) {
        set_exemption(child, Exemption::Allowlisted as u32);
    }
}

/// At exit: the pid may be reused by anyone.
#[inline(always)]
pub fn forget_exemption(pid: u32) {
    set_exemption(pid, 0);
}

#[inline(always)]
fn config() -> Option<GuardConfig> {
    GUARD.get(0).copied()
}

/// What the guard needs to know about a task: small, for the 512-byte stack.
#[derive(Clone, Copy)]
pub struct Subject {
    cgroup_id: u64,
    pid: u32,
    uid: u32,
    audit_session: u32,
    sid: u32,
    flags: u32,
}

impl Subject {
    #[inline(always)]
    pub fn of(task: &TaskInfo) -> Subject {
        Subject {
            cgroup_id: task.cgroup_id,
            pid: task.pid,
            uid: task.uid,
            audit_session: task.audit_session,
            sid: task.sid,
            flags: task.flags,
        }
    }

    /// The current task, reading only what the guard needs.
    #[inline(always)]
    fn current(o: &KernelOffsets) -> Subject {
        let current = Btf::current_task();
        let pid = task::pid(current, o);
        Subject {
            cgroup_id: task::cgroup_id(current, o),
            pid,
            uid: task::uid(current, o),
            audit_session: task::audit_session(current, o),
            sid: task::sid(current, o),
            flags: task::flags(current, pid, o),
        }
    }
}

/// The session the agent would name for `task` (see `SessionKey`).
#[inline(always)]
fn session_of(task: &Subject, cfg: &GuardConfig) -> SessionId {
    let (kind, id) = if task.audit_session != AUDIT_UNSET && task.audit_session != 0 {
        (SessionKind::Login, task.audit_session as u64)
    } else if task.cgroup_id != cfg.root_cgroup_id {
        (SessionKind::Cgroup, task.cgroup_id)
    } else {
        (SessionKind::Posix, task.sid as u64)
    };
    SessionId { kind: kind as u32, _pad: 0, id }
}

#[inline(always)]
fn exempt(task: &Subject, cfg: &GuardConfig) -> bool {
    task.pid <= 1
        || task.flags & (TASK_FLAG_KTHREAD | TASK_FLAG_EXEMPT) != 0
        || task.pid == cfg.agent_pid
        || (cfg.exempt_lists & EXEMPT_LIST_UIDS != 0 && unsafe { EXEMPT_UIDS.get(&task.uid) }.is_some())
        || (cfg.exempt_lists & EXEMPT_LIST_CGROUPS != 0 && unsafe { EXEMPT_CGROUPS.get(&task.cgroup_id) }.is_some())
}

/// The agent's count of changes to the protected directories.
#[inline(always)]
pub fn dirs_epoch() -> u32 {
    GUARD.get(0).map_or(0, |c| c.dirs_epoch)
}

/// Whether device `dev` holds protected directories.
#[inline(always)]
pub fn has_protected_dirs(dev: u32) -> bool {
    unsafe { PROTECTED_DIR_DEVS.get(&dev) }.is_some()
}

/// The protected class of a directory (its inode) on device `dev`, 0 if none.
#[inline(always)]
pub fn dir_class(dev: u32, inode: u64, o: &KernelOffsets) -> u32 {
    let key = DirKey { dev, _pad: 0, ino: read_u64(inode, o.inode_ino) };
    unsafe { PROTECTED_DIRS.get(&key) }.copied().unwrap_or(0)
}

/// After a successful deletion in `class` at `boot_ns`: counts it for the
/// session and acts if a limit is crossed.
#[inline(always)]
pub fn count_deletion(task: &Subject, class: u32, boot_ns: u64) {
    let Some(cfg) = config() else { return };
    if exempt(task, &cfg) {
        return;
    }
    let session = session_of(task, &cfg);
    let counts = match SESSIONS.get_ptr_mut(&session) {
        Some(counts) => counts,
        None => {
            let fresh = SessionCounts { window_start: boot_ns, counts: [0; CLASS_COUNT] };
            // Not over a session another CPU just started.
            let _ = SESSIONS.insert(&session, &fresh, BPF_NOEXIST as u64);
            let Some(counts) = SESSIONS.get_ptr_mut(&session) else { return };
            counts
        }
    };
    let counts = unsafe { &mut *counts };
    if boot_ns.saturating_sub(counts.window_start) > cfg.window_ns {
        counts.window_start = boot_ns;
        counts.counts = [0; CLASS_COUNT];
    }
    // Masked so the verifier sees an index inside the array.
    let class = (class as usize) & (CLASS_COUNT - 1);
    counts.counts[CLASS_ANY as usize] += 1;
    if class != CLASS_ANY as usize {
        counts.counts[class] += 1;
    }
    for c in [class, CLASS_ANY as usize] {
        let limit = cfg.limits[c];
        let count = counts.counts[c];
        if limit != 0 && count >= limit {
            // Once per crossing: a marked session's processes die at their
            // next destructive call in enforce mode, and in monitor mode one
            // record per deletion past the limit would flood the agent.
            if unsafe { MARKED.get(&session) }.is_none() {
                act(task, &cfg, session, GuardReason::LimitCrossed, GuardHook::Deletion, c as u32, count, limit, 0);
            }
            return;
        }
    }
}

/// At the entry of a destructive syscall (the exit of a truncating open), an
/// exec, a raw device write or an io_uring submission that destroys: a
/// marked session's process is killed.
///
/// A tracepoint cannot refuse a call; SIGKILL lands as the call returns, and
/// what it stops before then depends on the call. A buffered write stops
/// before it copies a byte, and an exec before the program runs (checked on
/// Linux 6.18). On a local filesystem `unlink`, `rmdir`, `rename` and
/// truncations complete all the same (checked), but FUSE and SMB wait for
/// their server killably and give up on a request not yet sent (read from
/// their code), and backups often live there: hence these checks at entry.
/// Opens are checked at their exit: an entry program would run at every
/// open on the host.
#[inline(always)]
pub fn check_marked(hook: GuardHook) {
    let Some(cfg) = config() else { return };
    // In monitor mode nothing is done to a marked session's processes, and
    // the agent sees their deletions anyway: a record for each of their
    // syscalls would only double the traffic of a mass deletion.
    if cfg.enforce == 0 || !any_marks() || (hook == GuardHook::Exec && cfg.kill_marked_on_exec == 0) {
        return;
    }
    let o = offsets();
    if dying(o) {
        return;
    }
    let task = Subject::current(o);
    let session = session_of(&task, &cfg);
    let Some(mark) = (unsafe { MARKED.get(&session) }).copied() else { return };
    // A spared process is not killed: acting would only repeat a record at
    // each of its syscalls.
    if exempt(&task, &cfg) || exemption_of(task.pid) == Exemption::Spared as u32 {
        return;
    }
    act(&task, &cfg, session, GuardReason::MarkedSession, hook, mark.class, 0, 0, 0);
}

/// Whether any session is marked: the sum of the writers' counts.
#[inline(always)]
fn any_marks() -> bool {
    let count = |writer: MarkCounter| MARK_COUNTS.get(writer as u32).copied().unwrap_or(0);
    count(MarkCounter::Probes).wrapping_add(count(MarkCounter::Agent)).wrapping_add(count(MarkCounter::MarksCommand))
        != 0
}

/// Adds `delta` (wrapping) to the probes' count of marks, atomically: marks
/// made on two CPUs at once both count.
#[inline(always)]
fn count_marks(delta: u64) {
    if let Some(slot) = MARK_COUNTS.get_ptr_mut(MarkCounter::Probes as u32) {
        // SAFETY: a slot of an array map of u64.
        unsafe { atomic_add(slot, delta) };
    }
}

/// At entry of a raw write to device `dev`.
#[inline(always)]
pub fn check_device_write(dev: u32) {
    let Some(cfg) = config() else { return };
    if cfg.protect_devices == 0 || unsafe { PROTECTED_DEVICES.get(&dev) }.is_none() {
        return check_marked(GuardHook::DeviceWrite);
    }
    let o = offsets();
    if dying(o) {
        return;
    }
    let task = Subject::current(o);
    if exempt(&task, &cfg) {
        return;
    }
    let session = session_of(&task, &cfg);
    // In monitor mode once per session, as for deletion limits: `dd` makes
    // a write per block, and a record each would flood the agent.
    if cfg.enforce == 0 && unsafe { MARKED.get(&session) }.is_some() {
        return;
    }
    act(&task, &cfg, session, GuardReason::ProtectedDevice, GuardHook::DeviceWrite, 0, 0, 0, dev);
}

/// Whether the current process was killed already. io_uring goes on taking
/// the rest of a call's batch after the kill: acting again at each request
/// would only flood the agent with the same decision.
#[inline(always)]
fn dying(o: &KernelOffsets) -> bool {
    task::dying(Btf::current_task(), o)
}

/// Marks the session, kills the current process in enforce mode, and tells
/// the agent.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn act(
    task: &Subject,
    cfg: &GuardConfig,
    session: SessionId,
    reason: GuardReason,
    hook: GuardHook,
    class: u32,
    count: u32,
    limit: u32,
    dev: u32,
) {
    // Timed exactly: the SOC measures its response from this moment.
    let now = clock::exact();
    if reason != GuardReason::MarkedSession {
        let mark = Mark { boot_ns: now, reason: reason as u32, class };
        // Counted before it exists, so the count is never short of the marks
        // (a destructive call in between would skip the lookup); taken back
        // unless new: of two CPUs marking one session, one inserts.
        count_marks(1);
        if MARKED.insert(&session, &mark, BPF_NOEXIST as u64).is_err() {
            count_marks(u64::MAX);
        }
    }
    let killed = cfg.enforce != 0 && exemption_of(task.pid) != Exemption::Spared as u32;
    let signal_ret = if killed { (unsafe { bpf_send_signal(SIGKILL) }) as i32 } else { 0 };
    let o = offsets();
    let Some(record) = Record::<RawGuard>::start_at(EventKind::Guard, now, o) else { return };
    let fixed = record.fixed();
    fixed.session = session;
    fixed.reason = reason as u32;
    fixed.hook = hook as u32;
    fixed.class = class;
    fixed.count = count;
    fixed.limit = limit;
    fixed.killed = killed as u32;
    fixed.signal_ret = signal_ret;
    fixed.dev = dev;
    record.submit_now();
}
