//! End-to-end tests: the real `levee-agent` with the real probes in the
//! kernel, real workloads in sandboxes (temp directories, tmpfs, loop
//! devices). Run as root through `cargo xtask test`, one test at a time.

mod alerts;
mod attribution;
mod collector;
mod deletions;
mod enforcement;
mod io_uring;
mod support;
