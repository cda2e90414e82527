//! Deletes or moves files through io_uring, as someone avoiding the syscalls
//! an agent hooks would; the end-to-end tests run it as an attack.
//!
//! `io_uring_rm DIR` removes every entry of `DIR` (`IORING_OP_UNLINKAT`,
//! relative to a descriptor of `DIR`), then `DIR` itself (`AT_REMOVEDIR`).
//! `io_uring_rm --into TARGET DIR` renames every entry of `DIR` into `TARGET`
//! (`IORING_OP_RENAMEAT`). Requests go in batches of [`BATCH`] per
//! `io_uring_enter`. Exits 1 if any request failed.

use std::{
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::PathBuf,
};

use anyhow::{bail, Context};
use io_uring::{opcode, squeue, types, IoUring};

/// Requests submitted per `io_uring_enter`.
const BATCH: usize = 64;

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (into, dir) = match args.as_slice() {
        [dir] => (None, dir),
        [flag, target, dir] if flag.as_os_str() == "--into" => (Some(target), dir),
        _ => bail!("usage: io_uring_rm [--into TARGET] DIR"),
    };
    let dir_fd = File::open(dir).with_context(|| format!("open {}", dir.display()))?;
    let target_fd = into
        .map(|t| File::open(t).with_context(|| format!("open {}", t.display())))
        .transpose()?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(CString::new(entry?.file_name().as_bytes())?);
    }
    let dir_fd = types::Fd(dir_fd.as_raw_fd());
    let requests: Vec<squeue::Entry> = names
        .iter()
        .map(|name| match &target_fd {
            Some(target) => opcode::RenameAt::new(
                dir_fd,
                name.as_ptr(),
                types::Fd(target.as_raw_fd()),
                name.as_ptr(),
            )
            .build(),
            None => opcode::UnlinkAt::new(dir_fd, name.as_ptr()).build(),
        })
        .collect();
    let mut failed = run(&requests)?;
    let mut total = requests.len();
    if into.is_none() {
        total += 1;
        let whole = CString::new(dir.as_os_str().as_bytes())?;
        let rmdir = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), whole.as_ptr())
            .flags(libc::AT_REMOVEDIR)
            .build();
        failed += run(&[rmdir])?;
    }
    if failed > 0 {
        eprintln!("io_uring_rm: {failed} of {total} requests failed");
        std::process::exit(1);
    }
    Ok(())
}

/// Submits `requests` in batches, waiting for each batch; returns how many failed.
fn run(requests: &[squeue::Entry]) -> anyhow::Result<usize> {
    let mut ring = IoUring::new(BATCH as u32)?;
    let mut failed = 0;
    for batch in requests.chunks(BATCH) {
        for request in batch {
            // SAFETY: the names the requests point to outlive the ring's use of them.
            unsafe { ring.submission().push(request) }.context("submission queue full")?;
        }
        ring.submit_and_wait(batch.len())?;
        failed += ring.completion().filter(|done| done.result() < 0).count();
    }
    Ok(failed)
}
