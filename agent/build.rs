//! Embeds the probe object built by `cargo xtask build-ebpf`.
//!
//! The probes are never built from here: a plain `cargo build` must work on a
//! stable host toolchain. Without an object the agent still compiles, embeds
//! nothing, and says at run time how to build one.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LEVEE_PROBES_OBJ");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("levee-probes.o");
    let source = env::var_os("LEVEE_PROBES_OBJ").map(PathBuf::from);
    match source {
        Some(path) => {
            println!("cargo:rerun-if-changed={}", path.display());
            fs::copy(&path, &out).unwrap_or_else(|e| panic!("LEVEE_PROBES_OBJ={}: {e}", path.display()));
        }
        None => {
            println!(
                "cargo:warning=LEVEE_PROBES_OBJ is not set: building levee-agent without probes (use `cargo xtask build`)"
            );
            fs::write(&out, b"").expect("write empty probe object");
        }
    }
}
