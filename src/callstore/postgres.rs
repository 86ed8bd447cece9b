//! PostgreSQL behind [`super::CallStore`] (`storage.postgres_url`): call data
//! shared by every node of a cluster, so an ended call's transcript is read on
//! any node, whichever ran it, and outlives that node.
//!
//! Tables `callbridge_calls` and `callbridge_call_events` are created at the
//! first start (under an advisory lock, so nodes starting together do not
//! race). Each call row names the node that ran it: start-up recovery ends
//! only this node's unfinished calls, never another live node's, and the
//! retention sweep and a tenant's erasure take only this node's calls, so
//! each recording file is removed by the node whose disk holds it (the
//! cluster tells every node of an erasure; a node id retired for good
//! leaves its rows: `DELETE FROM callbridge_calls WHERE node = '…'`). One
//! call's deletion (`DELETE /v1/calls/{id}`) works from any node. A lost
//! connection is reopened on the next use; while the database is away the
//! store's writer keeps what it refuses and writes it once it is back. Every
//! statement has a time limit (`statement_timeout`), so a stuck database
//! fails a request instead of hanging it.
//!
//! `sslmode=require` in the URL speaks TLS (rustls) and verifies the server's
//! certificate against the public roots, or against `storage.postgres_ca_file`
//! (a managed database's CA bundle); stricter than libpq's `require`, which
//! checks nothing. Any other mode connects in the clear.
//!
//! The synchronous client drives a small runtime of its own, which must not
//! start (connect, query, or close on drop) on a thread that runs async
//! tasks: connections are opened on a thread of their own, the writer's lives
//! on the store's writer thread, and the reader's on a thread of its own
//! ([`super::OnThread`]) that callers reach over a channel.

use std::time::Duration;

use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{CallRow, Db, Row, StoreError};

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Server-side limit on one statement, ms.
const STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// `pg_advisory_xact_lock` key serialising schema creation across nodes.
const SCHEMA_LOCK: i64 = 0x6361_6c6c_6272;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS callbridge_calls (
        call_id TEXT PRIMARY KEY, tenant TEXT, node TEXT NOT NULL DEFAULT '',
        from_number TEXT NOT NULL, to_number TEXT NOT NULL, started_at BIGINT NOT NULL,
        ended_at BIGINT, reason TEXT, recording TEXT, recording_loss TEXT);
    CREATE INDEX IF NOT EXISTS callbridge_calls_ended ON callbridge_calls (ended_at);
    CREATE INDEX IF NOT EXISTS callbridge_calls_tenant ON callbridge_calls (tenant);
    CREATE INDEX IF NOT EXISTS callbridge_calls_open ON callbridge_calls (node) WHERE ended_at IS NULL;
    CREATE TABLE IF NOT EXISTS callbridge_call_events (
        call_id TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL,
        n BIGSERIAL, PRIMARY KEY (call_id, seq, type));
";

const ROW_COLUMNS: &str =
    "call_id, tenant, from_number, to_number, started_at, ended_at, reason, recording, recording_loss";

fn call_row(r: &postgres::Row) -> CallRow {
    CallRow {
        call_id: r.get(0),
        tenant: r.get(1),
        from: r.get(2),
        to: r.get(3),
        started_at: r.get(4),
        ended_at: r.get(5),
        reason: r.get(6),
        recording: r.get(7),
        recording_loss: r.get(8),
    }
}

/// One connection (reopened when lost).
pub(super) struct Postgres {
    config: postgres::Config,
    /// TLS (`sslmode=require`), or none.
    tls: Option<MakeRustlsConnect>,
    client: Option<Client>,
    /// This node's id, written on every call it starts.
    node: String,
}

/// Parse `url` (`postgres://user:password@host:port/db` or `key=value`
/// form) and open the writer's and the reader's connections, creating the
/// tables if needed. The error never repeats the URL (it may hold a password).
pub(super) fn open(url: &str, ca_file: &str, node: &str) -> Result<(Postgres, Postgres), StoreError> {
    std::thread::scope(|s| s.spawn(|| connect(url, ca_file, node)).join().map_err(|_| StoreError::Writer)?)
}

/// The TLS connector: public roots, or the CA certificates in `ca_file` (PEM).
fn tls(ca_file: &str) -> Result<MakeRustlsConnect, StoreError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let bad = |e: String| StoreError::Config(format!("storage.postgres_ca_file {ca_file:?}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
            roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn connect(url: &str, ca_file: &str, node: &str) -> Result<(Postgres, Postgres), StoreError> {
    let mut config: postgres::Config =
        url.parse().map_err(|e| StoreError::Config(format!("storage.postgres_url does not parse: {e}")))?;
    let tls = if config.get_ssl_mode() == SslMode::Require {
        Some(tls(ca_file)?)
    } else if !ca_file.is_empty() {
        return Err(StoreError::Config(
            "storage.postgres_ca_file is set but storage.postgres_url does not ask for TLS (add ?sslmode=require)"
                .into(),
        ));
    } else {
        // `prefer` (the default) and `disable`: in the clear.
        config.ssl_mode(SslMode::Disable);
        None
    };
    if config.get_application_name().is_none() {
        config.application_name("callbridge");
    }
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
    let mut w = Postgres { config: config.clone(), tls: tls.clone(), client: None, node: node.to_string() };
    {
        let c = w.client()?;
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        tx.batch_execute(SCHEMA)?;
        tx.commit()?;
    }
    let mut r = Postgres { config, tls, client: None, node: node.to_string() };
    r.client()?;
    Ok((w, r))
}

impl Postgres {
    /// The open connection, reopened if it was lost.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.client = Some(match &self.tls {
                Some(tls) => self.config.connect(tls.clone())?,
                None => self.config.connect(NoTls)?,
            });
        }
        Ok(self.client.as_mut().expect("just opened"))
    }

    /// Run `f` on the connection. A failure that closed it (the server
    /// restarted, a proxy dropped it) is tried once more on a new connection:
    /// every statement here is idempotent (upserts, updates, deletions, reads).
    fn with<T>(&mut self, mut f: impl FnMut(&mut Client, &str) -> Result<T, postgres::Error>) -> Result<T, StoreError> {
        let node = self.node.clone();
        for attempt in 0..2 {
            let c = self.client()?;
            match f(c, &node) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let closed = self.client.as_ref().is_some_and(Client::is_closed);
                    if closed {
                        self.client = None;
                    }
                    if !closed || attempt == 1 {
                        return Err(e.into());
                    }
                }
            }
        }
        unreachable!("the loop returns")
    }

    fn ids(&mut self, sql: &str, p: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Vec<String>, StoreError> {
        self.with(|c, _| Ok(c.query(sql, p)?.iter().map(|r| r.get(0)).collect()))
    }
}

impl Db for Postgres {
    fn write(&mut self, rows: &[&Row]) -> Result<(), StoreError> {
        self.with(|c, node| {
            let mut tx = c.transaction()?;
            let started = tx.prepare(
                "INSERT INTO callbridge_calls (call_id, tenant, node, from_number, to_number, started_at, recording)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (call_id) DO UPDATE SET tenant = EXCLUDED.tenant, node = EXCLUDED.node,
                   from_number = EXCLUDED.from_number, to_number = EXCLUDED.to_number,
                   started_at = EXCLUDED.started_at, recording = EXCLUDED.recording,
                   ended_at = NULL, reason = NULL, recording_loss = NULL",
            )?;
            let event = tx.prepare(
                "INSERT INTO callbridge_call_events (call_id, seq, type, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (call_id, seq, type) DO UPDATE SET body = EXCLUDED.body",
            )?;
            let ended = tx.prepare(
                "UPDATE callbridge_calls SET ended_at = $2, reason = $3, recording_loss = $4 WHERE call_id = $1",
            )?;
            for m in rows {
                match m {
                    Row::Started(r) => {
                        tx.execute(
                            &started,
                            &[&r.call_id, &r.tenant, &node, &r.from, &r.to, &r.started_at, &r.recording],
                        )?;
                    }
                    Row::Event { call_id, seq, kind, body } => {
                        tx.execute(&event, &[call_id, &(*seq as i64), kind, body])?;
                    }
                    Row::Ended { call_id, ended_at, reason, recording_loss } => {
                        tx.execute(&ended, &[call_id, ended_at, reason, recording_loss])?;
                    }
                }
            }
            tx.commit()
        })
    }

    fn delete_call(&mut self, call_id: &str) -> Result<(bool, Option<String>), StoreError> {
        self.with(|c, _| {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM callbridge_call_events WHERE call_id = $1", &[&call_id])?;
            let rec =
                tx.query_opt("DELETE FROM callbridge_calls WHERE call_id = $1 RETURNING recording", &[&call_id])?;
            tx.commit()?;
            Ok(match rec {
                Some(r) => (true, r.get(0)),
                None => (false, None),
            })
        })
    }

    fn tenant_calls(&mut self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let node = self.node.clone();
        self.ids("SELECT call_id FROM callbridge_calls WHERE tenant = $1 AND node = $2", &[&tenant, &node])
    }

    fn ended_before(&mut self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        let node = self.node.clone();
        self.ids(
            "SELECT call_id FROM callbridge_calls WHERE ended_at IS NOT NULL AND ended_at < $1 AND node = $2",
            &[&cutoff_ms, &node],
        )
    }

    fn oldest_ended(&mut self, n: usize) -> Result<Vec<String>, StoreError> {
        self.ids(
            "SELECT call_id FROM callbridge_calls WHERE ended_at IS NOT NULL ORDER BY ended_at LIMIT $1",
            &[&(n as i64)],
        )
    }

    fn call(&mut self, call_id: &str) -> Result<Option<CallRow>, StoreError> {
        self.with(|c, _| {
            Ok(c.query_opt(&format!("SELECT {ROW_COLUMNS} FROM callbridge_calls WHERE call_id = $1"), &[&call_id])?
                .as_ref()
                .map(call_row))
        })
    }

    fn unfinished(&mut self) -> Result<Vec<CallRow>, StoreError> {
        self.with(|c, node| {
            let sql = format!(
                "SELECT {ROW_COLUMNS} FROM callbridge_calls WHERE ended_at IS NULL AND node = $1 ORDER BY started_at"
            );
            Ok(c.query(&sql, &[&node])?.iter().map(call_row).collect())
        })
    }

    fn events(&mut self, call_id: &str) -> Result<Vec<String>, StoreError> {
        self.ids("SELECT body FROM callbridge_call_events WHERE call_id = $1 ORDER BY seq, n", &[&call_id])
    }

    fn count(&mut self) -> Result<usize, StoreError> {
        self.with(|c, _| Ok(c.query_one("SELECT COUNT(*) FROM callbridge_calls", &[])?.get::<_, i64>(0) as usize))
    }

    #[cfg(test)]
    fn read_only(&mut self, on: bool) {
        let sql = if on { "SET default_transaction_read_only = on" } else { "SET default_transaction_read_only = off" };
        self.with(|c, _| c.batch_execute(sql)).expect("read-only switch");
    }
}
