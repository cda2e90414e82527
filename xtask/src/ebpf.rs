//! Building the probe object.

use std::path::PathBuf;

use crate::{cmd, toolchain::Toolchain};

/// The environment variable through which the agent's build script finds the object.
pub const OBJECT_ENV: &str = "LEVEE_PROBES_OBJ";
const TARGET: &str = "bpfel-unknown-none";

/// Builds `agent-ebpf` and returns the object's path.
pub fn build(toolchain: &Toolchain) -> anyhow::Result<PathBuf> {
    let root = cmd::workspace_root();
    let target_dir = root.join("target/ebpf");
    let mut cargo = match toolchain {
        Toolchain::RustupNightly { .. } => {
            let mut c = cmd::command("cargo");
            c.arg("+nightly");
            c
        }
        Toolchain::DebianRustc { rustc, .. } => {
            let mut c = cmd::cargo();
            // Debian's rustc is stable; build-std needs the unstable flag.
            c.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
            c
        }
    };
    let linker_dir = toolchain.linker().parent().map(PathBuf::from).unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(linker_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    cargo
        .current_dir(root.join("agent-ebpf"))
        .args(["build", "--release", "--target", TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PATH", path)
        // Host settings must not leak into the BPF build.
        .env_remove("RUSTFLAGS")
        // BTF for the object: the kernel takes a callback (`bpf_loop`'s)
        // only from a program that describes its functions.
        .env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=--btf")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET");
    cmd::run(&mut cargo)?;
    Ok(target_dir.join(TARGET).join("release/levee-probes"))
}
