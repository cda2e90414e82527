//! Who did it: sessions, jobs, ancestry, exec argv, and the other ways to
//! destroy data (block devices, rename, truncation).

use std::{
    ffi::OsStr,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    process::Command,
};

use serde_json::Value;

use crate::support::{path_of, run, run_in, Agent, LoopDevice, Mount, Sandbox, WIPE, WIPES};

fn by_pid(pid: u32) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["process"]["pid"] == pid
}

fn of_type<'a>(kind: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e: &Value| e["type"] == kind
}

#[test]
fn a_one_millisecond_process_is_attributed_to_its_session_with_ancestry() {
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let agent = Agent::start(&sandbox);

    let pid = run_in(sandbox.path(), "rm", &[file.as_os_str()]);

    let events = agent.deletions_under(&file, |seen| !seen.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    let own_sid = nix::unistd::getsid(None).unwrap().as_raw();
    // The test runs with no audit session, in no container or unit: the
    // POSIX session is what is left, never the unset audit id.
    assert_eq!(e["process"]["audit_session"], Value::Null);
    assert_eq!(e["session"]["key"], format!("sid:{own_sid}"));
    let ancestry = e["ancestry"].as_array().unwrap();
    assert_eq!(ancestry[0]["pid"], pid);
    assert_eq!(
        ancestry[0]["exe"], "/usr/bin/rm",
        "exe from the exec event, not /proc"
    );
    assert_eq!(
        ancestry[0]["argv"],
        serde_json::json!(["rm", file.to_str().unwrap()])
    );
    assert_eq!(ancestry[1]["pid"], std::process::id(), "the parent is this test");
    agent.stop();
}

#[test]
fn a_login_like_session_is_recognised_with_its_user() {
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let agent = Agent::start(&sandbox);

    // setsid, then a login uid: the kernel starts a new audit session.
    let script = format!("echo 65534 > /proc/self/loginuid && exec rm {}", file.display());
    run(Command::new("setsid").args(["--wait", "sh", "-c", &script]));

    let events = agent.deletions_under(&file, |seen| !seen.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    let audit = e["process"]["audit_session"].as_u64().expect("an audit session");
    assert_eq!(e["process"]["login_uid"], 65534);
    assert_eq!(e["session"]["key"], format!("login:{audit}"));
    assert_eq!(e["session"]["login_user"], "nobody");
    let sid = e["process"]["sid"].as_u64().unwrap();
    assert_ne!(
        sid,
        u64::from(nix::unistd::getsid(None).unwrap().as_raw() as u32),
        "setsid made a new session"
    );
    agent.stop();
}

#[test]
fn find_exec_rm_is_one_session_and_one_job_across_many_processes() {
    let sandbox = Sandbox::new();
    let made = sandbox.tree("tree", 3, 40);
    let files: Vec<_> = made.iter().filter(|p| p.is_file()).cloned().collect();
    let agent = Agent::start(&sandbox);

    run(Command::new("setsid")
        .args(["--wait", "find", "tree", "-type", "f", "-exec", "rm", "{}", ";"])
        .current_dir(sandbox.path()));

    let events = agent.deletions_under(&made[0], |seen| seen.len() >= files.len());
    assert_eq!(events.len(), files.len());
    let pids: std::collections::BTreeSet<_> = events.iter().map(|e| e["process"]["pid"].as_u64()).collect();
    assert_eq!(pids.len(), files.len(), "one rm process per file");
    let keys: std::collections::BTreeSet<_> =
        events.iter().map(|e| e["session"]["key"].to_string()).collect();
    let jobs: std::collections::BTreeSet<_> = events.iter().map(|e| e["process"]["pgid"].as_u64()).collect();
    assert_eq!(keys.len(), 1, "one session: {keys:?}");
    assert_eq!(jobs.len(), 1, "one job: {jobs:?}");
    // setsid forks, so find's pid is not the one we waited for; find leads
    // the new session and every rm's ancestry ends at it.
    for e in &events {
        let ancestry = e["ancestry"].as_array().unwrap();
        assert_eq!(ancestry[0]["comm"], "rm");
        assert_eq!(ancestry.last().unwrap()["comm"], "find", "{ancestry:?}");
        assert_eq!(ancestry.last().unwrap()["pid"], e["process"]["sid"]);
    }
    agent.stop();
}

/// `dd` to a loop device, buffered then direct: every byte attributed to dd,
/// with the device named and the offsets covering what was written.
#[test]
fn dd_to_a_loop_device_is_a_raw_write_by_dd_buffered_and_direct() {
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 8);
    let agent = Agent::start(&sandbox);
    let of = format!("of={}", disk.device.display());

    for (flag, count) in [(None, 16u64), (Some("oflag=direct"), 8)] {
        let mut dd = Command::new("dd");
        dd.args([
            "if=/dev/zero",
            &of,
            "bs=64k",
            &format!("count={count}"),
            "status=none",
        ]);
        dd.args(flag);
        let pid = run(&mut dd);

        let expected = count * 64 * 1024;
        let sum = |seen: &[Value]| seen.iter().map(|e| e["bytes"].as_u64().unwrap()).sum::<u64>();
        let writes = agent.collect(
            |e| by_pid(pid)(e) && of_type("block_write")(e),
            |seen| sum(seen) >= expected,
        );
        assert_eq!(sum(&writes), expected, "{flag:?}: bytes written by dd");
        for w in &writes {
            assert_eq!(w["device"]["name"], disk.name());
            assert_eq!(w["process"]["comm"], "dd");
        }
        let end = writes
            .iter()
            .map(|w| w["offset"].as_u64().unwrap() + w["bytes"].as_u64().unwrap())
            .max();
        assert_eq!(end, Some(expected), "{flag:?}: offsets cover the range written");
        assert_eq!(
            writes.iter().map(|w| w["offset"].as_u64().unwrap()).min(),
            Some(0)
        );
    }
    agent.stop();
}

/// Vectored writes are recorded at entry with every iovec counted: the
/// kernel's most (1024) at the file position, a positioned one, and
/// `pwritev2` at the file position (-1).
#[test]
fn vectored_writes_to_a_loop_device_count_all_their_iovecs() {
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 2);
    let agent = Agent::start(&sandbox);
    let script = "import os, sys\n\
        fd = os.open(sys.argv[1], os.O_WRONLY)\n\
        assert os.writev(fd, [b'a' * 512] * 1024) == 512 * 1024\n\
        assert os.pwritev(fd, [b'b' * 4096] * 3, 1 << 20) == 3 * 4096\n\
        assert os.pwritev(fd, [b'c' * 100, b'd' * 412], -1, os.RWF_DSYNC) == 512\n";

    let pid = run(Command::new("python3").args(["-c", script]).arg(&disk.device));

    let writes = agent.collect(
        |e| by_pid(pid)(e) && of_type("block_write")(e),
        |seen| seen.len() >= 3,
    );
    let seen: Vec<_> = writes
        .iter()
        .map(|w| (w["offset"].as_u64().unwrap(), w["bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, [(0, 512 * 1024), (1 << 20, 3 * 4096), (512 * 1024, 512)]);
    assert!(writes.iter().all(|w| w["device"]["name"] == disk.name()));
    agent.stop();
}

/// The other ways to destroy a device than `write` (`blkdiscard`'s three
/// ioctls, an erasing `fallocate`, `sendfile`, `splice`, a shared writable
/// mapping) are raw writes of the range they destroy, recorded as each
/// call starts: even one the device refuses (a loop device has no secure
/// discard).
#[test]
fn every_way_to_wipe_a_loop_device_without_write_is_a_raw_write() {
    const SIZE: u64 = 4 << 20;
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 4);
    let agent = Agent::start(&sandbox);

    let pids: Vec<(u32, &str, &str)> = WIPES
        .iter()
        .map(|&(how, op)| {
            let mut child = Command::new("python3")
                .args(["-c", WIPE, how])
                .arg(&disk.device)
                .spawn()
                .expect("spawn python3");
            let status = child.wait().expect("wait python3");
            let refused = how == "secure-discard";
            assert_eq!(status.code(), Some(if refused { 3 } else { 0 }), "{how}");
            (child.id(), how, op)
        })
        .collect();

    let everything = agent.everything_until_now(&sandbox);
    for (pid, how, op) in pids {
        let wipes: Vec<&Value> = everything
            .iter()
            .filter(|e| by_pid(pid)(e) && of_type("block_write")(e))
            .collect();
        // `splice` goes through a pipe: a call per pipeful, one after
        // another. The others take the device in one call.
        let mut end = 0;
        for e in &wipes {
            assert_eq!((&e["op"], &e["offset"]), (&op.into(), &end.into()), "{how}: {e}");
            assert_eq!(e["device"]["name"], disk.name(), "{how}: {e}");
            end += e["bytes"].as_u64().unwrap();
        }
        assert_eq!(end, SIZE, "{how}: {wipes:#?}");
        if how != "splice" {
            assert_eq!(wipes.len(), 1, "{how}: {wipes:#?}");
        }
    }
    agent.stop();
}

#[test]
fn opening_a_block_device_for_writing_is_an_event() {
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 1);
    let agent = Agent::start(&sandbox);

    let pid = run(Command::new("sh")
        .arg("-c")
        .arg(format!(": > {}", disk.device.display())));

    let opens = agent.collect(
        |e| by_pid(pid)(e) && of_type("block_open")(e),
        |seen| !seen.is_empty(),
    );
    assert_eq!(opens.len(), 1);
    assert_eq!(path_of(&opens[0]), disk.device.as_os_str().as_bytes());
    assert_eq!(opens[0]["device"]["name"], disk.name());
    let everything = agent.everything_until_now(&sandbox);
    assert!(
        !everything
            .iter()
            .any(|e| by_pid(pid)(e) && e["type"] == "truncate"),
        "O_TRUNC on a device is not a file truncation"
    );
    agent.stop();
}

/// Writes to a file on a filesystem that lives on a loop device reach the
/// device through the kernel (page cache, journal): not a user's raw write.
#[test]
fn file_writes_on_a_loop_mounted_filesystem_are_not_raw_device_writes() {
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 16);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk.device));
    let mnt = sandbox.path().join("mnt");
    let mount = Mount::new(&disk.device, &mnt, "ext4");
    let agent = Agent::start(&sandbox);

    let pid = run(Command::new("dd").args([
        "if=/dev/zero",
        &format!("of={}", mnt.join("file").display()),
        "bs=64k",
        "count=32",
        "conv=fsync",
        "status=none",
    ]));
    run(&mut Command::new("sync"));

    let everything = agent.everything_until_now(&sandbox);
    assert!(
        everything.iter().any(by_pid(pid)),
        "dd's own events arrived (its exec at least)"
    );
    let raw: Vec<_> = everything
        .iter()
        .filter(|e| matches!(e["type"].as_str(), Some("block_write" | "block_open")))
        .filter(|e| e["device"]["name"] == disk.name())
        .collect();
    assert!(raw.is_empty(), "no raw device access expected: {raw:?}");
    agent.stop();
    drop(mount);
}

#[test]
fn long_argv_is_captured_and_its_truncation_flagged() {
    let sandbox = Sandbox::new();
    let agent = Agent::start(&sandbox);
    let args: Vec<String> = (0..100).map(|i| format!("{i:03}-{}", "a".repeat(200))).collect();

    let pid = run(Command::new("/bin/true").args(&args));

    let execs = agent.collect(|e| by_pid(pid)(e) && of_type("exec")(e), |seen| !seen.is_empty());
    assert_eq!(execs.len(), 1);
    let exec = &execs[0];
    assert_eq!(exec["argv_truncated"], true);
    let argv = exec["argv"].as_array().unwrap();
    assert_eq!(argv[0], "/bin/true");
    assert_eq!(argv[1], args[0].as_str());
    assert_eq!(argv[10], args[9].as_str());
    assert!(argv.len() < 101, "cut, not whole: {}", argv.len());
    let total: usize = 10 + args.iter().map(|a| a.len() + 1).sum::<usize>();
    assert_eq!(exec["argv_bytes"], total);
    assert!(exec["exe"].as_str().unwrap().ends_with("/true"));
    agent.stop();
}

#[test]
fn rename_over_a_file_and_truncations_are_events() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path();
    for name in ["victim", "replacement", "to-trunc", "to-redirect"] {
        std::fs::write(dir.join(name), b"precious data").unwrap();
    }
    let agent = Agent::start(&sandbox);

    let mv = run_in(
        dir,
        "mv",
        &[OsStr::new("-f"), OsStr::new("replacement"), OsStr::new("victim")],
    );
    let truncate = run_in(
        dir,
        "truncate",
        &[OsStr::new("-s"), OsStr::new("0"), OsStr::new("to-trunc")],
    );
    let shell = run(Command::new("sh")
        .args(["-c", ": > to-redirect; : > brand-new"])
        .current_dir(dir));

    let rename = agent.collect(
        |e| by_pid(mv)(e) && of_type("rename")(e),
        |seen| seen.iter().any(|e| e["result"] == "ok"),
    );
    let ok = rename
        .iter()
        .find(|e| e["result"] == "ok")
        .expect("a successful rename");
    assert_eq!(ok["from"], dir.join("replacement").to_str().unwrap());
    assert_eq!(ok["to"], dir.join("victim").to_str().unwrap());

    let cut = agent.collect(
        |e| by_pid(truncate)(e) && of_type("truncate")(e),
        |seen| !seen.is_empty(),
    );
    assert_eq!(cut[0]["op"], "ftruncate");
    assert_eq!(cut[0]["length"], 0);
    assert_eq!(cut[0]["size_before"], 13);
    assert_eq!(cut[0]["path"], dir.join("to-trunc").to_str().unwrap());

    let redirects = truncations_until_now(&agent, &sandbox, shell);
    assert_eq!(redirects.len(), 1, "only the existing file counts: {redirects:?}");
    assert_eq!(redirects[0]["op"], "open_trunc");
    assert_eq!(redirects[0]["path"], dir.join("to-redirect").to_str().unwrap());
    agent.stop();
}

/// Every truncation by `pid` the agent has seen so far.
fn truncations_until_now(agent: &Agent, sandbox: &Sandbox, pid: u32) -> Vec<Value> {
    let everything = agent.everything_until_now(sandbox);
    everything
        .into_iter()
        .filter(|e| by_pid(pid)(e) && of_type("truncate")(e))
        .collect()
}

/// `openat2` keeps its flags in user memory: an existing file it truncates
/// is reported, a file it creates or only reads is not.
#[test]
fn openat2_truncating_an_existing_file_is_reported() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path();
    std::fs::write(dir.join("existing"), b"some bytes").unwrap();
    std::fs::write(dir.join("read-only"), b"some bytes").unwrap();
    let agent = Agent::start(&sandbox);

    let openat2 = |name: &str, flags: i32| {
        let path = std::ffi::CString::new(dir.join(name).as_os_str().as_bytes()).unwrap();
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.mode = if flags & libc::O_CREAT != 0 { 0o644 } else { 0 };
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        assert!(fd >= 0, "openat2 {name}: {}", std::io::Error::last_os_error());
        unsafe { libc::close(fd as i32) };
    };
    openat2("existing", libc::O_WRONLY | libc::O_TRUNC);
    openat2("brand-new", libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
    openat2("read-only", libc::O_RDONLY);

    let cut = truncations_until_now(&agent, &sandbox, std::process::id());
    assert_eq!(cut.len(), 1, "only the existing file counts: {cut:?}");
    assert_eq!(cut[0]["op"], "open_trunc");
    assert_eq!(cut[0]["path"], dir.join("existing").to_str().unwrap());
    assert_eq!(std::fs::metadata(dir.join("existing")).unwrap().len(), 0);
    agent.stop();
}

/// `creat` truncates what exists, and `open_by_handle_at` opens by a
/// handle instead of a path: both are opens with `O_TRUNC`, reported with
/// the path of the file they cut.
#[test]
fn creat_and_open_by_handle_at_truncating_existing_files_are_reported() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path();
    for name in ["created-over", "by-handle"] {
        std::fs::write(dir.join(name), b"some bytes").unwrap();
    }
    let c_path = |name: &str| std::ffi::CString::new(dir.join(name).as_os_str().as_bytes()).unwrap();
    let agent = Agent::start(&sandbox);

    let fd = unsafe { libc::creat(c_path("created-over").as_ptr(), 0o644) };
    assert!(fd >= 0, "creat: {}", std::io::Error::last_os_error());
    unsafe { libc::close(fd) };

    // `struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; }`.
    let mut handle = [0u32; 34];
    handle[0] = (std::mem::size_of_val(&handle) - 8) as u32;
    let mut mount_id = 0i32;
    let named = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c_path("by-handle").as_ptr(),
            handle.as_mut_ptr(),
            &mut mount_id as *mut i32,
            0,
        )
    };
    assert_eq!(named, 0, "name_to_handle_at: {}", std::io::Error::last_os_error());
    let mount = std::fs::File::open(dir).unwrap();
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            handle.as_ptr(),
            libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC,
        )
    };
    assert!(fd >= 0, "open_by_handle_at: {}", std::io::Error::last_os_error());
    unsafe { libc::close(fd as i32) };

    let cut = truncations_until_now(&agent, &sandbox, std::process::id());
    let paths: Vec<(&str, &str)> = cut
        .iter()
        .map(|e| (e["op"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    assert_eq!(
        paths,
        [
            ("open_trunc", &*path("created-over")),
            ("open_trunc", &*path("by-handle"))
        ]
    );
    for name in ["created-over", "by-handle"] {
        assert_eq!(std::fs::metadata(dir.join(name)).unwrap().len(), 0, "{name}");
    }
    agent.stop();
}
