//! The agent's durable alert spool (redb): every alert is written here before
//! it is sent, and removed only once the collector acknowledged it. It
//! survives restarts. It is bounded: past its capacity the oldest alerts are
//! dropped, and the drop is counted (in the spool itself, so the count
//! survives restarts too) and reported.

use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
const DROPPED: &str = "dropped";

#[derive(Debug, thiserror::Error)]
#[error("alert spool: {0}")]
pub struct SpoolError(String);

fn err(e: impl std::fmt::Display) -> SpoolError {
    SpoolError(e.to_string())
}

pub struct Spool {
    db: Database,
    capacity: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `path`, holding at most `capacity` alerts.
    pub fn open(path: &Path, capacity: u64) -> Result<Spool, SpoolError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(ALERTS).map_err(err)?;
        txn.open_table(META).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Spool {
            db,
            capacity: capacity.max(1),
        })
    }

    /// Stores an encoded alert durably; returns its sequence number.
    pub fn append(&self, alert: &[u8]) -> Result<u64, SpoolError> {
        let txn = self.db.begin_write().map_err(err)?;
        let seq = {
            let mut meta = txn.open_table(META).map_err(err)?;
            let mut alerts = txn.open_table(ALERTS).map_err(err)?;
            let seq = meta.get(NEXT_SEQ).map_err(err)?.map_or(1, |v| v.value());
            alerts.insert(seq, alert).map_err(err)?;
            meta.insert(NEXT_SEQ, seq + 1).map_err(err)?;
            let mut dropped = 0;
            while alerts.len().map_err(err)? > self.capacity {
                alerts.pop_first().map_err(err)?;
                dropped += 1;
            }
            if dropped > 0 {
                let before = meta.get(DROPPED).map_err(err)?.map_or(0, |v| v.value());
                meta.insert(DROPPED, before + dropped).map_err(err)?;
                tracing::warn!(dropped, "alert spool full: dropped the oldest unsent alerts");
            }
            seq
        };
        txn.commit().map_err(err)?;
        Ok(seq)
    }

    /// Up to `limit` alerts with a sequence number above `after`, in order.
    pub fn after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let alerts = txn.open_table(ALERTS).map_err(err)?;
        alerts
            .range(after + 1..)
            .map_err(err)?
            .take(limit)
            .map(|entry| entry.map(|(k, v)| (k.value(), v.value().to_vec())).map_err(err))
            .collect()
    }

    /// Removes every alert up to and including `seq` (the collector has them).
    pub fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut alerts = txn.open_table(ALERTS).map_err(err)?;
            loop {
                let first = alerts.first().map_err(err)?.map(|(k, _)| k.value());
                match first {
                    Some(first) if first <= seq => {
                        alerts.remove(first).map_err(err)?;
                    }
                    _ => break,
                }
            }
        }
        txn.commit().map_err(err)
    }

    /// Alerts waiting for an ack.
    pub fn depth(&self) -> Result<u64, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        txn.open_table(ALERTS).map_err(err)?.len().map_err(err)
    }

    /// Alerts dropped because the spool was full, ever.
    pub fn dropped(&self) -> Result<u64, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let meta = txn.open_table(META).map_err(err)?;
        Ok(meta.get(DROPPED).map_err(err)?.map_or(0, |v| v.value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_ack_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        {
            let spool = Spool::open(&path, 100).unwrap();
            assert_eq!(spool.append(b"a").unwrap(), 1);
            assert_eq!(spool.append(b"b").unwrap(), 2);
            assert_eq!(spool.append(b"c").unwrap(), 3);
            spool.ack(1).unwrap();
            assert_eq!(
                spool.after(0, 10).unwrap(),
                [(2, b"b".to_vec()), (3, b"c".to_vec())]
            );
            assert_eq!(spool.after(2, 10).unwrap(), [(3, b"c".to_vec())]);
        }
        let spool = Spool::open(&path, 100).unwrap();
        assert_eq!(spool.depth().unwrap(), 2, "unacked alerts survive a restart");
        assert_eq!(spool.append(b"d").unwrap(), 4, "sequence numbers keep increasing");
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("s.redb"), 3).unwrap();
        for i in 0..5u8 {
            spool.append(&[i]).unwrap();
        }
        assert_eq!(spool.depth().unwrap(), 3);
        assert_eq!(spool.dropped().unwrap(), 2);
        assert_eq!(
            spool.after(0, 10).unwrap().first().unwrap().0,
            3,
            "the newest are kept"
        );
    }
}
