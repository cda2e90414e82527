//! Destruction through io_uring, which never passes the syscalls the other
//! probes hook: `examples/io_uring_rm.rs` deletes and renames with
//! `IORING_OP_UNLINKAT` and `IORING_OP_RENAMEAT`.

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    os::unix::{ffi::OsStrExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::Command,
};

use agent_common::fs::{IORING_OP_RENAMEAT, IORING_OP_UNLINKAT};
use serde_json::Value;

use crate::support::{count_files, in_login_session, path_of, run, test_policy, Agent, Sandbox};

/// The example, built with the tests (`cargo test --all-targets`, as
/// `cargo xtask test` runs them).
fn io_uring_rm() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let examples = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples");
    let path = examples.join("io_uring_rm");
    assert!(
        path.exists(),
        "{} is missing: build the examples with the tests (`cargo test --all-targets`)",
        path.display()
    );
    path
}

#[test]
fn the_probes_opcodes_are_the_kernels() {
    assert_eq!(IORING_OP_UNLINKAT, ::io_uring::opcode::UnlinkAt::CODE);
    assert_eq!(IORING_OP_RENAMEAT, ::io_uring::opcode::RenameAt::CODE);
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

    let mut remove = Command::new(io_uring_rm());
    remove.arg(&doomed);
    let remover = run(&mut remove);
    let mut rename = Command::new(io_uring_rm());
    rename.arg("--into").arg(&kept).arg(&moved);
    let renamer = run(&mut rename);

    assert_eq!(
        count_files(&doomed) + count_files(&moved),
        0,
        "the example did its work"
    );
    let in_sandbox = |path: &[u8]| path.starts_with(sandbox.path().as_os_str().as_bytes());
    let events = agent.collect(
        |e| match e["type"].as_str() {
            Some("deletion") => in_sandbox(&path_of(e)),
            Some("rename") => in_sandbox(e["from"].as_str().unwrap_or_default().as_bytes()),
            _ => false,
        },
        |seen| seen.len() >= 7,
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
    }
    agent.stop();
}

/// The guard counts io_uring's deletions as they are submitted and kills
/// the submitter at the limit: what it had queued is cancelled as it exits.
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

    let attack = format!("exec {} backups", io_uring_rm().display());
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
