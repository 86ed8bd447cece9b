//! The call store on a real PostgreSQL (Debian's, started per test on
//! 127.0.0.1): the same rows, order and deletions as the SQLite store; two
//! nodes sharing one database each recover only their own unfinished calls;
//! nodes opening a fresh database at once do not race on its tables; what is
//! written while the database is down is kept and written once it is back;
//! a password in the URL never reaches an error.

mod common;

use std::time::{Duration, Instant, SystemTime};

use callbridge::callstore::{CallRow, CallStore, unix_ms};
use common::pg::{PgServer, available};
use serde_json::json;

fn row(id: &str, tenant: &str) -> CallRow {
    CallRow {
        call_id: id.into(),
        tenant: Some(tenant.into()),
        from: "+15557770000".into(),
        to: "+15550001111".into(),
        started_at: unix_ms(SystemTime::now()),
        ended_at: None,
        reason: None,
        recording: None,
        recording_loss: None,
    }
}

#[test]
fn rows_events_and_deletions_on_postgresql() {
    if !available() {
        return;
    }
    let pg = PgServer::start();
    let s = CallStore::open_postgres(&pg.database("cb_rows"), "", "node-a").unwrap();
    let rec = std::env::temp_dir().join(format!("cb-pg-rec-{}.wav", callbridge::signature::random_hex()));
    std::fs::write(&rec, b"RIFF").unwrap();
    let mut old = row("old", "tn_a");
    old.recording = Some(rec.display().to_string());
    s.started(old);
    // Out of order, and one event stored twice (a retried batch): seq order, once.
    s.event("old", 2, "turn.user", r#"{"seq":2,"text":"a leak"}"#.into());
    s.event("old", 1, "call.started", r#"{"seq":1}"#.into());
    s.event("old", 2, "turn.user", r#"{"seq":2,"text":"a leak"}"#.into());
    s.ended("old", "caller_hangup", Some("nothing".into()));
    s.started(row("live", "tn_a"));
    s.started(row("b1", "tn_b"));
    assert!(s.sync_within(Duration::from_secs(10)));
    assert_eq!(s.events("old").unwrap(), vec![json!({"seq":1}), json!({"seq":2,"text":"a leak"})]);
    let got = s.call("old").unwrap().unwrap();
    assert_eq!((got.reason.as_deref(), got.recording_loss.as_deref()), (Some("caller_hangup"), Some("nothing")));
    assert!(got.ended_at.is_some_and(|t| t >= got.started_at));
    assert_eq!(s.count().unwrap(), 3);
    // Retention: only the ended call goes, with its recording file.
    assert_eq!(s.sweep(unix_ms(SystemTime::now()) + 1000).unwrap(), 1);
    assert!(s.call("old").unwrap().is_none() && s.events("old").unwrap().is_empty());
    assert!(!rec.exists(), "the recording file went with it");
    assert!(s.call("live").unwrap().is_some(), "a live call is kept");
    // A tenant's erasure takes only its calls.
    assert_eq!(s.delete_tenant("tn_b").unwrap(), 1);
    assert!(s.call("b1").unwrap().is_none() && s.call("live").unwrap().is_some());
    assert!(s.delete("live").unwrap());
    assert!(!s.delete("live").unwrap(), "a second deletion finds nothing");
}

#[test]
fn nodes_sharing_a_database_see_each_others_calls_and_recover_only_their_own() {
    if !available() {
        return;
    }
    let pg = PgServer::start();
    let url = pg.database("cb_shared");
    // Both open the fresh database at the same moment: the tables are made once.
    let (a, b) = std::thread::scope(|sc| {
        let ha = sc.spawn(|| CallStore::open_postgres(&url, "", "node-a"));
        let hb = sc.spawn(|| CallStore::open_postgres(&url, "", "node-b"));
        (ha.join().unwrap().unwrap(), hb.join().unwrap().unwrap())
    });
    a.started(row("on-a", "tn_a"));
    a.event("on-a", 1, "call.started", r#"{"seq":1}"#.into());
    b.started(row("on-b", "tn_a"));
    b.started(row("ended-on-b", "tn_a"));
    b.ended("ended-on-b", "caller_hangup", None);
    assert!(a.sync_within(Duration::from_secs(10)) && b.sync_within(Duration::from_secs(10)));
    // Each node reads the other's calls.
    assert_eq!(b.events("on-a").unwrap(), vec![json!({"seq":1})]);
    assert_eq!(a.call("ended-on-b").unwrap().unwrap().reason.as_deref(), Some("caller_hangup"));
    // Start-up recovery on a finds only a's open call, never b's live one.
    let ids = |rows: Vec<CallRow>| rows.into_iter().map(|r| r.call_id).collect::<Vec<_>>();
    assert_eq!(ids(a.unfinished().unwrap()), ["on-a"]);
    assert_eq!(ids(b.unfinished().unwrap()), ["on-b"]);
    let nodes = pg.query("cb_shared", "SELECT call_id, node FROM callbridge_calls ORDER BY call_id");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
}

#[test]
fn what_is_written_while_postgresql_is_down_is_written_once_it_is_back() {
    if !available() {
        return;
    }
    let mut pg = PgServer::start();
    let s = CallStore::open_postgres(&pg.database("cb_outage"), "", "node-a").unwrap();
    s.started(row("c1", "tn_a"));
    s.event("c1", 1, "call.started", r#"{"seq":1}"#.into());
    assert!(s.sync_within(Duration::from_secs(10)));
    pg.stop();
    // The call goes on while the database is away: nothing it says may be lost.
    for seq in 2..=60 {
        s.event("c1", seq, "turn.user", format!(r#"{{"seq":{seq}}}"#));
    }
    s.ended("c1", "caller_hangup", None);
    s.started(row("c2", "tn_a"));
    s.sync_within(Duration::from_secs(10));
    // A read says the database is away, quickly, instead of hanging.
    let t0 = Instant::now();
    let err = s.call("c1").unwrap_err();
    eprintln!("read while down failed after {:?}: {err}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(8), "a read while down fails within the connect timeout");
    pg.restart();
    // The writer tries its backlog again on its own (every second), no new record needed.
    let t0 = Instant::now();
    while s.call("c2").ok().flatten().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(15), "the kept records were written after the restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("backlog written {:?} after the database came back", t0.elapsed());
    assert_eq!(s.events("c1").unwrap().len(), 60, "every event, none lost");
    assert_eq!(s.call("c1").unwrap().unwrap().reason.as_deref(), Some("caller_hangup"));
}

#[test]
fn a_bad_url_or_an_unreachable_database_is_a_clear_error_without_the_password() {
    let e = CallStore::open_postgres("postgres://cb:hunter2@127.0.0.1:1/cb", "", "n").unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
    assert!(e.contains("postgresql"), "{e}");
    let e = CallStore::open_postgres("postgres://cb:hunter2@127.0.0.1:1/cb?sslmode=require", "", "n").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = CallStore::open_postgres("not a url at all ://", "", "n").unwrap_err().to_string();
    assert!(e.contains("postgres_url"), "{e}");
}

#[test]
fn sslmode_require_speaks_tls_and_verifies_the_servers_certificate() {
    if !available() {
        return;
    }
    let pg = PgServer::start_tls();
    let ca = pg.ca_file.clone().unwrap().display().to_string();
    let url = format!("{}?sslmode=require", pg.database("cb_tls"));
    let s = CallStore::open_postgres(&url, &ca, "node-a").unwrap();
    s.started(row("c1", "tn_a"));
    assert!(s.sync_within(Duration::from_secs(10)));
    assert!(s.call("c1").unwrap().is_some());
    // The server sees the store's connections (writer and reader) encrypted.
    let tls = pg.query(
        "cb_tls",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.application_name = 'callbridge'",
    );
    assert_eq!(tls[0][0].as_deref(), Some("2"), "both connections use TLS");
    // A certificate no trusted CA signed is refused (the public roots do not know the test CA).
    let e = CallStore::open_postgres(&url, "", "node-a").unwrap_err().to_string();
    assert!(e.contains("certificate"), "{e}");
    // A CA file without sslmode=require, or one that is not there, is a clear error.
    let e = CallStore::open_postgres(&pg.url("cb_tls"), &ca, "n").unwrap_err().to_string();
    assert!(e.contains("sslmode=require"), "{e}");
    let e = CallStore::open_postgres(&url, "/nonexistent/ca.pem", "n").unwrap_err().to_string();
    assert!(e.contains("postgres_ca_file"), "{e}");
}

/// Whether `/healthz` on `port` answers 200.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// The binary at `RUST_LOG=trace` with `CALLBRIDGE_POSTGRES_URL` = `url`:
/// run until `/healthz` answers (or it exits), then SIGTERM; everything it logged.
fn run_binary_logs(url: &str) -> String {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let dir = std::env::temp_dir().join(format!("cb-pg-logs-{}", callbridge::signature::random_hex()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("cb.toml");
    std::fs::write(&cfg, format!("[storage]\ndatabase = \"{}\"\n", dir.join("cb.db").display())).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .args(["serve", "--config", cfg.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "trace")
        .env("CALLBRIDGE_POSTGRES_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(20) {
        if healthy(port) {
            let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the binary did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    out
}

#[test]
fn the_postgresql_password_never_reaches_the_logs() {
    if !available() {
        return;
    }
    const PASSWORD: &str = "pgpass_ENV_5f4e3d2c1b0a99887766";
    let pg = PgServer::start();
    // Trust authentication takes any password: the server starts on it.
    let url = pg.database("cb_logs").replace("postgres://cb@", &format!("postgres://cb:{PASSWORD}@"));
    let logs = run_binary_logs(&url);
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "logs were captured: {logs}");
    assert!(!logs.contains(PASSWORD), "the password is in the logs");
    assert_eq!(pg.query("cb_logs", "SELECT 1 FROM callbridge_calls").len(), 0, "the store's tables exist");
    // A database that is not there: the start fails, saying why, without the password.
    let dead = format!("postgres://cb:{PASSWORD}@127.0.0.1:1/cb");
    let logs = run_binary_logs(&dead);
    assert!(logs.contains("call store") && logs.contains("postgresql"), "the failure says why: {logs}");
    assert!(!logs.contains(PASSWORD), "the password is in the failure: {logs}");
}

/// By hand (`cargo test --release --test postgres_store -- --ignored --nocapture`):
/// how fast the store's writer drains 1,000 calls of 40 events each into
/// PostgreSQL (loopback, fsync off as in these tests) and into an SQLite file,
/// three rounds each.
#[test]
#[ignore = "measurement; run by hand"]
fn measure_store_write_rate_postgresql_against_sqlite() {
    if !available() {
        return;
    }
    let pg = PgServer::start();
    let rate = |s: &CallStore, round: usize| {
        let t0 = Instant::now();
        for i in 0..1000 {
            let id = format!("r{round}-c{i}");
            s.started(row(&id, "tn_a"));
            for seq in 1..=40 {
                s.event(&id, seq, "turn.user", format!(r#"{{"seq":{seq},"text":"my water heater is leaking"}}"#));
            }
            s.ended(&id, "caller_hangup", None);
        }
        assert!(s.sync_within(Duration::from_secs(300)));
        t0.elapsed()
    };
    for round in 0..3 {
        let p = CallStore::open_postgres(&pg.database(&format!("cb_rate{round}")), "", "node-a").unwrap();
        let took_pg = rate(&p, round);
        let dir = std::env::temp_dir().join(format!("cb-rate-{}", callbridge::signature::random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        let q = CallStore::open(dir.join("cb.db").to_str().unwrap(), 0).unwrap();
        let took_sqlite = rate(&q, round);
        let per = |d: Duration| d.as_secs_f64() * 1e6 / 42_000.0;
        eprintln!(
            "round {round}: 42,000 rows — postgresql {took_pg:?} ({:.1} µs/row), sqlite {took_sqlite:?} ({:.1} µs/row)",
            per(took_pg),
            per(took_sqlite)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
