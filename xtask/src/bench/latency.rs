//! End-to-end latency: from the kernel crossing a threshold (the guard
//! record's timestamp, which the alert carries) to a SOC subscriber holding
//! the alert, everything on loopback: agent → spool → gRPC → collector →
//! SQLite → subscription → `levee alerts tail`.

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};

use super::{
    agent::{tie_to_parent, QuietAgent},
    enforcement::protected_tmpfs,
    machine, Spread,
};

/// Enough for a 99th percentile that is not simply the largest.
const RUNS: usize = 100;
const LIMIT: usize = 100;

pub fn run(agent_bin: &Path, results: &Path) -> anyhow::Result<String> {
    let bin = agent_bin.parent().context("release directory")?;
    let (fs, protected, policy) = protected_tmpfs(LIMIT)?;
    let root = fs.path();

    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let url = format!("http://{addr}");
    let mut collector = Command::new(bin.join("levee-collector"));
    collector
        .args([
            "--insecure-plaintext",
            "--listen",
            &addr.to_string(),
            "--database",
        ])
        .arg(root.join("collector.db"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    tie_to_parent(&mut collector);
    let mut collector = collector.spawn().context("starting levee-collector")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("the collector never listened");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let spool = root.join("spool.redb");
    let agent = QuietAgent::start_with(
        agent_bin,
        &policy,
        &[
            "--collector",
            &url,
            "--insecure-plaintext",
            "--spool",
            spool.to_str().context("utf-8")?,
        ],
    )?;
    let mut tail = Command::new(bin.join("levee"));
    tail.args(["--collector", &url, "alerts", "tail", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    tie_to_parent(&mut tail);
    let mut tail = tail.spawn().context("starting levee alerts tail")?;
    let stdout = tail.stdout.take().context("tail stdout")?;
    let (tx, received) = mpsc::channel::<(SystemTime, serde_json::Value)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let at = SystemTime::now();
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send((at, v)).is_err() {
                    break;
                }
            }
        }
    });

    let mut latency_ms = Vec::new();
    for run in 0..RUNS {
        let tree = protected.join(format!("t{run}"));
        std::fs::create_dir(&tree)?;
        for i in 0..2 * LIMIT {
            std::fs::File::create(tree.join(i.to_string()))?;
        }
        // The session is read from the shell before it becomes rm.
        let script = format!(
            "cat /proc/self/sessionid > {}/session; exec rm -rf t{run}",
            root.display()
        );
        super::agent::in_login_session(&protected, &script)?;
        let session: u32 = std::fs::read_to_string(root.join("session"))?.trim().parse()?;
        let key = format!("login:{session}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let arrived = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, alert) = received
                .recv_timeout(left)
                .with_context(|| format!("no guard alert for {key}"))?;
            let guard = alert["features"].as_array().is_some_and(|f| {
                f.iter()
                    .any(|f| f["name"].as_str().is_some_and(|n| n.starts_with("guard:")))
            });
            if alert["session"] == key.as_str() && guard {
                break (at, alert);
            }
        };
        let crossed = humantime::parse_rfc3339(arrived.1["time"].as_str().context("alert time")?)?;
        latency_ms.push(
            arrived
                .0
                .duration_since(crossed)
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3,
        );
    }
    drop(agent);
    let _ = tail.kill();
    let _ = collector.kill();

    let latency_ms = Spread::of(&latency_ms);
    let report = serde_json::json!({
        "benchmark": "end-to-end latency",
        "machine": machine(),
        "path": "kernel threshold → agent → spool → gRPC → collector (SQLite) → Subscribe → levee alerts tail, on loopback",
        "runs": RUNS,
        "latency_ms": latency_ms.json(),
        "target_p99_ms": 100,
        "met": latency_ms.at(99.0) <= 100.0,
    });
    std::fs::write(results, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(format!(
        "| end-to-end latency ({RUNS} runs): kernel threshold → SOC subscriber, loopback | p50 | p99 | max | target |\n\
         |---|---|---|---|---|\n\
         | milliseconds | {} | p99 ≤ 100 |",
        latency_ms.cells(&[50.0, 99.0, 100.0], 1),
    ))
}
