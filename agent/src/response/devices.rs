//! Which block devices hold data a raw write would destroy: a mounted
//! filesystem, a partition table, or a filesystem signature. The in-kernel
//! guard kills the first raw write to any of them.

use std::{collections::HashSet, fs::File, io::Read, path::Path};

/// Kernel `dev_t` encoding of (major, minor), as the probes see `i_rdev`.
pub fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

/// Signatures at (offset, magic) that mark a device as holding data.
const SIGNATURES: &[(usize, &[u8])] = &[
    (0x438, &[0x53, 0xef]), // ext2/3/4 superblock magic
    (0, b"XFSB"),           // XFS
    (0x10040, b"_BHRfS_M"), // btrfs
    (0, b"LUKS\xba\xbe"),   // LUKS
    (0xff6, b"SWAPSPACE2"), // swap (4 KiB pages)
    (0x200, b"EFI PART"),   // GPT header
    (0x52, b"FAT32   "),    // FAT32
    (0x36, b"FAT1"),        // FAT12/16
    (0x3, b"NTFS    "),     // NTFS
    (0x8001, b"CD001"),     // ISO 9660
];
/// Enough to see every signature above.
const PROBE_BYTES: usize = 0x10048;

/// Every protected device now, as kernel `dev_t` values.
pub fn scan() -> HashSet<u32> {
    let mut protected = HashSet::new();
    if let Ok(mountinfo) = crate::host::mountinfo() {
        protected.extend(mounted_devices(&mountinfo));
    }
    let Ok(entries) = std::fs::read_dir("/sys/class/block") else {
        return protected;
    };
    for entry in entries.filter_map(Result::ok) {
        let sys = entry.path();
        let Some((major, minor)) = dev_numbers(&sys) else {
            continue;
        };
        let size = std::fs::read_to_string(sys.join("size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if size.unwrap_or(0) == 0 {
            continue;
        }
        let is_partition = sys.join("partition").exists();
        // A partition's disk holds the partition table.
        if is_partition {
            if let Some(disk) = sys
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().and_then(dev_numbers))
            {
                protected.insert(kernel_dev(disk.0, disk.1));
            }
        }
        let name = entry.file_name();
        if has_signature(&Path::new("/dev").join(&name)) {
            protected.insert(kernel_dev(major, minor));
        }
    }
    protected
}

/// Devices behind block-backed mounts (`major:minor` field of mountinfo).
pub fn mounted_devices(mountinfo: &str) -> impl Iterator<Item = u32> + '_ {
    mountinfo.lines().filter_map(|line| {
        let field = line.split_whitespace().nth(2)?;
        let (major, minor) = field.split_once(':')?;
        let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
        // Major 0 is for virtual filesystems (tmpfs, proc, overlay...).
        (major != 0).then(|| kernel_dev(major, minor))
    })
}

fn dev_numbers(sys: &Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(sys.join("dev")).ok()?;
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Reads the device's first bytes (read-only) and looks for a signature.
fn has_signature(device: &Path) -> bool {
    let Ok(mut file) = File::open(device) else {
        return false;
    };
    let mut head = vec![0u8; PROBE_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    signature_in(&head[..filled])
}

pub fn signature_in(head: &[u8]) -> bool {
    let mbr =
        head.len() >= 512 && head[510] == 0x55 && head[511] == 0xaa && head[446..510].iter().any(|&b| b != 0);
    mbr || SIGNATURES
        .iter()
        .any(|(at, magic)| head.get(*at..at + magic.len()) == Some(magic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_block_backed_mounts_only() {
        let mountinfo = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                         23 22 0:21 / /proc rw - proc proc rw\n\
                         24 22 7:3 / /mnt rw - ext4 /dev/loop3 rw";
        let devs: Vec<u32> = mounted_devices(mountinfo).collect();
        assert_eq!(devs, [kernel_dev(8, 1), kernel_dev(7, 3)]);
    }

    #[test]
    fn recognises_signatures() {
        let mut head = vec![0u8; PROBE_BYTES];
        assert!(!signature_in(&head), "zeros hold nothing");
        head[0x438] = 0x53;
        head[0x439] = 0xef;
        assert!(signature_in(&head), "ext4");
        let mut gpt = vec![0u8; PROBE_BYTES];
        gpt[0x200..0x208].copy_from_slice(b"EFI PART");
        assert!(signature_in(&gpt));
    }

    /// A real loop device with a real ext4 filesystem on it is found; the
    /// same device zeroed is not.
    #[test]
    fn scans_a_real_loop_device() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup needs root: run through `cargo xtask test`"
        );
        let device = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let numbers =
            dev_numbers(&Path::new("/sys/class/block").join(Path::new(&device).file_name().unwrap()));
        let (major, minor) = numbers.unwrap();
        let before = scan().contains(&kernel_dev(major, minor));
        let mkfs = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", &device])
            .status()
            .unwrap();
        let after = scan().contains(&kernel_dev(major, minor));
        std::process::Command::new("losetup")
            .args(["-d", &device])
            .status()
            .unwrap();
        assert!(mkfs.success());
        assert!(!before, "an empty loop device holds nothing");
        assert!(after, "ext4 on the loop device is found");
    }
}
