//! Compiles `levee/v1/levee.proto` with protox (pure Rust: no `protoc` to
//! install) and generates the tonic/prost code, plus the descriptor set the
//! collector serves for gRPC reflection.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=levee/v1/levee.proto");
    let fds = protox::compile(["levee/v1/levee.proto"], ["."]).expect("levee.proto compiles");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(
        out.join("levee_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .expect("write descriptor set");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generate levee.v1");
}
