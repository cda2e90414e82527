//! Destructive commands recognised in an exec's argv.

use serde::Serialize;

/// A destructive command seen in a session, and what it weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destructive {
    /// `rm -r` of `/` or `/*` (or with `--no-preserve-root`).
    RmRecursiveRoot,
    /// `rm -r` of a protected path.
    RmRecursiveProtected,
    /// `dd` writing to a device.
    DdToDevice,
    /// `wipefs`, `mkfs*`, `blkdiscard`, `sgdisk`, `sfdisk`, `parted`, `fdisk` on a device.
    DeviceWipe,
    /// `shred`.
    Shred,
}

impl Destructive {
    /// Points towards the session's score (see `scoring`).
    pub fn weight(self) -> f64 {
        match self {
            Destructive::RmRecursiveRoot => 100.0,
            Destructive::RmRecursiveProtected => 80.0,
            Destructive::DdToDevice | Destructive::DeviceWipe => 60.0,
            Destructive::Shred => 45.0,
        }
    }
}

/// What `argv` (of a program at `exe`) does, if it is destructive.
/// `is_protected` says whether a path is in a protected class.
pub fn classify(exe: &[u8], argv: &[Vec<u8>], is_protected: impl Fn(&[u8]) -> bool) -> Option<Destructive> {
    let name = program_name(exe, argv)?;
    let args = argv.get(1..).unwrap_or_default();
    let operands = || args.iter().filter(|a| !a.starts_with(b"-"));
    let on_device = || {
        args.iter()
            .any(|a| a.starts_with(b"/dev/") || a.windows(9).any(|w| w == b"of=/dev/"))
    };
    match name {
        b"rm" => {
            let recursive = args.iter().any(|a| {
                a == b"--recursive"
                    || (a.starts_with(b"-")
                        && !a.starts_with(b"--")
                        && a.iter().any(|&c| c == b'r' || c == b'R'))
            });
            if !recursive {
                return None;
            }
            let root = args.iter().any(|a| a == b"--no-preserve-root")
                || operands().any(|a| a == b"/" || a == b"/*" || a.iter().all(|&c| c == b'/'));
            if root {
                Some(Destructive::RmRecursiveRoot)
            } else if operands().any(|a| is_protected(a)) {
                Some(Destructive::RmRecursiveProtected)
            } else {
                None
            }
        }
        b"dd" => args
            .iter()
            .any(|a| a.starts_with(b"of=/dev/") && a != b"of=/dev/null")
            .then_some(Destructive::DdToDevice),
        b"shred" => Some(Destructive::Shred),
        b"wipefs" | b"blkdiscard" | b"sgdisk" | b"sfdisk" | b"parted" | b"fdisk" => {
            on_device().then_some(Destructive::DeviceWipe)
        }
        n if n.starts_with(b"mkfs") => on_device().then_some(Destructive::DeviceWipe),
        _ => None,
    }
}

/// The program's base name: from the executable, or argv[0] for busybox-style
/// multi-call binaries.
fn program_name<'a>(exe: &'a [u8], argv: &'a [Vec<u8>]) -> Option<&'a [u8]> {
    let base = |p: &'a [u8]| -> &'a [u8] { p.rsplit(|&b| b == b'/').next().unwrap_or(p) };
    let from_exe = base(exe);
    if from_exe.is_empty() || from_exe == b"busybox" {
        argv.first().map(|a| base(a))
    } else {
        Some(from_exe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    fn check(exe: &str, args: &[&str]) -> Option<Destructive> {
        classify(exe.as_bytes(), &argv(args), |p| p.starts_with(b"/backup"))
    }

    #[test]
    fn rm_rf_of_root_and_of_protected_paths() {
        assert_eq!(
            check("/usr/bin/rm", &["rm", "-rf", "/"]),
            Some(Destructive::RmRecursiveRoot)
        );
        assert_eq!(
            check("/usr/bin/rm", &["rm", "-r", "--no-preserve-root", "/x"]),
            Some(Destructive::RmRecursiveRoot)
        );
        assert_eq!(
            check("/usr/bin/rm", &["rm", "-fR", "/backup/db"]),
            Some(Destructive::RmRecursiveProtected)
        );
        assert_eq!(
            check("/usr/bin/rm", &["rm", "-rf", "target"]),
            None,
            "an ordinary rm -rf"
        );
        assert_eq!(
            check("/usr/bin/rm", &["rm", "/backup/one"]),
            None,
            "not recursive"
        );
    }

    #[test]
    fn disk_tools_on_devices() {
        assert_eq!(
            check("/usr/bin/dd", &["dd", "if=/dev/zero", "of=/dev/sda"]),
            Some(Destructive::DdToDevice)
        );
        assert_eq!(check("/usr/bin/dd", &["dd", "if=/dev/zero", "of=file.img"]), None);
        assert_eq!(check("/usr/bin/dd", &["dd", "of=/dev/null"]), None);
        assert_eq!(
            check("/usr/sbin/wipefs", &["wipefs", "-a", "/dev/loop0"]),
            Some(Destructive::DeviceWipe)
        );
        assert_eq!(
            check("/usr/sbin/mkfs.ext4", &["mkfs.ext4", "/dev/vdb1"]),
            Some(Destructive::DeviceWipe)
        );
        assert_eq!(check("/usr/sbin/mkfs.ext4", &["mkfs.ext4", "disk.img"]), None);
        assert_eq!(
            check("/usr/bin/shred", &["shred", "-u", "a"]),
            Some(Destructive::Shred)
        );
    }

    #[test]
    fn busybox_is_read_by_argv0() {
        assert_eq!(
            check("/bin/busybox", &["rm", "-rf", "/"]),
            Some(Destructive::RmRecursiveRoot)
        );
    }
}
