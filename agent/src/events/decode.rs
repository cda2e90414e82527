//! Raw ring-buffer records → [`Event`]s.
//!
//! Every length is checked against the record before it is trusted: a short or
//! unknown record is an error to count, never a panic.

use std::mem::size_of;

use agent_common::{
    block::{split_dev, BlockWriteOp, RawBlockOpen, RawBlockWrite},
    event::{AUDIT_UNSET, TASK_FLAG_EXEMPT, TASK_FLAG_KTHREAD},
    fs::{DeleteOp, RawDeletion, RawRename, RawTruncate, RenameOp, TruncateOp, SIZE_UNKNOWN},
    guard::{GuardHook, GuardReason, RawGuard, SessionKind},
    path::RawPath,
    process::{RawExec, RawExit, RawFork},
    EventHeader, EventKind, TaskInfo,
};

use super::{path, Argv, BootClock, Device, Event, EventBody, GuardAction, Outcome, Task};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need} bytes its {what} needs")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("unknown {what} op {op}")]
    UnknownOp { what: &'static str, op: u32 },
}

/// Decodes one record.
pub fn decode(record: &[u8], clock: &BootClock) -> Result<Event, DecodeError> {
    let header: EventHeader = fixed(record, "header")?;
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let (task, body) = match kind {
        EventKind::Deletion => {
            let (raw, mut data) = split::<RawDeletion>(record)?;
            let op = DeleteOp::from_u32(raw.op).ok_or(DecodeError::UnknownOp {
                what: "deletion",
                op: raw.op,
            })?;
            let (path, path_complete) = data.path(&raw.path)?;
            (
                raw.task,
                EventBody::Deletion {
                    op,
                    path,
                    path_complete,
                    kernel_class: raw.class,
                    outcome: Outcome::of(raw.ret, op.recorded_at_submission()),
                },
            )
        }
        EventKind::Rename => {
            let (raw, mut data) = split::<RawRename>(record)?;
            let op = RenameOp::from_u32(raw.op).ok_or(DecodeError::UnknownOp {
                what: "rename",
                op: raw.op,
            })?;
            let (from, from_complete) = data.path(&raw.from)?;
            let (to, to_complete) = data.path(&raw.to)?;
            let outcome = Outcome::of(raw.ret, op.recorded_at_submission());
            (
                raw.task,
                EventBody::Rename {
                    op,
                    from,
                    from_complete,
                    to,
                    to_complete,
                    flags: raw.flags,
                    outcome,
                },
            )
        }
        EventKind::Truncate => {
            let (raw, mut data) = split::<RawTruncate>(record)?;
            let op = TruncateOp::from_u32(raw.op).ok_or(DecodeError::UnknownOp {
                what: "truncate",
                op: raw.op,
            })?;
            let (path, path_complete) = data.path(&raw.path)?;
            let size_before = (raw.size_before != SIZE_UNKNOWN).then_some(raw.size_before.max(0) as u64);
            let outcome = Outcome::of(raw.ret, op.recorded_at_submission());
            (
                raw.task,
                EventBody::Truncate {
                    op,
                    path,
                    path_complete,
                    length: raw.length,
                    size_before,
                    outcome,
                },
            )
        }
        EventKind::Exec => {
            let (raw, mut data) = split::<RawExec>(record)?;
            let argv = Argv::parse(data.take(raw.argv_len as usize, "argv")?, raw.argv_total);
            let (exe, exe_complete) = data.path(&raw.exe)?;
            (
                raw.task,
                EventBody::Exec {
                    exe,
                    exe_complete,
                    argv,
                },
            )
        }
        EventKind::Fork => {
            let (raw, _) = split::<RawFork>(record)?;
            (
                raw.task,
                EventBody::Fork {
                    child_pid: raw.child_pid,
                    child_start_ns: raw.child_start_ns,
                },
            )
        }
        EventKind::Exit => {
            let (raw, _) = split::<RawExit>(record)?;
            let signal = (raw.exit_code & 0x7f) as u8;
            let status = ((raw.exit_code >> 8) & 0xff) as u8;
            let body = if signal != 0 {
                EventBody::Exit {
                    status: None,
                    signal: Some(signal),
                }
            } else {
                EventBody::Exit {
                    status: Some(status),
                    signal: None,
                }
            };
            (raw.task, body)
        }
        EventKind::BlockOpen => {
            let (raw, mut data) = split::<RawBlockOpen>(record)?;
            let (path, path_complete) = data.path(&raw.path)?;
            let outcome = Outcome::from_ret(raw.ret);
            (
                raw.task,
                EventBody::BlockOpen {
                    device: device(raw.dev),
                    path,
                    path_complete,
                    flags: raw.flags,
                    outcome,
                },
            )
        }
        EventKind::Guard => {
            let (raw, _) = split::<RawGuard>(record)?;
            let unknown = |what| DecodeError::UnknownOp { what, op: raw.reason };
            let reason = GuardReason::from_u32(raw.reason).ok_or(unknown("guard reason"))?;
            let hook = GuardHook::from_u32(raw.hook).ok_or(unknown("guard hook"))?;
            let session_kind = match SessionKind::from_u32(raw.session.kind) {
                Some(SessionKind::Login) => "login",
                Some(SessionKind::Cgroup) => "cgroup",
                Some(SessionKind::Posix) => "sid",
                None => return Err(unknown("guard session kind")),
            };
            let action = GuardAction {
                reason,
                hook,
                session_kind,
                session_id: raw.session.id,
                class: raw.class,
                count: raw.count,
                limit: raw.limit,
                killed: raw.killed != 0,
                signal_error: (raw.signal_ret < 0)
                    .then(|| format!("{:?}", nix::errno::Errno::from_raw(-raw.signal_ret))),
                device: (raw.dev != 0).then(|| device(raw.dev)),
            };
            (raw.task, EventBody::Guard(action))
        }
        EventKind::BlockWrite => {
            let (raw, _) = split::<RawBlockWrite>(record)?;
            let op = BlockWriteOp::from_u32(raw.op).ok_or(DecodeError::UnknownOp {
                what: "block write",
                op: raw.op,
            })?;
            (
                raw.task,
                EventBody::BlockWrite {
                    op,
                    device: device(raw.dev),
                    offset: raw.offset,
                    bytes: raw.bytes,
                    fd: raw.fd,
                    fd_registered: raw.fd_registered != 0,
                },
            )
        }
    };
    Ok(Event {
        time: clock.wall_time(task.boot_ns),
        body,
        process: self::task(&task),
    })
}

fn device(dev: u32) -> Device {
    let (major, minor) = split_dev(dev);
    Device {
        major,
        minor,
        name: None,
    }
}

fn task(task: &TaskInfo) -> Task {
    let comm_len = task.comm.iter().position(|&b| b == 0).unwrap_or(task.comm.len());
    let audit = |v: u32| (v != AUDIT_UNSET).then_some(v);
    Task {
        pid: task.pid,
        tid: task.tid,
        ppid: task.ppid,
        uid: task.uid,
        gid: task.gid,
        comm: task.comm[..comm_len].to_vec(),
        cgroup_id: task.cgroup_id,
        start_ns: task.start_ns,
        login_uid: audit(task.loginuid),
        // The kernel counts audit sessions from 1; 0 is never a login.
        audit_session: audit(task.audit_session).filter(|&s| s != 0),
        pgid: task.pgid,
        sid: task.sid,
        kernel_thread: task.flags & TASK_FLAG_KTHREAD != 0,
        allowlisted: task.flags & TASK_FLAG_EXEMPT != 0,
    }
}

/// The record's data area, consumed front to back.
struct Data<'a>(&'a [u8]);

impl<'a> Data<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(DecodeError::Short {
            what,
            need: n,
            got: self.0.len(),
        })?;
        self.0 = rest;
        Ok(head)
    }

    fn path(&mut self, raw: &RawPath) -> Result<(Vec<u8>, bool), DecodeError> {
        let bytes = self.take(raw.len(), "path")?;
        let (name, dir) = bytes.split_at(raw.name_len as usize);
        Ok(path::assemble(name, dir, raw.flags))
    }
}

/// The fixed part `T` of a record and its data area.
fn split<T: Copy>(record: &[u8]) -> Result<(T, Data<'_>), DecodeError> {
    let raw = fixed::<T>(record, std::any::type_name::<T>())?;
    Ok((raw, Data(&record[size_of::<T>()..])))
}

/// Copies a `#[repr(C)]` plain-data struct out of the front of `record`.
fn fixed<T: Copy>(record: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if record.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            what,
            need: size_of::<T>(),
            got: record.len(),
        });
    }
    // SAFETY: the length is checked above, `read_unaligned` has no alignment
    // requirement, and `T` is one of agent-common's integer-only structs, for
    // which every bit pattern is valid.
    Ok(unsafe { record.as_ptr().cast::<T>().read_unaligned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{path::PATH_FLAG_DIR_RESOLVED, COMM_LEN};
    use nix::errno::Errno;

    fn task_info() -> TaskInfo {
        let mut comm = [0u8; COMM_LEN];
        comm[..2].copy_from_slice(b"rm");
        TaskInfo {
            boot_ns: 1_000,
            start_ns: 500,
            cgroup_id: 7,
            tid: 11,
            pid: 10,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            loginuid: 1000,
            audit_session: 3,
            pgid: 10,
            sid: 9,
            flags: 0,
            comm,
        }
    }

    fn bytes_of<T>(raw: &T) -> &[u8] {
        // SAFETY: plain-data struct viewed as bytes.
        unsafe { std::slice::from_raw_parts((raw as *const T).cast::<u8>(), size_of::<T>()) }
    }

    fn header(kind: EventKind, len: usize) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            len: len as u32,
        }
    }

    fn raw_deletion(name: &[u8], dir: &[u8], ret: i64) -> Vec<u8> {
        let raw = RawDeletion {
            header: header(
                EventKind::Deletion,
                size_of::<RawDeletion>() + name.len() + dir.len(),
            ),
            task: task_info(),
            ret,
            op: DeleteOp::Unlinkat as u32,
            class: 0,
            path: RawPath {
                name_len: name.len() as u32,
                dir_len: dir.len() as u32,
                flags: PATH_FLAG_DIR_RESOLVED,
                _pad: 0,
            },
        };
        [bytes_of(&raw), name, dir].concat()
    }

    fn clock() -> BootClock {
        BootClock::now().unwrap()
    }

    #[test]
    fn decodes_a_deletion_with_its_session_fields() {
        let event = decode(&raw_deletion(b"f", b"tmp\0", 0), &clock()).unwrap();
        let EventBody::Deletion { path, outcome, .. } = &event.body else {
            panic!("{event:?}")
        };
        assert_eq!(path, b"/tmp/f");
        assert_eq!(*outcome, Outcome::Success);
        let p = &event.process;
        assert_eq!(p.comm, b"rm");
        assert_eq!((p.pid, p.tid, p.uid, p.pgid, p.sid), (10, 11, 1000, 10, 9));
        assert_eq!((p.login_uid, p.audit_session), (Some(1000), Some(3)));
    }

    #[test]
    fn unset_audit_fields_mean_no_login() {
        let mut record = raw_deletion(b"/f", b"", 0);
        let mut raw: RawDeletion = fixed(&record, "t").unwrap();
        raw.task.loginuid = AUDIT_UNSET;
        raw.task.audit_session = AUDIT_UNSET;
        record[..size_of::<RawDeletion>()].copy_from_slice(bytes_of(&raw));
        let event = decode(&record, &clock()).unwrap();
        assert_eq!(
            (event.process.login_uid, event.process.audit_session),
            (None, None)
        );
    }

    #[test]
    fn failure_carries_errno() {
        let event = decode(&raw_deletion(b"/f", b"", -2), &clock()).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "deletion");
        assert_eq!(json["result"], "ENOENT");
        assert_eq!(json["errno"], 2);
        assert_eq!(json["process"]["pid"], 10);
        let EventBody::Deletion { outcome, .. } = event.body else {
            panic!()
        };
        assert_eq!(outcome, Outcome::Failed(Errno::ENOENT));
    }

    #[test]
    fn decodes_a_rename_with_two_paths() {
        let from = b"old\0d\0";
        let to = b"/abs/new";
        let raw = RawRename {
            header: header(EventKind::Rename, size_of::<RawRename>() + from.len() + to.len()),
            task: task_info(),
            ret: 0,
            flags: 0,
            op: RenameOp::IoUringRenameat as u32,
            from: RawPath {
                name_len: 3,
                dir_len: 3,
                flags: PATH_FLAG_DIR_RESOLVED,
                _pad: 0,
            },
            to: RawPath {
                name_len: to.len() as u32,
                dir_len: 0,
                flags: 0,
                _pad: 0,
            },
        };
        let record = [bytes_of(&raw), from, to].concat();
        let event = decode(&record, &clock()).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (&json["op"], &json["result"]),
            (&"io_uring_renameat".into(), &"submitted".into())
        );
        let EventBody::Rename { from, to, .. } = event.body else {
            panic!()
        };
        assert_eq!(
            (from.as_slice(), to.as_slice()),
            (&b"/d/old"[..], &b"/abs/new"[..])
        );
    }

    #[test]
    fn an_io_uring_deletion_is_submitted_and_counts_for_scoring() {
        let mut record = raw_deletion(b"/f", b"", 0);
        let mut raw: RawDeletion = fixed(&record, "t").unwrap();
        raw.op = DeleteOp::IoUringUnlinkatDir as u32;
        record[..size_of::<RawDeletion>()].copy_from_slice(bytes_of(&raw));
        let event = decode(&record, &clock()).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["op"], "io_uring_unlinkat_dir");
        assert_eq!(
            (&json["result"], &json["errno"]),
            (&"submitted".into(), &serde_json::Value::Null)
        );
        let EventBody::Deletion { outcome, .. } = event.body else {
            panic!()
        };
        assert!(outcome.may_have_happened());
        assert!(!Outcome::Failed(Errno::ENOENT).may_have_happened());
    }

    #[test]
    fn decodes_an_exec_with_argv_then_exe() {
        let argv = b"dd\0if=/dev/zero\0";
        let exe = b"dd\0bin\0usr\0";
        let raw = RawExec {
            header: header(EventKind::Exec, 0),
            task: task_info(),
            argv_len: argv.len() as u32,
            argv_total: argv.len() as u32,
            exe: RawPath {
                name_len: 0,
                dir_len: exe.len() as u32,
                flags: PATH_FLAG_DIR_RESOLVED,
                _pad: 0,
            },
        };
        let record = [bytes_of(&raw), argv, exe].concat();
        let event = decode(&record, &clock()).unwrap();
        let EventBody::Exec { exe, argv, .. } = event.body else {
            panic!()
        };
        assert_eq!(exe, b"/usr/bin/dd");
        assert_eq!(argv.argv, [b"dd".to_vec(), b"if=/dev/zero".to_vec()]);
    }

    #[test]
    fn exit_by_signal_and_by_status() {
        for (code, status, signal) in [(9u32, None, Some(9)), (3 << 8, Some(3), None)] {
            let raw = RawExit {
                header: header(EventKind::Exit, 96),
                task: task_info(),
                exit_code: code,
                _pad: 0,
            };
            let event = decode(bytes_of(&raw), &clock()).unwrap();
            let EventBody::Exit { status: s, signal: g } = event.body else {
                panic!()
            };
            assert_eq!((s, g), (status, signal));
        }
    }

    #[test]
    fn block_write_device_numbers() {
        let raw = RawBlockWrite {
            header: header(EventKind::BlockWrite, size_of::<RawBlockWrite>()),
            task: task_info(),
            offset: 8192,
            bytes: 4096,
            dev: (7 << 20) | 3,
            fd: 1,
            op: BlockWriteOp::IoUringWritev as u32,
            fd_registered: 1,
        };
        let event = decode(bytes_of(&raw), &clock()).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (&json["op"], &json["fd_registered"]),
            (&"io_uring_writev".into(), &true.into())
        );
        let EventBody::BlockWrite {
            device,
            bytes,
            offset,
            ..
        } = event.body
        else {
            panic!()
        };
        assert_eq!((device.major, device.minor, bytes, offset), (7, 3, 4096, 8192));
    }

    #[test]
    fn short_records_are_errors() {
        let full = raw_deletion(b"name", b"dir\0", 0);
        for cut in [0, 4, size_of::<RawDeletion>() - 1, full.len() - 1] {
            assert!(
                matches!(decode(&full[..cut], &clock()), Err(DecodeError::Short { .. })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut record = raw_deletion(b"f", b"", 0);
        record[0] = 0xee;
        assert!(matches!(
            decode(&record, &clock()),
            Err(DecodeError::UnknownKind(_))
        ));
    }
}
