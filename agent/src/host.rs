//! The host's files as the agent reaches them, also from inside a container.
//!
//! The policy's paths (protected directories, allowlisted programs) and the
//! mount table are the host's. In a DaemonSet pod (`hostPID`) the agent's own
//! mount namespace is the container's: it reaches the host's through a host
//! process, init by default (`--host-pid`): its `/proc/PID/root` and
//! `/proc/PID/mountinfo`. On the host both views are the same.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The process whose mount namespace is the host's; set once, before the
/// first lookup, else init.
static HOST_PID: OnceLock<u32> = OnceLock::new();
/// How the host is reached: its root directory and mount table, from here.
static VIEW: OnceLock<(PathBuf, String)> = OnceLock::new();

/// Takes `pid` as the host process. False if the host view was already in use.
pub fn set_host_pid(pid: u32) -> bool {
    HOST_PID.set(pid).is_ok() && VIEW.get().is_none()
}

fn view() -> &'static (PathBuf, String) {
    VIEW.get_or_init(|| view_through(*HOST_PID.get_or_init(|| 1)))
}

/// The host's root directory and mount table, through host process `pid`.
fn view_through(pid: u32) -> (PathBuf, String) {
    let namespace = |of: &str| std::fs::metadata(format!("/proc/{of}/ns/mnt")).map(|m| (m.dev(), m.ino()));
    match (namespace("self"), namespace(&pid.to_string())) {
        (Ok(own), Ok(host)) if own != host => {
            tracing::info!(pid, "host files are reached through the host process's root");
            (
                PathBuf::from(format!("/proc/{pid}/root")),
                format!("/proc/{pid}/mountinfo"),
            )
        }
        (_, Err(error)) => {
            tracing::warn!(pid, %error, "cannot see the host process's mount namespace: \
                    the agent's own files are taken for the host's (set --host-pid in a container)");
            ("/".into(), "/proc/self/mountinfo".into())
        }
        _ => ("/".into(), "/proc/self/mountinfo".into()),
    }
}

/// Where the host's root directory is, seen from here.
pub fn root() -> &'static Path {
    &view().0
}

/// `path`, absolute as the host names it, reachable from here.
pub fn path(path: &Path) -> PathBuf {
    root().join(path.strip_prefix("/").unwrap_or(path))
}

/// The host's mount table, in `/proc/PID/mountinfo` format. Its mount points
/// are host paths: reach them through [`path`].
pub fn mountinfo() -> std::io::Result<String> {
    std::fs::read_to_string(&view().1)
}

/// The host's name for `uid`, from its `/etc/passwd` when the agent runs in
/// a container (whose own user database is not the host's), else through
/// the system's name service.
pub fn user_name(uid: u32) -> Option<String> {
    if root() == Path::new("/") {
        return nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name);
    }
    let passwd = std::fs::read_to_string(path(Path::new("/etc/passwd"))).ok()?;
    let found = users(&passwd).find(|&(_, listed)| listed == uid);
    found.map(|(name, _)| name.to_owned())
}

/// The host's uid of user `name`, looked up as [`user_name`] does.
pub fn user_id(name: &str) -> Option<u32> {
    if root() == Path::new("/") {
        return nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw());
    }
    let passwd = std::fs::read_to_string(path(Path::new("/etc/passwd"))).ok()?;
    let found = users(&passwd).find(|&(listed, _)| listed == name);
    found.map(|(_, uid)| uid)
}

/// (name, uid) of each entry of `/etc/passwd` text.
fn users(passwd: &str) -> impl Iterator<Item = (&str, u32)> {
    passwd.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        Some((name, fields.nth(1)?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_process_in_our_own_namespace_means_our_own_view() {
        let (root, mountinfo) = view_through(std::process::id());
        assert_eq!(root, Path::new("/"));
        assert_eq!(mountinfo, "/proc/self/mountinfo");
    }

    #[test]
    fn reads_users_from_passwd_text() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        let all: Vec<_> = users(passwd).collect();
        assert_eq!(all, [("root", 0), ("alice", 1000)]);
    }
}
