//! Finding, or installing, a toolchain that can build the probes.
//!
//! Building Rust for `bpfel-unknown-none` needs `-Z build-std=core` (so a
//! compiler with the library source) and a `bpf-linker` built against the same
//! LLVM major version as that compiler. Two routes work:
//!
//! - a rustup nightly with `rust-src` (a typical workstation), plus
//!   `bpf-linker` on PATH;
//! - on Debian 12, Debian's own rustc with its library source and LLVM 22, and
//!   `bpf-linker` built against that LLVM. `setup` installs this one.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

use crate::cmd;

/// Debian packages of the Debian 12 route.
const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const DEBIAN_LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// How to build the probes.
#[derive(Debug, Clone)]
pub enum Toolchain {
    /// `cargo +nightly` with rustup's `rust-src`.
    RustupNightly { linker: PathBuf },
    /// Debian's rustc driven by this cargo with `RUSTC_BOOTSTRAP=1`.
    DebianRustc { rustc: PathBuf, linker: PathBuf },
}

impl Toolchain {
    pub fn linker(&self) -> &Path {
        match self {
            Toolchain::RustupNightly { linker } | Toolchain::DebianRustc { linker, .. } => linker,
        }
    }
}

/// Returns a ready toolchain, installing the Debian 12 route if none is found.
pub fn setup() -> anyhow::Result<Toolchain> {
    if let Some(toolchain) = detect() {
        eprintln!("xtask setup: probe toolchain ready ({})", describe(&toolchain));
        return Ok(toolchain);
    }
    if !is_debian_12() {
        bail!(
            "no toolchain to build the eBPF probes, and automatic install only knows Debian 12.\n\
             Install either:\n  \
             - a rustup nightly with rust-src (`rustup toolchain install nightly --component rust-src`) \
             and `cargo install bpf-linker`; or\n  \
             - a rustc with its library source and a bpf-linker built against the same LLVM major version."
        );
    }
    if !cmd::is_root() {
        bail!("installing the probe toolchain needs root (apt-get); run `sudo cargo xtask setup`");
    }
    install_debian()?;
    let toolchain = detect().context("toolchain still incomplete after installing it")?;
    eprintln!(
        "xtask setup: installed the probe toolchain ({})",
        describe(&toolchain)
    );
    Ok(toolchain)
}

fn describe(toolchain: &Toolchain) -> String {
    match toolchain {
        Toolchain::RustupNightly { linker } => format!("rustup nightly with rust-src, {}", linker.display()),
        Toolchain::DebianRustc { rustc, linker } => {
            format!(
                "{} with LLVM {DEBIAN_LLVM_MAJOR}, {}",
                rustc.display(),
                linker.display()
            )
        }
    }
}

fn detect() -> Option<Toolchain> {
    let linker = find_bpf_linker()?;
    if has_library_source(Command::new("rustup").args(["run", "nightly", "rustc"])) {
        return Some(Toolchain::RustupNightly { linker });
    }
    let rustc = PathBuf::from(DEBIAN_RUSTC);
    let llvm_major = cmd::output(Command::new(&rustc).arg("-vV"))?
        .lines()
        .find_map(|l| {
            l.strip_prefix("LLVM version: ")
                .map(|v| v.split('.').next().unwrap_or("").to_owned())
        })?;
    if llvm_major == DEBIAN_LLVM_MAJOR
        && has_library_source(&mut Command::new(&rustc))
        && linker_uses_llvm(&linker, &llvm_major)
    {
        return Some(Toolchain::DebianRustc { rustc, linker });
    }
    None
}

/// Whether `rustc --print sysroot` has the standard library source `build-std` needs.
fn has_library_source(rustc: &mut Command) -> bool {
    cmd::output(rustc.args(["--print", "sysroot"])).is_some_and(|sysroot| {
        Path::new(sysroot.trim())
            .join("lib/rustlib/src/rust/library/core")
            .is_dir()
    })
}

/// `bpf-linker` on PATH or in cargo's bin directory.
fn find_bpf_linker() -> Option<PathBuf> {
    let cargo_bin = cargo_home().join("bin");
    env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([cargo_bin])
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}

/// A dynamically linked bpf-linker names its libLLVM; a static one cannot be
/// checked and is trusted.
fn linker_uses_llvm(linker: &Path, major: &str) -> bool {
    match cmd::output(Command::new("ldd").arg(linker)) {
        Some(libs) if libs.contains("libLLVM") => libs.contains(&format!("libLLVM.so.{major}")),
        _ => true,
    }
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn is_debian_12() -> bool {
    std::fs::read_to_string("/etc/os-release")
        .is_ok_and(|os| os.lines().any(|l| l == "VERSION_CODENAME=bookworm"))
}

fn install_debian() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask setup: installing Debian packages: {}", missing.join(" "));
        cmd::run(Command::new("apt-get").arg("update").arg("-q"))?;
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let linker_ok = find_bpf_linker().is_some_and(|l| linker_uses_llvm(&l, DEBIAN_LLVM_MAJOR));
    if !linker_ok {
        eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {DEBIAN_LLVM_MAJOR} (a few minutes)");
        cmd::run(
            cmd::cargo()
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                    "--force",
                ])
                .args([
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{DEBIAN_LLVM_MAJOR}"),
                ])
                .env("LLVM_PREFIX", DEBIAN_LLVM_PREFIX),
        )?;
    }
    Ok(())
}
