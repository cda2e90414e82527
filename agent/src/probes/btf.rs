//! Kernel struct field offsets from the running kernel's BTF.

use std::{fs::File, os::unix::fs::FileExt, path::Path};

use agent_common::KernelOffsets;
use btfparse::{Offset, Readable, TypeInformation};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot open kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Open { path: String, source: std::io::Error },
    #[error("cannot parse kernel BTF: {0:?}")]
    Parse(btfparse::Error),
    #[error("kernel BTF has no type `struct {0}`")]
    NoType(&'static str),
    #[error("kernel BTF has no field `{field}` in `struct {ty}`: {detail}")]
    NoField {
        ty: &'static str,
        field: &'static str,
        detail: String,
    },
    #[error("`struct {ty}.{field}` is a bitfield; a byte offset is needed")]
    Bitfield { ty: &'static str, field: &'static str },
}

struct BtfFile(File);

impl Readable for BtfFile {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        Ok(self.0.read_exact_at(buffer, offset)?)
    }
}

/// Resolves every offset the probes need from the BTF file at `path`
/// (normally `/sys/kernel/btf/vmlinux`).
pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    let file = File::open(path).map_err(|source| BtfError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let types = TypeInformation::new(&BtfFile(file)).map_err(BtfError::Parse)?;
    let field = |ty: &'static str, field: &'static str| -> Result<u32, BtfError> {
        let id = types.id_of(ty).ok_or(BtfError::NoType(ty))?;
        match types.offset_of(id, field) {
            Ok((_, Offset::ByteOffset(bytes))) => Ok(bytes),
            Ok((_, Offset::BitOffsetAndSize(..))) => Err(BtfError::Bitfield { ty, field }),
            Err(e) => Err(BtfError::NoField {
                ty,
                field,
                detail: format!("{e:?}"),
            }),
        }
    };
    Ok(KernelOffsets {
        task_real_parent: field("task_struct", "real_parent")?,
        task_tgid: field("task_struct", "tgid")?,
        task_fs: field("task_struct", "fs")?,
        task_files: field("task_struct", "files")?,
        fs_root_mnt: field("fs_struct", "root.mnt")?,
        fs_root_dentry: field("fs_struct", "root.dentry")?,
        fs_pwd_mnt: field("fs_struct", "pwd.mnt")?,
        fs_pwd_dentry: field("fs_struct", "pwd.dentry")?,
        files_fdt: field("files_struct", "fdt")?,
        fdt_max_fds: field("fdtable", "max_fds")?,
        fdt_fd: field("fdtable", "fd")?,
        file_path_mnt: field("file", "f_path.mnt")?,
        file_path_dentry: field("file", "f_path.dentry")?,
        dentry_parent: field("dentry", "d_parent")?,
        dentry_name: field("dentry", "d_name.name")?,
        vfsmount_root: field("vfsmount", "mnt_root")?,
        mount_vfsmount: field("mount", "mnt")?,
        mount_parent: field("mount", "mnt_parent")?,
        mount_mountpoint: field("mount", "mnt_mountpoint")?,
        _pad: 0,
    })
}
