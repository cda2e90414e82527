//! Test harness: the real `levee-agent` with the real probes, and sandboxes
//! whose deletions the tests inspect.
//!
//! Every test needs root (the agent loads eBPF programs) and an agent built
//! with its probes (`cargo xtask test` does both). Either missing is a test
//! failure with a clear message, never a silent skip.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long a test waits for the events it expects.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `levee-agent run --json`.
pub struct Agent {
    child: Child,
    lines: Receiver<Value>,
    stderr: thread::JoinHandle<String>,
}

impl Agent {
    /// Starts the agent and waits until a deletion in `sandbox` comes back
    /// through it, which proves the probes are attached and the pipeline flows.
    pub fn start(sandbox: &Sandbox) -> Agent {
        Self::start_with(sandbox, &[])
    }

    pub fn start_with(sandbox: &Sandbox, extra_args: &[&str]) -> Agent {
        let mut command = Command::new(env!("CARGO_BIN_EXE_levee-agent"));
        command.args(["run", "--json"]).args(extra_args);
        Self::spawn(sandbox, command)
    }

    /// Starts the agent with `policy` in a mount namespace of its own, as in
    /// a container, where a tmpfs hides `hidden`: the agent's view of the
    /// files there is not the host's.
    pub fn start_hiding(sandbox: &Sandbox, policy: &str, hidden: &Path) -> Agent {
        let path = sandbox.path().join("policy.toml");
        std::fs::write(&path, policy).expect("write policy");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs levee-test "$0" && exec "$@""#)
            .arg(hidden)
            .arg(env!("CARGO_BIN_EXE_levee-agent"))
            .args([
                "run",
                "--json",
                "--host-pid",
                &std::process::id().to_string(),
                "--policy",
            ])
            .arg(path);
        Self::spawn(sandbox, command)
    }

    fn spawn(sandbox: &Sandbox, mut command: Command) -> Agent {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests load eBPF probes and must run as root (use `cargo xtask test`)"
        );
        command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe. The agent dies with the test
        // that started it, so its guard never outlives the test's policy.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        let mut child = command.spawn().expect("spawn levee-agent");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || forward_json(stdout, tx));
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut agent = Agent { child, lines, stderr };
        agent.wait_until_live(sandbox);
        agent
    }

    fn wait_until_live(&mut self, sandbox: &Sandbox) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        for attempt in 0.. {
            if let Some(status) = self.child.try_wait().expect("poll agent") {
                panic!(
                    "levee-agent exited with {status} before it was live:\n{}",
                    self.stop_stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "levee-agent never reported the canary deletion"
            );
            let canary = sandbox.path().join(format!(".canary-{attempt}"));
            std::fs::write(&canary, b"").expect("write canary");
            std::fs::remove_file(&canary).expect("remove canary");
            let wanted = canary.as_os_str().as_bytes().to_vec();
            let poll_until = Instant::now() + Duration::from_millis(500);
            while let Some(line) = self.next_line(poll_until) {
                if line["type"] == "deletion" && path_of(&line) == wanted {
                    return;
                }
            }
        }
    }

    fn next_line(&self, until: Instant) -> Option<Value> {
        let left = until.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).ok()
    }

    /// Collects deletion events under `dir` until `done` says the set is
    /// complete, or [`EVENT_TIMEOUT`] passes. Returns what was collected.
    pub fn deletions_under(&self, dir: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let prefix = dir.as_os_str().as_bytes();
        self.collect(
            |e| e["type"] == "deletion" && path_of(e).starts_with(prefix),
            done,
        )
    }

    /// Collects events for which `keep` holds until `done` says the set is
    /// complete, or [`EVENT_TIMEOUT`] passes.
    pub fn collect(&self, keep: impl Fn(&Value) -> bool, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut seen = Vec::new();
        while !done(&seen) {
            match self.next_line(deadline) {
                Some(line) if keep(&line) => seen.push(line),
                Some(_) => {}
                None => break,
            }
        }
        seen
    }

    /// Every event up to a marker deletion made now in `sandbox`: all that
    /// happened before this call, for asserting that something did *not*.
    pub fn everything_until_now(&self, sandbox: &Sandbox) -> Vec<Value> {
        let marker = sandbox.path().join(".marker");
        std::fs::write(&marker, b"").expect("write marker");
        std::fs::remove_file(&marker).expect("remove marker");
        let wanted = marker.as_os_str().as_bytes().to_vec();
        let is_marker = |e: &Value| e["type"] == "deletion" && path_of(e) == wanted;
        let seen = self.collect(|_| true, |seen| seen.last().is_some_and(is_marker));
        assert!(
            seen.last().is_some_and(is_marker),
            "marker deletion never arrived"
        );
        seen
    }

    /// Starts the agent with `policy` (TOML text), written into the sandbox.
    pub fn start_with_policy(sandbox: &Sandbox, policy: &str) -> Agent {
        let path = sandbox.path().join("policy.toml");
        std::fs::write(&path, policy).expect("write policy");
        Self::start_with(sandbox, &["--policy", path.to_str().expect("utf-8 sandbox")])
    }

    /// Alerts about login session `audit`, until `done` holds.
    pub fn alerts_for(&self, audit: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let key = format!("login:{audit}");
        self.collect(
            |e| e["type"] == "alert" && e["session"]["key"] == key.as_str(),
            done,
        )
    }

    /// Every device write, guard record and alert about login session
    /// `audit` so far: what a harmless session must not have.
    pub fn raised_by(&self, sandbox: &Sandbox, audit: u64) -> Vec<Value> {
        let key = format!("login:{audit}");
        self.everything_until_now(sandbox)
            .into_iter()
            .filter(|e| {
                e["session"]["key"] == key.as_str()
                    && ["block_write", "guard", "alert"].contains(&e["type"].as_str().unwrap_or_default())
            })
            .collect()
    }

    /// The first alert about login session `audit` that carries what the
    /// in-kernel guard did; panics if none comes.
    pub fn guard_alert(&self, audit: u64) -> Value {
        self.alerts_for(audit, |seen| seen.iter().any(|a| !a["guard"].is_null()))
            .into_iter()
            .find(|a| !a["guard"].is_null())
            .expect("an alert with the guard's decision")
    }

    /// [`Agent::guard_alert`], asserted to be the guard stopping a write to
    /// `disk`, a protected device (`what` names the attack in a failure).
    pub fn device_guard_alert(&self, audit: u64, disk: &LoopDevice, what: &str) -> Value {
        let alert = self.guard_alert(audit);
        let guard = &alert["guard"];
        assert_eq!(
            (&guard["reason"], &guard["device"]["name"]),
            (&"protected_device".into(), &disk.name().into()),
            "{what}"
        );
        alert
    }

    /// Stops the agent with SIGTERM and returns every line it printed since
    /// the last read, ending with its final loss report.
    pub fn stop(self) -> Vec<Value> {
        self.stop_with_stderr().0
    }

    /// [`Agent::stop`], also returning what the agent logged.
    pub fn stop_with_stderr(mut self) -> (Vec<Value>, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        )
        .expect("SIGTERM agent");
        let status = self.child.wait().expect("wait agent");
        // The reader thread ends at EOF, after the agent's last line.
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(EVENT_TIMEOUT) {
            rest.push(line);
        }
        let stderr = self.stop_stderr();
        assert!(status.success(), "levee-agent exited with {status}:\n{stderr}");
        let unparsed: Vec<_> = rest.iter().filter(|l| l["type"] == "unparsed").collect();
        assert!(
            unparsed.is_empty(),
            "levee-agent printed lines that are not JSON: {unparsed:?}"
        );
        (rest, stderr)
    }

    fn stop_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let handle = std::mem::replace(&mut self.stderr, thread::spawn(String::new));
        handle.join().unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards the agent's stdout as JSON values. A line that is not JSON (only
/// possible if the agent died mid-line) arrives as `{"type": "unparsed"}`.
fn forward_json(stdout: ChildStdout, tx: mpsc::Sender<Value>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let value = serde_json::from_str(&line)
            .unwrap_or_else(|_| serde_json::json!({"type": "unparsed", "line": line}));
        if tx.send(value).is_err() {
            break;
        }
    }
}

/// The exact bytes of an event's `path`.
pub fn path_of(event: &Value) -> Vec<u8> {
    agent::escape::unescape(event["path"].as_str().expect("path is a string")).expect("path unescapes")
}

/// A temporary directory owned by one test; removed when dropped.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("levee-test-")
            .tempdir()
            .expect("create sandbox");
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates `count` empty files spread over `dirs` subdirectories of
    /// `root` (inside the sandbox); returns every path created, directories included.
    pub fn tree(&self, root: &str, dirs: usize, count: usize) -> Vec<PathBuf> {
        let root = self.path().join(root);
        let mut made = vec![root.clone()];
        std::fs::create_dir(&root).expect("mkdir tree root");
        for d in 0..dirs {
            let dir = root.join(format!("d{d:03}"));
            std::fs::create_dir(&dir).expect("mkdir");
            made.push(dir);
        }
        for i in 0..count {
            let file = root.join(format!("d{:03}", i % dirs)).join(format!("f{i:05}"));
            std::fs::write(&file, b"x").expect("write file");
            made.push(file);
        }
        made
    }
}

/// Runs `program args` in `cwd` to success; returns its pid.
pub fn run_in(cwd: &Path, program: &str, args: &[&OsStr]) -> u32 {
    run(Command::new(program).args(args).current_dir(cwd))
}

/// Runs `command` to success; returns its pid.
pub fn run(command: &mut Command) -> u32 {
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let pid = child.id();
    let status = child.wait().expect("wait workload");
    assert!(status.success(), "{command:?} failed: {status}");
    pid
}

/// A loop device over a sparse file in a sandbox: never a real disk.
/// Detached when dropped.
pub struct LoopDevice {
    pub device: PathBuf,
    /// The file the device reads and writes, in the sandbox.
    pub backing: PathBuf,
}

impl LoopDevice {
    pub fn new(sandbox: &Sandbox, mib: u64) -> LoopDevice {
        let backing = (0..)
            .map(|n| sandbox.path().join(format!("disk{n}.img")))
            .find(|path| !path.exists())
            .expect("a free name");
        let file = std::fs::File::create(&backing).expect("create backing file");
        file.set_len(mib << 20).expect("size backing file");
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim());
        LoopDevice { device, backing }
    }

    /// `loop3` for `/dev/loop3`.
    pub fn name(&self) -> String {
        self.device
            .file_name()
            .expect("device name")
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// The ways [`WIPE`] destroys a device without `write`, with the `op` its
/// records carry.
pub const WIPES: [(&str, &str); 9] = [
    ("discard", "blkdiscard"),
    ("secure-discard", "blksecdiscard"),
    ("zero-out", "blkzeroout"),
    ("punch-hole", "fallocate"),
    ("zero-range", "fallocate"),
    ("sendfile", "sendfile"),
    ("splice", "splice"),
    ("mmap", "mmap"),
    ("mprotect", "mmap"),
];

/// `python3 -c WIPE HOW DEVICE [CHUNK]` zeroes or erases all of `DEVICE`
/// the way `HOW` (see [`WIPES`]) says, never with `write`: `blkdiscard`'s
/// ioctls, `fallocate`, zeros sent or spliced from a memfd, or stored
/// through a shared mapping (`mprotect`: one mapped read-only, then made
/// writable). From a program no command rule knows, one
/// call (or mapping) per `CHUNK` bytes (default: the whole device), from
/// the end back to the start. It exits 3 when the device does not support
/// that way (a loop device has no secure discard).
pub const WIPE: &str = r#"
import ctypes, errno, fcntl, mmap, os, struct, sys
how, device = sys.argv[1], sys.argv[2]
fd = os.open(device, os.O_RDWR)
size = os.lseek(fd, 0, os.SEEK_END)
chunk = int(sys.argv[3]) if len(sys.argv) > 3 else size
zeros = os.memfd_create("zeros")
os.ftruncate(zeros, chunk)
ioctls = {"discard": 0x1277, "secure-discard": 0x127D, "zero-out": 0x127F}
modes = {"punch-hole": 0x02 | 0x01, "zero-range": 0x10}
libc = ctypes.CDLL(None, use_errno=True)
fallocate = libc.fallocate
fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

def wipe(start):
    if how in ioctls:
        fcntl.ioctl(fd, ioctls[how], struct.pack("QQ", start, chunk))
    elif how in modes:
        if fallocate(fd, modes[how], start, chunk) != 0:
            raise OSError(ctypes.get_errno(), how)
    elif how == "mmap":
        with mmap.mmap(fd, chunk, offset=start) as m:
            m[:] = bytes(chunk)
    elif how == "mprotect":
        at = libc.mmap(None, chunk, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
        assert at not in (None, ctypes.c_void_p(-1).value)
        assert libc.mprotect(at, chunk, mmap.PROT_READ | mmap.PROT_WRITE) == 0
        ctypes.memset(at, 0, chunk)
        libc.munmap(at, chunk)
    elif how == "sendfile":
        os.lseek(fd, start, os.SEEK_SET)
        assert os.sendfile(fd, zeros, 0, chunk) == chunk
    else:
        os.lseek(fd, start, os.SEEK_SET)
        pipe_out, pipe_in = os.pipe()
        done = 0
        while done < chunk:
            piped = os.splice(zeros, pipe_in, chunk - done, offset_src=done)
            done += os.splice(pipe_out, fd, piped)

try:
    for start in range(size - chunk, -1, -chunk):
        wipe(start)
except OSError as e:
    sys.exit(3 if e.errno == errno.EOPNOTSUPP else 1)
"#;

/// A filesystem mounted for one test, detached on drop.
pub struct Mount(pub PathBuf);

impl Mount {
    pub fn new(source: &Path, at: &Path, fstype: &str) -> Mount {
        std::fs::create_dir_all(at).expect("mount point");
        nix::mount::mount(
            Some(source),
            at,
            Some(fstype),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mount {fstype} {source:?} at {at:?}: {e}"));
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Runs `script` with `sh` in a session of its own with a login uid, as an
/// attacker's login would be: a new audit session the agent can score and
/// kill without touching the test's own processes. Returns the shell's exit
/// status and the audit session id.
pub fn in_login_session(cwd: &Path, script: &str) -> (std::process::ExitStatus, u64) {
    in_login_session_with_env(cwd, script, &[])
}

/// [`in_login_session`] with `env` added to the shell's environment, as sshd
/// sets `SSH_CONNECTION` for a login.
pub fn in_login_session_with_env(
    cwd: &Path,
    script: &str,
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, u64) {
    use std::os::unix::process::CommandExt;
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let full = format!(
        "echo 4242 > /proc/self/loginuid && cat /proc/self/sessionid > {} && {script}",
        out.path().display()
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &full])
        .current_dir(cwd)
        .envs(env.iter().copied());
    // SAFETY: setsid is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let status = command.status().expect("run attack");
    let session = std::fs::read_to_string(out.path())
        .expect("session id")
        .trim()
        .parse()
        .expect("a number");
    (status, session)
}

/// Files (not directories) below `dir`.
pub fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// A policy for tests: one protected class, `backups` in the sandbox.
pub fn test_policy(sandbox: &Sandbox, mode: &str, backup_limit: u32, allowlisted: &[&Path]) -> String {
    let allow: Vec<String> = allowlisted
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!(
        r#"mode = "{mode}"

[scoring]
window_secs = 60
mass_deletion = 5000
deletion_rate = 500
distinct_dirs = 500
alert_at = "medium"
act_at = "critical"

[guard]
any_path_limit = 100000
protect_devices = true
kill_marked_on_exec = true

[[path_class]]
name = "backup"
paths = ["{backups}"]
limit = {backup_limit}

[allow]
executables = [{allow}]

[action]
target = "session"

[safety]
never_kill = []
max_kills_per_minute = 1000
"#,
        backups = sandbox.path().join("backups").display(),
        allow = allow.join(", "),
    )
}
