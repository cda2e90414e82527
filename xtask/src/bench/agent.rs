//! A release `levee-agent` run for a benchmark, its JSON output collected.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::Value;

pub struct BenchAgent {
    child: Child,
    lines: Receiver<Value>,
    seen: std::cell::Cell<usize>,
}

impl BenchAgent {
    /// Starts the agent with `policy` and waits until a deletion in `dir`
    /// comes back through it.
    pub fn start(bin: &Path, policy: &Path, dir: &Path) -> anyhow::Result<BenchAgent> {
        let mut command = Command::new(bin);
        command
            .args(["run", "--json", "--policy"])
            .arg(policy)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        tie_to_parent(&mut command);
        let mut child = command
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Parse only what benchmarks look at: parsing every deletion
                // would make this reader the bottleneck, and a slow reader
                // backs up into the agent and its ring buffer.
                let wanted = [
                    "\"type\":\"guard\"",
                    "\"type\":\"exit\"",
                    "\"type\":\"losses\"",
                    ".canary",
                ];
                if !wanted.iter().any(|w| line.contains(w)) {
                    continue;
                }
                if let Ok(value) = serde_json::from_str(&line) {
                    if tx.send(value).is_err() {
                        break;
                    }
                }
            }
        });
        let agent = BenchAgent {
            child,
            lines,
            seen: std::cell::Cell::new(0),
        };
        let canary = dir.join(".canary");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            std::fs::write(&canary, b"")?;
            std::fs::remove_file(&canary)?;
            let seen = agent.until(Duration::from_millis(500), |e| {
                e["type"] == "deletion" && e["path"].as_str() == canary.to_str()
            });
            if seen.is_some() {
                return Ok(agent);
            }
        }
        bail!("the agent never reported the canary deletion")
    }

    /// Reads events until one satisfies `want` (returned) or `timeout` passes.
    pub fn until(&self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.lines.recv_timeout(left).ok()?;
            self.seen.set(self.seen.get() + 1);
            if want(&event) {
                return Some(event);
            }
        }
    }
}

impl BenchAgent {
    /// How many events were read, and whether the agent still runs, for errors.
    pub fn seen(&self) -> String {
        let running = std::fs::metadata(format!("/proc/{}", self.child.id())).is_ok();
        format!("{} events read, agent running: {running}", self.seen.get())
    }
}

impl Drop for BenchAgent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Runs `script` with `sh` in a new session with a login uid, as an
/// attacker's login. Returns the shell's pid and exit status.
pub fn in_login_session(cwd: &Path, script: &str) -> anyhow::Result<(u32, std::process::ExitStatus)> {
    let mut command = Command::new("sh");
    command
        .args(["-c", &format!("echo 4242 > /proc/self/loginuid && {script}")])
        .current_dir(cwd);
    // SAFETY: setsid is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    Ok((pid, child.wait()?))
}

/// An event's kernel timestamp.
pub fn time_of(event: &Value) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(event["time"].as_str()?).ok()
}

/// The agent as in production: no event output, ready when `/readyz` says so.
pub struct QuietAgent {
    child: Child,
    metrics: std::net::SocketAddr,
}

impl QuietAgent {
    pub fn start(bin: &Path, policy: &Path) -> anyhow::Result<QuietAgent> {
        Self::start_with(bin, policy, &[])
    }

    pub fn start_with(bin: &Path, policy: &Path, args: &[&str]) -> anyhow::Result<QuietAgent> {
        Self::start_on(bin, policy, args, None)
    }

    /// Starts the agent with extra `args`, every thread of it on `cpu` if given.
    pub fn start_on(
        bin: &Path,
        policy: &Path,
        args: &[&str],
        cpu: Option<usize>,
    ) -> anyhow::Result<QuietAgent> {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = Command::new(bin);
        command
            .args(["run", "--policy"])
            .arg(policy)
            .args(["--metrics-listen", &metrics.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        tie_to_parent(&mut command);
        if let Some(cpu) = cpu {
            // SAFETY: sched_setaffinity is async-signal-safe.
            unsafe { command.pre_exec(move || pin_to(cpu..cpu + 1)) };
        }
        let agent = QuietAgent {
            child: command
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
            metrics,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_get(metrics, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            if Instant::now() > deadline {
                bail!("the agent never became ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sum of every series of the agent's Prometheus metric `name` whose
    /// labels contain `labels` (`""` for all).
    pub fn metric(&self, name: &str, labels: &str) -> anyhow::Result<f64> {
        let text = http_get(self.metrics, "/metrics").context("reading the agent's /metrics")?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Returns once the agent has taken every event so far: its event count
    /// stands still for 50 ms (it reads a batch every 10 ms). An error if it
    /// is still taking them after 5 s.
    pub fn wait_caught_up(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = self.metric("levee_agent_events_total", "")?;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.metric("levee_agent_events_total", "")?;
            if now == seen {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the agent was still taking events 5 s after the workload ended");
            }
            seen = now;
        }
    }

    /// Events lost so far, by the kernel's and the agent's counts. The agent
    /// copies the kernel's once a second: read after a workload, this waits
    /// for that copy.
    pub fn dropped_events(&self) -> anyhow::Result<f64> {
        std::thread::sleep(Duration::from_millis(1500));
        self.metric("levee_agent_dropped_events", "")
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the agent.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .with_context(|| format!("sending {signal} to the agent"))
    }
}

impl Drop for QuietAgent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGCONT,
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The whole response to `GET path` on `addr`, if it answered.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The CPU time process `pid` has run, all its threads, live and exited
/// (its CPU-time clock, `clock_getcpuclockid`). Not utime and stime: they
/// are sampled at clock ticks, and charge a process that wakes in step with
/// them for whole ticks.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id.
    let err = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err))
            .with_context(|| format!("the CPU clock of pid {pid}"));
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading the CPU clock of pid {pid}"));
    }
    Ok(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// Pins the calling thread (and what it execs) to `cpus`.
pub fn pin_to(cpus: std::ops::Range<usize>) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays inside it
    // for any cpu below CPU_SETSIZE, which a machine's CPU numbers are.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The child dies with this process: a benchmark's agent or collector must
/// never outlive it (an agent's guard would keep enforcing a bench policy).
pub fn tie_to_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
}
