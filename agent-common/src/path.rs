//! How a record carries a path it rebuilt in the kernel.

/// Bytes a record may spend on its variable data (paths, argv). The probes mask
/// write offsets with `DATA_CAP - 1`, so it is a power of two.
pub const DATA_CAP: usize = 8192;
/// Longest string read from user memory, NUL included (`PATH_MAX`).
pub const NAME_CAP: usize = 4096;
/// Longest single directory component, NUL included (`NAME_MAX + 1`).
pub const COMPONENT_CAP: usize = 256;

/// The name was relative and the directory it was relative to was resolved.
pub const PATH_FLAG_DIR_RESOLVED: u32 = 1 << 0;
/// The walk up the directory tree stopped before reaching the root (too deep,
/// or the data area was full): the path is a suffix of the real one.
pub const PATH_FLAG_DIR_TRUNCATED: u32 = 1 << 1;
/// The name could not be read from user memory.
pub const PATH_FLAG_NAME_UNREADABLE: u32 = 1 << 2;
/// The name filled `NAME_CAP` and may have been cut.
pub const PATH_FLAG_NAME_TRUNCATED: u32 = 1 << 3;

/// One path in a record's data area: `name_len` bytes of the name exactly as
/// the caller passed it (no NUL), then `dir_len` bytes of directory
/// components, each NUL-terminated, innermost first (`c\0b\0a\0` for `/a/b/c`).
///
/// A path taken from an open file has no name: all of it is components.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawPath {
    pub name_len: u32,
    pub dir_len: u32,
    /// `PATH_FLAG_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

impl RawPath {
    /// Bytes this path takes in the data area.
    pub const fn len(&self) -> usize {
        self.name_len as usize + self.dir_len as usize
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
