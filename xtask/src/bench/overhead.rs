//! What Levee costs the host: workloads timed in three or four states,
//! interleaved (the order rotates every round), in one run. Ratios to "off"
//! are what to read: these machines are shared and noisy.
//!
//! - off: no agent;
//! - floor: no agent, but a BPF program that does nothing on every hook
//!   Levee attaches to (see `floor`). Any enabled syscall tracepoint sends
//!   every syscall through the kernel's slower traced path, and every hooked
//!   one through the dispatch to BPF: no agent on these hooks can cost less;
//! - levee: the agent as shipped (events batched, read every 10 ms);
//! - baseline, when `LEVEE_BENCH_BASELINE_AGENT` names another build of
//!   `levee-agent` (say, of the commit before a change): the before of a
//!   before/after, measured in the same run.
//!
//! The agent runs as in production: the shipped policy (monitor mode, so a
//! benchmark is never killed, with the same probes and checks as enforce),
//! alerts to its log, events not printed. Its own CPU time while a workload
//! runs is counted too: it decodes and scores on another core, which the
//! workload's time does not show.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::{
    agent::{cpu_time, QuietAgent},
    floor::EmptyPrograms,
    machine, median, monitor_policy, percentile, LoopDevice, Tmpfs,
};

const ROUNDS: usize = 9;
/// A pause after a state starts and after it stops, before anything is
/// timed: loading or freeing programs and maps leaves deferred kernel work
/// (RCU callbacks, workqueues) that would land on the next workload.
const SETTLE: Duration = Duration::from_secs(2);
/// A pause after each workload before the agent's CPU time is read: it takes
/// the last events in its next batch, at most 10 ms later.
const DRAIN: Duration = Duration::from_millis(100);
const FILES: usize = 200_000;
const EXECS: usize = 20_000;
const WRITE_BYTES: usize = 1 << 30;
const CHUNK: usize = 64 * 1024;
/// Files on each side of the mixed workload's checkout, and in its target dir.
const CHECKOUT_FILES: usize = 5_000;
const TARGET_FILES: usize = 10_000;

/// One workload: a name, its target ratio, and how to run it once in `dir`.
pub(super) struct Workload {
    pub(super) name: &'static str,
    target: f64,
    pub(super) run: fn(&Path) -> anyhow::Result<Duration>,
}

pub(super) const WORKLOADS: &[Workload] = &[
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
    Workload {
        name: "mixed: git checkout of 5,000 changed files and back, then cargo clean of 10,000",
        target: 1.05,
        run: mixed_build,
    },
];

/// What runs while a workload is timed.
#[derive(Clone, PartialEq, Eq)]
enum State {
    Off,
    Floor,
    Levee,
    Baseline(PathBuf),
}

/// The environment variable naming a baseline agent binary.
pub(super) const BASELINE_ENV: &str = "LEVEE_BENCH_BASELINE_AGENT";

impl State {
    /// The states of this run: the baseline only when asked for.
    fn all() -> anyhow::Result<Vec<State>> {
        let mut states = vec![State::Off, State::Floor, State::Levee];
        if let Some(bin) = std::env::var_os(BASELINE_ENV) {
            let bin = PathBuf::from(bin);
            anyhow::ensure!(bin.is_file(), "{BASELINE_ENV}={}: no such file", bin.display());
            states.push(State::Baseline(bin));
        }
        Ok(states)
    }

    fn key(&self) -> &'static str {
        match self {
            State::Off => "off",
            State::Floor => "floor",
            State::Levee => "levee",
            State::Baseline(_) => "baseline",
        }
    }

    fn describe(&self) -> String {
        match self {
            State::Off => "no agent".into(),
            State::Floor => {
                "no agent; a BPF program that does nothing on every hook Levee attaches to".into()
            }
            State::Levee => {
                "levee-agent run, shipped policy in monitor mode, events batched (--batch-delay 10ms)".into()
            }
            State::Baseline(bin) => format!("the same with another build of the agent, {}", bin.display()),
        }
    }
}

/// Whatever a state keeps running; it stops when dropped.
enum Running {
    Nothing,
    Floor { _programs: EmptyPrograms },
    Agent(QuietAgent),
}

impl Running {
    /// The agent's CPU time so far, when an agent runs.
    fn agent_cpu(&self) -> anyhow::Result<Option<Duration>> {
        match self {
            Running::Agent(agent) => Ok(Some(cpu_time(agent.pid())?)),
            Running::Nothing | Running::Floor { .. } => Ok(None),
        }
    }
}

impl State {
    fn start(&self, agent_bin: &Path, policy: &Path) -> anyhow::Result<Running> {
        Ok(match self {
            State::Off => Running::Nothing,
            State::Floor => Running::Floor {
                _programs: EmptyPrograms::attach()?,
            },
            State::Levee => Running::Agent(QuietAgent::start(agent_bin, policy)?),
            State::Baseline(bin) => Running::Agent(QuietAgent::start(bin, policy)?),
        })
    }
}

pub fn run(agent_bin: &Path, results: &Path) -> anyhow::Result<String> {
    let states = State::all()?;
    let fs = Tmpfs::new()?;
    let dir = fs.path();
    let policy = monitor_policy(&dir)?;
    prepare_mixed(&dir)?;
    // times[workload][state]: one value a round; agent_cpu the same, in
    // seconds, for the states that run an agent.
    let mut times = vec![vec![Vec::new(); states.len()]; WORKLOADS.len()];
    let mut agent_cpu = times.clone();
    for round in 0..ROUNDS {
        // Rotate which state goes first, so drift favours none.
        for k in 0..states.len() {
            let s = (round + k) % states.len();
            let running = states[s].start(agent_bin, &policy)?;
            std::thread::sleep(SETTLE);
            for (i, w) in WORKLOADS.iter().enumerate() {
                let cpu_before = running.agent_cpu()?;
                let t = (w.run)(&dir).with_context(|| w.name)?.as_secs_f64();
                times[i][s].push(t);
                std::thread::sleep(DRAIN);
                if let (Some(before), Some(after)) = (cpu_before, running.agent_cpu()?) {
                    agent_cpu[i][s].push((after - before).as_secs_f64());
                }
            }
            drop(running);
            std::thread::sleep(SETTLE);
        }
    }
    // Per-round ratios to the round's own "off", then their distribution.
    let ratios = |off: &[f64], on: &[f64]| {
        let mut r: Vec<f64> = on.iter().zip(off).map(|(a, b)| a / b).collect();
        r.sort_by(f64::total_cmp);
        r
    };
    let baseline = states.len() > 3;
    let mut rows = Vec::new();
    let mut table = format!(
        "| overhead ({ROUNDS} interleaved rounds; ratios to off) | off (s, median) | floor: empty programs on the same hooks (ratio) | levee (s, median) | levee ratio median | levee ratio range | target | levee's own CPU meanwhile (ms, median; share of one core) |{}\n\
         |---|---|---|---|---|---|---|---|{}\n",
        if baseline { " baseline ratio median |" } else { "" },
        if baseline { "---|" } else { "" },
    );
    for ((w, t), cpu) in WORKLOADS.iter().zip(&times).zip(&agent_cpu) {
        let off = t[0].as_slice();
        let ratio_of: Vec<Vec<f64>> = t.iter().map(|on| ratios(off, on)).collect();
        let (floor_r, levee_r) = (&ratio_of[1], &ratio_of[2]);
        let ratio = percentile(levee_r, 50.0);
        // The agent's CPU per round as a share of the workload's time then.
        let cpu_share = ratios(&t[2], &cpu[2]);
        table += &format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3}–{:.3} | ≤ {:.2} | {:.0}; {:.1}% |",
            w.name,
            median(off),
            percentile(floor_r, 50.0),
            median(&t[2]),
            ratio,
            levee_r[0],
            levee_r[levee_r.len() - 1],
            w.target,
            median(&cpu[2]) * 1000.0,
            percentile(&cpu_share, 50.0) * 100.0,
        );
        if baseline {
            table += &format!(" {:.3} |", percentile(&ratio_of[3], 50.0));
        }
        table += "\n";
        let mut row = serde_json::json!({
            "workload": w.name, "target_ratio": w.target,
            "ratio_median": ratio, "ratio_min": levee_r[0], "ratio_max": levee_r[levee_r.len() - 1],
            "met": ratio <= w.target,
            "levee_agent_cpu_share_median": percentile(&cpu_share, 50.0),
        });
        for (s, state) in states.iter().enumerate() {
            row[format!("{}_s", state.key())] = serde_json::json!(t[s]);
            if !cpu[s].is_empty() {
                row[format!("{}_agent_cpu_s", state.key())] = serde_json::json!(cpu[s]);
            }
            if s > 0 {
                row[format!("{}_ratio_median", state.key())] =
                    serde_json::json!(percentile(&ratio_of[s], 50.0));
            }
        }
        rows.push(row);
    }
    let described: serde_json::Map<String, serde_json::Value> = states
        .iter()
        .map(|s| (s.key().to_owned(), s.describe().into()))
        .collect();
    let report = serde_json::json!({
        "benchmark": "overhead", "machine": machine(), "rounds": ROUNDS,
        "states": described,
        "workloads": rows,
    });
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

/// A git repository whose branches `a` and `b` differ in every one of
/// `CHECKOUT_FILES` files on each side, and a Cargo project to clean.
pub(super) fn prepare_mixed(dir: &Path) -> anyhow::Result<()> {
    let repo = dir.join("repo");
    std::fs::create_dir(&repo)?;
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("git")
            .args(["-c", "user.name=bench", "-c", "user.email=bench@levee.invalid"])
            .args(args)
            .current_dir(&repo)
            .stdout(std::process::Stdio::null())
            .status()
            .context("running git")?;
        anyhow::ensure!(status.success(), "git {args:?} failed");
        Ok(())
    };
    git(&["init", "-q", "-b", "a"])?;
    for (branch, side) in [("a", "left"), ("b", "right")] {
        if branch == "b" {
            git(&["checkout", "-q", "-b", "b"])?;
            std::fs::remove_dir_all(repo.join("left"))?;
        }
        for i in 0..CHECKOUT_FILES {
            let sub = repo.join(side).join(format!("m{:02}", i % 50));
            std::fs::create_dir_all(&sub)?;
            std::fs::write(sub.join(format!("f{i}.rs")), format!("// {side} {i}\n"))?;
        }
        git(&["add", "-A"])?;
        git(&["commit", "-q", "-m", side])?;
    }
    git(&["checkout", "-q", "a"])?;
    let project = dir.join("project");
    std::fs::create_dir_all(project.join("src"))?;
    std::fs::write(
        project.join("Cargo.toml"),
        "[package]\nname = \"bench\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )?;
    std::fs::write(project.join("src/main.rs"), "fn main() {}\n")?;
    Ok(())
}

/// Checks out `b` and back to `a` (each deletes and writes `CHECKOUT_FILES`
/// files), fills a target directory like a build's, and `cargo clean`s it.
fn mixed_build(dir: &Path) -> anyhow::Result<Duration> {
    let repo = dir.join("repo");
    let project = dir.join("project");
    let start = Instant::now();
    for branch in ["b", "a"] {
        let status = Command::new("git")
            .args(["checkout", "-q", branch])
            .current_dir(&repo)
            .status()?;
        anyhow::ensure!(status.success(), "git checkout {branch} failed");
    }
    for i in 0..TARGET_FILES {
        let sub = project.join(format!("target/debug/deps/u{:03}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&sub)?;
        }
        std::fs::write(sub.join(format!("o{i}.rmeta")), b"rmeta")?;
    }
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["clean", "--offline", "--quiet", "--manifest-path"])
        .arg(project.join("Cargo.toml"))
        .status()
        .context("running cargo clean")?;
    anyhow::ensure!(status.success(), "cargo clean failed");
    Ok(start.elapsed())
}
