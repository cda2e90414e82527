//! How many events a second the agent decodes, attributes and scores, on one
//! core, with nothing lost.
//!
//! No single workload thread makes events as fast as the agent takes them,
//! so the probes are driven ahead of it: the agent (pinned to one CPU, with a
//! ring buffer large enough for the whole backlog) is stopped, a real
//! workload on another CPU deletes `EVENTS` files, and the agent is resumed.
//! The time it takes to work through the backlog, read from its own event
//! counter, is its throughput; the kernel's drop counter must stay at 0.
//! The median of `RUNS` runs is the result, with the agent's CPU time over
//! each drain to tell a slow CPU from an agent kept off it.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;

use super::{
    agent::{cpu_time, pin_to, QuietAgent},
    machine, median, monitor_policy, Spread, Tmpfs,
};

const EVENTS: usize = 1_000_000;
const DIRS: usize = 1_000;
/// Holds the backlog: a deletion record is about 200 bytes.
const RING_BYTES: &str = "1073741824";
const TARGET_PER_SEC: f64 = 1_000_000.0;
const DELETIONS: &str = "kind=\"deletion\"";
/// How long the agent's count may stand still before the backlog counts as
/// taken.
const STALL: Duration = Duration::from_secs(2);

/// Runs, each with a fresh agent: one run's rate swings by up to two on
/// these shared VMs.
const RUNS: usize = 5;

/// One run's backlog and how the agent took it.
struct Drain {
    taken: f64,
    /// Seconds from resuming the agent to its last deletion.
    drained: f64,
    /// The agent's CPU time over those seconds: a slow run with as much CPU
    /// time was a slow CPU, one with less was an agent kept off it.
    agent_cpu: f64,
    /// Seconds the workload took to make the backlog.
    produced: f64,
    dropped: f64,
}

impl Drain {
    fn rate(&self) -> f64 {
        self.taken / self.drained
    }

    fn rate_per_cpu_second(&self) -> f64 {
        self.taken / self.agent_cpu
    }
}

pub fn run(agent_bin: &Path, results: &Path) -> anyhow::Result<String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(cpus >= 2, "the throughput benchmark needs two CPUs");
    let fs = Tmpfs::new()?;
    let dir = fs.path();
    let policy = monitor_policy(&dir)?;
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let run = drain(agent_bin, &policy, &dir, cpus);
        pin_to(0..cpus).context("unpinning the workload")?;
        runs.push(run?);
    }
    let all = |f: fn(&Drain) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let (rates, per_cpu) = (all(Drain::rate), all(Drain::rate_per_cpu_second));
    let rate = median(&rates);
    let spread = Spread::of(&rates);
    let (slowest, fastest) = (spread.at(0.0), spread.at(100.0));
    let taken = all(|r| r.taken);
    let dropped: f64 = runs.iter().map(|r| r.dropped).sum();
    let complete = taken.iter().all(|&t| t >= EVENTS as f64);
    let report = serde_json::json!({
        "benchmark": "event throughput",
        "machine": machine(),
        "method": "agent pinned to one CPU and stopped; a workload on another CPU deletes the files; \
                   the agent resumed and timed through the backlog by its own event counter; \
                   a fresh agent per run",
        "events": EVENTS,
        "runs": RUNS,
        "events_taken": taken,
        "kernel_produce_s": all(|r| r.produced),
        "agent_drain_s": all(|r| r.drained),
        "agent_cpu_s": all(|r| r.agent_cpu),
        "events_per_sec": rates,
        "events_per_sec_median": rate,
        "events_per_agent_cpu_sec": per_cpu,
        "dropped": dropped,
        "target_events_per_sec": TARGET_PER_SEC,
        "met": rate >= TARGET_PER_SEC && complete && dropped == 0.0,
    });
    std::fs::write(results, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(format!(
        "| event throughput (one core, {EVENTS} deletions; {RUNS} runs) | median | range | dropped | target |\n\
         |---|---|---|---|---|\n\
         | agent: decode, attribute, score (events/s; all taken in every run: {complete}) | {rate:.0} | {slowest:.0}–{fastest:.0} | {dropped:.0} | ≥ {TARGET_PER_SEC:.0}, none dropped |\n\
         | the same per second of the agent's CPU time | {:.0} | | | |\n\
         | kernel: one workload thread producing them (events/s) | {:.0} | | | |\n",
        median(&per_cpu),
        median(&all(|r| EVENTS as f64 / r.produced)),
    ))
}

/// One run: a fresh agent on the last CPU, stopped while the workload
/// (this thread, pinned to CPU 0) makes the backlog, then timed through it.
fn drain(agent_bin: &Path, policy: &Path, dir: &Path, cpus: usize) -> anyhow::Result<Drain> {
    let (workload_cpu, agent_cpu) = (0, cpus - 1);
    let agent = QuietAgent::start_on(
        agent_bin,
        policy,
        &["--ring-buffer-bytes", RING_BYTES],
        Some(agent_cpu),
    )?;
    pin_to(workload_cpu..workload_cpu + 1).context("pinning the workload")?;
    let files = dir.join("files");
    for d in 0..DIRS {
        std::fs::create_dir_all(files.join(format!("d{d:03}")))?;
    }
    let path = |i: usize| files.join(format!("d{:03}/f{i}", i % DIRS));
    for i in 0..EVENTS {
        std::fs::File::create(path(i))?;
    }

    let before = agent.metric("levee_agent_events_total", DELETIONS)?;
    agent.signal(Signal::SIGSTOP)?;
    let produced = Instant::now();
    for i in 0..EVENTS {
        std::fs::remove_file(path(i))?;
    }
    let produced = produced.elapsed().as_secs_f64();
    let cpu_before = cpu_time(agent.pid())?;
    let resumed = Instant::now();
    agent.signal(Signal::SIGCONT)?;
    // Until every deletion is in, or the count stands still: a lost record
    // never arrives, and the drop counter below tells why.
    let (mut seen, mut moved, mut cpu_at_last) = (before, resumed, cpu_before);
    let deadline = resumed + Duration::from_secs(300);
    while seen < before + EVENTS as f64 && moved.elapsed() < STALL {
        if Instant::now() > deadline {
            bail!("the agent did not work through {EVENTS} deletions in 300 s");
        }
        std::thread::sleep(Duration::from_millis(10));
        let now = agent.metric("levee_agent_events_total", DELETIONS)?;
        if now != seen {
            (seen, moved, cpu_at_last) = (now, Instant::now(), cpu_time(agent.pid())?);
        }
    }
    let taken = seen - before;
    anyhow::ensure!(
        taken > 0.0,
        "the agent took no deletion in the 2 s after it was resumed"
    );
    Ok(Drain {
        taken,
        drained: (moved - resumed).as_secs_f64(),
        agent_cpu: cpu_at_last.saturating_sub(cpu_before).as_secs_f64(),
        produced,
        dropped: agent.dropped_events()?,
    })
}
