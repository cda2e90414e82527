//! From a file descriptor to its `struct file` and inode.

use agent_common::KernelOffsets;

use crate::kernel::{read_u32, read_u64, Btf};

/// `S_IFMT`, `S_IFBLK`, `S_IFREG` from `<sys/stat.h>`.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFREG: u32 = 0o100000;

/// The `struct file` open at `fd` in `task`, or 0.
#[inline(always)]
pub fn fd_file(task: Btf, fd: i64, o: &KernelOffsets) -> u64 {
    let fdt = task.ptr(o.task_files).ptr(o.files_fdt);
    let max_fds = fdt.u32(o.fdt_max_fds);
    if fd < 0 || fd >= max_fds as i64 {
        return 0;
    }
    // `fdt->fd` is an array of pointers, a plain number to the verifier.
    read_u64(fdt.u64(o.fdt_fd), (fd as u32) * 8)
}

/// The inode behind an open file.
#[derive(Clone, Copy)]
pub struct Inode {
    pub ptr: u64,
}

impl Inode {
    #[inline(always)]
    pub fn of(file: u64, o: &KernelOffsets) -> Option<Inode> {
        let ptr = read_u64(file, o.file_inode);
        (ptr != 0).then_some(Inode { ptr })
    }

    /// `i_mode & S_IFMT`.
    #[inline(always)]
    pub fn file_type(self, o: &KernelOffsets) -> u32 {
        // i_mode is a u16; the upper half of the u32 read is the next field.
        (read_u32(self.ptr, o.inode_mode) & 0xffff) & S_IFMT
    }

    #[inline(always)]
    pub fn rdev(self, o: &KernelOffsets) -> u32 {
        read_u32(self.ptr, o.inode_rdev)
    }

    #[inline(always)]
    pub fn size(self, o: &KernelOffsets) -> i64 {
        read_u64(self.ptr, o.inode_size) as i64
    }
}
