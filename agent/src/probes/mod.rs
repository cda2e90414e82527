//! Loading Levee's eBPF probes and attaching them to their tracepoints.
//!
//! The probe object is built by `cargo xtask build-ebpf` and embedded in the
//! agent at compile time. Kernel struct offsets come from BTF ([`btf`]) and
//! are set as a read-only global before load, so the verifier sees constants.

pub mod btf;
pub mod tracefs;

use std::path::PathBuf;

use agent_common::Counter;
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use tracing::{debug, info};

/// The probe object, or empty when the agent was built without `cargo xtask`.
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/levee-probes.o"));

/// Which program runs at which tracepoint. One program may serve several.
const ATTACHMENTS: &[(&str, &str)] = &[
    ("unlink_enter", "sys_enter_unlink"),
    ("unlinkat_enter", "sys_enter_unlinkat"),
    ("rmdir_enter", "sys_enter_rmdir"),
    ("deletion_exit", "sys_exit_unlink"),
    ("deletion_exit", "sys_exit_unlinkat"),
    ("deletion_exit", "sys_exit_rmdir"),
];

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
    #[error("program `{program}` at tracepoint syscalls/{tracepoint}: {source}")]
    Program {
        program: &'static str,
        tracepoint: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// How to load the probes.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Kernel BTF to resolve struct offsets from.
    pub btf_path: PathBuf,
    /// Size of the event ring buffer in bytes: a power of two, at least a page.
    pub ring_buffer_bytes: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            btf_path: PathBuf::from("/sys/kernel/btf/vmlinux"),
            ring_buffer_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The loaded and attached probes. Dropping it detaches them.
pub struct Probes {
    ebpf: Ebpf,
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
        let offsets = btf::kernel_offsets(&options.btf_path)?;
        debug!(?offsets, "resolved kernel struct offsets from BTF");
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("EVENTS", options.ring_buffer_bytes)
            .load(PROBE_OBJECT)?;
        for &(program, tracepoint) in ATTACHMENTS {
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(ProbeError::MissingProgram(program))?
                .try_into()
                .map_err(|source| ProbeError::Program {
                    program,
                    tracepoint,
                    source,
                })?;
            // A program serving several tracepoints is loaded once.
            if prog.fd().is_err() {
                prog.load().map_err(|source| ProbeError::Program {
                    program,
                    tracepoint,
                    source,
                })?;
            }
            prog.attach("syscalls", tracepoint)
                .map_err(|source| ProbeError::Program {
                    program,
                    tracepoint,
                    source,
                })?;
            debug!(program, tracepoint, "attached");
        }
        Ok(Self { ebpf })
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
