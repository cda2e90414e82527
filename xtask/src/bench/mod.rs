//! `cargo xtask bench`: benchmarks that need the real probes, root and a quiet
//! moment. Results go to `bench/<name>.json` and a Markdown table on stdout
//! for the README. Timings on these shared machines are noisy: report
//! distributions, and compare ratios measured in one run.

mod agent;
mod dispatch;
mod enforcement;
mod floor;
mod footprint;
mod latency;
mod overhead;
mod probe_cost;
mod throughput;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cmd;

/// A benchmark: its name (and results file `bench/<name>.json`) and how to run
/// it against a release agent, returning its Markdown table.
type Benchmark = (&'static str, fn(&Path, &Path) -> anyhow::Result<String>);

pub const BENCHMARKS: &[Benchmark] = &[
    ("enforcement", enforcement::run),
    ("latency", latency::run),
    ("overhead", overhead::run),
    ("probe-cost", probe_cost::run),
    ("dispatch", dispatch::run),
    ("throughput", throughput::run),
    ("footprint", footprint::run),
];

/// Runs the benchmarks named in `only` (all if empty) against the release
/// agent at `agent_bin`.
pub fn run(agent_bin: &Path, only: &[String]) -> anyhow::Result<()> {
    if let Some(unknown) = only.iter().find(|n| !BENCHMARKS.iter().any(|(b, _)| b == n)) {
        let names: Vec<&str> = BENCHMARKS.iter().map(|(b, _)| *b).collect();
        anyhow::bail!("no benchmark `{unknown}`; there are: {}", names.join(", "));
    }
    // `cargo xtask` runs under `cargo run`, which points the dynamic loader
    // at the toolchain's and the target's libraries: every program a
    // workload starts would try some forty paths (each an `openat` Levee
    // hooks) before it found libc, which no host does.
    std::env::remove_var("LD_LIBRARY_PATH");
    let results = cmd::workspace_root().join("bench");
    std::fs::create_dir_all(&results)?;
    let mut tables = Vec::new();
    for (name, bench) in BENCHMARKS {
        if only.is_empty() || only.iter().any(|n| n == name) {
            eprintln!("xtask bench: {name}");
            let file = results.join(format!("{name}.json"));
            tables.push(bench(agent_bin, &file).with_context(|| format!("benchmark {name}"))?);
        }
    }
    let host = machine();
    println!(
        "\nMeasured {} on {} ({} CPUs, {}, Linux {}).\n\n{}",
        host["date"].as_str().unwrap_or_default(),
        nix::unistd::gethostname().map_or_else(|_| "?".into(), |h| h.to_string_lossy().into_owned()),
        host["cpus"],
        host["cpu"].as_str().unwrap_or("unknown CPU"),
        host["kernel"].as_str().unwrap_or_default(),
        tables.join("\n\n")
    );
    Ok(())
}

/// Host facts every results file carries.
pub fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_owned();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_owned));
    serde_json::json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
}

/// The shipped policy in monitor mode, written in `dir`: the same probes and
/// checks as enforce, and a benchmark is never killed.
pub fn monitor_policy(dir: &Path) -> anyhow::Result<PathBuf> {
    let policy = dir.join("policy.toml");
    let text = include_str!("../../../agent/policy/default.toml");
    anyhow::ensure!(
        text.contains("mode = \"enforce\""),
        "the shipped policy's mode line moved"
    );
    std::fs::write(
        &policy,
        text.replacen("mode = \"enforce\"", "mode = \"monitor\"", 1),
    )?;
    Ok(policy)
}

/// The median of `values`, in any order: the mean of the middle two when
/// their number is even.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// At least `at_least` rounds, rounded up to a multiple of `states`, so
/// that with [`rotation`] each state goes first equally often.
pub fn balanced_rounds(at_least: usize, states: usize) -> usize {
    at_least.div_ceil(states) * states
}

/// The order `states` run in during `round`: each round starts one later,
/// so drift favours none.
pub fn rotation(round: usize, states: usize) -> impl Iterator<Item = usize> {
    (0..states).map(move |k| (round + k) % states)
}

/// A distribution-free interval for the median of `values`, in any order:
/// from the `k`-th smallest to the `k`-th largest, `k` as large as keeps the
/// chance that it holds the true median at 95% or more. Each value falls
/// below the median with chance ½, so that chance is binomial. Fewer than 6
/// values cannot reach 95%: then the whole range, with what it covers.
#[derive(Debug, PartialEq)]
pub struct MedianInterval {
    pub low: f64,
    pub high: f64,
    /// The chance that the interval holds the median.
    pub coverage: f64,
}

impl MedianInterval {
    pub fn of(values: &[f64]) -> MedianInterval {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return MedianInterval {
                low: f64::NAN,
                high: f64::NAN,
                coverage: 0.0,
            };
        }
        // 1 - 2 P(B < k), B ~ Binomial(n, ½): neither end past the median.
        let coverage = |k: usize| {
            let mut below = 0.0;
            let mut choose = 1.0;
            for i in 0..k {
                below += choose;
                choose = choose * (n - i) as f64 / (i + 1) as f64;
            }
            1.0 - 2.0 * below * 0.5f64.powi(n as i32)
        };
        let mut k = 1;
        while 2 * (k + 1) <= n + 1 && coverage(k + 1) >= 0.95 {
            k += 1;
        }
        MedianInterval {
            low: sorted[k - 1],
            high: sorted[n - k],
            coverage: coverage(k),
        }
    }
}

/// A distribution as results files and tables give it: nearest-rank
/// percentiles of every value.
pub struct Spread(Vec<f64>);

impl Spread {
    /// Of `values`, in any order.
    pub fn of(values: &[f64]) -> Spread {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Spread(sorted)
    }

    /// The `p`-th percentile, nearest rank: of fewer than 100 values, the
    /// 99th is the largest.
    pub fn at(&self, p: f64) -> f64 {
        percentile(&self.0, p)
    }

    /// For a results file: the median, 90th and 99th percentiles, the
    /// largest, and every value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "p50": self.at(50.0), "p90": self.at(90.0), "p99": self.at(99.0), "max": self.at(100.0),
            "all": self.0,
        })
    }

    /// Table cells of the percentiles `ps`, `decimals` digits after the point.
    pub fn cells(&self, ps: &[f64], decimals: usize) -> String {
        let cells: Vec<String> = ps.iter().map(|&p| format!("{:.decimals$}", self.at(p))).collect();
        cells.join(" | ")
    }
}

/// `p`-th percentile (0..=100) of sorted `values`, nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A tmpfs mounted in a fresh temporary directory, for the length of a benchmark.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new() -> anyhow::Result<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("levee-bench-").tempdir()?;
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=2g"),
        )
        .context("mounting a tmpfs for the benchmark")?;
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A loop device over `backing` (created with `size` bytes), detached when dropped.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn new(backing: &Path, size: u64) -> anyhow::Result<LoopDevice> {
        std::fs::File::create(backing)?.set_len(size)?;
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(LoopDevice {
            path: PathBuf::from(String::from_utf8(out.stdout)?.trim()),
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let detached = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.path)
            .status();
        if !detached.is_ok_and(|s| s.success()) {
            eprintln!(
                "xtask bench: could not detach {}; `losetup -d` it by hand",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{balanced_rounds, median, percentile, rotation, MedianInterval};

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&v, 0.0), 1.0, "the 0th is the smallest");
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn median_intervals_drop_as_many_ends_as_95_percent_allows() {
        let values = |n: u32| (1..=n).rev().map(f64::from).collect::<Vec<_>>();
        // 9 values: 1 - 2 (1 + 9) / 512.
        let nine = MedianInterval::of(&values(9));
        assert_eq!((nine.low, nine.high), (2.0, 8.0));
        assert!((nine.coverage - 0.9609).abs() < 1e-4, "{nine:?}");
        // 30 values: the 10th from each end (P(B < 10) = 0.0214).
        let thirty = MedianInterval::of(&values(30));
        assert_eq!((thirty.low, thirty.high), (10.0, 21.0));
        assert!(thirty.coverage >= 0.95 && thirty.coverage < 0.96, "{thirty:?}");
        // Too few for 95%: the range, at 1 - 2 / 32.
        let five = MedianInterval::of(&values(5));
        assert_eq!((five.low, five.high, five.coverage), (1.0, 5.0, 0.9375));
        assert_eq!(MedianInterval::of(&[]).coverage, 0.0);
    }

    #[test]
    fn balanced_rounds_put_each_state_first_equally_often() {
        let rounds = balanced_rounds(9, 4);
        assert_eq!(rounds, 12);
        let mut first = [0; 4];
        for round in 0..rounds {
            let order: Vec<usize> = rotation(round, 4).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3], "round {round} runs every state once");
            first[order[0]] += 1;
        }
        assert_eq!(first, [3; 4]);
    }
}
