//! Harness for the collector side: a real `levee-collector`, `levee alerts
//! tail` as a SOC subscriber, and test certificates.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A workspace binary built beside this test (`cargo test --workspace`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests through `cargo xtask test`",
        path.display()
    );
    path
}

/// A free loopback port.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

pub struct Collector {
    child: Child,
    pub addr: SocketAddr,
    args: Vec<String>,
}

impl Collector {
    /// Starts a collector on `addr` with `args` (database, TLS...) and waits
    /// until it accepts connections.
    pub fn start(addr: SocketAddr, args: &[&str]) -> Collector {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = Self::spawn(addr, &args);
        let collector = Collector { child, addr, args };
        collector.wait_listening();
        collector
    }

    /// A plaintext collector on loopback, its database in the sandbox.
    pub fn plaintext(sandbox: &crate::support::Sandbox, addr: SocketAddr) -> Collector {
        let db = sandbox.path().join("c.db");
        Self::start(
            addr,
            &[
                "--insecure-plaintext",
                "--database",
                db.to_str().expect("utf-8 sandbox"),
            ],
        )
    }

    fn spawn(addr: SocketAddr, args: &[String]) -> Child {
        Command::new(bin("levee-collector"))
            .args(["--listen", &addr.to_string(), "--silent-after-secs", "4"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn levee-collector")
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "collector never listened on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash, not a clean stop.
    pub fn crash(&mut self) {
        self.child.kill().expect("kill collector");
        self.child.wait().expect("reap collector");
    }

    pub fn restart(&mut self) {
        self.child = Self::spawn(self.addr, &self.args);
        self.wait_listening();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll collector").is_none()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `levee alerts tail --json`: a SOC subscriber.
pub struct Tail {
    child: Child,
    lines: Receiver<Value>,
}

impl Tail {
    pub fn start(levee_args: &[&str], from: u64) -> Tail {
        let mut child = Command::new(bin("levee"))
            .args(levee_args)
            .args(["alerts", "tail", "--json", "--from", &from.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn levee alerts tail");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Tail { child, lines }
    }

    /// Alerts received until `done` holds or `timeout` passes.
    pub fn until(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while !done(&seen) {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(v) => seen.push(v),
                Err(_) => break,
            }
        }
        seen
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `levee <args>`; returns success, stdout and stderr.
pub fn levee(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("levee")).args(args).output().expect("run levee");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// PEM files for a CA, a server certificate for 127.0.0.1/localhost, and
/// client certificates, written into `dir`.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> (Pki, rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let ca_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let (server_cert, server_key) =
            issue(dir, &ca, &format!("{name}-server"), &["localhost", "127.0.0.1"]);
        (
            Pki {
                ca: ca_path,
                server_cert,
                server_key,
            },
            ca,
        )
    }
}

/// A certificate with common name `cn`, signed by `ca`: (cert, key) paths.
pub fn issue(
    dir: &Path,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
    cn: &str,
    names: &[&str],
) -> (PathBuf, PathBuf) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}
