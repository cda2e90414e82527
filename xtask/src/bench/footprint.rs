//! What the agent itself holds and uses: resident memory after a long steady
//! load (10,000 deletions a second for 10 minutes by default), its CPU share
//! under that load, and its CPU share when the host is idle.
//!
//! `LEVEE_BENCH_FOOTPRINT_SECS` shortens the loaded phase for a quick look;
//! the README quotes the full run.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::{
    agent::{cpu_time, QuietAgent},
    machine, monitor_policy, Tmpfs,
};

const RATE: u64 = 10_000;
/// Deletions per pacing step: 100 steps a second.
const BATCH: u64 = 100;
const DEFAULT_SECS: u64 = 600;
const IDLE_SECS: u64 = 60;
const DIRS: u64 = 100;
const TARGET_RSS_MB: f64 = 40.0;
const TARGET_IDLE_CPU: f64 = 0.01;

/// Memory (from `/proc`) and CPU time of a process.
struct Usage {
    rss_kb: u64,
    anon_kb: u64,
    file_and_shmem_kb: u64,
    cpu: Duration,
}

impl Usage {
    fn of(pid: u32) -> anyhow::Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(Usage {
            rss_kb: kb("VmRSS:"),
            anon_kb: kb("RssAnon:"),
            file_and_shmem_kb: kb("RssFile:") + kb("RssShmem:"),
            cpu: cpu_time(pid)?,
        })
    }
}

pub fn run(agent_bin: &Path, results: &Path) -> anyhow::Result<String> {
    let secs = match std::env::var("LEVEE_BENCH_FOOTPRINT_SECS") {
        Ok(s) => s.parse().context("LEVEE_BENCH_FOOTPRINT_SECS")?,
        Err(_) => DEFAULT_SECS,
    };
    let fs = Tmpfs::new()?;
    let dir = fs.path();
    let agent = QuietAgent::start(agent_bin, &monitor_policy(&dir)?)?;
    let pid = agent.pid();
    for d in 0..DIRS {
        std::fs::create_dir(dir.join(format!("d{d}")))?;
    }

    let events_before = agent.metric("levee_agent_events_total", "")?;
    let start_usage = Usage::of(pid)?;
    let start = Instant::now();
    let mut peak_rss_kb = start_usage.rss_kb;
    let mut step: u64 = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        for i in 0..BATCH {
            let n = step * BATCH + i;
            let file = dir.join(format!("d{}/f{n}", n % DIRS));
            std::fs::File::create(&file)?;
            std::fs::remove_file(&file)?;
        }
        step += 1;
        if step.is_multiple_of(500) {
            peak_rss_kb = peak_rss_kb.max(Usage::of(pid)?.rss_kb);
        }
        // Paced against the start, so the rate holds however long a step took.
        let due = start + Duration::from_micros(step * BATCH * 1_000_000 / RATE);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let loaded_s = start.elapsed().as_secs_f64();
    let loaded = Usage::of(pid)?;
    peak_rss_kb = peak_rss_kb.max(loaded.rss_kb);
    let events = agent.metric("levee_agent_events_total", "")? - events_before;
    let loaded_cpu = (loaded.cpu - start_usage.cpu).as_secs_f64() / loaded_s;

    let idle_start = Instant::now();
    std::thread::sleep(Duration::from_secs(IDLE_SECS));
    let idle = Usage::of(pid)?;
    let idle_cpu = (idle.cpu - loaded.cpu).as_secs_f64() / idle_start.elapsed().as_secs_f64();
    let dropped = agent.metric("levee_agent_dropped_events", "")?;
    drop(agent);

    let mb = |kb: u64| kb as f64 / 1024.0;
    let rss_mb = mb(loaded.rss_kb);
    let report = serde_json::json!({
        "benchmark": "footprint",
        "machine": machine(),
        "load": format!("{RATE} deletions/s on tmpfs for {secs} s, shipped policy in monitor mode"),
        "events_per_sec_seen": events / loaded_s,
        "rss_mb_after_load": rss_mb,
        "rss_mb_peak": mb(peak_rss_kb),
        "rss_anon_mb": mb(loaded.anon_kb),
        "rss_file_and_shmem_mb": mb(loaded.file_and_shmem_kb),
        "cpu_share_under_load": loaded_cpu,
        "cpu_share_idle": idle_cpu,
        "idle_secs": IDLE_SECS,
        "dropped": dropped,
        "target_rss_mb": TARGET_RSS_MB,
        "target_idle_cpu_share": TARGET_IDLE_CPU,
        "met": rss_mb <= TARGET_RSS_MB && idle_cpu <= TARGET_IDLE_CPU,
    });
    std::fs::write(results, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(format!(
        "| footprint ({RATE} events/s for {secs} s, then {IDLE_SECS} s idle) | measured | target |\n\
         |---|---|---|\n\
         | resident memory after the load (MB) | {rss_mb:.1} (peak {:.1}; heap and stacks {:.1}, mapped ring buffer and binary {:.1}) | ≤ {TARGET_RSS_MB:.0} |\n\
         | CPU under the load (share of one core) | {:.2}% ({:.0} events/s seen, {dropped:.0} dropped) | |\n\
         | CPU when idle (share of one core) | {:.2}% | ≤ {:.0}% |",
        mb(peak_rss_kb),
        mb(loaded.anon_kb),
        mb(loaded.file_and_shmem_kb),
        loaded_cpu * 100.0,
        events / loaded_s,
        idle_cpu * 100.0,
        TARGET_IDLE_CPU * 100.0,
    ))
}
