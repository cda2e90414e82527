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
    balanced_rounds,
    floor::EmptyPrograms,
    machine, median, monitor_policy, rotation, LoopDevice, MedianInterval, Tmpfs,
};

/// At least this many rounds, or `LEVEE_BENCH_OVERHEAD_ROUNDS`: rounded up to a
/// multiple of the number of states, so that each state goes first equally
/// often.
const ROUNDS: usize = 9;
const ROUNDS_ENV: &str = "LEVEE_BENCH_OVERHEAD_ROUNDS";
/// Comma-separated workload keys (`unlink-heavy`, `mixed`, ...) to run alone:
/// more rounds of one short, noisy workload in the time of a full run. Their
/// results go to `overhead-KEYS.json`, beside a full run's.
const WORKLOADS_ENV: &str = "LEVEE_BENCH_OVERHEAD_WORKLOADS";
/// A pause after a state starts and after it stops, before anything is
/// timed: loading or freeing programs and maps leaves deferred kernel work
/// (RCU callbacks, workqueues) that would land on the next workload.
const SETTLE: Duration = Duration::from_secs(2);
/// The time between workloads, the same in every state (an agent is checked
/// to have caught up within it), for the same reason.
const PAUSE: Duration = Duration::from_millis(300);
const FILES: usize = 200_000;
/// What each of unlink-heavy's files holds.
pub(super) const SMALL_FILE: &[u8] = b"a small file: one write, one page of tmpfs\n";
const EXECS: usize = 20_000;
const WRITE_BYTES: usize = 1 << 30;
const CHUNK: usize = 64 * 1024;
/// Files on each side of the mixed workload's checkout, and in its target dir.
const CHECKOUT_FILES: usize = 5_000;
const TARGET_FILES: usize = 10_000;

/// One workload: a name, its target ratio, what it needs in `dir` before its
/// first run, and how to run it once in `dir`.
pub(super) struct Workload {
    pub(super) name: &'static str,
    target: f64,
    setup: Option<fn(&Path) -> anyhow::Result<()>>,
    pub(super) run: fn(&Path) -> anyhow::Result<Duration>,
}

impl Workload {
    /// Prepares `dir` for this workload's runs.
    pub(super) fn set_up(&self, dir: &Path) -> anyhow::Result<()> {
        match self.setup {
            Some(setup) => setup(dir).with_context(|| format!("setting up {}", self.name)),
            None => Ok(()),
        }
    }

    /// The name up to its colon: `unlink-heavy`, `write-heavy`, `mixed`...
    /// The two write-heavy workloads share theirs.
    fn key(&self) -> &'static str {
        self.name.split(':').next().unwrap_or(self.name)
    }
}

/// The workloads `list` (the value of `WORKLOADS_ENV`) names, all if there
/// is none, and the results file for them.
fn selected(list: Option<&str>, results: &Path) -> anyhow::Result<(Vec<&'static Workload>, PathBuf)> {
    let Some(list) = list else {
        return Ok((WORKLOADS.iter().collect(), results.to_owned()));
    };
    let keys: Vec<&str> = list.split(',').map(str::trim).collect();
    if let Some(unknown) = keys.iter().find(|k| !WORKLOADS.iter().any(|w| w.key() == **k)) {
        let known: Vec<&str> = WORKLOADS.iter().map(Workload::key).collect();
        anyhow::bail!(
            "{WORKLOADS_ENV}: no workload `{unknown}`; there are: {}",
            known.join(", ")
        );
    }
    let chosen = WORKLOADS.iter().filter(|w| keys.contains(&w.key())).collect();
    Ok((
        chosen,
        results.with_file_name(format!("overhead-{}.json", keys.join("+"))),
    ))
}

pub(super) const WORKLOADS: &[Workload] = &[
    Workload {
        name: "unlink-heavy: create, write 43 bytes to, and delete 200,000 files on tmpfs",
        target: 1.05,
        setup: None,
        run: unlink_heavy,
    },
    Workload {
        name: "exec-heavy: 20,000 fork+exec of /bin/true",
        target: 1.05,
        setup: None,
        run: exec_heavy,
    },
    Workload {
        name: "write-heavy: 1 GiB to a file on tmpfs (64 KiB writes)",
        target: 1.02,
        setup: None,
        run: write_file,
    },
    Workload {
        name: "write-heavy: 1 GiB to a loop device (64 KiB writes)",
        target: 1.02,
        setup: None,
        run: write_device,
    },
    Workload {
        name: "mixed: git checkout of 5,000 changed files and back, then cargo clean of 10,000",
        target: 1.05,
        setup: Some(prepare_mixed),
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
    fn agent(&self) -> Option<&QuietAgent> {
        match self {
            Running::Agent(agent) => Some(agent),
            Running::Nothing | Running::Floor { .. } => None,
        }
    }
}

/// One state's runs of one workload, a value a round.
#[derive(Clone, Default)]
struct Samples {
    /// The workload's time (s).
    secs: Vec<f64>,
    /// The agent's CPU time (s) from the workload's start until it had taken
    /// the last event, and that span's share of one core.
    agent_cpu: Vec<f64>,
    agent_share: Vec<f64>,
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
    let rounds = match std::env::var(ROUNDS_ENV) {
        Ok(n) => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{ROUNDS_ENV}={n}: not a number of rounds"))?,
        Err(_) => ROUNDS,
    };
    let rounds = balanced_rounds(rounds, states.len());
    let (workloads, results) = selected(std::env::var(WORKLOADS_ENV).ok().as_deref(), results)?;
    let fs = Tmpfs::new()?;
    let dir = fs.path();
    let policy = monitor_policy(&dir)?;
    // Once untimed: the first run of a workload pays for cold caches and
    // fresh tmpfs pages, which would land on whichever state went first.
    for w in &workloads {
        w.set_up(&dir)?;
        (w.run)(&dir).with_context(|| w.name)?;
    }
    // samples[workload][state]; events the agent lost, per state, over all rounds.
    let mut samples = vec![vec![Samples::default(); states.len()]; workloads.len()];
    let mut dropped = vec![0.0; states.len()];
    for round in 0..rounds {
        for s in rotation(round, states.len()) {
            let running = states[s].start(agent_bin, &policy)?;
            std::thread::sleep(SETTLE);
            for (i, w) in workloads.iter().enumerate() {
                let started = (
                    Instant::now(),
                    running.agent().map(|a| cpu_time(a.pid())).transpose()?,
                );
                let t = (w.run)(&dir).with_context(|| w.name)?.as_secs_f64();
                let ended = Instant::now();
                let sample = &mut samples[i][s];
                sample.secs.push(t);
                if let (Some(agent), (at, Some(cpu))) = (running.agent(), started) {
                    agent.wait_caught_up()?;
                    let used = cpu_time(agent.pid())?.saturating_sub(cpu).as_secs_f64();
                    sample.agent_cpu.push(used);
                    sample.agent_share.push(used / at.elapsed().as_secs_f64());
                }
                std::thread::sleep(PAUSE.saturating_sub(ended.elapsed()));
            }
            if let Some(agent) = running.agent() {
                dropped[s] += agent.dropped_events()?;
            }
            drop(running);
            std::thread::sleep(SETTLE);
        }
    }
    let table = report(&states, rounds, &workloads, &samples, &dropped, &results)?;
    for (state, &lost) in states.iter().zip(&dropped) {
        anyhow::ensure!(lost == 0.0, "{}: the agent lost {lost} events", state.key());
    }
    Ok(table)
}

/// What a run can stand behind: whether the interval of the ratio's median
/// lies under the target, over it, or across it (more rounds might tell).
fn verdict(interval: &MedianInterval, target: f64) -> &'static str {
    if interval.high <= target {
        "met"
    } else if interval.low > target {
        "missed"
    } else {
        "unsettled"
    }
}

/// Writes the results file and returns the README table.
fn report(
    states: &[State],
    rounds: usize,
    workloads: &[&Workload],
    samples: &[Vec<Samples>],
    dropped: &[f64],
    results: &Path,
) -> anyhow::Result<String> {
    // Per-round ratios to the round's own "off", sorted.
    let ratios = |off: &[f64], on: &[f64]| {
        let mut r: Vec<f64> = on.iter().zip(off).map(|(a, b)| a / b).collect();
        r.sort_by(f64::total_cmp);
        r
    };
    let baseline = states.len() > 3;
    let mut rows = Vec::new();
    let mut table = format!(
        "| overhead ({rounds} interleaved rounds; ratios to off) | off (s, median) | floor: empty programs on the same hooks (ratio) | levee (s, median) | levee ratio median | 95% interval of that median (all rounds' range) | target | verdict | levee's own CPU (ms, median; share of one core) |{}\n\
         |---|---|---|---|---|---|---|---|---|{}\n",
        if baseline { " baseline ratio median |" } else { "" },
        if baseline { "---|" } else { "" },
    );
    for (w, by_state) in workloads.iter().zip(samples) {
        let off = by_state[0].secs.as_slice();
        let ratio_of: Vec<Vec<f64>> = by_state.iter().map(|on| ratios(off, &on.secs)).collect();
        let (floor_r, levee_r, levee) = (&ratio_of[1], &ratio_of[2], &by_state[2]);
        let ratio = median(levee_r);
        let interval = MedianInterval::of(levee_r);
        let verdict = verdict(&interval, w.target);
        let share = median(&levee.agent_share);
        table += &format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3}–{:.3} ({:.3}–{:.3}) | ≤ {:.2} | {verdict} | {:.0}; {:.1}% |",
            w.name,
            median(off),
            median(floor_r),
            median(&levee.secs),
            ratio,
            interval.low,
            interval.high,
            levee_r[0],
            levee_r[levee_r.len() - 1],
            w.target,
            median(&levee.agent_cpu) * 1000.0,
            share * 100.0,
        );
        if baseline {
            table += &format!(" {:.3} |", median(&ratio_of[3]));
        }
        table += "\n";
        let mut row = serde_json::json!({
            "workload": w.name, "target_ratio": w.target,
            "ratio_median": ratio, "ratio_min": levee_r[0], "ratio_max": levee_r[levee_r.len() - 1],
            "ratio_median_interval": [interval.low, interval.high],
            "ratio_median_interval_coverage": interval.coverage,
            "met": ratio <= w.target,
            "verdict": verdict,
            "levee_agent_cpu_share_median": share,
        });
        for (s, (state, sample)) in states.iter().zip(by_state).enumerate() {
            row[format!("{}_s", state.key())] = serde_json::json!(sample.secs);
            if !sample.agent_cpu.is_empty() {
                row[format!("{}_agent_cpu_s", state.key())] = serde_json::json!(sample.agent_cpu);
            }
            if s > 0 {
                row[format!("{}_ratio_median", state.key())] = serde_json::json!(median(&ratio_of[s]));
            }
        }
        rows.push(row);
    }
    let described: serde_json::Map<String, serde_json::Value> = states
        .iter()
        .map(|s| (s.key().to_owned(), s.describe().into()))
        .collect();
    let lost: serde_json::Map<String, serde_json::Value> = states
        .iter()
        .zip(dropped)
        .filter(|(s, _)| matches!(s, State::Levee | State::Baseline(_)))
        .map(|(s, &n)| (s.key().to_owned(), n.into()))
        .collect();
    let report = serde_json::json!({
        "benchmark": "overhead", "machine": machine(), "rounds": rounds,
        "states": described,
        "agent_dropped_events": lost,
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
        File::create(work.join(i.to_string()))?.write_all(SMALL_FILE)?;
    }
    for i in 0..FILES {
        std::fs::remove_file(work.join(i.to_string()))?;
    }
    let took = start.elapsed();
    std::fs::remove_dir(&work)?;
    Ok(took)
}

/// `fork` and `execv`, as a shell runs a command: `std::process::Command`
/// would use `posix_spawn`, a cheaper `vfork`-style clone.
fn exec_heavy(_: &Path) -> anyhow::Result<Duration> {
    use nix::{sys::wait::WaitStatus, unistd::ForkResult};
    let program = c"/bin/true";
    let argv = [program.as_ptr(), std::ptr::null()];
    let start = Instant::now();
    for _ in 0..EXECS {
        // SAFETY: the child calls only execv and _exit, which are
        // async-signal-safe, and allocates nothing: `argv` was built before
        // the fork.
        match unsafe { nix::unistd::fork() }.context("fork")? {
            ForkResult::Child => unsafe {
                libc::execv(program.as_ptr(), argv.as_ptr());
                libc::_exit(127)
            },
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).context("waitpid")?;
                anyhow::ensure!(status == WaitStatus::Exited(child, 0), "/bin/true: {status:?}");
            }
        }
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
fn prepare_mixed(dir: &Path) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_list_picks_those_workloads_and_their_own_results_file() {
        let full = Path::new("bench/overhead.json");
        let (all, file) = selected(None, full).unwrap();
        assert_eq!((all.len(), file.as_path()), (WORKLOADS.len(), full));

        let (some, file) = selected(Some("mixed, write-heavy"), full).unwrap();
        let keys: Vec<&str> = some.iter().map(|w| w.key()).collect();
        assert_eq!(keys, ["write-heavy", "write-heavy", "mixed"]);
        assert_eq!(file, Path::new("bench/overhead-mixed+write-heavy.json"));

        let Err(err) = selected(Some("mixed,unlink"), full) else {
            panic!("an unknown workload was accepted");
        };
        let err = err.to_string();
        assert!(err.contains("no workload `unlink`"), "{err}");
        assert!(err.contains("unlink-heavy"), "{err}");
    }
}
