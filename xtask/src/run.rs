//! `cargo xtask run`: the agent with an embedded default collector, so a
//! newcomer sees alerts appear live (in the agent's log, and through
//! `levee alerts tail`).

use std::{
    net::TcpStream,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::cmd;

/// Where the local collector listens (plaintext: loopback only).
const COLLECTOR: &str = "127.0.0.1:50051";

pub fn agent_with_collector(agent: &Path, args: Vec<String>) -> anyhow::Result<()> {
    let bin = agent.parent().context("release directory")?;
    let state = cmd::workspace_root().join("target/levee-run");
    std::fs::create_dir_all(&state)?;
    if TcpStream::connect(COLLECTOR).is_ok() {
        bail!("{COLLECTOR} is already in use: stop what listens there, or run levee-agent yourself");
    }
    let mut collector = Command::new(bin.join("levee-collector"));
    collector
        .args(["--insecure-plaintext", "--listen", COLLECTOR, "--database"])
        .arg(state.join("collector.db"));
    let collector = Guard(spawn_tied(&mut collector).context("starting levee-collector")?);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(COLLECTOR).is_err() {
        if Instant::now() > deadline {
            bail!("levee-collector did not start listening on {COLLECTOR}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let args = if args.is_empty() {
        let spool = state.join("spool.redb");
        [
            "run",
            "--collector",
            &format!("http://{COLLECTOR}"),
            "--insecure-plaintext",
            "--spool",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([spool.display().to_string()])
        .collect()
    } else {
        args
    };
    eprintln!(
        "xtask run: collector on {COLLECTOR} (database {}); follow alerts with:\n  {} alerts tail",
        state.join("collector.db").display(),
        bin.join("levee").display()
    );
    let result = cmd::run(cmd::command(agent).args(&args)).context("levee-agent");
    drop(collector);
    result
}

/// Spawns `command` so that it dies with this process.
fn spawn_tied(command: &mut Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    command.spawn()
}

/// Stops the collector when the agent ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}
