//! How much the in-kernel guard lets through, and how fast it kills:
//! `rm -rf` of a large tree under a protected path on tmpfs, at full speed.
//!
//! - entries lost past the limit: what `rm` removed beyond the class limit
//!   before it died (files and directories; the limit counts both);
//! - decision-to-kill latency: from the probe's decision (the guard record's
//!   kernel timestamp) to the process's exit (its exit record's timestamp).
//!
//! Trees are created while the agent runs (file creation is not an event)
//! and left until the tmpfs is unmounted.

use std::{os::unix::process::ExitStatusExt, path::Path, time::Duration};

use anyhow::{bail, Context};

use super::{
    agent::{in_login_session, time_of, BenchAgent},
    machine, Spread, Tmpfs,
};

const RUNS: usize = 30;
const FILES: usize = 20_000;
const DIRS: usize = 100;
const LIMIT: usize = 1_000;

pub fn run(agent_bin: &Path, results: &Path) -> anyhow::Result<String> {
    let (fs, protected, policy) = protected_tmpfs(LIMIT)?;
    let root = fs.path();
    let agent = BenchAgent::start(agent_bin, &policy, &root)?;

    let mut lost_past_limit = Vec::new();
    let mut latency_us = Vec::new();
    for run in 0..RUNS {
        let tree = protected.join(format!("tree{run}"));
        let entries = make_tree(&tree)?;
        // A relative operand: `rm -rf /protected/...` is itself a destructive
        // command the agent may act on before the limit; this measures the
        // kernel guard alone.
        let (pid, status) = in_login_session(&protected, &format!("exec rm -rf tree{run}"))?;
        if status.signal() != Some(libc::SIGKILL) {
            bail!("run {run}: rm was not killed ({status:?})");
        }
        let left = count_entries(&tree);
        lost_past_limit.push((entries - left) as f64 - LIMIT as f64);
        let is_pid = |e: &serde_json::Value| e["process"]["pid"] == pid;
        let guard = agent
            .until(Duration::from_secs(30), |e| {
                e["type"] == "guard" && e["reason"] == "limit_crossed" && is_pid(e)
            })
            .with_context(|| format!("run {run}: no guard record for pid {pid}; {}", agent.seen()))?;
        let exit = agent
            .until(Duration::from_secs(30), |e| e["type"] == "exit" && is_pid(e))
            .context("no exit record")?;
        let latency = time_of(&exit)
            .zip(time_of(&guard))
            .and_then(|(x, g)| x.duration_since(g).ok());
        latency_us.push(latency.context("timestamps")?.as_secs_f64() * 1e6);
        // Trees stay until the tmpfs goes: removing them here would be a
        // mass deletion under the protected path, which the guard stops.
    }
    drop(agent);

    let (lost_past_limit, latency_us) = (Spread::of(&lost_past_limit), Spread::of(&latency_us));
    let report = serde_json::json!({
        "benchmark": "enforcement",
        "machine": machine(),
        "workload": format!("rm -rf of {FILES} files in {DIRS} directories on tmpfs, protected class limit {LIMIT}"),
        "runs": RUNS,
        "entries_lost_past_limit": lost_past_limit.json(),
        "decision_to_kill_us": latency_us.json(),
    });
    std::fs::write(results, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(format!(
        "| enforcement ({RUNS} runs, `rm -rf` of {FILES} files on tmpfs, limit {LIMIT}) | p50 | p90 | max |\n\
         |---|---|---|---|\n\
         | entries lost past the limit | {} |\n\
         | decision-to-kill latency (µs) | {} |",
        lost_past_limit.cells(&[50.0, 90.0, 100.0], 0),
        latency_us.cells(&[50.0, 90.0, 100.0], 1),
    ))
}

/// A tmpfs with a `protected` directory and a policy protecting it with
/// `limit`: (the tmpfs, the directory, the policy file).
pub(super) fn protected_tmpfs(
    limit: usize,
) -> anyhow::Result<(Tmpfs, std::path::PathBuf, std::path::PathBuf)> {
    let fs = Tmpfs::new()?;
    let protected = fs.path().join("protected");
    std::fs::create_dir(&protected)?;
    let policy = fs.path().join("policy.toml");
    std::fs::write(&policy, policy_text(&protected, limit))?;
    Ok((fs, protected, policy))
}

/// A policy protecting `protected` with `limit`, killing only the process.
fn policy_text(protected: &Path, limit: usize) -> String {
    format!(
        r#"mode = "enforce"
[scoring]
window_secs = 60
mass_deletion = 5000
deletion_rate = 500
distinct_dirs = 500
alert_at = "medium"
act_at = "critical"
[guard]
any_path_limit = 0
protect_devices = false
kill_marked_on_exec = true
[[path_class]]
name = "bench"
paths = ["{}"]
limit = {limit}
[allow]
[action]
target = "process"
[safety]
never_kill = []
max_kills_per_minute = 100000
"#,
        protected.display()
    )
}

/// Makes the tree; returns how many entries (files and directories) it has.
fn make_tree(tree: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir(tree)?;
    for d in 0..DIRS {
        std::fs::create_dir(tree.join(format!("d{d:03}")))?;
    }
    for i in 0..FILES {
        // Empty: no page each, so 30 trees fit in memory.
        std::fs::File::create(tree.join(format!("d{:03}/f{i:05}", i % DIRS)))?;
    }
    Ok(1 + DIRS + FILES)
}

fn count_entries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    1 + entries
        .filter_map(Result::ok)
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_entries(&e.path())
            } else {
                1
            }
        })
        .sum::<usize>()
}
