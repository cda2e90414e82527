//! The collector's embedded store: SQLite, one file. Alerts are kept as their
//! protobuf bytes, deduplicated by alert id (an agent's resend after a lost
//! ack is harmless), and numbered by a cursor SOC subscribers resume from.

use std::{path::Path, sync::Mutex, time::SystemTime};

use prost::Message;
use proto::v1::{AgentHealth, AgentStatus, Alert, Filters, StoredAlert};
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a stored alert does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS alerts (
                 cursor   INTEGER PRIMARY KEY AUTOINCREMENT,
                 id       TEXT NOT NULL UNIQUE,
                 agent_id TEXT NOT NULL,
                 host     TEXT NOT NULL,
                 severity INTEGER NOT NULL,
                 received INTEGER NOT NULL,
                 body     BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS agents (
                 agent_id       TEXT PRIMARY KEY,
                 host           TEXT NOT NULL,
                 last_heartbeat INTEGER NOT NULL,
                 health         BLOB,
                 silent         INTEGER NOT NULL DEFAULT 0
             );",
        )?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each call
        // is one statement or transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `alert` unless its id is already stored. Returns the new
    /// record, or `None` for a duplicate.
    pub fn insert(&self, alert: &Alert) -> Result<Option<StoredAlert>, StoreError> {
        let received = SystemTime::now();
        let conn = self.conn();
        let added = conn.execute(
            "INSERT OR IGNORE INTO alerts (id, agent_id, host, severity, received, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![alert.id, alert.agent_id, alert.host, alert.severity, unix_millis(received), alert.encode_to_vec()],
        )?;
        if added == 0 {
            return Ok(None);
        }
        let cursor = conn.last_insert_rowid() as u64;
        Ok(Some(StoredAlert {
            cursor,
            alert: Some(alert.clone()),
            received: Some(received.into()),
        }))
    }

    /// Alerts after `cursor`, in order, at most `limit`, matching `filters`.
    pub fn after(&self, cursor: u64, limit: u32, filters: &Filters) -> Result<Vec<StoredAlert>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT cursor, received, body FROM alerts
             WHERE cursor > ?1 AND severity >= ?2 AND (?3 = '' OR host = ?3)
             ORDER BY cursor LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![cursor as i64, filters.min_severity, filters.host, limit],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                ))
            },
        )?;
        rows.map(|row| {
            let (cursor, received, body) = row?;
            stored(cursor, received, &body)
        })
        .collect()
    }

    pub fn get(&self, id: &str) -> Result<Option<StoredAlert>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT cursor, received, body FROM alerts WHERE id = ?1",
                [id],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(cursor, received, body)| stored(cursor, received, &body))
            .transpose()
    }

    /// Records a heartbeat; returns true if the agent had been flagged silent.
    pub fn heartbeat(
        &self,
        agent_id: &str,
        host: &str,
        health: Option<&AgentHealth>,
    ) -> Result<bool, StoreError> {
        let conn = self.conn();
        let was_silent: bool = conn
            .query_row("SELECT silent FROM agents WHERE agent_id = ?1", [agent_id], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(false);
        conn.execute(
            "INSERT INTO agents (agent_id, host, last_heartbeat, health, silent) VALUES (?1, ?2, ?3, ?4, 0)
             ON CONFLICT(agent_id) DO UPDATE SET host = ?2, last_heartbeat = ?3,
                 health = COALESCE(?4, health), silent = 0",
            params![
                agent_id,
                host,
                unix_millis(SystemTime::now()),
                health.map(Message::encode_to_vec)
            ],
        )?;
        Ok(was_silent)
    }

    /// Agents not heard from since `before` and not yet flagged; flags them.
    pub fn newly_silent(&self, before: SystemTime) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, host, last_heartbeat FROM agents WHERE silent = 0 AND last_heartbeat < ?1",
        )?;
        let silent: Vec<(String, String, i64)> = stmt
            .query_map([unix_millis(before)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (agent, _, _) in &silent {
            conn.execute("UPDATE agents SET silent = 1 WHERE agent_id = ?1", [agent])?;
        }
        Ok(silent)
    }

    pub fn agents(&self) -> Result<Vec<AgentStatus>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, host, last_heartbeat, health, silent FROM agents ORDER BY agent_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (agent_id, host, last, health, silent) = row?;
            Ok(AgentStatus {
                agent_id,
                host,
                last_heartbeat: Some(from_millis(last).into()),
                health: health.map(|h| AgentHealth::decode(h.as_slice())).transpose()?,
                silent,
            })
        })
        .collect()
    }
}

fn stored(cursor: i64, received: i64, body: &[u8]) -> Result<StoredAlert, StoreError> {
    Ok(StoredAlert {
        cursor: cursor as u64,
        alert: Some(Alert::decode(body)?),
        received: Some(from_millis(received).into()),
    })
}

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::Severity;

    fn alert(id: &str, severity: Severity, host: &str) -> Alert {
        Alert {
            id: id.into(),
            host: host.into(),
            agent_id: "a1".into(),
            severity: severity as i32,
            ..Default::default()
        }
    }

    #[test]
    fn duplicates_are_ignored_and_cursors_increase() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        let first = store.insert(&alert("x", Severity::High, "h1")).unwrap().unwrap();
        assert!(
            store.insert(&alert("x", Severity::High, "h1")).unwrap().is_none(),
            "same id twice"
        );
        let second = store.insert(&alert("y", Severity::Low, "h2")).unwrap().unwrap();
        assert!(second.cursor > first.cursor);
        let all = store.after(0, 10, &Filters::default()).unwrap();
        assert_eq!(
            all.iter().map(|a| a.cursor).collect::<Vec<_>>(),
            [first.cursor, second.cursor]
        );
        let high = Filters {
            min_severity: Severity::High as i32,
            host: String::new(),
        };
        assert_eq!(store.after(0, 10, &high).unwrap().len(), 1);
        let h2 = Filters {
            min_severity: 0,
            host: "h2".into(),
        };
        assert_eq!(
            store.after(0, 10, &h2).unwrap()[0].alert.as_ref().unwrap().id,
            "y"
        );
        assert_eq!(store.get("y").unwrap().unwrap().cursor, second.cursor);
    }

    #[test]
    fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        Store::open(&path)
            .unwrap()
            .insert(&alert("x", Severity::High, "h"))
            .unwrap();
        let again = Store::open(&path).unwrap();
        assert_eq!(again.after(0, 10, &Filters::default()).unwrap().len(), 1);
        assert!(again.insert(&alert("x", Severity::High, "h")).unwrap().is_none());
    }

    #[test]
    fn silence_is_flagged_once_and_cleared_by_a_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        store.heartbeat("a1", "h", None).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(store.newly_silent(later).unwrap().len(), 1);
        assert!(store.newly_silent(later).unwrap().is_empty(), "flagged once");
        assert!(store.heartbeat("a1", "h", None).unwrap(), "was silent");
        assert!(!store.agents().unwrap()[0].silent);
    }
}
