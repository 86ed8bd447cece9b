//! Call data at rest: one row per call (who, when, how it ended, where its
//! recording is, what was lost) and its conversation (every event, in `seq`
//! order), in the embedded SQLite database, keyed by tenant id.
//!
//! Writes come from call tasks as messages to one store thread, so no call
//! task ever waits on the disk. The writer batches whatever is queued into one
//! transaction (WAL, `synchronous = NORMAL`) and retries a failed batch; what
//! still fails is counted, never silently gone. A call's `Started` and `Ended`
//! are never dropped; conversation events beyond `MAX_QUEUED_EVENTS` waiting
//! are (and counted). Deletions go through the same writer, after everything
//! queued before them, so a deletion right after a hang-up cannot be undone
//! by the call's last events arriving late. Reads run on the read connection
//! from blocking threads. With no database file (`storage.database = ""`) the
//! data lives in memory and the oldest ended calls are evicted past
//! `memory_max_calls`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// Conversation events waiting for the writer beyond which new ones are dropped.
const MAX_QUEUED_EVENTS: usize = 65_536;
/// Messages written per transaction at most.
const BATCH: usize = 512;
/// Rows kept while the database refuses writes; beyond it the oldest are lost (counted).
const BACKLOG_MAX: usize = 200_000;
/// While the database refuses writes, try it again at most this often.
const BACKLOG_RETRY: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A call's stored summary.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// Our id.
    pub call_id: String,
    /// Owning tenant's id.
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
    Event {
        call_id: String,
        seq: u64,
        kind: String,
        body: String,
    },
    Ended {
        call_id: String,
        ended_at: i64,
        reason: String,
        recording_loss: Option<String>,
    },
    Delete {
        call_id: String,
        ack: Sender<Result<bool, StoreError>>,
    },
    DeleteTenant {
        tenant: String,
        ack: Sender<Result<usize, StoreError>>,
    },
    Sync(Sender<()>),
    /// Tests: make the writer's connection refuse writes (`PRAGMA query_only`),
    /// as a database turned read-only does.
    #[cfg(test)]
    ReadOnly(bool, Sender<()>),
}

/// The columns [`call_row`] reads, in its order.
const ROW_COLUMNS: &str =
    "call_id, tenant, from_number, to_number, started_at, ended_at, reason, recording, recording_loss";

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

/// Errors of the call store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The writer thread is gone or did not answer in time.
    #[error("the call store's writer is not answering")]
    Writer,
}

/// The store: a writer thread plus a read connection.
#[derive(Clone)]
pub struct CallStore {
    tx: Sender<Msg>,
    queued_events: Arc<AtomicUsize>,
    read: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for CallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallStore")
    }
}

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

struct Writer {
    conn: Connection,
    /// Rows the database refused (read-only, disk full, locked): kept, oldest
    /// first, and written once it takes writes again (bounded: [`BACKLOG_MAX`]).
    backlog: Vec<Msg>,
    /// When the backlog was last tried.
    backlog_tried: Option<std::time::Instant>,
    queued_events: Arc<AtomicUsize>,
    /// In-memory store: evict the oldest ended calls past this many.
    memory_max: Option<usize>,
    started_since_evict: usize,
}

impl CallStore {
    /// Open the store in `path` ("" = in memory, shared by both connections,
    /// holding at most `memory_max_calls` calls).
    pub fn open(path: &str, memory_max_calls: usize) -> Result<Self, StoreError> {
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
        w.busy_timeout(Duration::from_secs(5))?;
        r.busy_timeout(Duration::from_secs(5))?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let queued_events = Arc::new(AtomicUsize::new(0));
        let mut writer = Writer {
            conn: w,
            backlog: Vec::new(),
            backlog_tried: None,
            queued_events: queued_events.clone(),
            memory_max: path.is_empty().then_some(memory_max_calls.max(1)),
            started_since_evict: 0,
        };
        std::thread::Builder::new()
            .name("call-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Db(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Self { tx, queued_events, read: Arc::new(Mutex::new(r)) })
    }

    fn send(&self, m: Msg) {
        if self.tx.send(m).is_err() {
            metrics::counter!(crate::metrics::STORE_FAILED, "kind" => "writer_gone").increment(1);
        }
    }

    /// A call started (never dropped).
    pub fn started(&self, row: CallRow) {
        self.send(Msg::Started(row));
    }

    /// One conversation event (the callback envelope, as JSON); dropped and
    /// counted if the writer is far behind.
    pub fn event(&self, call_id: &str, seq: u64, kind: &str, body: String) {
        if self.queued_events.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_EVENTS {
            self.queued_events.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(crate::metrics::STORE_FAILED, "kind" => "queue_full").increment(1);
            return;
        }
        self.send(Msg::Event { call_id: call_id.into(), seq, kind: kind.into(), body });
    }

    /// The call ended (never dropped).
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
        Ok(c.query_row(&format!("SELECT {ROW_COLUMNS} FROM calls WHERE call_id = ?1"), params![call_id], call_row)
            .optional()?)
    }

    /// Calls with no end: what a process that died (`kill -9`, power loss)
    /// left behind, for [`crate::runtime::recovery`] at the next start
    /// (blocking; oldest first).
    pub fn unfinished(&self) -> Result<Vec<CallRow>, StoreError> {
        let c = self.read.lock().expect("store lock");
        let mut st =
            c.prepare(&format!("SELECT {ROW_COLUMNS} FROM calls WHERE ended_at IS NULL ORDER BY started_at"))?;
        let rows = st.query_map([], call_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
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

    /// Calls stored (blocking; tests and diagnostics).
    pub fn count(&self) -> Result<usize, StoreError> {
        let c = self.read.lock().expect("store lock");
        Ok(c.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get::<_, i64>(0))? as usize)
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<Result<T, StoreError>>) -> Msg) -> Result<T, StoreError> {
        let (ack, rx) = mpsc::channel();
        self.tx.send(make(ack)).map_err(|_| StoreError::Writer)?;
        rx.recv_timeout(Duration::from_secs(30)).map_err(|_| StoreError::Writer)?
    }

    /// Delete a call's data: rows and recording file, after everything queued
    /// before (blocking). Returns whether the call existed.
    pub fn delete(&self, call_id: &str) -> Result<bool, StoreError> {
        self.ask(|ack| Msg::Delete { call_id: call_id.into(), ack })
    }

    /// Delete every call of `tenant` (blocking); returns how many.
    pub fn delete_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        self.ask(|ack| Msg::DeleteTenant { tenant: tenant.into(), ack })
    }

    /// Delete every call that ended before `cutoff_ms` (blocking); returns how many.
    pub fn sweep(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let ids: Vec<String> = {
            let c = self.read.lock().expect("store lock");
            let mut st = c.prepare("SELECT call_id FROM calls WHERE ended_at IS NOT NULL AND ended_at < ?1")?;
            let rows = st.query_map(params![cutoff_ms], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &ids {
            self.delete(id)?;
        }
        Ok(ids.len())
    }

    /// Wait (up to `within`) until every message sent so far is written
    /// (blocking). Returns whether it was.
    pub fn sync_within(&self, within: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Msg::Sync(tx)).is_ok() && rx.recv_timeout(within).is_ok()
    }

    /// [`Self::sync_within`] five seconds.
    pub fn sync(&self) {
        self.sync_within(Duration::from_secs(5));
    }
}

fn delete_call(c: &Connection, call_id: &str) -> Result<bool, rusqlite::Error> {
    let rec: Option<Option<String>> =
        c.query_row("SELECT recording FROM calls WHERE call_id = ?1", params![call_id], |r| r.get(0)).optional()?;
    c.execute("DELETE FROM call_events WHERE call_id = ?1", params![call_id])?;
    let n = c.execute("DELETE FROM calls WHERE call_id = ?1", params![call_id])?;
    if let Some(Some(p)) = rec {
        let _ = std::fs::remove_file(p);
    }
    Ok(n > 0)
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        loop {
            let first = if self.backlog.is_empty() {
                rx.recv().ok()
            } else {
                match rx.recv_timeout(BACKLOG_RETRY) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.commit(Vec::new());
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            self.write(batch);
        }
        if !self.backlog.is_empty() {
            self.backlog_tried = None;
            self.commit(Vec::new());
            if !self.backlog.is_empty() {
                metrics::counter!(crate::metrics::STORE_FAILED, "kind" => "write_failed")
                    .increment(self.backlog.len() as u64);
                tracing::error!(lost = self.backlog.len(), "call store closed with records the database refused");
            }
        }
    }

    /// Write a batch of plain rows in one transaction (retried), then answer
    /// the requests in it in order.
    fn write(&mut self, batch: Vec<Msg>) {
        let mut rows = Vec::with_capacity(batch.len());
        let mut requests = Vec::new();
        for m in batch {
            match m {
                Msg::Started(_) | Msg::Event { .. } | Msg::Ended { .. } => rows.push(m),
                other => {
                    // A request is answered after the rows queued before it.
                    self.commit(std::mem::take(&mut rows));
                    requests.push(other);
                    for r in requests.drain(..) {
                        self.answer(r);
                    }
                }
            }
        }
        self.commit(rows);
    }

    /// Write `rows` after any backlog, in one transaction (retried). Rows the
    /// database refuses are kept in the backlog, never dropped unless it
    /// overflows; while it is failing it is tried at most every [`BACKLOG_RETRY`].
    fn commit(&mut self, rows: Vec<Msg>) {
        if rows.is_empty() && self.backlog.is_empty() {
            return;
        }
        let events = rows.iter().filter(|m| matches!(m, Msg::Event { .. })).count();
        self.queued_events.fetch_sub(events, Ordering::AcqRel);
        let started = rows.iter().filter(|m| matches!(m, Msg::Started(_))).count();
        let failing = !self.backlog.is_empty();
        if failing && self.backlog_tried.is_some_and(|t| t.elapsed() < BACKLOG_RETRY) {
            self.keep(rows);
            return;
        }
        let mut all = std::mem::take(&mut self.backlog);
        all.extend(rows);
        let attempts = if failing { 1 } else { 3 };
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.transaction(&all) {
                Ok(()) => break Ok(()),
                Err(e) if attempt < attempts => {
                    tracing::debug!(error = %e, attempt, "call store write failed; retrying");
                    std::thread::sleep(Duration::from_millis(50 * attempt));
                }
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) if failing => {
                self.backlog_tried = None;
                tracing::warn!(
                    written = all.len(),
                    "call store takes writes again; the records it refused are written"
                );
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, kept = all.len(), "call store write failed; records kept and retried");
                }
                metrics::counter!(crate::metrics::STORE_FAILED, "kind" => "write_deferred").increment(all.len() as u64);
                self.backlog_tried = Some(std::time::Instant::now());
                self.keep(all);
            }
        }
        self.started_since_evict += started;
        if let Some(max) = self.memory_max
            && self.started_since_evict >= 100.min(max)
        {
            self.started_since_evict = 0;
            if let Err(e) = self.evict(max) {
                tracing::warn!(error = %e, "in-memory call store eviction failed");
            }
        }
    }

    /// Add refused rows to the backlog; past [`BACKLOG_MAX`] the oldest go (counted).
    fn keep(&mut self, rows: Vec<Msg>) {
        self.backlog.extend(rows);
        let over = self.backlog.len().saturating_sub(BACKLOG_MAX);
        if over > 0 {
            self.backlog.drain(..over);
            metrics::counter!(crate::metrics::STORE_FAILED, "kind" => "write_failed").increment(over as u64);
            tracing::error!(lost = over, "call store refuses writes and its backlog is full; oldest records lost");
        }
    }

    /// Forget backlog rows of deleted calls (a deletion must not come back).
    fn purge(&mut self, deleted: &dyn Fn(&str) -> bool) {
        self.backlog.retain(|m| match m {
            Msg::Started(r) => !deleted(&r.call_id),
            Msg::Event { call_id, .. } | Msg::Ended { call_id, .. } => !deleted(call_id),
            _ => true,
        });
    }

    fn transaction(&mut self, rows: &[Msg]) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        for m in rows {
            match m {
                Msg::Started(r) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO calls (call_id, tenant, from_number, to_number, started_at, recording)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![r.call_id, r.tenant, r.from, r.to, r.started_at, r.recording],
                    )?;
                }
                Msg::Event { call_id, seq, kind, body } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO call_events (call_id, seq, type, body) VALUES (?1, ?2, ?3, ?4)",
                        params![call_id, *seq as i64, kind, body],
                    )?;
                }
                Msg::Ended { call_id, ended_at, reason, recording_loss } => {
                    tx.execute(
                        "UPDATE calls SET ended_at = ?2, reason = ?3, recording_loss = ?4 WHERE call_id = ?1",
                        params![call_id, ended_at, reason, recording_loss],
                    )?;
                }
                _ => {}
            }
        }
        tx.commit()
    }

    fn answer(&mut self, m: Msg) {
        match m {
            Msg::Delete { call_id, ack } => {
                let kept = self.backlog.len();
                self.purge(&|id| id == call_id);
                let r = delete_call(&self.conn, &call_id).map(|n| n || self.backlog.len() < kept);
                let _ = ack.send(r.map_err(StoreError::from));
            }
            Msg::DeleteTenant { tenant, ack } => {
                let r: Result<Vec<String>, StoreError> = (|| {
                    let ids: Vec<String> = {
                        let mut st = self.conn.prepare("SELECT call_id FROM calls WHERE tenant = ?1")?;
                        st.query_map(params![tenant], |r| r.get(0))?.collect::<Result<_, _>>()?
                    };
                    for id in &ids {
                        delete_call(&self.conn, id)?;
                    }
                    Ok(ids)
                })();
                // Its calls' rows still waiting in the backlog go too (stored or not).
                let mut theirs: std::collections::HashSet<String> =
                    r.as_ref().map(|ids| ids.iter().cloned().collect()).unwrap_or_default();
                let stored = theirs.len();
                for m in &self.backlog {
                    if let Msg::Started(row) = m
                        && row.tenant.as_deref() == Some(tenant.as_str())
                    {
                        theirs.insert(row.call_id.clone());
                    }
                }
                self.purge(&|id| theirs.contains(id));
                let _ = ack.send(r.map(|_| stored.max(theirs.len())));
            }
            Msg::Sync(ack) => {
                let _ = ack.send(());
            }
            #[cfg(test)]
            Msg::ReadOnly(on, ack) => {
                self.conn.pragma_update(None, "query_only", on).expect("pragma");
                let _ = ack.send(());
            }
            _ => {}
        }
    }

    /// Keep at most `max` calls in memory: the oldest ended ones go first.
    fn evict(&mut self, max: usize) -> Result<(), rusqlite::Error> {
        let n: i64 = self.conn.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))?;
        let over = n as usize - (n as usize).min(max);
        if over == 0 {
            return Ok(());
        }
        let ids: Vec<String> = {
            let mut st =
                self.conn.prepare("SELECT call_id FROM calls WHERE ended_at IS NOT NULL ORDER BY ended_at LIMIT ?1")?;
            st.query_map(params![over as i64], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        for id in &ids {
            delete_call(&self.conn, id)?;
        }
        Ok(())
    }
}

/// Where a recording of `call_id` is served.
pub fn recording_url(public_http: &str, call_id: &str) -> String {
    format!("{}/v1/calls/{call_id}/recording", public_http.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn row(id: &str, tenant: &str, rec: Option<&Path>) -> CallRow {
        CallRow {
            call_id: id.into(),
            tenant: Some(tenant.into()),
            from: "+1".into(),
            to: "+15550001111".into(),
            started_at: 1,
            ended_at: None,
            reason: None,
            recording: rec.map(|p| p.display().to_string()),
            recording_loss: None,
        }
    }

    #[test]
    fn calls_events_deletion_and_retention() {
        let s = CallStore::open("", 10_000).unwrap();
        let dir = std::env::temp_dir().join(format!("cb-store-{}", crate::signature::random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        let old_rec = dir.join("old.wav");
        std::fs::write(&old_rec, b"RIFF").unwrap();
        s.started(row("old", "tn_a", Some(&old_rec)));
        s.event("old", 2, "turn.user", r#"{"seq":2}"#.into());
        s.event("old", 1, "call.started", r#"{"seq":1}"#.into());
        s.ended("old", "caller_hangup", None);
        s.started(row("new", "tn_a", None));
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

    #[test]
    fn a_deletion_right_after_the_last_events_leaves_nothing_behind() {
        let s = CallStore::open("", 10_000).unwrap();
        s.started(row("c1", "tn_a", None));
        for seq in 1..200 {
            s.event("c1", seq, "turn.user", "{}".into());
        }
        s.ended("c1", "caller_hangup", None);
        // Queued before the deletion: all of it is gone after it, none re-inserted.
        assert!(s.delete("c1").unwrap());
        s.sync();
        assert!(s.call("c1").unwrap().is_none());
        assert!(s.events("c1").unwrap().is_empty(), "no orphan events");
    }

    #[test]
    fn deleting_a_tenant_erases_only_its_calls() {
        let s = CallStore::open("", 10_000).unwrap();
        s.started(row("a1", "tn_a", None));
        s.started(row("a2", "tn_a", None));
        s.started(row("b1", "tn_b", None));
        assert_eq!(s.delete_tenant("tn_a").unwrap(), 2);
        assert!(s.call("a1").unwrap().is_none() && s.call("b1").unwrap().is_some());
    }

    #[test]
    fn the_in_memory_store_is_bounded_and_keeps_live_calls() {
        let s = CallStore::open("", 50).unwrap();
        s.started(row("live", "tn_a", None));
        for i in 0..300 {
            let id = format!("c{i}");
            s.started(row(&id, "tn_a", None));
            s.event(&id, 1, "call.ended", "{}".into());
            s.ended(&id, "caller_hangup", None);
        }
        s.sync();
        // Eviction runs every batch of starts: never far above the bound.
        let n = s.count().unwrap();
        assert!(n <= 50 + 100, "bounded ({n} calls)");
        assert!(s.call("live").unwrap().is_some(), "a live call is never evicted");
        assert!(s.call("c299").unwrap().is_some(), "the newest calls are kept");
    }

    #[test]
    fn a_database_file_survives_a_reopen_with_every_row() {
        let dir = std::env::temp_dir().join(format!("cb-store-{}", crate::signature::random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("calls.db");
        let s = CallStore::open(path.to_str().unwrap(), 0).unwrap();
        // Far more at once than any bounded queue of the past held (4096).
        for i in 0..10_000 {
            s.started(row(&format!("c{i}"), "tn_a", None));
            s.ended(&format!("c{i}"), "hangup", None);
        }
        assert!(s.sync_within(Duration::from_secs(60)));
        drop(s);
        let s = CallStore::open(path.to_str().unwrap(), 0).unwrap();
        assert_eq!(s.count().unwrap(), 10_000, "Started and Ended are never dropped");
        let ended: i64 = s
            .read
            .lock()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM calls WHERE reason = 'hangup'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ended, 10_000);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn records_the_database_refuses_are_kept_and_written_once_it_takes_writes_again() {
        let dir = std::env::temp_dir().join(format!("cb-store-ro-{}", crate::signature::random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cb.db");
        let s = CallStore::open(path.to_str().unwrap(), 10).unwrap();
        let read_only = |on: bool| {
            let (tx, rx) = mpsc::channel();
            s.send(Msg::ReadOnly(on, tx));
            rx.recv().unwrap();
        };
        s.started(row("c1", "t1", None));
        s.sync();
        read_only(true);
        // Refused: the rows of a live call (c2), the end of c1, and a call (c3)
        // deleted before the database recovers.
        s.started(row("c2", "t1", None));
        for seq in 1..=50 {
            s.event("c2", seq, "turn.user", format!(r#"{{"seq":{seq}}}"#));
        }
        s.ended("c1", "caller_hangup", None);
        s.started(row("c3", "t2", None));
        s.event("c3", 1, "turn.user", "{}".into());
        s.sync();
        assert_eq!(s.call("c2").unwrap(), None, "not written while refused");
        assert_eq!(s.call("c1").unwrap().unwrap().ended_at, None);
        // The database refuses the deletion too (the caller is told, and may
        // retry), but the rows still waiting never reach it.
        assert!(s.delete("c3").is_err(), "a refused deletion says so");
        read_only(false);
        // Retried on the writer's next beat (≤ BACKLOG_RETRY), no new record needed.
        let t0 = std::time::Instant::now();
        while s.call("c2").unwrap().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(5), "the kept records were written");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(s.events("c2").unwrap().len(), 50, "every event, none lost");
        assert_eq!(s.call("c1").unwrap().unwrap().reason.as_deref(), Some("caller_hangup"));
        assert_eq!(s.call("c3").unwrap(), None, "the deleted call did not come back");
        assert!(s.events("c3").unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
