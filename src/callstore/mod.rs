//! Call data at rest: one row per call (who, when, how it ended, where its
//! recording is, what was lost) and its conversation (every event, in `seq`
//! order), keyed by tenant id: in the embedded SQLite database
//! ([`sqlite`]: one node's file, or memory), or in a PostgreSQL every node of
//! a cluster shares ([`postgres`], `storage.postgres_url`).
//!
//! Writes come from call tasks as messages to one store thread, so no call
//! task ever waits on the database. The writer batches whatever is queued into
//! one transaction and retries a failed batch; what the database refuses
//! (read-only, disk full, PostgreSQL away) is kept in a bounded backlog and
//! written once it takes writes again, counted if it is ever lost. A call's
//! `Started` and `Ended` are never dropped; conversation events beyond
//! `MAX_QUEUED_EVENTS` waiting are (and counted). Deletions go through the
//! same writer, after everything queued before them, so a deletion right
//! after a hang-up cannot be undone by the call's last events arriving late.
//! Reads are blocking: they run on the read connection from blocking threads
//! (`spawn_blocking`), never on a runtime worker. With no database file
//! (`storage.database = ""`) the data lives in memory and the oldest ended
//! calls are evicted past `memory_max_calls`.

mod postgres;
mod sqlite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// A row for the writer to store.
#[derive(Clone)]
enum Row {
    Started(CallRow),
    Event { call_id: String, seq: u64, kind: String, body: String },
    Ended { call_id: String, ended_at: i64, reason: String, recording_loss: Option<String> },
}

impl Row {
    fn call_id(&self) -> &str {
        match self {
            Row::Started(r) => &r.call_id,
            Row::Event { call_id, .. } | Row::Ended { call_id, .. } => call_id,
        }
    }
}

enum Msg {
    Row(Row),
    Delete {
        call_id: String,
        ack: Sender<Result<bool, StoreError>>,
    },
    DeleteTenant {
        tenant: String,
        ack: Sender<Result<usize, StoreError>>,
    },
    Sync(Sender<()>),
    /// Tests: make the writer's connection refuse writes, as a database
    /// turned read-only does.
    #[cfg(test)]
    ReadOnly(bool, Sender<()>),
}

/// What the store needs of a database (one connection).
trait Db: Send {
    /// Store `rows` in one transaction, in order.
    fn write(&mut self, rows: &[&Row]) -> Result<(), StoreError>;
    /// Delete a call's rows; whether it existed, and its recording file.
    fn delete_call(&mut self, call_id: &str) -> Result<(bool, Option<String>), StoreError>;
    /// Ids of `tenant`'s calls.
    fn tenant_calls(&mut self, tenant: &str) -> Result<Vec<String>, StoreError>;
    /// Ids of the calls that ended before `cutoff_ms`.
    fn ended_before(&mut self, cutoff_ms: i64) -> Result<Vec<String>, StoreError>;
    /// Ids of the `n` calls that ended first.
    fn oldest_ended(&mut self, n: usize) -> Result<Vec<String>, StoreError>;
    /// One call's row.
    fn call(&mut self, call_id: &str) -> Result<Option<CallRow>, StoreError>;
    /// This node's calls with no end, oldest first.
    fn unfinished(&mut self) -> Result<Vec<CallRow>, StoreError>;
    /// One call's event bodies in `seq` order.
    fn events(&mut self, call_id: &str) -> Result<Vec<String>, StoreError>;
    /// Calls stored.
    fn count(&mut self) -> Result<usize, StoreError>;
    /// Tests: refuse writes (`on`) or take them again.
    #[cfg(test)]
    fn read_only(&mut self, on: bool);
}

/// Errors of the call store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failure.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL failure, with its cause (never the URL).
    #[error("postgresql: {0}")]
    Postgres(String),
    /// The store's settings are unusable.
    #[error("{0}")]
    Config(String),
    /// The writer thread is gone or did not answer in time.
    #[error("the call store's writer is not answering")]
    Writer,
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        use std::error::Error as _;
        StoreError::Postgres(match e.source() {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })
    }
}

/// The store: a writer thread plus a read connection.
#[derive(Clone)]
pub struct CallStore {
    tx: Sender<Msg>,
    queued_events: Arc<AtomicUsize>,
    read: Arc<Mutex<Box<dyn Db>>>,
}

impl std::fmt::Debug for CallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallStore")
    }
}

struct Writer {
    db: Box<dyn Db>,
    /// Rows the database refused (read-only, disk full, locked): kept, oldest
    /// first, and written once it takes writes again (bounded: [`BACKLOG_MAX`]).
    backlog: Vec<Row>,
    /// When the backlog was last tried.
    backlog_tried: Option<std::time::Instant>,
    queued_events: Arc<AtomicUsize>,
    /// In-memory store: evict the oldest ended calls past this many.
    memory_max: Option<usize>,
    started_since_evict: usize,
}

impl CallStore {
    /// Open the store in the SQLite file `path` ("" = in memory, shared by
    /// both connections, holding at most `memory_max_calls` calls).
    pub fn open(path: &str, memory_max_calls: usize) -> Result<Self, StoreError> {
        let (w, r) = sqlite::open(path)?;
        Self::start(Box::new(w), Box::new(r), path.is_empty().then_some(memory_max_calls.max(1)))
    }

    /// Open the store in the PostgreSQL at `url`, shared with the other
    /// nodes; this node's calls are marked `node` (start-up recovery ends
    /// only those). `ca_file` (PEM; "" = public roots) verifies the server
    /// when the URL has `sslmode=require`. Fails if the database cannot be
    /// reached now.
    pub fn open_postgres(url: &str, ca_file: &str, node: &str) -> Result<Self, StoreError> {
        let (w, r) = postgres::open(url, ca_file, node)?;
        let r = OnThread::spawn(Box::new(r))?;
        Self::start(Box::new(w), Box::new(r), None)
    }

    fn start(w: Box<dyn Db>, r: Box<dyn Db>, memory_max: Option<usize>) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let queued_events = Arc::new(AtomicUsize::new(0));
        let mut writer = Writer {
            db: w,
            backlog: Vec::new(),
            backlog_tried: None,
            queued_events: queued_events.clone(),
            memory_max,
            started_since_evict: 0,
        };
        std::thread::Builder::new()
            .name("call-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Config(format!("call store thread: {e}")))?;
        Ok(Self { tx, queued_events, read: Arc::new(Mutex::new(r)) })
    }

    fn send(&self, m: Msg) {
        if self.tx.send(m).is_err() {
            metrics::counter!(crate::metrics::STORE_FAILED, "kind" => "writer_gone").increment(1);
        }
    }

    /// A call started (never dropped).
    pub fn started(&self, row: CallRow) {
        self.send(Msg::Row(Row::Started(row)));
    }

    /// One conversation event (the callback envelope, as JSON); dropped and
    /// counted if the writer is far behind.
    pub fn event(&self, call_id: &str, seq: u64, kind: &str, body: String) {
        if self.queued_events.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_EVENTS {
            self.queued_events.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(crate::metrics::STORE_FAILED, "kind" => "queue_full").increment(1);
            return;
        }
        self.send(Msg::Row(Row::Event { call_id: call_id.into(), seq, kind: kind.into(), body }));
    }

    /// The call ended (never dropped).
    pub fn ended(&self, call_id: &str, reason: &str, recording_loss: Option<String>) {
        self.send(Msg::Row(Row::Ended {
            call_id: call_id.into(),
            ended_at: unix_ms(SystemTime::now()),
            reason: reason.into(),
            recording_loss,
        }));
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Box<dyn Db>> {
        self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One call's row (blocking).
    pub fn call(&self, call_id: &str) -> Result<Option<CallRow>, StoreError> {
        self.reader().call(call_id)
    }

    /// This node's calls with no end: what a process that died (`kill -9`,
    /// power loss) left behind, for [`crate::runtime::recovery`] at the next
    /// start (blocking; oldest first).
    pub fn unfinished(&self) -> Result<Vec<CallRow>, StoreError> {
        self.reader().unfinished()
    }

    /// One call's events in `seq` order (blocking).
    pub fn events(&self, call_id: &str) -> Result<Vec<Value>, StoreError> {
        Ok(self.reader().events(call_id)?.iter().map(|b| serde_json::from_str(b).unwrap_or(Value::Null)).collect())
    }

    /// Calls stored (blocking; tests and diagnostics).
    pub fn count(&self) -> Result<usize, StoreError> {
        self.reader().count()
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
        let ids = self.reader().ended_before(cutoff_ms)?;
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

/// A database owned by a thread of its own, used over a channel: a client
/// that may not run, or be dropped, on a runtime's thread stays on it.
struct OnThread {
    jobs: Sender<Job>,
}

type Job = Box<dyn FnOnce(&mut dyn Db) + Send>;

impl OnThread {
    fn spawn(mut db: Box<dyn Db>) -> Result<Self, StoreError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("call-store-read".into())
            .spawn(move || {
                for job in rx {
                    job(db.as_mut());
                }
            })
            .map_err(|e| StoreError::Config(format!("call store thread: {e}")))?;
        Ok(Self { jobs })
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.jobs.send(Box::new(move |db| drop(tx.send(f(db))))).map_err(|_| StoreError::Writer)?;
        rx.recv().map_err(|_| StoreError::Writer)?
    }
}

impl Db for OnThread {
    fn write(&mut self, rows: &[&Row]) -> Result<(), StoreError> {
        let rows: Vec<Row> = rows.iter().map(|r| (*r).clone()).collect();
        self.run(move |db| db.write(&rows.iter().collect::<Vec<_>>()))
    }
    fn delete_call(&mut self, call_id: &str) -> Result<(bool, Option<String>), StoreError> {
        let id = call_id.to_string();
        self.run(move |db| db.delete_call(&id))
    }
    fn tenant_calls(&mut self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let t = tenant.to_string();
        self.run(move |db| db.tenant_calls(&t))
    }
    fn ended_before(&mut self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        self.run(move |db| db.ended_before(cutoff_ms))
    }
    fn oldest_ended(&mut self, n: usize) -> Result<Vec<String>, StoreError> {
        self.run(move |db| db.oldest_ended(n))
    }
    fn call(&mut self, call_id: &str) -> Result<Option<CallRow>, StoreError> {
        let id = call_id.to_string();
        self.run(move |db| db.call(&id))
    }
    fn unfinished(&mut self) -> Result<Vec<CallRow>, StoreError> {
        self.run(|db| db.unfinished())
    }
    fn events(&mut self, call_id: &str) -> Result<Vec<String>, StoreError> {
        let id = call_id.to_string();
        self.run(move |db| db.events(&id))
    }
    fn count(&mut self) -> Result<usize, StoreError> {
        self.run(|db| db.count())
    }
    #[cfg(test)]
    fn read_only(&mut self, on: bool) {
        let _ = self.run(move |db| {
            db.read_only(on);
            Ok(())
        });
    }
}

/// Remove a deleted call's recording file (a path another node wrote is
/// not here, unless recordings go to shared storage).
fn remove_recording(path: Option<String>) {
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
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
        for m in batch {
            match m {
                Msg::Row(r) => rows.push(r),
                request => {
                    // A request is answered after the rows queued before it.
                    self.commit(std::mem::take(&mut rows));
                    self.answer(request);
                }
            }
        }
        self.commit(rows);
    }

    /// Write `rows` after any backlog, in one transaction (retried). Rows the
    /// database refuses are kept in the backlog, never dropped unless it
    /// overflows; while it is failing it is tried at most every [`BACKLOG_RETRY`].
    fn commit(&mut self, rows: Vec<Row>) {
        if rows.is_empty() && self.backlog.is_empty() {
            return;
        }
        let events = rows.iter().filter(|m| matches!(m, Row::Event { .. })).count();
        self.queued_events.fetch_sub(events, Ordering::AcqRel);
        let started = rows.iter().filter(|m| matches!(m, Row::Started(_))).count();
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
            let refs: Vec<&Row> = all.iter().collect();
            match self.db.write(&refs) {
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
    fn keep(&mut self, rows: Vec<Row>) {
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
        self.backlog.retain(|m| !deleted(m.call_id()));
    }

    fn answer(&mut self, m: Msg) {
        match m {
            Msg::Delete { call_id, ack } => {
                let kept = self.backlog.len();
                self.purge(&|id| id == call_id);
                let r = self.db.delete_call(&call_id).map(|(n, rec)| {
                    remove_recording(rec);
                    n || self.backlog.len() < kept
                });
                let _ = ack.send(r);
            }
            Msg::DeleteTenant { tenant, ack } => {
                let r: Result<Vec<String>, StoreError> = (|| {
                    let ids = self.db.tenant_calls(&tenant)?;
                    for id in &ids {
                        remove_recording(self.db.delete_call(id)?.1);
                    }
                    Ok(ids)
                })();
                // Its calls' rows still waiting in the backlog go too (stored or not).
                let mut theirs: std::collections::HashSet<String> =
                    r.as_ref().map(|ids| ids.iter().cloned().collect()).unwrap_or_default();
                let stored = theirs.len();
                for m in &self.backlog {
                    if let Row::Started(row) = m
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
                self.db.read_only(on);
                let _ = ack.send(());
            }
            Msg::Row(_) => {}
        }
    }

    /// Keep at most `max` calls in memory: the oldest ended ones go first.
    fn evict(&mut self, max: usize) -> Result<(), StoreError> {
        let n = self.db.count()?;
        let over = n - n.min(max);
        if over == 0 {
            return Ok(());
        }
        for id in self.db.oldest_ended(over)? {
            remove_recording(self.db.delete_call(&id)?.1);
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
        assert!(s.unfinished().unwrap().is_empty(), "every call's end was stored");
        assert_eq!(s.call("c9999").unwrap().unwrap().reason.as_deref(), Some("hangup"));
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
