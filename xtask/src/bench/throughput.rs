//! How many events a second the agent decodes, attributes and scores, on one
//! core, with nothing lost.
//!
//! No single workload thread makes events as fast as the agent takes them,
//! so the probes are driven ahead of it: the agent (pinned to one CPU, with a
//! ring buffer large enough for the whole backlog) is stopped, a real
//! workload on another CPU deletes `EVENTS` files, and the agent is resumed.
//! The time it takes to work through the backlog, read from its own event
//! counter, is its throughput; the kernel's drop counter must stay at 0.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;

use super::{
    agent::{pin_to, QuietAgent},
    machine, monitor_policy, Tmpfs,
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

pub fn run(agent_bin: &Path, results: &Path) -> anyhow::Result<String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(cpus >= 2, "the throughput benchmark needs two CPUs");
    let (workload_cpu, agent_cpu) = (0, cpus - 1);
    let fs = Tmpfs::new()?;
    let dir = fs.path();
    let policy = monitor_policy(&dir)?;
    let agent = QuietAgent::start_on(
        agent_bin,
        &policy,
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
    let produce_s = produced.elapsed().as_secs_f64();
    let resumed = Instant::now();
    agent.signal(Signal::SIGCONT)?;
    // Until every deletion is in, or the count stands still: a lost record
    // never arrives, and the drop counter below tells why.
    let (mut seen, mut moved) = (before, resumed);
    let deadline = resumed + Duration::from_secs(300);
    while seen < before + EVENTS as f64 && moved.elapsed() < STALL {
        if Instant::now() > deadline {
            bail!("the agent did not work through {EVENTS} deletions in 300 s");
        }
        std::thread::sleep(Duration::from_millis(10));
        let now = agent.metric("levee_agent_events_total", DELETIONS)?;
        if now != seen {
            (seen, moved) = (now, Instant::now());
        }
    }
    let (taken, drained) = (seen - before, (moved - resumed).as_secs_f64());
    anyhow::ensure!(
        taken > 0.0,
        "the agent took no deletion in the 2 s after it was resumed"
    );
    let dropped = agent.dropped_events()?;
    drop(agent);
    pin_to(0..cpus).context("unpinning the workload")?;

    let rate = taken / drained;
    let report = serde_json::json!({
        "benchmark": "event throughput",
        "machine": machine(),
        "method": "agent pinned to one CPU and stopped; a workload on another CPU deletes the files; \
                   the agent resumed and timed through the backlog by its own event counter",
        "events": EVENTS,
        "events_taken": taken,
        "kernel_produce_s": produce_s,
        "agent_drain_s": drained,
        "events_per_sec": rate,
        "dropped": dropped,
        "target_events_per_sec": TARGET_PER_SEC,
        "met": rate >= TARGET_PER_SEC && taken >= EVENTS as f64 && dropped == 0.0,
    });
    std::fs::write(results, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(format!(
        "| event throughput (one core, {EVENTS} deletions) | events/s | dropped | target |\n\
         |---|---|---|---|\n\
         | agent: decode, attribute, score ({taken:.0} taken) | {rate:.0} | {dropped:.0} | ≥ {TARGET_PER_SEC:.0}, none dropped |\n\
         | kernel: one workload thread producing them | {:.0} | | |",
        EVENTS as f64 / produce_s
    ))
}
