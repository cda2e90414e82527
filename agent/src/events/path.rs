//! Joining the name and directory components a probe recorded into one path.

use agent_common::path::{
    PATH_FLAG_DIR_RESOLVED, PATH_FLAG_DIR_TRUNCATED, PATH_FLAG_NAME_TRUNCATED, PATH_FLAG_NAME_UNREADABLE,
};

/// The absolute path, and whether it is whole.
///
/// `dir` holds NUL-terminated components, innermost first. `.` components and
/// repeated or trailing slashes are dropped; `..` is kept, since a symlink in
/// the name can make dropping it wrong.
pub fn assemble(name: &[u8], dir: &[u8], flags: u32) -> (Vec<u8>, bool) {
    let absolute = name.first() == Some(&b'/');
    if !absolute && flags & PATH_FLAG_DIR_RESOLVED == 0 {
        // The directory is unknown: a relative name is all there is.
        return (name.to_vec(), false);
    }
    let complete =
        flags & (PATH_FLAG_DIR_TRUNCATED | PATH_FLAG_NAME_TRUNCATED | PATH_FLAG_NAME_UNREADABLE) == 0;

    let mut path = Vec::with_capacity(name.len() + dir.len() + 1);
    let dir_components = if absolute {
        None
    } else {
        Some(dir.split(|&b| b == 0).filter(|c| !c.is_empty()).rev())
    };
    for component in dir_components
        .into_iter()
        .flatten()
        .chain(name.split(|&b| b == b'/'))
        .filter(|c| !c.is_empty() && *c != b".")
    {
        path.push(b'/');
        path.extend_from_slice(component);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    (path, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_name_joins_reversed_components() {
        let (path, complete) = assemble(b"file", b"c\0b\0a\0", PATH_FLAG_DIR_RESOLVED);
        assert_eq!(path, b"/a/b/c/file");
        assert!(complete);
    }

    #[test]
    fn absolute_name_ignores_directory() {
        let (path, complete) = assemble(b"/x//y/./z/", b"", 0);
        assert_eq!(path, b"/x/y/z");
        assert!(complete);
    }

    #[test]
    fn name_in_root_directory() {
        assert_eq!(assemble(b"f", b"", PATH_FLAG_DIR_RESOLVED).0, b"/f");
    }

    #[test]
    fn dotdot_is_kept() {
        assert_eq!(
            assemble(b"../f", b"b\0a\0", PATH_FLAG_DIR_RESOLVED).0,
            b"/a/b/../f"
        );
    }

    #[test]
    fn truncated_or_unresolved_is_incomplete() {
        assert!(!assemble(b"f", b"b\0", PATH_FLAG_DIR_RESOLVED | PATH_FLAG_DIR_TRUNCATED).1);
        let (path, complete) = assemble(b"f", b"", 0);
        assert_eq!(path, b"f");
        assert!(!complete);
        assert!(!assemble(b"", b"", PATH_FLAG_NAME_UNREADABLE).1);
    }

    #[test]
    fn non_utf8_and_newline_bytes_survive() {
        let (path, _) = assemble(b"a\nb\xff", b"d\xfe\0", PATH_FLAG_DIR_RESOLVED);
        assert_eq!(path, b"/d\xfe/a\nb\xff");
    }
}
