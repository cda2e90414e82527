//! Deletions seen by the real probes, end to end: kernel → ring buffer →
//! decoder → `levee-agent run --json`. Needs root; see `support`.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use crate::support::{path_of, run_in, Agent, Mount, Sandbox};
use serde_json::Value;

/// Every event's path, counting repeats.
fn path_counts(events: &[Value]) -> BTreeMap<Vec<u8>, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(path_of(e)).or_insert(0) += 1;
    }
    counts
}

fn bytes(paths: &[PathBuf]) -> BTreeSet<Vec<u8>> {
    paths.iter().map(|p| p.as_os_str().as_bytes().to_vec()).collect()
}

/// Asserts each of `expected` was seen exactly once, succeeded, and was done by `pid`.
fn assert_each_once(events: &[Value], expected: &[PathBuf], pid: u32, comm: &str) {
    let counts = path_counts(events);
    let seen: BTreeSet<Vec<u8>> = counts.keys().cloned().collect();
    assert_eq!(seen, bytes(expected), "the set of deleted paths");
    assert!(counts.values().all(|&n| n == 1), "a path was reported twice");
    for e in events {
        assert_eq!(e["result"], "ok", "{e}");
        assert_eq!(e["errno"], Value::Null, "{e}");
        assert_eq!(e["process"]["pid"], pid, "{e}");
        assert_eq!(e["process"]["comm"], comm, "{e}");
        assert_eq!(e["path_complete"], true, "{e}");
    }
}

#[test]
fn one_file_deleted_by_another_user_is_attributed() {
    let sandbox = Sandbox::new();
    std::fs::set_permissions(sandbox.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = sandbox.path().join("victim.txt");
    std::fs::write(&file, b"data").unwrap();
    let agent = Agent::start(&sandbox);

    let before = SystemTime::now();
    let mut rm = Command::new("rm")
        .arg(&file)
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let pid = rm.id();
    assert!(rm.wait().unwrap().success());
    let after = SystemTime::now();

    let events = agent.deletions_under(&file, |seen| !seen.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(path_of(e), file.as_os_str().as_bytes());
    assert_eq!(e["op"], "unlinkat");
    assert_eq!(e["result"], "ok");
    assert_eq!(e["process"]["pid"], pid);
    assert_eq!(e["process"]["tid"], pid);
    assert_eq!(e["process"]["ppid"], std::process::id());
    assert_eq!(e["process"]["uid"], 65534);
    assert_eq!(e["process"]["gid"], 65534);
    assert_eq!(e["process"]["comm"], "rm");
    assert!(e["process"]["cgroup_id"].as_u64().unwrap() > 0);
    // Routine records are timed to the kernel's tick (a few ms early at
    // most, never late); the slack covers that, a late tick on a busy VM and
    // the clocks' drift since the agent started. A reading never refreshed
    // would date from the agent's start-up, far earlier.
    let time = humantime::parse_rfc3339(e["time"].as_str().unwrap()).unwrap();
    let slack = Duration::from_millis(50);
    assert!(
        time + slack >= before && time <= after + slack,
        "{time:?} outside {before:?}..{after:?}"
    );
    agent.stop();
}

#[test]
fn rm_rf_of_a_thousand_files_is_seen_whole_with_relative_dirfds() {
    let sandbox = Sandbox::new();
    let made = sandbox.tree("tree", 10, 1000);
    let agent = Agent::start(&sandbox);

    // From inside the sandbox, `rm -rf tree` unlinks by name relative to
    // directory fds: the probe must rebuild every absolute path itself.
    let pid = run_in(sandbox.path(), "rm", &[OsStr::new("-rf"), OsStr::new("tree")]);

    let events = agent.deletions_under(&made[0], |seen| seen.len() >= made.len());
    assert_each_once(&events, &made, pid, "rm");
    let dirs = events.iter().filter(|e| e["op"] == "unlinkat_dir").count();
    assert_eq!(
        dirs, 11,
        "10 subdirectories and the root, removed with AT_REMOVEDIR"
    );
    let losses = agent.stop().pop().expect("final loss report");
    assert_eq!(losses["type"], "losses");
    assert_eq!(losses["ring_buffer_full"], 0);
}

#[test]
fn find_delete_is_seen_whole() {
    let sandbox = Sandbox::new();
    let made = sandbox.tree("tree", 7, 300);
    let agent = Agent::start(&sandbox);

    let pid = run_in(
        sandbox.path(),
        "find",
        &[OsStr::new("tree"), OsStr::new("-delete")],
    );

    let events = agent.deletions_under(&made[0], |seen| seen.len() >= made.len());
    assert_each_once(&events, &made, pid, "find");
    agent.stop();
}

#[test]
fn failed_unlink_carries_its_errno_and_rmdir_is_seen() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path().join("never-existed");
    let dir = sandbox.path().join("empty-dir");
    std::fs::create_dir(&dir).unwrap();
    let agent = Agent::start(&sandbox);

    let status = Command::new("unlink")
        .arg(&missing)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    run_in(sandbox.path(), "rmdir", &[dir.as_os_str()]);

    let failed = agent.deletions_under(&missing, |seen| !seen.is_empty());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["op"], "unlink");
    assert_eq!(failed[0]["result"], "ENOENT");
    assert_eq!(failed[0]["errno"], 2);
    let removed = agent.deletions_under(&dir, |seen| !seen.is_empty());
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["op"], "rmdir");
    assert_eq!(removed[0]["result"], "ok");
    agent.stop();
}

#[test]
fn names_with_newlines_and_invalid_utf8_arrive_byte_exact() {
    let sandbox = Sandbox::new();
    let names: [&[u8]; 3] = [b"new\nline", b"bad\xff\xfe", b"back\\slash \"q\""];
    let files: Vec<PathBuf> = names
        .iter()
        .map(|n| sandbox.path().join(OsStr::from_bytes(n)))
        .collect();
    for f in &files {
        std::fs::write(f, b"").unwrap();
    }
    let agent = Agent::start(&sandbox);

    let args: Vec<&OsStr> = names.iter().map(|n| OsStr::from_bytes(n)).collect();
    let pid = run_in(sandbox.path(), "rm", &args);

    let events = agent.deletions_under(sandbox.path(), |seen| seen.len() >= files.len());
    assert_each_once(&events, &files, pid, "rm");
    let bad = events.iter().find(|e| path_of(e).ends_with(b"\xff\xfe")).unwrap();
    let escaped = bad["path"].as_str().unwrap();
    assert!(escaped.ends_with("/bad\\xff\\xfe"), "escaped form: {escaped}");
    agent.stop();
}

#[test]
fn relative_path_is_resolved_across_a_mount() {
    let sandbox = Sandbox::new();
    let mnt = sandbox.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Mount::new(Path::new("tmpfs"), &mnt, "tmpfs");
    std::fs::create_dir(mnt.join("inner")).unwrap();
    let file = mnt.join("inner/file");
    std::fs::write(&file, b"").unwrap();
    let agent = Agent::start(&sandbox);

    // The cwd is inside the tmpfs: the walk must climb out of it into /tmp.
    let pid = run_in(&mnt.join("inner"), "rm", &[OsStr::new("file")]);

    let events = agent.deletions_under(&file, |seen| !seen.is_empty());
    assert_each_once(&events, &[file], pid, "rm");
    agent.stop();
    drop(mount);
}

/// A directory's walk is replayed for the next name relative to it on the
/// same CPU: a parent renamed, or the mount under it moved, between two
/// deletions must show in the second's path at once. One process pinned to
/// one CPU does both, microseconds apart, in a mount namespace of its own
/// (where the sandbox is private, so its mount may move); the renames name
/// absolute paths, so no walk of theirs replaces the one kept.
#[test]
fn a_directory_moved_between_two_deletions_shows_its_new_path() {
    let sandbox = Sandbox::new();
    let root = sandbox.path();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    for dir in ["m", "n"] {
        std::fs::create_dir(root.join(dir)).unwrap();
    }
    for name in ["f1", "f2"] {
        std::fs::write(root.join("a/b").join(name), b"").unwrap();
    }
    let agent = Agent::start(&sandbox);

    let script = "import ctypes, os, sys\n\
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n\
        root = sys.argv[1]\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        def mount(source, target, fstype, flags):\n\
        \x20   if libc.mount(source.encode(), target.encode(), fstype, flags, None) != 0:\n\
        \x20       raise OSError(ctypes.get_errno(), 'mount ' + target)\n\
        mount('tmpfs', root + '/m', b'tmpfs', 0)\n\
        os.mkdir(root + '/m/c')\n\
        for name in ('g1', 'g2'):\n\
        \x20   open(root + '/m/c/' + name, 'w').close()\n\
        b = os.open(root + '/a/b', os.O_RDONLY | os.O_DIRECTORY)\n\
        c = os.open(root + '/m/c', os.O_RDONLY | os.O_DIRECTORY)\n\
        os.unlink('f1', dir_fd=b)\n\
        os.rename(root + '/a', root + '/z')\n\
        os.unlink('f2', dir_fd=b)\n\
        os.unlink('g1', dir_fd=c)\n\
        mount(root + '/m', root + '/n', None, 8192)  # MS_MOVE\n\
        os.unlink('g2', dir_fd=c)\n";
    let pid = crate::support::run(
        Command::new("unshare")
            .args(["--mount", "python3", "-c", script])
            .arg(root),
    );

    let expected = ["a/b/f1", "z/b/f2", "m/c/g1", "n/c/g2"].map(|p| root.join(p));
    let events = agent.deletions_under(root, |seen| seen.len() >= expected.len());
    assert_each_once(&events, &expected, pid, "python3");
    agent.stop();
}

#[test]
fn a_path_near_path_max_arrives_whole() {
    let sandbox = Sandbox::new();
    // 29 components of 131 bytes: about 3.8 KiB below the sandbox.
    let mut deep = sandbox.path().to_path_buf();
    for i in 0..29 {
        deep.push(format!("{i:02}{}", "d".repeat(128)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let by_name = deep.join("by-name");
    let by_path = deep.join("by-path");
    std::fs::write(&by_name, b"").unwrap();
    std::fs::write(&by_path, b"").unwrap();
    assert!(by_path.as_os_str().len() > 3800 && by_path.as_os_str().len() < 4096);
    let agent = Agent::start(&sandbox);

    // One name relative to the cwd (the probe walks ~30 dentries), one
    // absolute path of almost PATH_MAX bytes (read whole from user memory).
    let relative = run_in(&deep, "rm", &[OsStr::new("by-name")]);
    let absolute = run_in(sandbox.path(), "rm", &[by_path.as_os_str()]);

    let events = agent.deletions_under(&by_name, |seen| !seen.is_empty());
    assert_each_once(&events, &[by_name], relative, "rm");
    let events = agent.deletions_under(&by_path, |seen| !seen.is_empty());
    assert_each_once(&events, &[by_path], absolute, "rm");
    agent.stop();
}

#[test]
fn a_directory_deeper_than_the_walk_is_flagged_incomplete() {
    let sandbox = Sandbox::new();
    // The probe walks 1024 levels: 1100 of one-letter names stay within
    // PATH_MAX, so the whole path can be named at once.
    let mut deep = sandbox.path().to_path_buf();
    for _ in 0..1100 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), b"").unwrap();
    let agent = Agent::start(&sandbox);

    let pid = run_in(&deep, "rm", &[OsStr::new("leaf")]);

    // Incomplete paths do not start with the sandbox prefix: match the tail.
    let suffix: Vec<u8> = "/d"
        .repeat(20)
        .into_bytes()
        .into_iter()
        .chain(*b"/leaf")
        .collect();
    let by_rm = |seen: &[Value]| {
        seen.iter()
            .filter(|e| e["process"]["pid"] == pid)
            .cloned()
            .collect::<Vec<_>>()
    };
    let events = by_rm(&agent.deletions_under(Path::new("/"), |seen| !by_rm(seen).is_empty()));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["path_complete"], false);
    assert!(path_of(&events[0]).ends_with(&suffix));
    agent.stop();
}

/// Every probe must verify far from the verifier's 1,000,000-instruction
/// limit: path walks once unrolled to 96 levels left some within 2% of it,
/// so one more branch, or another kernel's verifier, would refuse them.
#[test]
fn every_probe_verifies_far_below_the_verifier_limit() {
    let sandbox = Sandbox::new();
    let agent = Agent::start(&sandbox);
    let (_, stderr) = agent.stop_with_stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("heaviest program for the verifier"))
        .unwrap_or_else(|| panic!("no verifier count logged:\n{stderr}"));
    let count: u64 = line
        .split("instructions=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"));
    assert!(count < 250_000, "{line}");
    // The io_uring probes are optional, skipped with a warning where they
    // do not load: here, on the kernel the tests run on, they must.
    assert!(
        !stderr.contains(agent::probes::IO_URING_BLIND),
        "the io_uring probes did not load:\n{stderr}"
    );
}

#[test]
fn ring_buffer_overflow_is_counted_not_silent() {
    let sandbox = Sandbox::new();
    let made = sandbox.tree("tree", 4, 3000);
    // One page of ring buffer holds a few dozen records.
    let agent = Agent::start_with(&sandbox, &["--ring-buffer-bytes", "4096"]);
    let agent_pid = nix::unistd::Pid::from_raw(agent.pid() as i32);

    // Freeze the consumer so the kernel side must overflow.
    nix::sys::signal::kill(agent_pid, nix::sys::signal::SIGSTOP).unwrap();
    run_in(sandbox.path(), "rm", &[OsStr::new("-rf"), OsStr::new("tree")]);
    nix::sys::signal::kill(agent_pid, nix::sys::signal::SIGCONT).unwrap();

    let tree = made[0].clone();
    let lines = agent.stop();
    let received = lines
        .iter()
        .filter(|l| l["type"] == "deletion" && path_of(l).starts_with(tree.as_os_str().as_bytes()))
        .count();
    let losses = lines.last().expect("final loss report");
    assert_eq!(losses["type"], "losses", "{losses}");
    let dropped = losses["ring_buffer_full"].as_u64().unwrap();
    assert!(
        received < made.len(),
        "a 4 KiB ring cannot hold {} records",
        made.len()
    );
    assert!(dropped > 0, "overflow must be counted");
    assert!(
        received as u64 + dropped >= made.len() as u64,
        "received {received} + dropped {dropped}"
    );
}
