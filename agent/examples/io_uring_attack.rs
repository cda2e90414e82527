//! Destroys through io_uring, as someone avoiding the syscalls an agent
//! hooks would; the end-to-end tests run it as the attack.
//!
//! - `io_uring_attack rm DIR` removes every entry of `DIR`
//!   (`IORING_OP_UNLINKAT`, relative to a descriptor of `DIR`), then `DIR`
//!   itself (`AT_REMOVEDIR`).
//! - `io_uring_attack mv DIR TARGET` renames every entry of `DIR` into
//!   `TARGET` (`IORING_OP_RENAMEAT`).
//! - `io_uring_attack truncate [--registered] DIR` cuts every file in `DIR`
//!   to nothing (`IORING_OP_FTRUNCATE`), each opened first, or registered
//!   with the ring.
//! - `io_uring_attack open-trunc [--openat2] [--creat] [--skip-cqe]
//!   [--slot | --any-slot] [--defer-taskrun] DIR` opens every file in
//!   `DIR` for writing with `O_TRUNC` (`IORING_OP_OPENAT`, or
//!   `IORING_OP_OPENAT2`, by its whole path), which empties it. With
//!   `--creat`, opens with `O_CREAT` too, and creates `DIR/created` the
//!   same way. Optionally asks for no completion on success
//!   (`IOSQE_CQE_SKIP_SUCCESS`, linked to a no-op it waits on), opens into
//!   registered slots, given or chosen by the kernel, and uses a ring that
//!   posts completions only when asked (`IORING_SETUP_DEFER_TASKRUN`).
//! - `io_uring_attack read [--registered] DEVICE` is no attack: it splices
//!   [`WIPE_WRITES`] blocks from the start of `DEVICE` into a pipe
//!   (`IORING_OP_SPLICE`), whose write end is an fd or the ring's
//!   registered file at the index equal to the device's fd.
//! - `io_uring_attack wipe [--registered | --linked-open] [--vectored |
//!   --fixed-buffer | --splice | --punch-hole | --zero-range | --discard]
//!   DEVICE` writes [`WIPE_WRITES`] blocks of zeros from the start of
//!   `DEVICE` (`IORING_OP_WRITE`, `IORING_OP_WRITEV`,
//!   `IORING_OP_WRITE_FIXED` from a registered buffer, or
//!   `IORING_OP_SPLICE` from a pipe full of zeros), or erases them without
//!   writing
//!   (`IORING_OP_FALLOCATE` punching a hole or zeroing, or a discard
//!   command, `IORING_OP_URING_CMD`), on the device opened first,
//!   registered with the ring (`IOSQE_FIXED_FILE`), or opened by an
//!   `IORING_OP_OPENAT` the requests are linked after, in the same batch,
//!   at the fd it will get.
//!
//! Requests go in batches of [`BATCH`] per `io_uring_enter`. Exits 1 if any
//! request failed.

use std::{
    ffi::CString,
    fs::OpenOptions,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::Path,
};

use agent_common::block::BLOCK_URING_CMD_DISCARD;
use anyhow::{bail, Context};
use io_uring::{opcode, squeue, types, IoUring};

/// Requests submitted per `io_uring_enter`.
const BATCH: usize = 64;
/// Blocks a wipe writes, and their size.
const WIPE_WRITES: usize = 16;
const WIPE_BLOCK: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (failed, total) = match args.as_slice() {
        ["rm", dir] => remove(Path::new(dir))?,
        ["mv", dir, target] => rename(Path::new(dir), Path::new(target))?,
        ["open-trunc", rest @ ..] => {
            let (flags, dirs): (Vec<&str>, Vec<&str>) = rest.iter().partition(|a| a.starts_with("--"));
            let [dir] = dirs.as_slice() else {
                bail!("open-trunc: one DIR")
            };
            let slot = match (flags.contains(&"--slot"), flags.contains(&"--any-slot")) {
                (false, false) => Slot::Fd,
                (true, false) => Slot::Given,
                (false, true) => Slot::Any,
                (true, true) => bail!("open-trunc: --slot or --any-slot, not both"),
            };
            let known = [
                "--openat2",
                "--creat",
                "--skip-cqe",
                "--slot",
                "--any-slot",
                "--defer-taskrun",
            ];
            if let Some(other) = flags.iter().find(|f| !known.contains(f)) {
                bail!("open-trunc: unknown flag {other}");
            }
            let how = OpenTrunc {
                openat2: flags.contains(&"--openat2"),
                creat: flags.contains(&"--creat"),
                skip_cqe: flags.contains(&"--skip-cqe"),
                slot,
                defer_taskrun: flags.contains(&"--defer-taskrun"),
            };
            open_truncate(Path::new(dir), how)?
        }
        ["read", device] => read(Path::new(device), false)?,
        ["read", "--registered", device] => read(Path::new(device), true)?,
        ["truncate", dir] => truncate(Path::new(dir), false)?,
        ["truncate", "--registered", dir] => truncate(Path::new(dir), true)?,
        ["wipe", flags @ .., device] => {
            let file = match (flags.contains(&"--registered"), flags.contains(&"--linked-open")) {
                (false, false) => File::Opened,
                (true, false) => File::Registered,
                (false, true) => File::LinkedOpen,
                (true, true) => bail!("wipe: --registered or --linked-open, not both"),
            };
            let how = match flags
                .iter()
                .find(|f| !["--registered", "--linked-open"].contains(f))
            {
                None => Wipe::Write,
                Some(&"--vectored") => Wipe::Writev,
                Some(&"--fixed-buffer") => Wipe::WriteFixed,
                Some(&"--splice") => Wipe::Splice,
                Some(&"--punch-hole") => Wipe::PunchHole,
                Some(&"--zero-range") => Wipe::ZeroRange,
                Some(&"--discard") => Wipe::Discard,
                Some(other) => bail!("wipe: unknown flag {other}"),
            };
            wipe(Path::new(device), file, how)?
        }
        _ => bail!(
            "usage: io_uring_attack rm DIR | mv DIR TARGET | truncate [--registered] DIR | \
             open-trunc [--openat2] [--creat] [--skip-cqe] [--slot | --any-slot] [--defer-taskrun] DIR | \
             read [--registered] DEVICE | \
             wipe [--registered | --linked-open] \
             [--vectored | --fixed-buffer | --splice | --punch-hole | --zero-range | --discard] DEVICE"
        ),
    };
    if failed > 0 {
        eprintln!("io_uring_attack: {failed} of {total} requests failed");
        std::process::exit(1);
    }
    Ok(())
}

/// The names in `dir`.
fn entries(dir: &Path) -> anyhow::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        names.push(CString::new(entry?.file_name().as_bytes())?);
    }
    Ok(names)
}

fn open(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(path).with_context(|| format!("open {}", path.display()))
}

/// Returns how many requests failed, of how many.
fn remove(dir: &Path) -> anyhow::Result<(usize, usize)> {
    let names = entries(dir)?;
    let dir_fd = open(dir)?;
    let fd = types::Fd(dir_fd.as_raw_fd());
    let mut requests: Vec<squeue::Entry> = names
        .iter()
        .map(|name| opcode::UnlinkAt::new(fd, name.as_ptr()).build())
        .collect();
    let whole = CString::new(dir.as_os_str().as_bytes())?;
    requests.push(
        opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), whole.as_ptr())
            .flags(libc::AT_REMOVEDIR)
            .build(),
    );
    Ok((run(&mut ring()?, &requests)?, requests.len()))
}

fn rename(dir: &Path, target: &Path) -> anyhow::Result<(usize, usize)> {
    let names = entries(dir)?;
    let (dir_fd, target_fd) = (open(dir)?, open(target)?);
    let (from, to) = (types::Fd(dir_fd.as_raw_fd()), types::Fd(target_fd.as_raw_fd()));
    let requests: Vec<squeue::Entry> = names
        .iter()
        .map(|name| opcode::RenameAt::new(from, name.as_ptr(), to, name.as_ptr()).build())
        .collect();
    Ok((run(&mut ring()?, &requests)?, requests.len()))
}

fn truncate(dir: &Path, registered: bool) -> anyhow::Result<(usize, usize)> {
    let files = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|entry| {
            let path = entry?.path();
            OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("open {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ring = &mut ring()?;
    let fds: Vec<i32> = files.iter().map(AsRawFd::as_raw_fd).collect();
    if registered {
        ring.submitter()
            .register_files(&fds)
            .context("register the files")?;
    }
    let requests: Vec<squeue::Entry> = fds
        .iter()
        .enumerate()
        .map(|(i, &fd)| match registered {
            true => opcode::Ftruncate::new(types::Fixed(i as u32), 0).build(),
            false => opcode::Ftruncate::new(types::Fd(fd), 0).build(),
        })
        .collect();
    Ok((run(ring, &requests)?, requests.len()))
}

/// How `open-trunc` opens.
#[derive(Clone, Copy)]
struct OpenTrunc {
    openat2: bool,
    creat: bool,
    skip_cqe: bool,
    slot: Slot,
    defer_taskrun: bool,
}

/// Where an open puts its file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Fd,
    /// Registered slot `i` for the `i`th file.
    Given,
    /// A free registered slot the kernel picks.
    Any,
}

fn open_truncate(dir: &Path, how: OpenTrunc) -> anyhow::Result<(usize, usize)> {
    let mut paths = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|entry| Ok(entry?.path()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if how.creat {
        paths.push(dir.join("created"));
    }
    let names = paths
        .iter()
        .map(|path| CString::new(path.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(names.len() < BATCH, "open-trunc: at most {} files", BATCH - 1);
    let ring = &mut match how.defer_taskrun {
        true => IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(BATCH as u32)
            .context("set up an io_uring that defers its completions")?,
        false => ring()?,
    };
    if how.slot != Slot::Fd {
        ring.submitter()
            .register_files_sparse(names.len() as u32)
            .context("register empty slots")?;
    }
    let flags = libc::O_WRONLY | libc::O_TRUNC | if how.creat { libc::O_CREAT } else { 0 };
    // `openat2` refuses a mode without `O_CREAT`.
    let open_how = types::OpenHow::new()
        .flags(flags as u64)
        .mode(if how.creat { 0o600 } else { 0 });
    let mut requests: Vec<squeue::Entry> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let slot = match how.slot {
                Slot::Fd => None,
                Slot::Given => Some(types::DestinationSlot::try_from_slot_target(i as u32).unwrap()),
                Slot::Any => Some(types::DestinationSlot::auto_target()),
            };
            let at = types::Fd(libc::AT_FDCWD);
            let open = match how.openat2 {
                true => opcode::OpenAt2::new(at, name.as_ptr(), &open_how)
                    .file_index(slot)
                    .build(),
                false => opcode::OpenAt::new(at, name.as_ptr())
                    .flags(flags)
                    .mode(0o600)
                    .file_index(slot)
                    .build(),
            };
            // Linked, so the no-op after them completes once they all have.
            match how.skip_cqe {
                true => open.flags(squeue::Flags::SKIP_SUCCESS | squeue::Flags::IO_LINK),
                false => open,
            }
        })
        .collect();
    if !how.skip_cqe {
        return Ok((run(ring, &requests)?, requests.len()));
    }
    requests.push(opcode::Nop::new().build().user_data(u64::MAX));
    for request in &requests {
        // SAFETY: `names` and `open_how` outlive the ring's use of them.
        unsafe { ring.submission().push(request) }.context("submission queue full")?;
    }
    // A failed open posts its completion and hides the rest of the chain's,
    // the no-op's too: waited for only so long.
    let ten_seconds = types::Timespec::new().sec(10);
    let wait = types::SubmitArgs::new().timespec(&ten_seconds);
    let mut failed = 0;
    loop {
        match ring.submitter().submit_with_args(1, &wait) {
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {
                bail!("open-trunc: no end of the chain in 10 s ({failed} opens failed)")
            }
            result => result.context("io_uring_enter")?,
        };
        for done in ring.completion() {
            failed += usize::from(done.result() < 0);
            if done.user_data() == u64::MAX {
                return Ok((failed, requests.len()));
            }
        }
    }
}

fn read(device: &Path, registered: bool) -> anyhow::Result<(usize, usize)> {
    let disk = open(device)?;
    let ring = &mut ring()?;
    let (_pipe_out, pipe_in) = pipe(WIPE_WRITES * WIPE_BLOCK)?;
    let index = disk.as_raw_fd();
    if registered {
        // The pipe at the device's fd's number, the other slots empty.
        let mut slots = vec![-1; index as usize + 1];
        slots[index as usize] = pipe_in.as_raw_fd();
        ring.submitter()
            .register_files(&slots)
            .context("register the pipe")?;
    }
    let requests: Vec<squeue::Entry> = (0..WIPE_WRITES)
        .map(|i| {
            let (offset, len) = ((i * WIPE_BLOCK) as i64, WIPE_BLOCK as u32);
            match registered {
                true => opcode::Splice::new(types::Fd(index), offset, types::Fixed(index as u32), -1, len),
                false => {
                    opcode::Splice::new(types::Fd(index), offset, types::Fd(pipe_in.as_raw_fd()), -1, len)
                }
            }
            .build()
        })
        .collect();
    Ok((run(ring, &requests)?, requests.len()))
}

/// Which request a wipe writes or erases with.
#[derive(Clone, Copy)]
enum Wipe {
    Write,
    Writev,
    WriteFixed,
    Splice,
    PunchHole,
    ZeroRange,
    Discard,
}

/// How a wipe names the device.
#[derive(Clone, Copy, PartialEq, Eq)]
enum File {
    Opened,
    Registered,
    LinkedOpen,
}

fn wipe(device: &Path, file: File, how: Wipe) -> anyhow::Result<(usize, usize)> {
    let opened = match file {
        File::LinkedOpen => None,
        File::Opened | File::Registered => Some(
            OpenOptions::new()
                .write(true)
                .open(device)
                .with_context(|| format!("open {}", device.display()))?,
        ),
    };
    // The ring and the pipe first: their fds must not take the one the
    // open will get.
    let ring = &mut ring()?;
    let pipe = match how {
        Wipe::Splice => Some(pipe_of_zeros(WIPE_WRITES * WIPE_BLOCK)?),
        _ => None,
    };
    let pipe_out = pipe.as_ref().map_or(-1, |(out, _)| out.as_raw_fd());
    // The lowest free fd, which the linked open will get.
    let fd = match &opened {
        Some(disk) => disk.as_raw_fd(),
        None => std::fs::File::open("/dev/null")?.as_raw_fd(),
    };
    if file == File::Registered {
        ring.submitter()
            .register_files(&[fd])
            .context("register the device")?;
    }
    let zeros = vec![0u8; WIPE_BLOCK];
    let iovec = libc::iovec {
        iov_base: zeros.as_ptr() as *mut _,
        iov_len: zeros.len(),
    };
    if let Wipe::WriteFixed = how {
        // SAFETY: `zeros` outlives the ring.
        unsafe { ring.submitter().register_buffers(std::slice::from_ref(&iovec)) }
            .context("register the buffer")?;
    }
    let len = zeros.len() as u32;
    // The file as an fd or as the ring's registered file 0: two types.
    macro_rules! request {
        ($file:expr, $offset:expr) => {
            match how {
                Wipe::Write => opcode::Write::new($file, zeros.as_ptr(), len)
                    .offset($offset)
                    .build(),
                Wipe::Writev => opcode::Writev::new($file, &iovec, 1)
                    .offset($offset)
                    .build(),
                Wipe::WriteFixed => opcode::WriteFixed::new($file, zeros.as_ptr(), len, 0)
                    .offset($offset)
                    .build(),
                Wipe::Splice => {
                    opcode::Splice::new(types::Fd(pipe_out), -1, $file, $offset as i64, len).build()
                }
                Wipe::PunchHole => opcode::Fallocate::new($file, len.into())
                    .offset($offset)
                    .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                    .build(),
                Wipe::ZeroRange => opcode::Fallocate::new($file, len.into())
                    .offset($offset)
                    .mode(libc::FALLOC_FL_ZERO_RANGE)
                    .build(),
                // The start in `addr`, the length in `addr3`, where the
                // command's bytes begin.
                Wipe::Discard => {
                    let mut length = [0u8; 16];
                    length[..8].copy_from_slice(&u64::from(len).to_ne_bytes());
                    opcode::UringCmd16::new($file, BLOCK_URING_CMD_DISCARD)
                        .addr(Some($offset))
                        .cmd(length)
                        .build()
                }
            }
        };
    }
    let path = CString::new(device.as_os_str().as_bytes())?;
    let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(libc::O_WRONLY)
        .build();
    let writes = (0..WIPE_WRITES).map(|i| {
        let offset = (i * WIPE_BLOCK) as u64;
        match file {
            File::Registered => request!(types::Fixed(0), offset),
            File::Opened | File::LinkedOpen => request!(types::Fd(fd), offset),
        }
    });
    let mut requests: Vec<squeue::Entry> = (file == File::LinkedOpen)
        .then_some(open)
        .into_iter()
        .chain(writes)
        .collect();
    if file == File::LinkedOpen {
        // Each runs once the one before has completed.
        let last = requests.len() - 1;
        for request in &mut requests[..last] {
            *request = request.clone().flags(squeue::Flags::IO_LINK);
        }
    }
    Ok((run(ring, &requests)?, requests.len()))
}

/// A pipe that holds `bytes`: its read end, and its write end.
fn pipe(bytes: usize) -> anyhow::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let (out, into) = nix::unistd::pipe().context("pipe")?;
    nix::fcntl::fcntl(into.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(bytes as i32))
        .context("grow the pipe")?;
    Ok((out, into))
}

/// A pipe holding `bytes` zeros: its read end, and its write end.
fn pipe_of_zeros(bytes: usize) -> anyhow::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let (out, into) = pipe(bytes)?;
    let written = nix::unistd::write(&into, &vec![0u8; bytes]).context("fill the pipe")?;
    anyhow::ensure!(written == bytes, "the pipe took {written} of {bytes} bytes");
    Ok((out, into))
}

fn ring() -> anyhow::Result<IoUring> {
    IoUring::new(BATCH as u32)
        .context("set up an io_uring (is it disabled, /proc/sys/kernel/io_uring_disabled?)")
}

/// Submits `requests` in batches, waiting for each batch; returns how many failed.
fn run(ring: &mut IoUring, requests: &[squeue::Entry]) -> anyhow::Result<usize> {
    let mut failed = 0;
    for batch in requests.chunks(BATCH) {
        for request in batch {
            // SAFETY: what the requests point to outlives the ring's use of it.
            unsafe { ring.submission().push(request) }.context("submission queue full")?;
        }
        ring.submit_and_wait(batch.len()).context("io_uring_enter")?;
        failed += ring.completion().filter(|done| done.result() < 0).count();
    }
    Ok(failed)
}
