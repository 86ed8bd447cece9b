//! The embedded SQLite database behind [`super::CallStore`]: one node's file
//! (WAL, `synchronous = NORMAL`), or a named in-memory database both of the
//! store's connections share. Two processes must not share one file.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{CallRow, Db, Row, StoreError};

/// The columns [`call_row`] reads, in its order.
const ROW_COLUMNS: &str =
    "call_id, tenant, from_number, to_number, started_at, ended_at, reason, recording, recording_loss";

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS calls (
        call_id TEXT PRIMARY KEY, tenant TEXT, from_number TEXT NOT NULL, to_number TEXT NOT NULL,
        started_at INTEGER NOT NULL, ended_at INTEGER, reason TEXT, recording TEXT, recording_loss TEXT);
    CREATE INDEX IF NOT EXISTS calls_ended ON calls (ended_at);
    CREATE INDEX IF NOT EXISTS calls_tenant ON calls (tenant);
    CREATE TABLE IF NOT EXISTS call_events (
        call_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (call_id, seq, type));
";

fn call_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallRow> {
    Ok(CallRow {
        call_id: r.get(0)?,
        tenant: r.get(1)?,
        from: r.get(2)?,
        to: r.get(3)?,
        started_at: r.get(4)?,
        ended_at: r.get(5)?,
        reason: r.get(6)?,
        recording: r.get(7)?,
        recording_loss: r.get(8)?,
    })
}

/// One connection to the database.
pub(super) struct Sqlite {
    conn: Connection,
}

/// Open the writer's and the reader's connections to `path` ("" = a new
/// in-memory database they share).
pub(super) fn open(path: &str) -> Result<(Sqlite, Sqlite), StoreError> {
    let (w, r) = if path.is_empty() {
        // A named in-memory database both connections can see.
        let uri = format!("file:callstore-{}?mode=memory&cache=shared", crate::signature::random_hex());
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        (Connection::open_with_flags(&uri, flags)?, Connection::open_with_flags(&uri, flags)?)
    } else {
        (Connection::open(path)?, Connection::open(path)?)
    };
    w.execute_batch(SCHEMA)?;
    w.busy_timeout(Duration::from_secs(5))?;
    r.busy_timeout(Duration::from_secs(5))?;
    Ok((Sqlite { conn: w }, Sqlite { conn: r }))
}

fn ids(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<String>, StoreError> {
    let mut st = c.prepare(sql)?;
    Ok(st.query_map(p, |r| r.get(0))?.collect::<Result<_, _>>()?)
}

impl Db for Sqlite {
    fn write(&mut self, rows: &[&Row]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for m in rows {
            match m {
                Row::Started(r) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO calls (call_id, tenant, from_number, to_number, started_at, recording)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![r.call_id, r.tenant, r.from, r.to, r.started_at, r.recording],
                    )?;
                }
                Row::Event { call_id, seq, kind, body } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO call_events (call_id, seq, type, body) VALUES (?1, ?2, ?3, ?4)",
                        params![call_id, *seq as i64, kind, body],
                    )?;
                }
                Row::Ended { call_id, ended_at, reason, recording_loss } => {
                    tx.execute(
                        "UPDATE calls SET ended_at = ?2, reason = ?3, recording_loss = ?4 WHERE call_id = ?1",
                        params![call_id, ended_at, reason, recording_loss],
                    )?;
                }
            }
        }
        Ok(tx.commit()?)
    }

    fn delete_call(&mut self, call_id: &str) -> Result<(bool, Option<String>), StoreError> {
        let tx = self.conn.transaction()?;
        let rec: Option<Option<String>> = tx
            .query_row("SELECT recording FROM calls WHERE call_id = ?1", params![call_id], |r| r.get(0))
            .optional()?;
        tx.execute("DELETE FROM call_events WHERE call_id = ?1", params![call_id])?;
        let n = tx.execute("DELETE FROM calls WHERE call_id = ?1", params![call_id])?;
        tx.commit()?;
        Ok((n > 0, rec.flatten()))
    }

    fn tenant_calls(&mut self, tenant: &str) -> Result<Vec<String>, StoreError> {
        ids(&self.conn, "SELECT call_id FROM calls WHERE tenant = ?1", params![tenant])
    }

    fn ended_before(&mut self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        ids(&self.conn, "SELECT call_id FROM calls WHERE ended_at IS NOT NULL AND ended_at < ?1", params![cutoff_ms])
    }

    fn oldest_ended(&mut self, n: usize) -> Result<Vec<String>, StoreError> {
        ids(
            &self.conn,
            "SELECT call_id FROM calls WHERE ended_at IS NOT NULL ORDER BY ended_at LIMIT ?1",
            params![n as i64],
        )
    }

    fn call(&mut self, call_id: &str) -> Result<Option<CallRow>, StoreError> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {ROW_COLUMNS} FROM calls WHERE call_id = ?1"), params![call_id], call_row)
            .optional()?)
    }

    fn unfinished(&mut self) -> Result<Vec<CallRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {ROW_COLUMNS} FROM calls WHERE ended_at IS NULL ORDER BY started_at"))?;
        Ok(st.query_map([], call_row)?.collect::<Result<_, _>>()?)
    }

    fn events(&mut self, call_id: &str) -> Result<Vec<String>, StoreError> {
        let mut st = self.conn.prepare("SELECT body FROM call_events WHERE call_id = ?1 ORDER BY seq, rowid")?;
        Ok(st.query_map(params![call_id], |r| r.get(0))?.collect::<Result<_, _>>()?)
    }

    fn count(&mut self) -> Result<usize, StoreError> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get::<_, i64>(0))? as usize)
    }

    #[cfg(test)]
    fn read_only(&mut self, on: bool) {
        self.conn.pragma_update(None, "query_only", on).expect("pragma");
    }
}
