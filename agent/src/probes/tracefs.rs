//! Making sure tracefs is mounted: aya finds tracepoint ids through it, and a
//! fresh host or a container may not have it.

use std::path::Path;

use nix::mount::{mount, MsFlags};

/// Where tracefs is mounted when we mount it.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// The legacy location under debugfs, still used by some hosts.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, thiserror::Error)]
#[error(
    "tracefs is not mounted and mounting it at {TRACEFS} failed: {0} (mount it, or run the agent as root)"
)]
pub struct MountError(nix::Error);

/// Mounts tracefs at [`TRACEFS`] unless it is already reachable. Returns
/// whether this call mounted it.
pub fn ensure_mounted() -> Result<bool, MountError> {
    let mounted = |dir: &str| Path::new(dir).join("events").is_dir();
    if mounted(TRACEFS) || mounted(DEBUGFS_TRACING) {
        return Ok(false);
    }
    mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(MountError)?;
    Ok(true)
}
