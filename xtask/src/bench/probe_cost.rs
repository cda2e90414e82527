//! What the probes themselves cost: kernel CPU time in Levee's programs
//! during each overhead workload, from the kernel's own BPF run-time
//! statistics. Wall-clock ratios on a shared VM drown a change of a few
//! percent in noise; this does not, so it is how a probe change's
//! before/after is read (with `LEVEE_BENCH_BASELINE_AGENT`, interleaved in
//! one run). The statistics add two clock reads to every program run: compare
//! builds, not absolute numbers. Every program loaded while the agent
//! starts is taken for its own: run it with no other BPF users starting.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use aya::{
    programs::loaded_programs,
    sys::{enable_stats, Stats},
};

use super::{
    agent::QuietAgent, balanced_rounds, machine, median, monitor_policy, overhead::WORKLOADS, rotation, Tmpfs,
};

/// At least seven (the machines are noisy enough that three rounds moved a
/// median by 15%), rounded up to a multiple of the builds measured, so that
/// each goes first equally often.
const ROUNDS: usize = 7;

/// Run time and runs of every program loaded now, by id.
fn snapshot() -> anyhow::Result<BTreeMap<u32, (String, Duration, u64)>> {
    let mut programs = BTreeMap::new();
    for info in loaded_programs() {
        let info = info.context("reading a loaded program's info")?;
        let name = info.name_as_str().unwrap_or("?").to_owned();
        programs.insert(info.id(), (name, info.run_time(), info.run_count()));
    }
    Ok(programs)
}

/// Per program name: (nanoseconds, runs) between two snapshots, for the
/// programs in `ours` only.
fn spent(
    ours: &HashSet<u32>,
    before: &BTreeMap<u32, (String, Duration, u64)>,
    after: &BTreeMap<u32, (String, Duration, u64)>,
) -> BTreeMap<String, (u64, u64)> {
    let mut by_name = BTreeMap::new();
    for (id, (name, time, runs)) in after.iter().filter(|(id, _)| ours.contains(id)) {
        let (t0, r0) = before.get(id).map_or((Duration::ZERO, 0), |(_, t, r)| (*t, *r));
        let entry = by_name.entry(name.clone()).or_insert((0, 0));
        entry.0 += time.saturating_sub(t0).as_nanos() as u64;
        entry.1 += runs - r0;
    }
    by_name
}

pub fn run(agent_bin: &Path, results: &Path) -> anyhow::Result<String> {
    let mut builds = vec![("levee", agent_bin.to_path_buf())];
    if let Some(baseline) = std::env::var_os(super::overhead::BASELINE_ENV) {
        let baseline = PathBuf::from(baseline);
        anyhow::ensure!(
            baseline.is_file(),
            "{}={}: no such file",
            super::overhead::BASELINE_ENV,
            baseline.display()
        );
        builds.push(("baseline", baseline));
    }
    let fs = Tmpfs::new()?;
    let dir = fs.path();
    let policy = monitor_policy(&dir)?;
    for w in WORKLOADS {
        w.set_up(&dir)?;
    }
    let _stats = enable_stats(Stats::RunTime).context("enabling BPF run-time statistics")?;
    // millis[build][workload]: probe CPU per run; programs: the last round's
    // breakdown.
    let mut millis = vec![vec![Vec::new(); WORKLOADS.len()]; builds.len()];
    let mut programs = vec![vec![BTreeMap::new(); WORKLOADS.len()]; builds.len()];
    let rounds = balanced_rounds(ROUNDS, builds.len());
    for round in 0..rounds {
        for b in rotation(round, builds.len()) {
            let before_start: HashSet<u32> = snapshot()?.into_keys().collect();
            let _agent = QuietAgent::start(&builds[b].1, &policy)?;
            for (i, w) in WORKLOADS.iter().enumerate() {
                let before = snapshot()?;
                let ours: HashSet<u32> = before
                    .keys()
                    .filter(|id| !before_start.contains(id))
                    .copied()
                    .collect();
                (w.run)(&dir).with_context(|| w.name)?;
                let used = spent(&ours, &before, &snapshot()?);
                millis[b][i].push(used.values().map(|(ns, _)| *ns).sum::<u64>() as f64 / 1e6);
                programs[b][i] = used;
            }
        }
    }
    let baseline = builds.len() > 1;
    let mut table = format!(
        "| probe CPU per workload run ({rounds} interleaved rounds, BPF run-time statistics) | levee (ms, median) |{}\n|---|---|{}\n",
        if baseline { " baseline (ms, median) | levee / baseline |" } else { "" },
        if baseline { "---|---|" } else { "" },
    );
    let mut rows = Vec::new();
    for (i, w) in WORKLOADS.iter().enumerate() {
        let ours = median(&millis[0][i]);
        table += &format!("| {} | {ours:.1} |", w.name);
        let mut row = serde_json::json!({ "workload": w.name });
        for (b, (key, _)) in builds.iter().enumerate() {
            let breakdown: serde_json::Map<String, serde_json::Value> = programs[b][i]
                .iter()
                .filter(|(_, (_, runs))| *runs > 0)
                .map(|(name, (ns, runs))| {
                    (
                        name.clone(),
                        serde_json::json!({ "runs": runs, "ns_per_run": *ns as f64 / *runs as f64 }),
                    )
                })
                .collect();
            row[*key] = serde_json::json!({ "probe_ms": millis[b][i], "programs_last_round": breakdown });
        }
        if baseline {
            let theirs = median(&millis[1][i]);
            table += &format!(" {theirs:.1} | {:.2} |", ours / theirs);
        }
        table += "\n";
        rows.push(row);
    }
    let report = serde_json::json!({
        "benchmark": "probe-cost", "machine": machine(), "rounds": rounds,
        "builds": builds.iter().map(|(k, p)| (k.to_string(), p.display().to_string())).collect::<BTreeMap<_, _>>(),
        "workloads": rows,
    });
    std::fs::write(results, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(table)
}
