//! Stopping destruction: the in-kernel guard, userspace scoring and kills,
//! monitor mode, benign work that must pass, and policy reloads. Each attack
//! runs in a login session of its own (see `support::in_login_session`).

use std::{
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::process::ExitStatusExt,
    },
    path::Path,
    process::Command,
};

use serde_json::Value;

use crate::support::{
    count_files, in_login_session, in_login_session_with_env, run, test_policy, Agent, LoopDevice, Sandbox,
    WIPE, WIPES,
};

const LIMIT: usize = 100;

fn killed(status: std::process::ExitStatus) -> bool {
    status.signal() == Some(libc::SIGKILL)
}

/// `n` files spread over directories below `dir`.
fn fill(dir: &Path, dirs: usize, n: usize) {
    for d in 0..dirs {
        std::fs::create_dir_all(dir.join(format!("d{d:03}"))).unwrap();
    }
    for i in 0..n {
        std::fs::write(dir.join(format!("d{:03}/f{i:05}", i % dirs)), b"x").unwrap();
    }
}

/// `levels` directories named `name`, each in the one before, below `top`,
/// and `files` empty files in the deepest: through directory fds, as paths
/// that long cannot be named whole.
fn nest(top: &Path, levels: usize, name: &str, files: usize) {
    use std::{ffi::CString, os::fd::FromRawFd};
    let openat = |dir: &OwnedFd, name: &CString, flags: i32| {
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
        assert!(fd >= 0, "openat {name:?}: {}", std::io::Error::last_os_error());
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let mut dir = OwnedFd::from(std::fs::File::open(top).unwrap());
    let name = CString::new(name).unwrap();
    for _ in 0..levels {
        let made = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) };
        assert_eq!(made, 0, "mkdirat: {}", std::io::Error::last_os_error());
        dir = openat(&dir, &name, libc::O_DIRECTORY | libc::O_RDONLY);
    }
    for i in 0..files {
        openat(
            &dir,
            &CString::new(format!("f{i}")).unwrap(),
            libc::O_CREAT | libc::O_WRONLY,
        );
    }
}

/// The guard's promise for a protected class: `rm` killed, at most one file
/// past the limit lost.
fn assert_rm_stopped_within_limit(status: std::process::ExitStatus, lost: usize) {
    assert!(killed(status), "rm must die by SIGKILL: {status:?}");
    assert!(lost <= LIMIT + 1, "lost {lost} files, limit {LIMIT}");
}

fn severity_at_least_high(alert: &Value) -> bool {
    matches!(alert["severity"].as_str(), Some("high" | "critical"))
}

#[test]
fn rm_rf_of_20000_files_under_a_protected_class_is_killed_within_the_limit() {
    let sandbox = Sandbox::new();
    let backups = sandbox.path().join("backups");
    fill(&backups, 100, 20_000);
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));

    let (status, session) = in_login_session(sandbox.path(), "exec rm -rf backups");

    assert_rm_stopped_within_limit(status, 20_000 - count_files(&backups));
    let alert = agent.guard_alert(session);
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["guard"]["reason"], "limit_crossed");
    assert_eq!(alert["guard"]["killed"], true);
    assert_eq!(alert["guard"]["limit"], LIMIT);
    assert!(
        alert["mitre"].as_array().unwrap().contains(&Value::from("T1490")),
        "backups: inhibit recovery"
    );
    assert!(alert["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "guard:kernel_limit_crossed"));
    assert_eq!(alert["process"]["comm"], "rm");
    agent.stop();
}

/// Directory names past what a record holds (8 KiB) must not hide where the
/// files are: the probe stops writing names but walks on up to the
/// protected directory.
#[test]
fn files_nested_deeper_than_a_record_holds_still_count_in_their_class() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path().join("backups")).unwrap();
    // 48 levels of 200-byte names, about 9.6 KiB: past PATH_MAX as well, so
    // they are made one level at a time, relative to the one above.
    nest(&sandbox.path().join("backups"), 48, &"n".repeat(200), 3 * LIMIT);
    let left = || {
        let out = Command::new("sh")
            .args(["-c", "find backups -type f | wc -l"])
            .current_dir(sandbox.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(left(), 3 * LIMIT);
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));

    let (status, _) = in_login_session(sandbox.path(), "exec rm -rf backups");

    assert_rm_stopped_within_limit(status, 3 * LIMIT - left());
    agent.stop();
}

/// In a DaemonSet pod the agent's mount namespace is the container's, where
/// the host's protected directories are missing or something else: the guard
/// must still protect the host's.
#[test]
fn an_agent_in_a_mount_namespace_of_its_own_guards_the_hosts_directories() {
    let sandbox = Sandbox::new();
    let backups = sandbox.path().join("backups");
    fill(&backups, 10, 2_000);
    let policy = test_policy(&sandbox, "enforce", LIMIT as u32, &[]);
    let agent = Agent::start_hiding(&sandbox, &policy, &backups);

    let (status, session) = in_login_session(sandbox.path(), "exec rm -rf backups");

    assert_rm_stopped_within_limit(status, 2_000 - count_files(&backups));
    let alert = agent.guard_alert(session);
    assert_eq!(alert["guard"]["reason"], "limit_crossed");
    agent.stop();
}

/// `safety.never_kill` holds in the kernel too: a spared program is counted
/// and reported at the limit, and neither the guard nor the agent kills it.
#[test]
fn a_never_kill_program_is_reported_at_the_limit_but_not_killed() {
    let sandbox = Sandbox::new();
    let backups = sandbox.path().join("backups");
    fill(&backups, 2, 300);
    let spared = sandbox.path().join("spared-rm");
    std::fs::copy("/usr/bin/rm", &spared).unwrap();
    let never_kill = format!("never_kill = [{:?}]", spared.display().to_string());
    let policy = test_policy(&sandbox, "enforce", LIMIT as u32, &[]).replace("never_kill = []", &never_kill);
    let agent = Agent::start_with_policy(&sandbox, &policy);

    let (status, session) =
        in_login_session(sandbox.path(), &format!("exec {} -rf backups", spared.display()));

    assert!(status.success(), "a never_kill program is not killed: {status:?}");
    assert!(!backups.exists(), "it deleted everything");
    let alert = agent.guard_alert(session);
    assert_eq!(alert["guard"]["reason"], "limit_crossed");
    assert_eq!(alert["guard"]["killed"], false);
    agent.stop();
}

#[test]
fn a_shell_loop_of_one_rm_per_file_is_stopped_as_a_session() {
    let sandbox = Sandbox::new();
    let backups = sandbox.path().join("backups");
    fill(&backups, 1, 1000);
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));

    let (status, session) = in_login_session_with_env(
        sandbox.path(),
        r#"for f in backups/*/*; do rm "$f"; done"#,
        &[("SSH_CONNECTION", "203.0.113.7 52100 192.0.2.1 22")],
    );

    assert!(
        killed(status),
        "the looping shell itself must be killed: {status:?}"
    );
    // `rm backups/d000/fN` names its directory relative to the cwd, which the
    // probe does not walk: the agent enforces this class limit from its own
    // count, milliseconds behind the kernel. Stopped near the limit, far from
    // the 1,000 files the loop would have taken.
    let lost = 1000 - count_files(&backups);
    assert!(
        (LIMIT - 1..2 * LIMIT).contains(&lost),
        "lost {lost} files, limit {LIMIT}"
    );
    let alerts = agent.alerts_for(session, |seen| {
        seen.iter().any(|a| a["action"]["kind"] == "killed")
    });
    let acted = alerts
        .iter()
        .find(|a| a["action"]["kind"] == "killed")
        .expect("the agent acted");
    assert_eq!(
        acted["action"]["kill"]["target"],
        format!("login session {session}")
    );
    // Read from the looping shell before it was killed.
    assert_eq!(acted["origin"]["remote_address"], "203.0.113.7:52100", "{acted}");
    let everything = agent.everything_until_now(&sandbox);
    let exec_kills = everything
        .iter()
        .filter(|e| e["type"] == "guard" && e["hook"] == "exec" && e["killed"] == true)
        .count();
    assert!(exec_kills < 1000 - LIMIT, "{exec_kills}");
    agent.stop();
}

#[test]
fn find_exec_rm_is_stopped() {
    let sandbox = Sandbox::new();
    let backups = sandbox.path().join("backups");
    fill(&backups, 4, 600);
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));

    let (status, session) = in_login_session(sandbox.path(), r"exec find backups -type f -exec rm {} \;");

    assert!(killed(status), "find must be killed: {status:?}");
    // As in the shell loop: `rm backups/dNNN/fN` is enforced by the agent.
    let lost = 600 - count_files(&backups);
    assert!(
        (LIMIT - 1..2 * LIMIT).contains(&lost),
        "lost {lost} files, limit {LIMIT}"
    );
    let alerts = agent.alerts_for(session, |seen| seen.iter().any(|a| a["severity"] == "critical"));
    assert!(alerts.iter().any(|a| a["severity"] == "critical"));
    agent.stop();
}

#[test]
fn dd_over_a_loop_device_holding_a_filesystem_is_killed() {
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 32);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk.device));
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));

    let script = format!(
        "exec dd if=/dev/zero of={} bs=64k count=256 oflag=direct status=none",
        disk.device.display()
    );
    let (status, session) = in_login_session(sandbox.path(), &script);

    assert!(killed(status), "dd must be killed: {status:?}");
    let alert = agent.device_guard_alert(session, &disk, "dd");
    assert_eq!(alert["severity"], "critical");
    assert!(alert["mitre"]
        .as_array()
        .unwrap()
        .contains(&Value::from("T1561.001")));
    // At most the first 64 KiB write went through: the rest of the device is untouched.
    let backing = std::fs::read(&disk.backing).unwrap();
    let zeroed_from_start = backing.iter().take_while(|&&b| b == 0).count();
    assert!(
        zeroed_from_start <= 64 * 1024 * 2,
        "dd wrote {zeroed_from_start} bytes of zeros"
    );
    agent.stop();
}

/// Wiping a protected device without `write` is stopped as `write` is:
/// the caller dies at the first call's entry. The pending SIGKILL ends the
/// ioctls before they erase a byte, and `sendfile` and `splice` before they
/// copy one; a shared mapping is never stored to. A block device's
/// `fallocate` does not look at signals (Linux 6.18), so that first call
/// completes, as an `unlink` does, and nothing after it.
#[test]
fn wiping_a_loop_device_holding_a_filesystem_without_write_is_killed_at_the_first_call() {
    const MIB: usize = 1 << 20;
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 32);
    // A pattern under the filesystem, kept where it has no metadata, so
    // that zeros or an erasure show anywhere.
    std::fs::write(&disk.device, vec![0xaa; 32 * MIB]).expect("fill device");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "nodiscard"])
        .arg(&disk.device));
    let content = || std::fs::read(&disk.device).expect("read device");
    // The ext4 magic, 0xEF53, at 1024 + 56.
    assert_eq!(content()[1080..1082], [0x53, 0xef]);
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));

    for (how, op) in WIPES {
        let before = content();
        let script = format!("exec python3 -c '{WIPE}' {how} {} {MIB}", disk.device.display());
        let (status, session) = in_login_session(sandbox.path(), &script);

        assert!(killed(status), "{how}: the wiper must be killed: {status:?}");
        let after = content();
        let spared = if op == "fallocate" { 31 * MIB } else { 32 * MIB };
        assert!(
            after[..spared] == before[..spared],
            "{how}: the device changed beyond what its first call may erase"
        );
        agent.device_guard_alert(session, &disk, how);
    }
    agent.stop();
}

/// Calls that name a protected device's fd but write nothing to it:
/// splicing it into a pipe, `sendfile` from it to a file, a read-only
/// shared mapping, shared anonymous memory given its fd (which the kernel
/// ignores), and asking its size (an ioctl).
const READ_DEVICE: &str = r#"
import ctypes, fcntl, mmap, os, sys
device, copy = sys.argv[1], sys.argv[2]
ro = os.open(device, os.O_RDONLY)
rw = os.open(device, os.O_RDWR)
pipe_out, pipe_in = os.pipe()
assert os.splice(ro, pipe_in, 65536, offset_src=0) == 65536
out = os.open(copy, os.O_WRONLY | os.O_CREAT, 0o600)
assert os.sendfile(out, ro, 0, 65536) == 65536
with mmap.mmap(ro, 4096, mmap.MAP_SHARED, mmap.PROT_READ) as m:
    m[0]
mmap_ = ctypes.CDLL(None, use_errno=True).mmap
mmap_.restype = ctypes.c_void_p
mmap_.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
shared = mmap_(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS, rw, 0)
assert shared not in (None, ctypes.c_void_p(-1).value)
ctypes.memset(shared, 1, 4096)
fcntl.ioctl(ro, 0x80081272, bytes(8))
"#;

#[test]
fn reading_a_protected_device_is_neither_recorded_nor_stopped() {
    let sandbox = Sandbox::new();
    let disk = LoopDevice::new(&sandbox, 8);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk.device));
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));

    let script = format!(
        "exec python3 -c '{READ_DEVICE}' {} {}",
        disk.device.display(),
        sandbox.path().join("copy").display()
    );
    let (status, session) = in_login_session(sandbox.path(), &script);

    assert!(status.success(), "the reader must live: {status:?}");
    let wrongly = agent.raised_by(&sandbox, session);
    assert!(wrongly.is_empty(), "{wrongly:#?}");
    agent.stop();
}

#[test]
fn shred_over_many_files_is_detected() {
    let sandbox = Sandbox::new();
    let docs = sandbox.path().join("docs");
    fill(&docs, 1, 40);
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));

    let (status, session) = in_login_session(sandbox.path(), "shred -u docs/*/*");

    assert!(
        status.success(),
        "shred outside protected paths is reported, not killed: {status:?}"
    );
    let alerts = agent.alerts_for(session, |seen| !seen.is_empty());
    let alert = &alerts[0];
    assert!(
        alert["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "destructive_command:shred"),
        "{alert}"
    );
    assert!(alert["mitre"]
        .as_array()
        .unwrap()
        .contains(&Value::from("T1070.004")));
    assert!(alert["action"].is_null());
    agent.stop();
}

#[test]
fn monitor_mode_alerts_on_the_same_attacks_and_kills_nothing() {
    let sandbox = Sandbox::new();
    let backups = sandbox.path().join("backups");
    fill(&backups, 3, 300);
    let disk = LoopDevice::new(&sandbox, 8);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk.device));
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "monitor", LIMIT as u32, &[]));

    let (rm, rm_session) = in_login_session(sandbox.path(), "exec rm -rf backups");
    let dd = format!(
        "exec dd if=/dev/zero of={} bs=64k count=16 status=none",
        disk.device.display()
    );
    let (dd, dd_session) = in_login_session(sandbox.path(), &dd);

    assert!(
        rm.success() && dd.success(),
        "nothing is killed in monitor mode: {rm:?} {dd:?}"
    );
    assert!(!backups.exists(), "the whole tree went");
    let mut guard_alerts = Vec::new();
    for session in [rm_session, dd_session] {
        let alerts = agent.alerts_for(session, |seen| seen.iter().any(|a| !a["guard"].is_null()));
        guard_alerts.extend(alerts.iter().filter(|a| !a["guard"].is_null()).cloned());
        let alert = alerts
            .iter()
            .find(|a| !a["guard"].is_null())
            .expect("the guard reported");
        assert_eq!(alert["severity"], "critical");
        assert_eq!(alert["guard"]["killed"], false);
        assert_eq!(alert["mode"], "monitor");
        assert!(
            alerts.iter().any(|a| a["action"]["kind"] == "monitored"),
            "{alerts:#?}"
        );
        assert!(!alerts.iter().any(|a| a["action"]["kind"] == "killed"));
    }
    // The guard acts once when rm crosses the limit, not again at each of
    // the hundreds of deletions past it, and once for dd's 16 writes.
    guard_alerts.extend(
        agent
            .everything_until_now(&sandbox)
            .into_iter()
            .filter(|e| e["type"] == "alert" && !e["guard"].is_null()),
    );
    let guard_alerts_of = |session: u64| {
        let key = format!("login:{session}");
        guard_alerts
            .iter()
            .filter(|a| a["session"]["key"] == key.as_str())
            .count()
    };
    assert_eq!(guard_alerts_of(rm_session), 1, "{guard_alerts:#?}");
    assert_eq!(guard_alerts_of(dd_session), 1, "{guard_alerts:#?}");
    agent.stop();
}

/// Work that deletes a lot but destroys nothing anyone protects: never
/// killed, never a high alert.
#[test]
fn benign_mass_deletions_are_neither_killed_nor_raised_high() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path();
    // cargo clean of a large target directory.
    std::fs::create_dir_all(dir.join("proj/src")).unwrap();
    std::fs::write(
        dir.join("proj/Cargo.toml"),
        "[package]\nname = \"proj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("proj/src/main.rs"), "fn main() {}\n").unwrap();
    fill(&dir.join("proj/target/debug/deps"), 50, 8_000);
    // A git checkout that deletes thousands of files.
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir.join("repo")))
    };
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    git(&["init", "-q", "-b", "main"]);
    git(&["commit", "-q", "--allow-empty", "-m", "empty"]);
    git(&["branch", "small"]);
    fill(&dir.join("repo/src"), 30, 3_000);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "big"]);
    // Old logs, a tmp directory, and backups rotated by an allowlisted job.
    std::fs::create_dir_all(dir.join("log")).unwrap();
    for i in 1..=30 {
        std::fs::write(dir.join(format!("log/app.log.{i}")), b"old").unwrap();
    }
    fill(&dir.join("tmp"), 20, 5_000);
    let backups = dir.join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    for i in 0..500 {
        std::fs::write(backups.join(format!("old-{i:04}.tar")), b"backup").unwrap();
    }
    let rotate = dir.join("rotate-backups.sh");
    std::fs::write(&rotate, "#!/bin/sh\nfind \"$1\" -name 'old-*' -delete\n").unwrap();
    std::fs::set_permissions(&rotate, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let agent = Agent::start_with_policy(
        &sandbox,
        &test_policy(&sandbox, "enforce", LIMIT as u32, &[&rotate]),
    );

    let workloads = [
        "cd proj && exec cargo clean --offline --quiet",
        "cd repo && exec git checkout -q small",
        "exec find log -name 'app.log.*' -delete",
        "exec find tmp -mindepth 1 -delete",
    ];
    let rotate_by_path = format!("exec {} backups", rotate.display());
    let workloads: Vec<&str> = workloads.into_iter().chain([rotate_by_path.as_str()]).collect();
    let mut sessions = Vec::new();
    for script in workloads {
        let (status, session) = in_login_session(dir, script);
        assert!(status.success(), "{script}: {status:?}");
        sessions.push(session);
    }

    assert!(!dir.join("proj/target").exists());
    assert_eq!(count_files(&dir.join("repo/src")), 0);
    assert_eq!(count_files(&backups), 0, "the allowlisted job did its work");
    let everything = agent.everything_until_now(&sandbox);
    let ours = |e: &Value| {
        let key = e["session"]["key"].as_str().unwrap_or_default().to_owned();
        sessions.iter().any(|s| key == format!("login:{s}"))
    };
    let high: Vec<_> = everything
        .iter()
        .filter(|e| e["type"] == "alert" && ours(e) && severity_at_least_high(e))
        .collect();
    assert!(high.is_empty(), "benign work raised: {high:#?}");
    let guard: Vec<_> = everything
        .iter()
        .filter(|e| e["type"] == "guard" && ours(e))
        .collect();
    assert!(
        guard.is_empty(),
        "the kernel guard acted on benign work: {guard:#?}"
    );
    agent.stop();
}

#[test]
fn a_bad_policy_reload_keeps_the_old_one_and_a_good_one_applies() {
    let sandbox = Sandbox::new();
    let backups = sandbox.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let policy = sandbox.path().join("policy.toml");
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));
    let agent_pid = nix::unistd::Pid::from_raw(agent.pid() as i32);

    // Broken: the old policy (enforce) stays in force.
    std::fs::write(
        &policy,
        test_policy(&sandbox, "enforce", LIMIT as u32, &[]).replace("mode = \"enforce\"", "mode = 7"),
    )
    .unwrap();
    nix::sys::signal::kill(agent_pid, nix::sys::signal::SIGHUP).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    fill(&backups, 2, 300);
    let (status, _) = in_login_session(sandbox.path(), "exec rm -rf backups");
    assert!(killed(status), "still enforced after a bad reload: {status:?}");

    // Valid: monitor mode, picked up from the file change alone.
    std::fs::write(&policy, test_policy(&sandbox, "monitor", LIMIT as u32, &[])).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    fill(&backups, 2, 300);
    let (status, _) = in_login_session(sandbox.path(), "exec rm -rf backups");
    assert!(status.success(), "monitor mode after a good reload: {status:?}");

    let (_, stderr) = agent.stop_with_stderr();
    assert!(stderr.contains("policy not reloaded"), "{stderr}");
    assert!(stderr.contains("mode = 7"), "the error quotes the line: {stderr}");
    assert!(stderr.contains("policy reloaded"), "{stderr}");
}

/// A FIFO held open for reading and writing, so a shell's `read < fifo`
/// opens at once and waits for a line; the line is written when this is
/// dropped, on success or panic alike, so a failing test never leaves the
/// shell (and the test run, which reads its output) waiting.
struct Gate(std::fs::File);

impl Gate {
    fn new(path: &Path) -> Gate {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        Gate(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap(),
        )
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::io::Write::write_all(&mut self.0, b"go\n");
    }
}

/// A login session whose `rm -rf backups` the kernel stops at the limit and
/// marks, then waits at a gate: `before` runs first, `after` once the gate
/// opens. Only the deleting `rm` is the agent's to kill (`target =
/// "process"`): the rest of the session lives on, where only the kernel's
/// mark can stop it. Between the `rm` and `after`, builtins only (any exec of
/// a marked session dies), and `>>` appends, which destroys nothing.
struct MarkedSession {
    agent: Agent,
    gate: Gate,
    attack: std::thread::JoinHandle<(std::process::ExitStatus, u64)>,
}

impl MarkedSession {
    fn start(sandbox: &Sandbox, before: &str, after: &str) -> MarkedSession {
        let backups = sandbox.path().join("backups");
        fill(&backups, 2, 300);
        let gate = Gate::new(&sandbox.path().join("gate"));
        let policy = test_policy(sandbox, "enforce", LIMIT as u32, &[])
            .replace(r#"target = "session""#, r#"target = "process""#);
        let agent = Agent::start_with_policy(sandbox, &policy);
        let dir = sandbox.path().to_owned();
        let script = format!("{before}\nrm -rf backups; echo >> marked; read go < gate; {after}");
        let attack = std::thread::spawn(move || in_login_session(&dir, &script));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !sandbox.path().join("marked").exists() {
            assert!(std::time::Instant::now() < deadline, "the rm never ended");
            assert!(!attack.is_finished(), "the shell died with the rm");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(count_files(&backups) > 0, "the rm was not stopped");
        MarkedSession { agent, gate, attack }
    }

    /// Opens the gate and waits for the session: the agent, the shell's
    /// status and the audit session id.
    fn finish(self) -> (Agent, std::process::ExitStatus, u64) {
        drop(self.gate);
        let (status, session) = self.attack.join().unwrap();
        (self.agent, status, session)
    }
}

/// `spare/NAME` in the sandbox, each holding "data".
fn spare_files(sandbox: &Sandbox, names: &[&str]) -> std::path::PathBuf {
    let spare = sandbox.path().join("spare");
    std::fs::create_dir(&spare).unwrap();
    for name in names {
        std::fs::write(spare.join(name), b"data").unwrap();
    }
    spare
}

#[test]
fn a_session_the_kernel_marked_stays_stopped_across_policy_reloads() {
    let sandbox = Sandbox::new();
    let spare = spare_files(&sandbox, &["keep"]);
    let marked = MarkedSession::start(&sandbox, "", "rm -f spare/keep");
    // Every reload rewrites the guard's settings, which the marks must outlive.
    for _ in 0..2 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(marked.agent.pid() as i32),
            nix::sys::signal::SIGHUP,
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let (agent, status, _) = marked.finish();

    assert!(
        spare.join("keep").exists(),
        "a marked session deleted after a reload: {status:?}"
    );
    let (_, stderr) = agent.stop_with_stderr();
    assert!(stderr.matches("policy reloaded").count() >= 2, "{stderr}");
}

/// Processes of a marked session that were already running, and so never
/// pass an `exec` the guard could stop, die at their next destructive call.
/// On a local filesystem that call completes (a tracepoint cannot refuse it;
/// the kill lands as it returns); the one after never happens.
#[test]
fn a_marked_sessions_running_processes_die_at_their_next_destructive_call() {
    let sandbox = Sandbox::new();
    let spare = spare_files(&sandbox, &["a", "b", "c", "d"]);
    // perl runs (its exec done) before the session is marked, then waits for
    // `go` and deletes two files. The shell, after the gate, truncates two
    // files by redirection, an `O_TRUNC` open it makes itself. Braced: a bare
    // `&` would background the whole `&&` list that `in_login_session` puts
    // before the script, login included. Both waits are bounded, so a
    // failure leaves nothing spinning.
    let marked = MarkedSession::start(
        &sandbox,
        r#"{ perl -e 'alarm 120; open(my $r, ">>", "ready"); select(undef, undef, undef, 0.02) until -e "go"; unlink "spare/a"; unlink "spare/b"' & }
        n=0; until [ -e ready ] || [ $n -ge 3000 ]; do sleep 0.01; n=$((n + 1)); done"#,
        "echo >> go; wait $!; echo $? >> perl-status; : > spare/c; : > spare/d",
    );
    let (agent, status, session) = marked.finish();

    let perl_status = std::fs::read_to_string(sandbox.path().join("perl-status")).unwrap();
    assert_eq!(perl_status.trim(), "137", "perl was not killed by SIGKILL");
    assert!(!spare.join("a").exists(), "the call that met the mark completes");
    assert!(spare.join("b").exists(), "perl deleted on after the mark");
    assert!(killed(status), "the shell was not killed: {status:?}");
    assert_eq!(std::fs::read(spare.join("c")).unwrap(), b"");
    assert_eq!(
        std::fs::read(spare.join("d")).unwrap(),
        b"data",
        "the shell truncated on"
    );
    let key = format!("login:{session}");
    let stopped = agent
        .everything_until_now(&sandbox)
        .into_iter()
        .filter(|e| {
            e["type"] == "guard"
                && e["session"]["key"] == key.as_str()
                && e["reason"] == "marked_session"
                && e["hook"] == "destructive_call"
                && e["killed"] == true
        })
        .count();
    assert_eq!(stopped, 2, "one kill each for perl and the shell");
    agent.stop();
}

#[test]
fn marks_are_listed_explained_and_cleared() {
    let sandbox = Sandbox::new();
    let backups = sandbox.path().join("backups");
    fill(&backups, 2, 300);
    let agent = Agent::start_with_policy(&sandbox, &test_policy(&sandbox, "enforce", LIMIT as u32, &[]));
    let (status, session) = in_login_session(sandbox.path(), "exec rm -rf backups");
    assert!(killed(status));
    // The agent may mark the session itself while it works through the
    // attack's records: let it finish, or it could mark again after the clear.
    agent.everything_until_now(&sandbox);
    let key = format!("login:{session}");
    let marks = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_levee-agent"))
            .args(["marks", "--agent-pid", &agent.pid().to_string()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, listed, err) = marks(&["list"]);
    assert!(ok, "{err}");
    let mark: Value = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|m| m["session"] == key.as_str())
        .unwrap_or_else(|| panic!("{key} not in {listed}"));
    // The kernel marks at the limit, unless the agent's own verdict got there first.
    assert!(
        matches!(mark["reason"].as_str(), Some("LimitCrossed" | "AgentDecision")),
        "{mark}"
    );

    let (ok, _, err) = marks(&["clear", &key]);
    assert!(ok, "{err}");
    let (_, listed, _) = marks(&["list"]);
    assert!(!listed.contains(&format!("\"{key}\"")), "{listed}");
    let (ok, _, err) = marks(&["clear", &key]);
    assert!(!ok && err.contains("was not marked"), "{err}");
    // The agent notices at its next tick (every second) and forgets the score.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (_, stderr) = agent.stop_with_stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("mark cleared") && l.contains(&format!("session={key}"))),
        "{stderr}"
    );
}
