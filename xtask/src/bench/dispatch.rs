//! What a hooked syscall costs before any program does anything: the floor
//! in `overhead`, taken apart. A loop of small `pwrite`s on tmpfs is timed
//! with empty programs (see `floor`) on nothing; on another syscall's entry
//! and exit, which sends every syscall down the kernel's traced path; on
//! `pwrite64`'s entry too; and on its exit as well. Each step's cost is the
//! difference between neighbours in one round, whose states run back to
//! back, the order rotating.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::Path,
    time::{Duration, Instant},
};

use agent_common::hooks::Hook;

use super::{
    balanced_rounds, floor::EmptyPrograms, machine, median, overhead::SMALL_FILE, rotation, MedianInterval,
    Tmpfs,
};

/// Calls per timed run: half a second here.
const CALLS: u32 = 500_000;
/// At least this many rounds, rounded up to a multiple of the states.
const ROUNDS: usize = 30;
/// After attaching or detaching, for the kernel's deferred work to land
/// before the timing starts.
const SETTLE: Duration = Duration::from_millis(300);

const TRACED: [Hook; 2] = [
    Hook::Syscall("sys_enter_getppid"),
    Hook::Syscall("sys_exit_getppid"),
];
const ENTRY: Hook = Hook::Syscall("sys_enter_pwrite64");
const EXIT: Hook = Hook::Syscall("sys_exit_pwrite64");

/// Each state, and what the step to it from the one before adds.
const STATES: [(&str, &[Hook]); 4] = [
    ("no program anywhere", &[]),
    (
        "the traced path: empty programs on `getppid`'s entry and exit only",
        &TRACED,
    ),
    (
        "dispatch at entry: one on `pwrite64`'s entry too",
        &[TRACED[0], TRACED[1], ENTRY],
    ),
    (
        "dispatch at exit: one on its exit as well",
        &[TRACED[0], TRACED[1], ENTRY, EXIT],
    ),
];

pub fn run(_agent: &Path, results: &Path) -> anyhow::Result<String> {
    let fs = Tmpfs::new()?;
    let file = File::create(fs.path().join("small"))?;
    let time = || -> anyhow::Result<f64> {
        let start = Instant::now();
        for _ in 0..CALLS {
            file.write_all_at(SMALL_FILE, 0)?;
        }
        Ok(start.elapsed().as_nanos() as f64 / f64::from(CALLS))
    };
    time()?;
    let rounds = balanced_rounds(ROUNDS, STATES.len());
    // ns[state][round]: nanoseconds per call.
    let mut ns = vec![Vec::with_capacity(rounds); STATES.len()];
    for round in 0..rounds {
        for s in rotation(round, STATES.len()) {
            let programs = EmptyPrograms::on(STATES[s].1.iter().copied())?;
            std::thread::sleep(SETTLE);
            ns[s].push(time()?);
            drop(programs);
            std::thread::sleep(SETTLE);
        }
    }
    let mut table = format!(
        "| dispatch ({rounds} interleaved rounds of {CALLS} `pwrite`s of {} bytes on tmpfs) | ns per call (median) | 95% interval |\n|---|---|---|\n",
        SMALL_FILE.len()
    );
    table += &format!("| {} | {:.0} | |\n", STATES[0].0, median(&ns[0]));
    let mut steps = Vec::new();
    for s in 1..STATES.len() {
        let added: Vec<f64> = ns[s].iter().zip(&ns[s - 1]).map(|(a, b)| a - b).collect();
        let interval = MedianInterval::of(&added);
        table += &format!(
            "| {} | +{:.0} | {:.0}–{:.0} |\n",
            STATES[s].0,
            median(&added),
            interval.low,
            interval.high
        );
        steps.push(serde_json::json!({
            "step": STATES[s].0, "added_ns_median": median(&added),
            "added_ns_interval": [interval.low, interval.high], "interval_coverage": interval.coverage,
        }));
    }
    let report = serde_json::json!({
        "benchmark": "dispatch", "machine": machine(), "rounds": rounds, "calls": CALLS,
        "off_ns_median": median(&ns[0]),
        "ns_per_call": STATES.iter().zip(&ns).map(|((name, _), v)| serde_json::json!({ "state": name, "all": v })).collect::<Vec<_>>(),
        "steps": steps,
    });
    std::fs::write(results, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(table)
}
