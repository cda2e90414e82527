//! Loading Levee's eBPF probes and attaching them to their tracepoints.
//!
//! The probe object is built by `cargo xtask build-ebpf` and embedded in the
//! agent at compile time. Kernel struct offsets come from BTF ([`btf`]) and
//! are set as a read-only global before load, so the verifier sees constants.

pub mod btf;
pub mod guard;
pub mod marks;
pub mod tracefs;

use std::{path::PathBuf, time::Duration};

use agent_common::{
    event::RECORD_MAX,
    hooks::{Hook, ATTACHMENTS},
    Counter, SyscallNumbers,
};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{Program, ProgramError, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use tracing::{debug, info, warn};

/// The probe object, or empty when the agent was built without `cargo xtask`.
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/levee-probes.o"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this levee-agent was built without its probes; build it with `cargo xtask build`")]
    NotEmbedded,
    #[error("levee-agent must run as root to load eBPF programs (running as uid {0})")]
    NotRoot(u32),
    #[error(transparent)]
    Tracefs(#[from] tracefs::MountError),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the probe object failed (is BPF available in this kernel?): {0}")]
    Load(#[from] aya::EbpfError),

    #[error("the probe object has no program `{0}`")]
    MissingProgram(&'static str),
    #[error("the probe object has no map `{0}`")]
    MissingMap(&'static str),
    #[error("program `{program}` at {hook}: {source}")]
    Program {
        program: &'static str,
        hook: String,
        source: ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// When the kernel wakes the agent to read new records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// At any record sent when the agent has caught up (as the kernel does
    /// by default): the least latency, but under a steady trickle of events
    /// every record costs the traced process an interrupt and the agent a
    /// context switch.
    EveryRecord,
    /// At once for what the in-kernel guard did; for the rest when a
    /// sixteenth of the ring buffer is unread. The agent also reads the ring
    /// every `poll` while records come, so none waits longer than that; after
    /// a read that finds none, it waits twice as long each time, up to
    /// [`IDLE_POLL`].
    Batched { poll: Duration },
}

/// The longest the agent waits between reads of the ring buffer when no
/// record came: a poll every 10 ms cost an idle agent 1% of a core on a VM.
pub const IDLE_POLL: Duration = Duration::from_millis(100);

impl Wakeup {
    /// How long the agent waits before it reads the ring buffer without
    /// being woken, after a read that found `records` and came `last` after
    /// the one before: the batching delay while records come, backing off to
    /// [`IDLE_POLL`] while none do; for `EveryRecord`, a safety net for a
    /// lost wake-up.
    pub fn next_poll(self, records: usize, last: Duration) -> Duration {
        match self {
            Wakeup::EveryRecord => Duration::from_secs(1),
            Wakeup::Batched { poll } if records > 0 => poll,
            Wakeup::Batched { poll } => (last * 2).clamp(poll, IDLE_POLL.max(poll)),
        }
    }

    /// The probes' `WAKE_BYTES`: unread bytes at which a routine record wakes
    /// the agent, at least one record.
    fn wake_bytes(self, ring_buffer_bytes: u32) -> u64 {
        let threshold = match self {
            Wakeup::EveryRecord => 0,
            Wakeup::Batched { .. } => u64::from(ring_buffer_bytes / 16),
        };
        threshold.max(RECORD_MAX as u64)
    }
}

/// Whether the kernel was booted with its 32-bit syscalls turned off
/// (`ia32_emulation=0`, Linux 6.7).
fn ia32_disabled_at_boot() -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|line| {
        line.split_whitespace()
            .filter_map(|arg| arg.strip_prefix("ia32_emulation="))
            .any(|value| {
                matches!(
                    value.to_ascii_lowercase().as_str(),
                    "0" | "n" | "no" | "off" | "false"
                )
            })
    })
}

/// What the agent logs when it runs without its io_uring probes.
pub const IO_URING_BLIND: &str =
    "io_uring's deletions, renames, truncations and block-device writes and erasures will NOT be seen";

/// This architecture's numbers for the syscalls whose exits share a probe.
const SYSCALLS: SyscallNumbers = SyscallNumbers {
    rmdir: libc::SYS_rmdir as i32,
    unlinkat: libc::SYS_unlinkat as i32,
    renameat: libc::SYS_renameat as i32,
    renameat2: libc::SYS_renameat2 as i32,
    ftruncate: libc::SYS_ftruncate as i32,
    open: libc::SYS_open as i32,
    openat2: libc::SYS_openat2 as i32,
    creat: libc::SYS_creat as i32,
};

/// The event ring buffer's default size. The agent maps it twice (it wraps
/// around), so it counts double in the agent's resident memory; at the
/// agent's speed and its 10 ms polls it holds far more than a poll's worth.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 * 1024 * 1024;

/// How to load the probes.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Kernel BTF to resolve struct offsets from.
    pub btf_path: PathBuf,
    /// Size of the event ring buffer in bytes: a power of two, at least a page.
    pub ring_buffer_bytes: u32,
    /// When the kernel wakes the agent.
    pub wakeup: Wakeup,
}

/// The loaded and attached probes. Dropping it detaches them.
pub struct Probes {
    ebpf: Ebpf,
    wakeup: Wakeup,
}

impl Probes {
    pub fn load(options: &LoadOptions) -> Result<Self, ProbeError> {
        if PROBE_OBJECT.is_empty() {
            return Err(ProbeError::NotEmbedded);
        }
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(ProbeError::NotRoot(uid.as_raw()));
        }
        if tracefs::ensure_mounted()? {
            info!(path = tracefs::TRACEFS, "mounted tracefs");
        }
        let btf = btf::KernelBtf::open(&options.btf_path)?;
        if btf.has_ia32_syscalls() && !ia32_disabled_at_boot() {
            warn!("32-bit syscalls (a 32-bit program, or `int $0x80`) will NOT be seen: this kernel takes them, and they fire no syscall tracepoint; boot with ia32_emulation=0 where nothing 32-bit runs");
        }
        let mut offsets = btf.kernel_offsets()?;
        let io_uring = btf.io_uring_offsets();
        match &io_uring {
            Ok(found) => offsets.io_uring = *found,
            Err(btf::BtfError::NoType("io_kiocb")) => {
                info!("this kernel has no io_uring: nothing to watch there")
            }
            Err(error) => warn!(
                %error,
                "{IO_URING_BLIND}: this kernel lays out its requests as Levee does not know"
            ),
        }
        debug!(?offsets, "resolved kernel struct offsets from BTF");
        let wake_bytes = options.wakeup.wake_bytes(options.ring_buffer_bytes);
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("WAKE_BYTES", &wake_bytes, true)
            .override_global("SYSCALLS", &SYSCALLS, true)
            .map_max_entries("EVENTS", options.ring_buffer_bytes)
            .load(PROBE_OBJECT)?;
        // io_uring's hooks are optional: the agent runs without them, saying
        // so, and after one fails attaches none of the rest (an older
        // kernel's tracepoints of the same names pass other arguments).
        let mut io_uring_hooks = io_uring.is_ok();
        for &(program, hook) in ATTACHMENTS {
            let optional = matches!(hook, Hook::IoUring(_));
            if optional && !io_uring_hooks {
                continue;
            }
            let prog = ebpf
                .program_mut(program)
                .ok_or(ProbeError::MissingProgram(program))?;
            match attach(prog, hook) {
                Ok(()) => debug!(program, ?hook, "attached"),
                Err(error) if optional => {
                    warn!(program, ?hook, %error, "{IO_URING_BLIND}");
                    io_uring_hooks = false;
                }
                Err(source) => {
                    return Err(ProbeError::Program {
                        program,
                        hook: format!("{hook:?}"),
                        source,
                    })
                }
            }
        }
        // How far each program is from the verifier's limit: a kernel whose
        // verifier explores more would reject the heaviest first.
        let verified = ebpf.programs().filter_map(|(name, prog)| {
            let count = prog.info().ok()?.verified_instruction_count()?;
            debug!(program = name, instructions = count, "verified");
            Some((count, name.to_owned()))
        });
        if let Some((instructions, program)) = verified.max() {
            info!(
                program,
                instructions, "heaviest program for the verifier (its limit: 1,000,000 instructions)"
            );
        }
        Ok(Self {
            ebpf,
            wakeup: options.wakeup,
        })
    }

    /// When the kernel wakes the agent, as loaded.
    pub fn wakeup(&self) -> Wakeup {
        self.wakeup
    }

    /// The event ring buffer. Can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: "EVENTS",
            source,
        })
    }

    /// The in-kernel guard's maps. Can be taken once.
    pub fn take_guard(&mut self) -> Result<guard::GuardMaps, ProbeError> {
        guard::GuardMaps::take(&mut self.ebpf)
    }

    /// The kernel-side loss counters. Can be taken once.
    pub fn take_counters(&mut self) -> Result<LossCounters, ProbeError> {
        let map = self
            .ebpf
            .take_map("COUNTERS")
            .ok_or(ProbeError::MissingMap("COUNTERS"))?;
        let map = PerCpuArray::try_from(map).map_err(|source| ProbeError::Map {
            name: "COUNTERS",
            source,
        })?;
        Ok(LossCounters { map })
    }
}

/// Loads `program` (once, however many hooks it serves) and attaches it.
fn attach(prog: &mut Program, hook: Hook) -> Result<(), ProgramError> {
    match hook {
        Hook::Syscall(name) => loaded::<TracePoint>(prog)?.attach("syscalls", name).map(drop),
        Hook::Tracepoint(category, name) => loaded::<TracePoint>(prog)?.attach(category, name).map(drop),
        Hook::Raw(name) | Hook::IoUring(name) => loaded::<RawTracePoint>(prog)?.attach(name).map(drop),
    }
}

/// A program of type `P`, loaded into the kernel if it was not yet.
fn loaded<'p, P: Loadable>(prog: &'p mut Program) -> Result<&'p mut P, ProgramError>
where
    &'p mut P: TryFrom<&'p mut Program, Error = ProgramError>,
{
    let prog: &mut P = prog.try_into()?;
    if !prog.is_loaded() {
        prog.load_now()?;
    }
    Ok(prog)
}

/// The two program types Levee attaches, seen alike for loading.
trait Loadable {
    fn is_loaded(&self) -> bool;
    fn load_now(&mut self) -> Result<(), ProgramError>;
}

macro_rules! loadable {
    ($($t:ty),*) => {$(
        impl Loadable for $t {
            fn is_loaded(&self) -> bool {
                self.fd().is_ok()
            }
            fn load_now(&mut self) -> Result<(), ProgramError> {
                self.load()
            }
        }
    )*};
}
loadable!(TracePoint, RawTracePoint);

/// What the probes could not deliver, summed over CPUs.
pub struct LossCounters {
    map: PerCpuArray<MapData, u64>,
}

impl LossCounters {
    /// Current totals for every [`Counter`].
    pub fn read(&self) -> Result<Vec<(Counter, u64)>, aya::maps::MapError> {
        Counter::ALL
            .iter()
            .map(|&counter| {
                let per_cpu = self.map.get(&(counter as u32), 0)?;
                Ok((counter, per_cpu.iter().sum()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_while_no_record_comes_and_return_when_one_does() {
        let batched = Wakeup::Batched {
            poll: Duration::from_millis(10),
        };
        let ms = Duration::from_millis;
        assert_eq!(batched.next_poll(1, Duration::ZERO), ms(10));
        assert_eq!(batched.next_poll(0, ms(10)), ms(20));
        assert_eq!(batched.next_poll(0, ms(80)), IDLE_POLL);
        assert_eq!(batched.next_poll(0, IDLE_POLL), IDLE_POLL);
        assert_eq!(batched.next_poll(3, IDLE_POLL), ms(10));
        // A batching delay longer than IDLE_POLL is kept as it is.
        let slow = Wakeup::Batched { poll: ms(500) };
        assert_eq!(slow.next_poll(0, ms(500)), ms(500));
        assert_eq!(Wakeup::EveryRecord.next_poll(0, ms(1)), Duration::from_secs(1));
    }
}
