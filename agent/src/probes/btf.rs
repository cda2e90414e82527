//! Kernel struct field offsets from the running kernel's BTF.

use std::{fs::File, os::unix::fs::FileExt, path::Path};

use agent_common::{syscall::SYSCALL_ARGS, IoUringOffsets, KernelOffsets};
use btfparse::{Offset, Readable, TypeInformation, TypeVariant};

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
    #[error("unsupported `struct dentry` layout: d_parent at {parent}, d_name.name at {name}, d_inode at {inode}; the probes need them at d_parent, +16 and +24")]
    DentryLayout { parent: u32, name: u32, inode: u32 },
}

struct BtfFile(File);

impl Readable for BtfFile {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        Ok(self.0.read_exact_at(buffer, offset)?)
    }
}

/// The running kernel's types, parsed once.
pub struct KernelBtf(TypeInformation);

impl KernelBtf {
    /// Parses the BTF file at `path` (normally `/sys/kernel/btf/vmlinux`).
    pub fn open(path: &Path) -> Result<KernelBtf, BtfError> {
        let file = File::open(path).map_err(|source| BtfError::Open {
            path: path.display().to_string(),
            source,
        })?;
        TypeInformation::new(&BtfFile(file))
            .map(KernelBtf)
            .map_err(BtfError::Parse)
    }

    /// The byte offset of `field` (a dotted path) in `struct ty`.
    fn field(&self, ty: &'static str, field: &'static str) -> Result<u32, BtfError> {
        let types = &self.0;
        let id = self.struct_id(ty).ok_or(BtfError::NoType(ty))?;
        match types.offset_of(id, field) {
            Ok((_, Offset::ByteOffset(bytes))) => Ok(bytes),
            Ok((_, Offset::BitOffsetAndSize(..))) => Err(BtfError::Bitfield { ty, field }),
            Err(e) => Err(BtfError::NoField {
                ty,
                field,
                detail: format!("{e:?}"),
            }),
        }
    }

    /// The type id of `struct ty` (or `union ty`). The name alone may
    /// find something else: a function can share a struct's name
    /// (`io_uring_cmd` is both), and a name's lookup gives its last type.
    fn struct_id(&self, ty: &str) -> Option<u32> {
        let types = &self.0;
        let all = types.get();
        let is_struct = |t: &TypeVariant| matches!(t, TypeVariant::Struct(_) | TypeVariant::Union(_));
        types
            .id_of(ty)
            .filter(|id| all.get(id).is_some_and(is_struct))
            .or_else(|| {
                all.iter()
                    .filter(|(_, t)| is_struct(t))
                    .map(|(&id, _)| id)
                    .find(|&id| types.name_of(id).as_deref() == Some(ty))
            })
    }

    /// Whether this kernel has the 32-bit syscall entry on x86-64 (its
    /// syscall table's functions are in BTF). Those syscalls fire no
    /// syscall tracepoint, so the probes do not see them.
    pub fn has_ia32_syscalls(&self) -> bool {
        self.0.id_of("__ia32_sys_unlink").is_some()
    }

    /// Every offset the probes need, but io_uring's (left 0; see
    /// [`KernelBtf::io_uring_offsets`]).
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let field = |ty, name| self.field(ty, name);
        // signal_struct.pids[] is indexed by `enum pid_type`; pid.numbers[0] is
        // the initial namespace's number.
        const PIDTYPE_PGID: u32 = 2;
        const PIDTYPE_SID: u32 = 3;
        let pids = field("signal_struct", "pids")?;
        let pid_nr = field("pid", "numbers")? + field("upid", "nr")?;
        let dentry_links = dentry_links(
            field("dentry", "d_parent")?,
            field("dentry", "d_name.name")?,
            field("dentry", "d_inode")?,
        )?;
        Ok(KernelOffsets {
            task_pid: field("task_struct", "pid")?,
            task_tgid: field("task_struct", "tgid")?,
            task_real_parent: field("task_struct", "real_parent")?,
            task_group_leader: field("task_struct", "group_leader")?,
            task_start_boottime: field("task_struct", "start_boottime")?,
            task_flags: field("task_struct", "flags")?,
            task_exit_code: field("task_struct", "exit_code")?,
            task_fs: field("task_struct", "fs")?,
            task_files: field("task_struct", "files")?,
            task_mm: field("task_struct", "mm")?,
            task_signal: field("task_struct", "signal")?,
            task_comm: field("task_struct", "comm")?,
            task_cred: field("task_struct", "cred")?,
            task_cgroups: field("task_struct", "cgroups")?,
            // Absent without CONFIG_AUDIT: 0 tells the probes there is no login session.
            task_loginuid: field("task_struct", "loginuid").unwrap_or(0),
            task_sessionid: field("task_struct", "sessionid").unwrap_or(0),
            signal_pgid: pids + PIDTYPE_PGID * 8,
            signal_sid: pids + PIDTYPE_SID * 8,
            signal_flags: field("signal_struct", "flags")?,
            pid_nr,
            mm_arg_start: field("mm_struct", "arg_start")?,
            mm_arg_end: field("mm_struct", "arg_end")?,
            mm_exe_file: field("mm_struct", "exe_file")?,
            fs_root_mnt: field("fs_struct", "root.mnt")?,
            fs_root_dentry: field("fs_struct", "root.dentry")?,
            fs_pwd_mnt: field("fs_struct", "pwd.mnt")?,
            fs_pwd_dentry: field("fs_struct", "pwd.dentry")?,
            files_fdt: field("files_struct", "fdt")?,
            fdt_max_fds: field("fdtable", "max_fds")?,
            fdt_fd: field("fdtable", "fd")?,
            file_path_mnt: field("file", "f_path.mnt")?,
            file_path_dentry: field("file", "f_path.dentry")?,
            file_inode: field("file", "f_inode")?,
            file_pos: field("file", "f_pos")?,
            file_mode: field("file", "f_mode")?,
            inode_mode: field("inode", "i_mode")?,
            inode_rdev: field("inode", "i_rdev")?,
            inode_size: field("inode", "i_size")?,
            dentry_sb: field("dentry", "d_sb")?,
            inode_ino: field("inode", "i_ino")?,
            inode_sb: field("inode", "i_sb")?,
            bprm_file: field("linux_binprm", "file")?,
            bprm_filename: field("linux_binprm", "filename")?,
            bprm_executable: field("linux_binprm", "executable").unwrap_or(0),
            cred_uid: field("cred", "uid.val")?,
            cred_gid: field("cred", "gid.val")?,
            css_set_dfl_cgrp: field("css_set", "dfl_cgrp")?,
            cgroup_kn: field("cgroup", "kn")?,
            kernfs_node_id: field("kernfs_node", "id")?,
            sb_dev: field("super_block", "s_dev")?,
            dentry_links,
            vfsmount_root: field("vfsmount", "mnt_root")?,
            mount_vfsmount: field("mount", "mnt")?,
            mount_parent: field("mount", "mnt_parent")?,
            mount_mountpoint: field("mount", "mnt_mountpoint")?,
            syscall_args: {
                let mut args = [0; SYSCALL_ARGS];
                for (offset, register) in args.iter_mut().zip(SYSCALL_ARG_REGISTERS) {
                    *offset = field("pt_regs", register)?;
                }
                args
            },
            io_uring: IoUringOffsets::default(),
        })
    }

    /// Where a submitted io_uring request keeps what the probes read. An
    /// error names what this kernel lacks: [`BtfError::NoType`] of
    /// `io_kiocb` when it was built without io_uring.
    pub fn io_uring_offsets(&self) -> Result<IoUringOffsets, BtfError> {
        let cmd = self.field("io_kiocb", "cmd")?;
        // A field of the command a request of one kind keeps in `io_kiocb.cmd`.
        let command = |ty, name| Ok::<_, BtfError>(cmd + self.field(ty, name)?);
        let files = self.field("io_ring_ctx", "file_table")? + self.field("io_file_table", "data")?;
        Ok(IoUringOffsets {
            opcode: self.field("io_kiocb", "opcode")?,
            flags: self.field("io_kiocb", "flags")?,
            fd: self.field("io_kiocb", "cqe")? + self.field("io_cqe", "fd")?,
            res: self.field("io_kiocb", "cqe")? + self.field("io_cqe", "res")?,
            ctx: self.field("io_kiocb", "ctx")?,
            ctx_flags: self.field("io_ring_ctx", "flags")?,
            ctx_files_nr: files + self.field("io_rsrc_data", "nr")?,
            ctx_files: files + self.field("io_rsrc_data", "nodes")?,
            rsrc_node_file: self.field("io_rsrc_node", "file_ptr")?,
            rw_pos: command("io_rw", "kiocb")? + self.field("kiocb", "ki_pos")?,
            rw_addr: command("io_rw", "addr")?,
            rw_len: command("io_rw", "len")?,
            unlink_dfd: command("io_unlink", "dfd")?,
            unlink_flags: command("io_unlink", "flags")?,
            unlink_filename: command("io_unlink", "filename")?,
            rename_old_dfd: command("io_rename", "old_dfd")?,
            rename_new_dfd: command("io_rename", "new_dfd")?,
            rename_old: command("io_rename", "oldpath")?,
            rename_new: command("io_rename", "newpath")?,
            rename_flags: command("io_rename", "flags")?,
            filename_name: self.field("filename", "name")?,
            sync_off: command("io_sync", "off")?,
            sync_len: command("io_sync", "len")?,
            sync_mode: command("io_sync", "mode")?,
            cmd_sqe: command("io_uring_cmd", "sqe")?,
            cmd_op: command("io_uring_cmd", "cmd_op")?,
            ftrunc_len: command("io_ftrunc", "len")?,
            splice_off_out: command("io_splice", "off_out")?,
            splice_len: command("io_splice", "len")?,
            open_dfd: command("io_open", "dfd")?,
            open_filename: command("io_open", "filename")?,
            open_flags: command("io_open", "how")? + self.field("open_how", "flags")?,
            open_file_slot: command("io_open", "file_slot")?,
        })
    }
}

/// Where a dentry's parent, name and inode start: walks read them in one go,
/// so they must lie as every kernel since 2.6 has them (`d_parent`, then
/// `d_name`, a `hash_len` and a `name` pointer, then `d_inode`).
fn dentry_links(parent: u32, name: u32, inode: u32) -> Result<u32, BtfError> {
    if name == parent + 16 && inode == parent + 24 {
        Ok(parent)
    } else {
        Err(BtfError::DentryLayout { parent, name, inode })
    }
}

/// The `struct pt_regs` fields holding a syscall's arguments, in order.
#[cfg(target_arch = "x86_64")]
const SYSCALL_ARG_REGISTERS: [&str; SYSCALL_ARGS] = ["di", "si", "dx", "r10", "r8"];
#[cfg(not(target_arch = "x86_64"))]
compile_error!("the probes read syscall arguments from x86-64 registers; name this architecture's in SYSCALL_ARG_REGISTERS");

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves against this machine's kernel: every field the probes read
    /// exists, and a few offsets have the values the kernel's own layout fixes.
    #[test]
    fn resolves_every_offset_from_the_running_kernel() {
        let o = KernelBtf::open(Path::new("/sys/kernel/btf/vmlinux"))
            .and_then(|btf| btf.kernel_offsets())
            .expect("kernel BTF");
        assert_ne!(o.task_tgid, 0);
        assert_ne!(o.mm_arg_start, 0);
        assert_eq!(o.task_tgid, o.task_pid + 4, "tgid follows pid in task_struct");
        assert_eq!(
            o.fs_root_dentry,
            o.fs_root_mnt + 8,
            "struct path is {{mnt, dentry}}"
        );
        assert_eq!(o.signal_sid, o.signal_pgid + 8);
        assert_ne!(o.cred_uid, o.cred_gid, "uid and gid resolved apart");
        // x86-64 `struct pt_regs`: r15 at 0 ... r10 at 56, r8 at 72, dx at
        // 96, si at 104, di at 112.
        assert_eq!(o.syscall_args, [112, 104, 96, 56, 72]);
    }

    /// `struct io_unlink` and `struct io_rename` start with a file pointer,
    /// then their directory fds; `struct filename` with the kernel's copy.
    #[test]
    fn resolves_io_uring_requests_from_the_running_kernel() {
        let btf = KernelBtf::open(Path::new("/sys/kernel/btf/vmlinux")).expect("kernel BTF");
        let u = btf.io_uring_offsets().expect("this kernel has io_uring");
        assert_ne!(u.opcode, 0);
        // `struct io_cqe { u64 user_data; s32 res; union { u32 flags; int fd; } }`.
        assert_eq!(u.fd, btf.field("io_kiocb", "cqe").unwrap() + 12);
        assert_eq!(u.res, u.fd - 4);
        assert_eq!(
            u.ctx_files,
            u.ctx_files_nr + 8,
            "`struct io_rsrc_data {{ nr; nodes }}`"
        );
        assert_eq!(
            u.rw_pos, 8,
            "`struct io_rw` starts with its `kiocb`, whose `ki_pos` follows `ki_filp`"
        );
        assert_eq!(u.rw_len, u.rw_addr + 8);
        assert_eq!(u.unlink_flags, u.unlink_dfd + 4);
        assert_eq!(u.rename_new_dfd, u.rename_old_dfd + 4);
        assert_eq!(u.rename_new, u.rename_old + 8);
        assert_eq!(u.filename_name, 0);
        assert_eq!(
            (u.sync_len, u.sync_off, u.sync_mode),
            (8, 16, 28),
            "`struct io_sync {{ file; loff_t len; loff_t off; int flags; int mode; }}`"
        );
        assert_eq!(u.ftrunc_len, 8, "`struct io_ftrunc {{ file; loff_t len; }}`");
        assert_eq!(
            (u.splice_off_out, u.splice_len),
            (8, 24),
            "`struct io_splice {{ file_out; loff_t off_out; loff_t off_in; u64 len; ... }}`"
        );
        assert_eq!(
            (u.open_dfd, u.open_file_slot, u.open_filename, u.open_flags),
            (8, 12, 16, 24),
            "`struct io_open {{ file; int dfd; u32 file_slot; filename; struct open_how how; ... }}`, flags first in `how`"
        );
        assert_eq!(
            u.cmd_sqe, 8,
            "`struct io_uring_cmd` (not the function) starts `{{ file; sqe; }}`"
        );
    }

    /// This machine's kernel is built with `CONFIG_IA32_EMULATION`, as most
    /// distributions' are.
    #[test]
    fn finds_the_32_bit_syscall_entry_of_the_running_kernel() {
        let btf = KernelBtf::open(Path::new("/sys/kernel/btf/vmlinux")).expect("kernel BTF");
        assert!(btf.has_ia32_syscalls());
    }

    #[test]
    fn a_dentry_layout_walks_cannot_read_in_one_go_is_a_clear_error() {
        assert_eq!(dentry_links(24, 40, 48).unwrap(), 24);
        let err = dentry_links(24, 40, 56).unwrap_err();
        assert!(err.to_string().contains("d_inode at 56"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = KernelBtf::open(Path::new("/nonexistent/vmlinux"))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
