//! The floor of a tracepoint-based agent: a BPF program that does nothing
//! (`r0 = 0; exit`), attached to every hook Levee attaches to
//! (`agent_common::hooks::ATTACHMENTS`), one program per attachment as Levee
//! has. What it costs is the kernel's traced syscall path plus its dispatch
//! to BPF, which no program on those hooks can avoid; Levee's own work is
//! what it costs above this.
//!
//! Loaded with the `bpf` and `perf_event_open` syscalls directly: two
//! instructions need no object file, and aya loads programs only from one.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use agent_common::hooks::{Hook, ATTACHMENTS};
use anyhow::Context;

/// `BPF_PROG_TYPE_TRACEPOINT` and `BPF_PROG_TYPE_RAW_TRACEPOINT`.
const PROG_TYPE_TRACEPOINT: u32 = 5;
const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
/// `bpf(2)` commands.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
#[cfg(test)]
const BPF_ENABLE_STATS: libc::c_long = 32;
/// `r0 = 0` (`BPF_ALU64 | BPF_MOV | BPF_K`) and `exit`, as instructions.
const RETURN_ZERO: [u64; 2] = [0xb7, 0x95];
/// `PERF_TYPE_TRACEPOINT`, `PERF_SAMPLE_RAW`, `PERF_FLAG_FD_CLOEXEC`.
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `_IOW('$', 8, u32)` from `<linux/perf_event.h>`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// The prefix of `union bpf_attr` that `BPF_PROG_LOAD` reads here; the
/// kernel takes the rest as zero.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
}

/// The `BPF_RAW_TRACEPOINT_OPEN` part of `union bpf_attr`.
#[repr(C)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// `struct perf_event_attr` as of its first version (`PERF_ATTR_SIZE_VER0`).
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// Empty programs on every Levee hook; detached when dropped (closing the
/// descriptors detaches and unloads them).
pub struct EmptyPrograms {
    _programs: Vec<OwnedFd>,
    /// Perf events and raw tracepoint links.
    _attachments: Vec<OwnedFd>,
}

impl EmptyPrograms {
    /// On every hook Levee attaches to, one program per attachment.
    pub fn attach() -> anyhow::Result<EmptyPrograms> {
        Self::on(ATTACHMENTS.iter().map(|&(_, hook)| hook))
    }

    /// One on each of `hooks`.
    pub fn on(hooks: impl IntoIterator<Item = Hook>) -> anyhow::Result<EmptyPrograms> {
        let tracefs = tracefs()?;
        let tracefs = tracefs.as_path();
        let (mut programs, mut attachments) = (Vec::new(), Vec::new());
        for hook in hooks {
            let attached = match hook {
                Hook::Syscall(name) => on_tracepoint(tracefs, "syscalls", name),
                Hook::Tracepoint(category, name) => on_tracepoint(tracefs, category, name),
                Hook::Raw(name) | Hook::IoUring(name) => on_raw_tracepoint(name),
            };
            let (prog, attachment) = attached.with_context(|| format!("an empty program at {hook:?}"))?;
            programs.push(prog);
            attachments.push(attachment);
        }
        Ok(EmptyPrograms {
            _programs: programs,
            _attachments: attachments,
        })
    }
}

/// Where tracefs is, mounted at `/sys/kernel/tracing` if nowhere (as the
/// agent does): tracepoint ids are read from it.
fn tracefs() -> anyhow::Result<PathBuf> {
    let found = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .map(PathBuf::from)
        .into_iter()
        .find(|dir| dir.join("events").is_dir());
    if let Some(dir) = found {
        return Ok(dir);
    }
    let dir = PathBuf::from("/sys/kernel/tracing");
    nix::mount::mount(
        Some("tracefs"),
        &dir,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting tracefs at {}", dir.display()))?;
    Ok(dir)
}

/// A loaded empty program and what attaches it.
type Attached = (OwnedFd, OwnedFd);

fn on_tracepoint(tracefs: &Path, category: &str, name: &str) -> anyhow::Result<Attached> {
    let id_file = tracefs.join("events").join(category).join(name).join("id");
    let id: u64 = std::fs::read_to_string(&id_file)
        .with_context(|| format!("reading {}", id_file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {}", id_file.display()))?;
    let prog = load(PROG_TYPE_TRACEPOINT)?;
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        sample_type: PERF_SAMPLE_RAW,
        read_format: 0,
        // Enabled from the start (no `disabled` bit).
        flags: 0,
        wakeup_events: 1,
        bp_type: 0,
        config1: 0,
    };
    // pid -1, cpu 0: a tracepoint event fires on every CPU whatever its cpu
    // argument; the BPF program attached to it runs for all of them.
    // SAFETY: `attr` is a valid `perf_event_attr` prefix of the size it states.
    let event =
        new_fd(unsafe { libc::syscall(libc::SYS_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC) })
            .context("perf_event_open")?;
    // SAFETY: both descriptors are open and owned here.
    ok(unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) }.into())
        .context("PERF_EVENT_IOC_SET_BPF")?;
    Ok((prog, event))
}

fn on_raw_tracepoint(name: &str) -> anyhow::Result<Attached> {
    let prog = load(PROG_TYPE_RAW_TRACEPOINT)?;
    let name = CString::new(name)?;
    let attr = RawTracepointOpen {
        name: name.as_ptr() as u64,
        prog_fd: prog.as_raw_fd() as u32,
        _pad: 0,
    };
    let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &attr).context("BPF_RAW_TRACEPOINT_OPEN")?;
    Ok((prog, link))
}

fn load(prog_type: u32) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let attr = ProgLoad {
        prog_type,
        insn_cnt: RETURN_ZERO.len() as u32,
        insns: RETURN_ZERO.as_ptr() as u64,
        license: license.as_ptr() as u64,
    };
    bpf(BPF_PROG_LOAD, &attr).context("BPF_PROG_LOAD of an empty program")
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a `bpf_attr` prefix for `cmd` of the size passed.
    new_fd(unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>()) })
}

/// The descriptor a successful call returned.
fn new_fd(ret: libc::c_long) -> std::io::Result<OwnedFd> {
    // SAFETY: a non-negative return of these calls is a new descriptor, ours.
    Ok(unsafe { OwnedFd::from_raw_fd(ok(ret)? as i32) })
}

/// `ret`, or the error a negative `ret` stands for.
fn ok(ret: libc::c_long) -> std::io::Result<libc::c_long> {
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How often the empty program at each of Levee's attachments ran,
    /// from its fdinfo (counted while run statistics are on).
    fn runs(programs: &EmptyPrograms) -> Vec<(Hook, u64)> {
        let run_cnt = |fd: &OwnedFd| -> u64 {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("run_cnt:"))
                .map_or(0, |n| n.trim().parse().unwrap())
        };
        ATTACHMENTS
            .iter()
            .zip(&programs._programs)
            .map(|(&(_, hook), fd)| (hook, run_cnt(fd)))
            .collect()
    }

    /// The floor must run where Levee's probes run, or it measures nothing:
    /// each `unlink` runs the programs at its own hooks. Many of them, for
    /// the runs to stand out from what reading the counts costs.
    #[test]
    fn empty_programs_run_at_levee_hooks() {
        const FILES: u64 = 1000;
        let programs = EmptyPrograms::attach().unwrap();
        // Counts runs while this descriptor is open (`BPF_STATS_RUN_TIME`).
        let stats = bpf(BPF_ENABLE_STATS, &0u32).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<_> = (0..FILES).map(|i| dir.path().join(i.to_string())).collect();
        for file in &files {
            std::fs::write(file, b"x").unwrap();
        }
        let before = runs(&programs);
        for file in &files {
            std::fs::remove_file(file).unwrap();
        }
        let after = runs(&programs);
        let unlink_hooks: Vec<&str> = ATTACHMENTS
            .iter()
            .filter_map(|(_, hook)| match hook {
                Hook::Syscall(name) if name.ends_with("_unlink") => Some(*name),
                _ => None,
            })
            .collect();
        assert!(!unlink_hooks.is_empty(), "Levee hooks no unlink");
        for name in unlink_hooks {
            let ran = |runs: &[(Hook, u64)]| -> u64 {
                runs.iter()
                    .filter(|(hook, _)| matches!(hook, Hook::Syscall(n) if *n == name))
                    .map(|(_, n)| n)
                    .sum()
            };
            let delta = ran(&after) - ran(&before);
            assert!(
                delta >= FILES,
                "the empty program at {name} ran {delta} times for {FILES} unlinks"
            );
        }
        drop(stats);
    }
}
