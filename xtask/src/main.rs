//! `cargo xtask`: builds the probes with the right toolchain, then drives
//! build, run and test. Every command that needs the probe toolchain runs
//! `setup` first, so a fresh machine needs no other step.

mod bench;
mod cmd;
mod deploy;
mod ebpf;
mod run;
mod toolchain;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building the probes needs, if it is missing (idempotent).
    Setup,
    /// Build the eBPF probe object.
    BuildEbpf,
    /// Build the probes, then the agent (embedding them) and the collector, in release mode.
    Build,
    /// Build everything, start a local collector, and run the agent as root,
    /// streaming alerts to it: `cargo xtask run -- <agent args>`.
    Run {
        /// Arguments for `levee-agent` (default: `run` wired to the local collector).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (needs root): results in bench/<name>.json, tables on
    /// stdout. Names pick some: enforcement, latency, overhead, probe-cost, dispatch, throughput, footprint.
    Bench {
        /// Benchmarks to run (default: all).
        names: Vec<String>,
    },
    /// Validate the deployment files (also part of `test`).
    CheckDeploy,
    /// Build the probes and run every test (needs root: tests load the probes).
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Setup => {
            toolchain::setup()?;
        }
        Command::BuildEbpf => {
            ebpf::build(&toolchain::setup()?)?;
        }
        Command::Build => {
            build_release()?;
        }
        Command::Run { args } => {
            let agent = build_release()?;
            cmd::require_root("cargo xtask run")?;
            run::agent_with_collector(&agent, args)?;
        }
        Command::CheckDeploy => {
            let root = cmd::workspace_root();
            cmd::run(cmd::cargo().args(["build", "-p", "agent", "-p", "collector"]))?;
            let checks = deploy::check(&root.join("target/debug"))?;
            println!(
                "xtask check-deploy: {} passed, {} failed",
                checks.passed, checks.failed
            );
            if checks.failed > 0 {
                anyhow::bail!("deployment checks failed");
            }
        }
        Command::Bench { names } => {
            cmd::require_root("cargo xtask bench")?;
            let agent = build_release()?;
            bench::run(&agent, &names)?;
        }
        Command::Test { args } => {
            cmd::require_root("cargo xtask test")?;
            let object = ebpf::build(&toolchain::setup()?)?;
            // The e2e tests run the collector, the CLI and the agent's
            // examples: `cargo test` builds other packages' binaries only as
            // unit-test harnesses, and examples under hashed names.
            cmd::run(
                cmd::cargo()
                    .args(["build", "--workspace", "--bins", "--examples"])
                    .env(ebpf::OBJECT_ENV, &object),
            )?;
            let totals = cmd::run_tests(
                cmd::cargo()
                    .args(["test", "--workspace", "--all-targets"])
                    .args(&args)
                    // Integration tests each load the probes; one at a time keeps
                    // them from seeing each other's workloads as noise.
                    .args(["--", "--test-threads=1"])
                    .env(ebpf::OBJECT_ENV, &object),
            )?;
            let checks = deploy::check(&cmd::workspace_root().join("target/debug"))?;
            let (passed, failed) = (totals.passed + checks.passed, totals.failed + checks.failed);
            println!("xtask test: {passed} passed, {failed} failed");
            if failed > 0 || totals.passed == 0 {
                anyhow::bail!("tests failed or none ran");
            }
        }
    }
    Ok(())
}

/// Builds probes, agent and collector; returns the agent binary's path.
fn build_release() -> anyhow::Result<std::path::PathBuf> {
    let object = ebpf::build(&toolchain::setup()?)?;
    cmd::run(
        cmd::cargo()
            .args([
                "build",
                "--release",
                "-p",
                "agent",
                "-p",
                "collector",
                "-p",
                "cli",
            ])
            .env(ebpf::OBJECT_ENV, &object),
    )?;
    Ok(cmd::workspace_root().join("target/release/levee-agent"))
}
