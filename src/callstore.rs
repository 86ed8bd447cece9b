//! Call data at rest: one row per call (who, when, how it ended, where its
//! recording is, what was lost) and its conversation (every event, in `seq`
//! order), in the embedded SQLite database.
//!
//! Writes come from call tasks as messages to one store thread (a bounded
//! channel; a full channel drops the record and counts it), so no call task
//! ever waits on the disk. Reads and deletions run on blocking threads from
//! the control API. Retention deletes calls (rows and recording files) that
//! ended more than N days ago.

use std::path::Path;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A call's stored summary.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// Our id.
    pub call_id: String,
    /// Owning tenant (number).
    pub tenant: Option<String>,
    /// Caller.
    pub from: String,
    /// Called.
    pub to: String,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms, once ended.
    pub ended_at: Option<i64>,
    /// `call.ended` reason.
    pub reason: Option<String>,
    /// Recording file, if recorded.
    pub recording: Option<String>,
    /// What the recording lost, if anything.
    pub recording_loss: Option<String>,
}

enum Msg {
    Started(CallRow),
    Event { call_id: String, seq: u64, kind: String, body: String },
    Ended { call_id: String, ended_at: i64, reason: String, recording_loss: Option<String> },
    Sync(mpsc::Sender<()>),
}

/// Errors of the call store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// The store: a writer thread plus a read connection.
#[derive(Clone)]
pub struct CallStore {
    tx: SyncSender<Msg>,
    read: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for CallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallStore")
    }
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    CREATE TABLE IF NOT EXISTS calls (
        call_id TEXT PRIMARY KEY, tenant TEXT, from_number TEXT NOT NULL, to_number TEXT NOT NULL,
        started_at INTEGER NOT NULL, ended_at INTEGER, reason TEXT, recording TEXT, recording_loss TEXT);
    CREATE INDEX IF NOT EXISTS calls_ended ON calls (ended_at);
    CREATE TABLE IF NOT EXISTS call_events (
        call_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (call_id, seq, type));
";

impl CallStore {
    /// Open the store in `path` ("" = in memory, shared by both connections).
    pub fn open(path: &str) -> Result<Self, StoreError> {
        let uri;
        let (w, r) = if path.is_empty() {
            // A named in-memory database both connections can see.
            uri = format!("file:callstore-{}?mode=memory&cache=shared", crate::signature::random_hex());
            let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_URI;
            (Connection::open_with_flags(&uri, flags)?, Connection::open_with_flags(&uri, flags)?)
        } else {
            (Connection::open(path)?, Connection::open(path)?)
        };
        w.execute_batch(SCHEMA)?;
        w.busy_timeout(std::time::Duration::from_secs(5))?;
        r.busy_timeout(std::time::Duration::from_secs(5))?;
        let (tx, rx) = mpsc::sync_channel::<Msg>(4096);
        std::thread::Builder::new()
            .name("call-store".into())
            .spawn(move || {
                while let Ok(m) = rx.recv() {
                    if let Err(e) = apply(&w, m) {
                        metrics::counter!(crate::metrics::STORE_FAILED).increment(1);
                        tracing::warn!(error = %e, "call store write failed");
                    }
                }
            })
            .map_err(|e| StoreError::Db(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Self { tx, read: Arc::new(Mutex::new(r)) })
    }

    fn send(&self, m: Msg) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(m) {
            metrics::counter!(crate::metrics::STORE_FAILED).increment(1);
        }
    }

    /// A call started.
    pub fn started(&self, row: CallRow) {
        self.send(Msg::Started(row));
    }

    /// One conversation event (the callback envelope, as JSON).
    pub fn event(&self, call_id: &str, seq: u64, kind: &str, body: String) {
        self.send(Msg::Event { call_id: call_id.into(), seq, kind: kind.into(), body });
    }

    /// The call ended.
    pub fn ended(&self, call_id: &str, reason: &str, recording_loss: Option<String>) {
        self.send(Msg::Ended {
            call_id: call_id.into(),
            ended_at: unix_ms(SystemTime::now()),
            reason: reason.into(),
            recording_loss,
        });
    }

    /// One call's row (blocking).
    pub fn call(&self, call_id: &str) -> Result<Option<CallRow>, StoreError> {
        let c = self.read.lock().expect("store lock");
        Ok(c.query_row(
            "SELECT call_id, tenant, from_number, to_number, started_at, ended_at, reason, recording, recording_loss
             FROM calls WHERE call_id = ?1",
            params![call_id],
            |r| {
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
            },
        )
        .optional()?)
    }

    /// One call's events in `seq` order (blocking).
    pub fn events(&self, call_id: &str) -> Result<Vec<Value>, StoreError> {
        let c = self.read.lock().expect("store lock");
        let mut st = c.prepare("SELECT body FROM call_events WHERE call_id = ?1 ORDER BY seq, rowid")?;
        let rows = st.query_map(params![call_id], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(serde_json::from_str(&r?).unwrap_or(Value::Null));
        }
        Ok(out)
    }

    /// Delete a call's data: rows and recording file (blocking). Returns
    /// whether the call existed.
    pub fn delete(&self, call_id: &str) -> Result<bool, StoreError> {
        let row = self.call(call_id)?;
        let Some(row) = row else { return Ok(false) };
        if let Some(p) = &row.recording {
            let _ = std::fs::remove_file(p);
        }
        let c = self.read.lock().expect("store lock");
        c.execute("DELETE FROM call_events WHERE call_id = ?1", params![call_id])?;
        c.execute("DELETE FROM calls WHERE call_id = ?1", params![call_id])?;
        Ok(true)
    }

    /// Delete every call that ended before `cutoff_ms` (blocking); returns how many.
    pub fn sweep(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let ids: Vec<(String, Option<String>)> = {
            let c = self.read.lock().expect("store lock");
            let mut st =
                c.prepare("SELECT call_id, recording FROM calls WHERE ended_at IS NOT NULL AND ended_at < ?1")?;
            let rows = st.query_map(params![cutoff_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, rec) in &ids {
            if let Some(p) = rec {
                let _ = std::fs::remove_file(Path::new(p));
            }
            let c = self.read.lock().expect("store lock");
            c.execute("DELETE FROM call_events WHERE call_id = ?1", params![id])?;
            c.execute("DELETE FROM calls WHERE call_id = ?1", params![id])?;
        }
        Ok(ids.len())
    }

    /// Wait (up to 5 s) until every message sent so far is written (blocking).
    pub fn sync(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

fn apply(c: &Connection, m: Msg) -> Result<(), rusqlite::Error> {
    match m {
        Msg::Started(r) => {
            c.execute(
                "INSERT OR REPLACE INTO calls (call_id, tenant, from_number, to_number, started_at, recording)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.call_id, r.tenant, r.from, r.to, r.started_at, r.recording],
            )?;
        }
        Msg::Sync(ack) => {
            let _ = ack.send(());
        }
        Msg::Event { call_id, seq, kind, body } => {
            c.execute(
                "INSERT OR REPLACE INTO call_events (call_id, seq, type, body) VALUES (?1, ?2, ?3, ?4)",
                params![call_id, seq as i64, kind, body],
            )?;
        }
        Msg::Ended { call_id, ended_at, reason, recording_loss } => {
            c.execute(
                "UPDATE calls SET ended_at = ?2, reason = ?3, recording_loss = ?4 WHERE call_id = ?1",
                params![call_id, ended_at, reason, recording_loss],
            )?;
        }
    }
    Ok(())
}

/// Where a recording of `call_id` is served.
pub fn recording_url(public_http: &str, call_id: &str) -> String {
    format!("{}/v1/calls/{call_id}/recording", public_http.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_events_deletion_and_retention() {
        let s = CallStore::open("").unwrap();
        let dir = std::env::temp_dir().join(format!("cb-store-{}", crate::signature::random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        let old_rec = dir.join("old.wav");
        std::fs::write(&old_rec, b"RIFF").unwrap();
        let row = |id: &str, rec: Option<&Path>| CallRow {
            call_id: id.into(),
            tenant: Some("+15550001111".into()),
            from: "+1".into(),
            to: "+15550001111".into(),
            started_at: 1,
            ended_at: None,
            reason: None,
            recording: rec.map(|p| p.display().to_string()),
            recording_loss: None,
        };
        s.started(row("old", Some(&old_rec)));
        s.event("old", 2, "turn.user", r#"{"seq":2}"#.into());
        s.event("old", 1, "call.started", r#"{"seq":1}"#.into());
        s.ended("old", "caller_hangup", None);
        s.started(row("new", None));
        s.sync();
        assert_eq!(s.events("old").unwrap(), vec![serde_json::json!({"seq":1}), serde_json::json!({"seq":2})]);
        assert_eq!(s.call("old").unwrap().unwrap().reason.as_deref(), Some("caller_hangup"));
        // Retention: only ended calls before the cutoff go, with their files.
        assert_eq!(s.sweep(unix_ms(SystemTime::now()) + 1000).unwrap(), 1);
        assert!(s.call("old").unwrap().is_none());
        assert!(s.events("old").unwrap().is_empty());
        assert!(!old_rec.exists(), "recording removed");
        assert!(s.call("new").unwrap().is_some(), "a live call is kept");
        assert!(s.delete("new").unwrap());
        assert!(!s.delete("new").unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }
}
