//! cgroup v2 ids → paths → what runs there: a container, a Kubernetes pod, a
//! systemd unit.
//!
//! The probes report `bpf_get_current_cgroup_id`, the v2 cgroup's inode
//! number. The kernel accepts that id as a file handle on the cgroup2 mount
//! (`open_by_handle_at`), which gives the path in one call, even for a cgroup
//! that a short-lived container already left.

use std::{
    collections::HashMap,
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

/// What a cgroup path says about the workload in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupInfo {
    /// Path below the cgroup2 mount, e.g. `/system.slice/cron.service`.
    pub path: String,
    /// Container id (64 hex digits), when the path names a container.
    pub container_id: Option<String>,
    /// Kubernetes pod UID, when the path is under `kubepods`.
    pub pod_uid: Option<String>,
    /// systemd unit (`*.service`, `*.scope`), when the path names one.
    pub unit: Option<String>,
}

/// Container runtimes' scope prefixes under systemd (`cri-containerd-<id>.scope`).
const RUNTIME_PREFIXES: &[&str] = &["cri-containerd-", "docker-", "crio-", "libpod-", "containerd-"];

impl CgroupInfo {
    /// Reads the workload out of a cgroup path, for both cgroup drivers:
    /// systemd (`kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`)
    /// and cgroupfs (`/kubepods/burstable/pod<uid>/<id>`).
    pub fn parse(path: &str) -> CgroupInfo {
        let mut info = CgroupInfo {
            path: path.to_owned(),
            ..Default::default()
        };
        for component in path.split('/').filter(|c| !c.is_empty()) {
            if let Some(uid) = pod_uid(component) {
                info.pod_uid = Some(uid);
            }
            if let Some(id) = container_id(component) {
                info.container_id = Some(id);
            } else if component.ends_with(".service") || component.ends_with(".scope") {
                info.unit = Some(component.to_owned());
            }
        }
        info
    }
}

fn pod_uid(component: &str) -> Option<String> {
    let start = component.rfind("pod")? + 3;
    let rest = component[start..]
        .strip_suffix(".slice")
        .unwrap_or(&component[start..]);
    // The systemd driver writes the UID's dashes as underscores.
    let uid = rest.replace('_', "-");
    let is_uid = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    is_uid.then_some(uid)
}

fn container_id(component: &str) -> Option<String> {
    let stripped = component.strip_suffix(".scope").unwrap_or(component);
    let id = RUNTIME_PREFIXES
        .iter()
        .find_map(|p| stripped.strip_prefix(p))
        .unwrap_or(stripped);
    let is_id = id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit());
    is_id.then(|| id.to_owned())
}

/// The cgroup2 mount point, from `/proc/self/mountinfo` text: `/sys/fs/cgroup`
/// on pure v2 hosts, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn find_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mount_point = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// Caches cgroup id → [`CgroupInfo`].
pub struct CgroupResolver {
    mount: Option<(PathBuf, File)>,
    cache: HashMap<u64, Arc<CgroupInfo>>,
}

/// Most cgroups remembered; the cache starts over past it.
const CACHE_CAP: usize = 16 * 1024;
/// `FILEID_KERNFS` from `<linux/exportfs.h>`.
const FILEID_KERNFS: i32 = 0xfe;

#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

impl CgroupResolver {
    /// Finds the cgroup2 mount; without one, every id resolves to nothing.
    pub fn new() -> CgroupResolver {
        let mount = crate::host::mountinfo()
            .ok()
            .and_then(|m| find_v2_mount(&m))
            .and_then(|path| File::open(crate::host::path(&path)).ok().map(|f| (path, f)));
        if mount.is_none() {
            tracing::warn!("no cgroup2 mount found: events will carry no container or unit");
        }
        CgroupResolver {
            mount,
            cache: HashMap::new(),
        }
    }

    pub fn resolve(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        if let Some(info) = self.cache.get(&id) {
            return Some(info.clone());
        }
        let (mount_path, mount) = self.mount.as_ref()?;
        let path = path_of(mount_path, mount, id)?;
        if self.cache.len() >= CACHE_CAP {
            self.cache.clear();
        }
        let info = Arc::new(CgroupInfo::parse(&path));
        self.cache.insert(id, info.clone());
        Some(info)
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

fn path_of(mount_path: &Path, mount: &File, id: u64) -> Option<String> {
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `handle` is a valid `struct file_handle` with 8 bytes of
    // f_handle; the returned fd is owned below.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&raw mut handle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by the kernel and is not used elsewhere.
    let dir = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
    // The link names the directory as seen from here: through the host's
    // root when the mount is the host's and the agent runs in a container.
    let below = link
        .strip_prefix(mount_path)
        .or_else(|_| link.strip_prefix(crate::host::path(mount_path)))
        .ok()?;
    let text = CString::new(below.as_os_str().as_bytes())
        .ok()?
        .into_string()
        .ok()?;
    Some(format!("/{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3a5e1b2c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
    const UID: &str = "0f8e3c4a-1b2d-4e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn kubernetes_systemd_driver() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let info = CgroupInfo::parse(&path);
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.unit, None);
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let info = CgroupInfo::parse(&format!("/kubepods/besteffort/pod{UID}/{ID}"));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn docker_container() {
        let info = CgroupInfo::parse(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid, None);
    }

    #[test]
    fn systemd_service_and_login_scope() {
        assert_eq!(
            CgroupInfo::parse("/system.slice/cron.service").unit.as_deref(),
            Some("cron.service")
        );
        let login = CgroupInfo::parse("/user.slice/user-1000.slice/session-4.scope");
        assert_eq!(login.unit.as_deref(), Some("session-4.scope"));
        assert_eq!(login.container_id, None);
    }

    #[test]
    fn root_cgroup_names_nothing() {
        assert_eq!(
            CgroupInfo::parse("/"),
            CgroupInfo {
                path: "/".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn finds_the_v2_mount_in_both_layouts() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        assert_eq!(
            find_v2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev shared:9 - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(find_v2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(find_v2_mount("22 1 0:21 / /proc rw - proc proc rw"), None);
    }

    /// The real kernel: this process's own cgroup id resolves to the path
    /// `/proc/self/cgroup` names.
    #[test]
    fn resolves_own_cgroup_through_the_kernel() {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let v2_path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a v2 line")
            .to_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = find_v2_mount(&mountinfo).expect("cgroup2 mounted");
        let id = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(mount.join(v2_path.trim_start_matches('/'))).unwrap(),
        );
        let info = CgroupResolver::new().resolve(id).expect("resolves");
        assert_eq!(info.path, v2_path);
    }
}
