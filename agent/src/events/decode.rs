//! Raw ring-buffer records → [`Event`]s.
//!
//! Every length is checked against the record before it is trusted: a short or
//! unknown record is an error to count, never a panic.

use std::mem::size_of;

use agent_common::{DeleteOp, EventHeader, EventKind, RawDeletion, TaskInfo};

use super::{path, BootClock, Deletion, Event, Outcome, Process};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than {need} bytes for {what}")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("unknown deletion op {0}")]
    UnknownOp(u32),
}

/// Decodes one record.
pub fn decode(record: &[u8], clock: &BootClock) -> Result<Event, DecodeError> {
    let header: EventHeader = read(record, "header")?;
    match EventKind::from_u32(header.kind) {
        Some(EventKind::Deletion) => decode_deletion(record, clock).map(Event::Deletion),
        None => Err(DecodeError::UnknownKind(header.kind)),
    }
}

fn decode_deletion(record: &[u8], clock: &BootClock) -> Result<Deletion, DecodeError> {
    let raw: RawDeletion = read(record, "deletion")?;
    let op = DeleteOp::from_u32(raw.op).ok_or(DecodeError::UnknownOp(raw.op))?;
    let end = size_of::<RawDeletion>() + raw.name_len as usize + raw.dir_len as usize;
    let body = record
        .get(size_of::<RawDeletion>()..end)
        .ok_or(DecodeError::Short {
            what: "deletion path",
            need: end,
            got: record.len(),
        })?;
    let (name, dir) = body.split_at(raw.name_len as usize);
    let (path, path_complete) = path::assemble(name, dir, raw.path_flags);
    Ok(Deletion {
        time: clock.wall_time(raw.task.boot_ns),
        op,
        path,
        path_complete,
        outcome: Outcome::from_ret(raw.ret),
        process: process(&raw.task),
    })
}

fn process(task: &TaskInfo) -> Process {
    let comm_len = task.comm.iter().position(|&b| b == 0).unwrap_or(task.comm.len());
    Process {
        pid: task.pid,
        tid: task.tid,
        ppid: task.ppid,
        uid: task.uid,
        gid: task.gid,
        comm: task.comm[..comm_len].to_vec(),
        cgroup_id: task.cgroup_id,
    }
}

/// Copies a `#[repr(C)]` plain-data struct out of the front of `record`.
fn read<T: Copy>(record: &[u8], what: &'static str) -> Result<T, DecodeError> {
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
    use agent_common::{deletion::PATH_FLAG_DIR_RESOLVED, COMM_LEN};
    use nix::errno::Errno;

    fn raw_deletion(name: &[u8], dir: &[u8], ret: i64) -> Vec<u8> {
        let mut comm = [0u8; COMM_LEN];
        comm[..2].copy_from_slice(b"rm");
        let raw = RawDeletion {
            header: EventHeader {
                kind: EventKind::Deletion as u32,
                len: (size_of::<RawDeletion>() + name.len() + dir.len()) as u32,
            },
            task: TaskInfo {
                boot_ns: 1_000,
                cgroup_id: 7,
                tid: 11,
                pid: 10,
                ppid: 1,
                uid: 1000,
                gid: 1000,
                _pad: 0,
                comm,
            },
            ret,
            op: DeleteOp::Unlinkat as u32,
            path_flags: PATH_FLAG_DIR_RESOLVED,
            name_len: name.len() as u32,
            dir_len: dir.len() as u32,
        };
        // SAFETY: plain-data struct viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawDeletion).cast::<u8>(),
                size_of::<RawDeletion>(),
            )
        };
        [bytes, name, dir].concat()
    }

    fn clock() -> BootClock {
        BootClock::now().unwrap()
    }

    #[test]
    fn decodes_a_deletion() {
        let Event::Deletion(d) = decode(&raw_deletion(b"f", b"tmp\0", 0), &clock()).unwrap();
        assert_eq!(d.path, b"/tmp/f");
        assert_eq!(d.outcome, Outcome::Success);
        assert_eq!(d.process.comm, b"rm");
        assert_eq!((d.process.pid, d.process.tid, d.process.uid), (10, 11, 1000));
    }

    #[test]
    fn failure_carries_errno() {
        let Event::Deletion(d) = decode(&raw_deletion(b"/f", b"", -2), &clock()).unwrap();
        assert_eq!(d.outcome, Outcome::Failed(Errno::ENOENT));
        let json = serde_json::to_value(Event::Deletion(d)).unwrap();
        assert_eq!(json["result"], "ENOENT");
        assert_eq!(json["errno"], 2);
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
