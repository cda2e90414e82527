//! Destruction through io_uring, which never passes the syscalls the other
//! probes hook: `examples/io_uring_attack.rs` deletes, renames, truncates
//! and wipes with `IORING_OP_UNLINKAT`, `IORING_OP_RENAMEAT`,
//! `IORING_OP_FTRUNCATE`, `IORING_OP_OPENAT` with `O_TRUNC`, `IORING_OP_WRITE`, `IORING_OP_WRITEV`,
//! `IORING_OP_SPLICE`, `IORING_OP_FALLOCATE` and a discard command.

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    os::unix::{ffi::OsStrExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::Command,
};

use agent_common::{
    block::{
        IORING_OP_FALLOCATE, IORING_OP_SPLICE, IORING_OP_URING_CMD, IORING_OP_WRITE, IORING_OP_WRITEV,
        IORING_OP_WRITEV_FIXED, IORING_OP_WRITE_FIXED,
    },
    fs::{IORING_OP_FTRUNCATE, IORING_OP_OPENAT, IORING_OP_OPENAT2, IORING_OP_RENAMEAT, IORING_OP_UNLINKAT},
};
use serde_json::Value;

use crate::support::{count_files, in_login_session, path_of, run, test_policy, Agent, LoopDevice, Sandbox};

/// The example, as `cargo build --examples` names it (`cargo xtask test`
/// builds it so before the tests).
fn io_uring_attack() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let examples = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples");
    let path = examples.join("io_uring_attack");
    assert!(
        path.exists(),
        "{} is missing: build the examples (`cargo build --examples`, as `cargo xtask test` does)",
        path.display()
    );
    path
}

#[test]
fn the_probes_opcodes_are_the_kernels() {
    use ::io_uring::opcode;
    assert_eq!(IORING_OP_UNLINKAT, opcode::UnlinkAt::CODE);
    assert_eq!(IORING_OP_RENAMEAT, opcode::RenameAt::CODE);
    assert_eq!(IORING_OP_FTRUNCATE, opcode::Ftruncate::CODE);
    assert_eq!(IORING_OP_OPENAT, opcode::OpenAt::CODE);
    assert_eq!(IORING_OP_OPENAT2, opcode::OpenAt2::CODE);
    assert_eq!(IORING_OP_WRITE, opcode::Write::CODE);
    assert_eq!(IORING_OP_WRITE_FIXED, opcode::WriteFixed::CODE);
    assert_eq!(IORING_OP_WRITEV, opcode::Writev::CODE);
    assert_eq!(IORING_OP_WRITEV_FIXED, opcode::WritevFixed::CODE);
    assert_eq!(IORING_OP_FALLOCATE, opcode::Fallocate::CODE);
    assert_eq!(IORING_OP_SPLICE, opcode::Splice::CODE);
    assert_eq!(IORING_OP_URING_CMD, opcode::UringCmd16::CODE);
}

/// Each request is seen once, with its whole path (a newline and invalid
/// UTF-8 included), by the process that submitted it, as submitted.
#[test]
fn io_uring_deletions_and_renames_are_recorded_with_their_paths() {
    let sandbox = Sandbox::new();
    let doomed = sandbox.path().join("doomed");
    let moved = sandbox.path().join("moved");
    let kept = sandbox.path().join("kept");
    for dir in [&doomed, &moved, &kept] {
        std::fs::create_dir(dir).unwrap();
    }
    let names: [&[u8]; 3] = [b"a", b"line\nbreak", b"bad-\xff-utf8"];
    for name in names {
        std::fs::write(doomed.join(OsStr::from_bytes(name)), b"x").unwrap();
        std::fs::write(moved.join(OsStr::from_bytes(name)), b"x").unwrap();
    }
    let agent = Agent::start(&sandbox);

    let remover = run(Command::new(io_uring_attack()).arg("rm").arg(&doomed));
    let renamer = run(Command::new(io_uring_attack()).arg("mv").arg(&moved).arg(&kept));

    assert_eq!(
        count_files(&doomed) + count_files(&moved),
        0,
        "the example did its work"
    );
    let in_sandbox = |path: &[u8]| path.starts_with(sandbox.path().as_os_str().as_bytes());
    let events: Vec<Value> = agent
        .everything_until_now(&sandbox)
        .into_iter()
        .filter(|e| e["op"].as_str().is_some_and(|op| op.starts_with("io_uring_")))
        .filter(|e| match e["type"].as_str() {
            Some("deletion") => in_sandbox(&path_of(e)),
            Some("rename") => in_sandbox(e["from"].as_str().unwrap_or_default().as_bytes()),
            _ => false,
        })
        .collect();
    assert_eq!(
        events.len(),
        2 * names.len() + 1,
        "each request once: {events:#?}"
    );
    let paths = |dir: &Path| -> BTreeSet<Vec<u8>> {
        names
            .iter()
            .map(|n| dir.join(OsStr::from_bytes(n)).as_os_str().as_bytes().to_vec())
            .collect()
    };
    let deletions: Vec<&Value> = events.iter().filter(|e| e["type"] == "deletion").collect();
    let files: BTreeSet<Vec<u8>> = deletions
        .iter()
        .filter(|e| e["op"] == "io_uring_unlinkat")
        .map(|e| path_of(e))
        .collect();
    assert_eq!(files, paths(&doomed), "{events:#?}");
    let dirs: Vec<Vec<u8>> = deletions
        .iter()
        .filter(|e| e["op"] == "io_uring_unlinkat_dir")
        .map(|e| path_of(e))
        .collect();
    assert_eq!(dirs, [doomed.as_os_str().as_bytes().to_vec()], "{events:#?}");
    for e in &deletions {
        assert_eq!(
            (&e["result"], &e["path_complete"]),
            (&"submitted".into(), &true.into()),
            "{e}"
        );
        assert_eq!(e["process"]["pid"], remover, "{e}");
    }
    let renames: Vec<&Value> = events.iter().filter(|e| e["type"] == "rename").collect();
    assert_eq!(renames.len(), names.len(), "{events:#?}");
    for e in &renames {
        assert_eq!(
            (&e["op"], &e["result"]),
            (&"io_uring_renameat".into(), &"submitted".into()),
            "{e}"
        );
        assert_eq!(e["process"]["pid"], renamer, "{e}");
        let (from, to) = (e["from"].as_str().unwrap(), e["to"].as_str().unwrap());
        let name = from.rsplit('/').next().unwrap();
        assert_eq!(
            (from, to),
            (
                &*format!("{}/{name}", moved.display()),
                &*format!("{}/{name}", kept.display())
            )
        );
        assert_eq!(
            (&e["from_complete"], &e["to_complete"]),
            (&true.into(), &true.into()),
            "{e}"
        );
    }
    agent.stop();
}

/// Runs the example's `command` with `flags` on `dir`, checks it emptied
/// every file `names` names there, and returns the truncations it made.
fn truncations_by_example(
    agent: &Agent,
    sandbox: &Sandbox,
    command: &str,
    flags: &[&str],
    dir: &Path,
    names: &[&[u8]],
) -> Vec<Value> {
    let pid = run(Command::new(io_uring_attack()).arg(command).args(flags).arg(dir));
    for name in names {
        let len = std::fs::metadata(dir.join(OsStr::from_bytes(name)))
            .unwrap()
            .len();
        assert_eq!(len, 0, "{command} {flags:?}: the example did its work");
    }
    agent
        .everything_until_now(sandbox)
        .into_iter()
        .filter(|e| e["type"] == "truncate" && e["process"]["pid"] == pid)
        .collect()
}

/// A shrinking `ftruncate` through io_uring is a truncation, recorded with
/// the file's path and size once per request, by plain fd and by
/// registered file; one that does not shrink is not.
#[test]
fn io_uring_truncations_are_recorded_with_their_paths_and_sizes() {
    let sandbox = Sandbox::new();
    let names: [&[u8]; 3] = [b"a", b"line\nbreak", b"bad-\xff-utf8"];
    let agent = Agent::start(&sandbox);

    for (i, flags) in [&[][..], &["--registered"][..]].into_iter().enumerate() {
        let dir = sandbox.path().join(format!("files{i}"));
        std::fs::create_dir(&dir).unwrap();
        let mut expected = BTreeSet::new();
        for (size, name) in names.iter().enumerate() {
            let path = dir.join(OsStr::from_bytes(name));
            // The first file is empty already: cutting it shrinks nothing.
            std::fs::write(&path, vec![b'x'; size * 1000]).unwrap();
            if size > 0 {
                expected.insert((path.as_os_str().as_bytes().to_vec(), size as u64 * 1000));
            }
        }
        let truncations = truncations_by_example(&agent, &sandbox, "truncate", flags, &dir, &names);
        let seen: BTreeSet<(Vec<u8>, u64)> = truncations
            .iter()
            .map(|e| (path_of(e), e["size_before"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            (truncations.len(), seen),
            (expected.len(), expected),
            "{flags:?}: {truncations:#?}"
        );
        for e in &truncations {
            assert_eq!(
                (&e["op"], &e["length"], &e["result"]),
                (&"io_uring_ftruncate".into(), &0.into(), &"submitted".into()),
                "{e}"
            );
        }
    }
    agent.stop();
}

/// An io_uring open (`openat` or `openat2`) with `O_TRUNC` is a truncation
/// of each file that existed, recorded once with its path: by name as it
/// is submitted when it has no `O_CREAT`, asks for no completion, or its
/// ring defers completions; otherwise as it completes, into an fd or a
/// registered slot, where a file the open created is none.
#[test]
fn io_uring_truncating_opens_are_recorded_with_their_paths() {
    let sandbox = Sandbox::new();
    let names: [&[u8]; 3] = [b"a", b"line\nbreak", b"bad-\xff-utf8"];
    let agent = Agent::start(&sandbox);

    // The example's flags, the op recorded, whether the file it creates is
    // recorded too.
    let cases: [(&[&str], &str, bool); 8] = [
        (&[], "io_uring_open_trunc_submitted", false),
        (&["--openat2"], "io_uring_open_trunc_submitted", false),
        (&["--creat"], "io_uring_open_trunc", false),
        (&["--openat2", "--creat"], "io_uring_open_trunc", false),
        (
            &["--creat", "--defer-taskrun"],
            "io_uring_open_trunc_submitted",
            true,
        ),
        (&["--creat", "--slot"], "io_uring_open_trunc", false),
        (&["--creat", "--any-slot"], "io_uring_open_trunc", false),
        (&["--creat", "--skip-cqe"], "io_uring_open_trunc_submitted", true),
    ];
    for (i, (flags, op, created_recorded)) in cases.into_iter().enumerate() {
        let dir = sandbox.path().join(format!("files{i}"));
        std::fs::create_dir(&dir).unwrap();
        let mut expected = BTreeSet::new();
        for name in names {
            let path = dir.join(OsStr::from_bytes(name));
            std::fs::write(&path, [b'x'; 1000]).unwrap();
            expected.insert(path.as_os_str().as_bytes().to_vec());
        }
        let created = dir.join("created");
        if created_recorded {
            expected.insert(created.as_os_str().as_bytes().to_vec());
        }
        let truncations = truncations_by_example(&agent, &sandbox, "open-trunc", flags, &dir, &names);
        assert_eq!(created.exists(), flags.contains(&"--creat"), "{flags:?}");
        let seen: BTreeSet<Vec<u8>> = truncations.iter().map(path_of).collect();
        assert_eq!(
            (truncations.len(), seen),
            (expected.len(), expected),
            "{flags:?}: {truncations:#?}"
        );
        let result = if op.ends_with("submitted") {
            "submitted"
        } else {
            "ok"
        };
        for e in &truncations {
            assert_eq!(
                (&e["op"], &e["length"], &e["result"], &e["size_before"]),
                (&op.into(), &0.into(), &result.into(), &Value::Null),
                "{flags:?}: {e}"
            );
        }
    }
    agent.stop();
}

/// The guard counts io_uring's deletions as they are submitted and kills
/// the submitter at the limit; the kernel still runs the rest of the batch
/// it had taken in that call.
#[test]
fn io_uring_mass_deletion_of_a_protected_class_is_killed_near_the_limit() {
    const LIMIT: usize = 100;
    const FILES: usize = 5_000;
    let sandbox = Sandbox::new();
    let backups = sandbox.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    for i in 0..FILES {
        std::fs::write(backups.join(format!("f{i:05}")), b"x").unwrap();
    }
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));

    let attack = format!("exec {} rm backups", io_uring_attack().display());
    let (status, session) = in_login_session(sandbox.path(), &attack);

    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the submitter must die: {status:?}"
    );
    let lost = FILES - count_files(&backups);
    // The kernel takes a call's whole batch before the process can die, and
    // its workers run what it took: the limit, rounded up to the batch.
    assert!(lost <= LIMIT + 64, "lost {lost} files, limit {LIMIT}");
    let session_key = format!("login:{session}");
    let prefix = backups.as_os_str().as_bytes().to_vec();
    let deleted = |e: &Value| e["type"] == "deletion" && path_of(e).starts_with(&prefix);
    let guard_alert = |e: &Value| {
        e["type"] == "alert" && e["session"]["key"] == session_key.as_str() && !e["guard"].is_null()
    };
    let seen = agent.collect(
        |e| deleted(e) || guard_alert(e),
        |seen| seen.iter().filter(|e| deleted(e)).count() >= lost && seen.iter().any(guard_alert),
    );
    let recorded = seen.iter().filter(|e| deleted(e)).count();
    assert!(
        recorded >= lost,
        "{recorded} deletions recorded, {lost} files gone"
    );
    let guard = &seen
        .iter()
        .find(|e| guard_alert(e))
        .expect("an alert with the guard's decision")["guard"];
    assert_eq!(
        (&guard["reason"], &guard["killed"]),
        (&"limit_crossed".into(), &true.into())
    );
    agent.stop();
}

/// Writes to a block device are seen whichever way io_uring names the
/// file (a descriptor, a registered file's index, or a descriptor an open
/// linked before the writes makes) and the data (a buffer, iovecs, or a
/// registered buffer).
#[test]
fn io_uring_writes_to_a_block_device_are_recorded() {
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 8);
    let rdev = nix::sys::stat::stat(&disk.device).expect("stat device").st_rdev;
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let agent = Agent::start(&sandbox);

    let runs = [
        (&[][..], "io_uring_write", false),
        (&["--vectored"][..], "io_uring_writev", false),
        (&["--fixed-buffer"][..], "io_uring_write", false),
        (&["--registered"][..], "io_uring_write", true),
        (&["--registered", "--vectored"][..], "io_uring_writev", true),
        (&["--registered", "--fixed-buffer"][..], "io_uring_write", true),
        (&["--linked-open"][..], "io_uring_write", false),
        (&["--linked-open", "--vectored"][..], "io_uring_writev", false),
        (&["--splice"][..], "io_uring_splice", false),
        (&["--registered", "--splice"][..], "io_uring_splice", true),
        (&["--linked-open", "--splice"][..], "io_uring_splice", false),
        (&["--punch-hole"][..], "io_uring_fallocate", false),
        (&["--registered", "--zero-range"][..], "io_uring_fallocate", true),
        (
            &["--linked-open", "--zero-range"][..],
            "io_uring_fallocate",
            false,
        ),
        (&["--discard"][..], "io_uring_discard", false),
        (&["--registered", "--discard"][..], "io_uring_discard", true),
        (&["--linked-open", "--discard"][..], "io_uring_discard", false),
    ];
    for (flags, op, registered) in runs {
        let pid = run(Command::new(io_uring_attack())
            .arg("wipe")
            .args(flags)
            .arg(&disk.device));
        let writes = agent.collect(
            |e| e["type"] == "block_write" && e["device"]["major"] == major && e["device"]["minor"] == minor,
            |seen| seen.len() >= 16,
        );
        // Requests io_uring hands to its workers (a `fallocate` always)
        // run in parallel: their records come in any order.
        let mut offsets: Vec<u64> = writes.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
        offsets.sort_unstable();
        assert_eq!(
            offsets,
            (0..16).map(|i| i * 65536).collect::<Vec<u64>>(),
            "{flags:?}: {writes:#?}"
        );
        for e in &writes {
            assert_eq!(
                (&e["op"], &e["bytes"], &e["fd_registered"]),
                (&op.into(), &65536.into(), &registered.into()),
                "{e}"
            );
            assert_eq!(e["process"]["pid"], pid, "{e}");
            assert_eq!(e["device"]["name"], disk.name(), "{e}");
        }
    }
    // Nothing more: each request once.
    let extra: Vec<Value> = agent
        .everything_until_now(&sandbox)
        .into_iter()
        .filter(|e| e["type"] == "block_write")
        .collect();
    assert!(extra.is_empty(), "{extra:#?}");
    agent.stop();
}

/// Splicing a protected device into a pipe through io_uring reads it: no
/// raw write, no kill, whether the pipe is an fd or a registered file at
/// the index that equals the device's fd (io_uring looks the device up as
/// the splice's input, with the request's own file named by that index).
#[test]
fn io_uring_splicing_from_a_protected_device_is_neither_recorded_nor_stopped() {
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 8);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk.device));
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", 100, &[]));

    for flags in ["", "--registered"] {
        let reader = format!(
            "exec {} read {flags} {}",
            io_uring_attack().display(),
            disk.device.display()
        );
        let (status, session) = in_login_session(sandbox.path(), &reader);

        assert!(status.success(), "{flags}: the reader must live: {status:?}");
        let wrongly = agent.raised_by(&sandbox, session);
        assert!(wrongly.is_empty(), "{flags}: {wrongly:#?}");
    }
    agent.stop();
}

/// A protected device (it holds a filesystem) is guarded against io_uring
/// as against `write`: the wiper dies at its first request. A buffered
/// write with SIGKILL pending copies nothing, in its own thread or in an
/// io_uring worker. An erasure (`fallocate`, a discard command) does not
/// look at signals, and the kernel runs the rest of the batch after the
/// kill (see the README's *Stopping destruction*): those requests erase
/// what they name, and the kill stops the program there.
#[test]
fn io_uring_wipes_of_a_device_holding_a_filesystem_are_killed() {
    let sandbox = Sandbox::new();
    // Through a registered file, checked at submission, and through an fd
    // a linked open makes, checked as the kernel looks it up.
    let writes = [
        "--registered",
        "--linked-open",
        "--registered --splice",
        "--linked-open --splice",
    ];
    let erasures = [
        "--registered --discard",
        "--linked-open --discard",
        "--registered --punch-hole",
        "--linked-open --zero-range",
    ];
    // A device each, its filesystem made before the guard watches: an
    // erasure destroys the one it hits.
    let disks: Vec<LoopDevice> = (0..writes.len() + erasures.len())
        .map(|_| {
            let disk = LoopDevice::new(&sandbox, 32);
            run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk.device));
            disk
        })
        .collect();
    let superblock =
        |disk: &LoopDevice| std::fs::read(&disk.device).expect("read device")[..64 * 1024].to_vec();
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", 100, &[]));

    for (how, disk) in writes.into_iter().chain(erasures).zip(&disks) {
        let before = superblock(disk);
        // The ext4 magic, 0xEF53, at 1024 + 56.
        assert_eq!(before[1080..1082], [0x53, 0xef]);
        let attack = format!(
            "exec {} wipe {how} {}",
            io_uring_attack().display(),
            disk.device.display()
        );
        let (status, session) = in_login_session(sandbox.path(), &attack);

        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{how}: the wiper must die: {status:?}"
        );
        if writes.contains(&how) {
            assert!(
                superblock(disk) == before,
                "{how}: the first 64 KiB of the device changed"
            );
        }
        agent.device_guard_alert(session, disk, how);
    }
    agent.stop();
}
