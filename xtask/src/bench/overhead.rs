//! What Levee costs the host: workloads timed with the agent off and on,
//! interleaved (off, on, on, off, ...), in one run. Ratios on/off are what
//! to read: these machines are shared and noisy.
//!
//! The agent runs as in production: the shipped policy (monitor mode, so a
//! benchmark is never killed, with the same probes and checks as enforce),
//! alerts to its log, events not printed.

use std::{
    fs::File,
    io::Write,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::{agent::QuietAgent, machine, percentile, LoopDevice, Tmpfs};

const ROUNDS: usize = 5;
const FILES: usize = 200_000;
const EXECS: usize = 20_000;
const WRITE_BYTES: usize = 1 << 30;
const CHUNK: usize = 64 * 1024;

/// One workload: a name, its target ratio, and how to run it once.
struct Workload {
    name: &'static str,
    target: f64,
    run: fn(&Path) -> anyhow::Result<Duration>,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "unlink-heavy: create and delete 200,000 files on tmpfs",
        target: 1.05,
        run: unlink_heavy,
    },
    Workload {
        name: "exec-heavy: 20,000 fork+exec of /bin/true",
        target: 1.05,
        run: exec_heavy,
    },
    Workload {
        name: "write-heavy: 1 GiB to a file on tmpfs (64 KiB writes)",
        target: 1.02,
        run: write_file,
    },
    Workload {
        name: "write-heavy: 1 GiB to a loop device (64 KiB writes)",
        target: 1.02,
        run: write_device,
    },
];

pub fn run(agent_bin: &Path, results: &Path) -> anyhow::Result<String> {
    let fs = Tmpfs::new()?;
    let dir = fs.path();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        include_str!("../../../agent/policy/default.toml").replacen(
            "mode = \"enforce\"",
            "mode = \"monitor\"",
            1,
        ),
    )?;
    let mut times: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); WORKLOADS.len()];
    for round in 0..ROUNDS {
        // Alternate which state goes first, so drift does not favour one.
        for on in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let agent = if on {
                Some(QuietAgent::start(agent_bin, &policy)?)
            } else {
                None
            };
            for (i, w) in WORKLOADS.iter().enumerate() {
                let t = (w.run)(&dir).with_context(|| w.name)?.as_secs_f64();
                if on {
                    times[i].1.push(t)
                } else {
                    times[i].0.push(t)
                }
            }
            drop(agent);
        }
    }
    let mut rows = Vec::new();
    let mut table = String::from("| overhead (agent on / off, 5 interleaved rounds) | off (s, median) | on (s, median) | ratio median | ratio range | target |\n|---|---|---|---|---|---|\n");
    for (w, (off, on)) in WORKLOADS.iter().zip(times) {
        let mut ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
        ratios.sort_by(f64::total_cmp);
        let (mut off_s, mut on_s) = (off.clone(), on.clone());
        off_s.sort_by(f64::total_cmp);
        on_s.sort_by(f64::total_cmp);
        let ratio = percentile(&ratios, 50.0);
        table += &format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3}–{:.3} | ≤ {:.2} |\n",
            w.name,
            percentile(&off_s, 50.0),
            percentile(&on_s, 50.0),
            ratio,
            ratios[0],
            ratios[ratios.len() - 1],
            w.target
        );
        rows.push(serde_json::json!({
            "workload": w.name, "target_ratio": w.target, "off_s": off, "on_s": on,
            "ratio_median": ratio, "ratio_min": ratios[0], "ratio_max": ratios[ratios.len() - 1],
        }));
    }
    let report = serde_json::json!({ "benchmark": "overhead", "machine": machine(), "rounds": ROUNDS, "workloads": rows });
    std::fs::write(results, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(table)
}

fn unlink_heavy(dir: &Path) -> anyhow::Result<Duration> {
    let work = dir.join("unlink");
    std::fs::create_dir(&work)?;
    let start = Instant::now();
    for i in 0..FILES {
        File::create(work.join(i.to_string()))?;
    }
    for i in 0..FILES {
        std::fs::remove_file(work.join(i.to_string()))?;
    }
    let took = start.elapsed();
    std::fs::remove_dir(&work)?;
    Ok(took)
}

fn exec_heavy(_: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..EXECS {
        let status = Command::new("/bin/true").status()?;
        anyhow::ensure!(status.success(), "/bin/true failed");
    }
    Ok(start.elapsed())
}

fn write_all(mut file: File) -> anyhow::Result<Duration> {
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    for _ in 0..WRITE_BYTES / CHUNK {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    Ok(start.elapsed())
}

fn write_file(dir: &Path) -> anyhow::Result<Duration> {
    let path = dir.join("big");
    let took = write_all(File::create(&path)?)?;
    std::fs::remove_file(&path)?;
    Ok(took)
}

fn write_device(dir: &Path) -> anyhow::Result<Duration> {
    let device = LoopDevice::new(&dir.join("disk.img"), WRITE_BYTES as u64)?;
    let took = write_all(std::fs::OpenOptions::new().write(true).open(&device.path)?)?;
    drop(device);
    std::fs::remove_file(dir.join("disk.img"))?;
    Ok(took)
}
