//! A real PostgreSQL (Debian's `postgresql` package) in a child process on a
//! free 127.0.0.1 port: a fresh cluster (`initdb`, trust auth for user `cb`,
//! no fsync) in a temporary folder, started for one test, stoppable and
//! restartable on the same port with its data, stopped and removed on drop.
//! PostgreSQL refuses to run as root: as root, the server runs as `nobody`
//! (`setpriv`). Tests that need it skip with a message when it is missing,
//! unless `CALLBRIDGE_REQUIRE_POSTGRES` is set (`.ci/run` sets it and installs
//! PostgreSQL), when they fail instead.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgServer {
    pub port: u16,
    /// With TLS: the CA (PEM) that signed the server's certificate (for 127.0.0.1).
    pub ca_file: Option<PathBuf>,
    dir: PathBuf,
    bin: PathBuf,
    /// More `postgres` arguments (TLS settings).
    extra: Vec<String>,
    child: Option<Child>,
}

/// The folder holding `initdb` and `postgres`: on the `PATH`, or Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest first).
fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.join("initdb").is_file() && d.join("postgres").is_file()));
    on_path.or_else(|| {
        let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|d| d.join("initdb").is_file())
            .collect();
        v.sort_by_key(|d| d.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()?.parse::<u32>().ok()));
        v.pop()
    })
}

/// Whether PostgreSQL is installed; panics in CI when it is not.
pub fn available() -> bool {
    let ok = bin_dir().is_some();
    if !ok {
        assert!(
            std::env::var_os("CALLBRIDGE_REQUIRE_POSTGRES").is_none(),
            "PostgreSQL is required here (apt-get install postgresql)"
        );
        eprintln!("SKIPPED: PostgreSQL is not installed (apt-get install postgresql)");
    }
    ok
}

/// Run `f` on a thread of its own: the synchronous client runs a runtime of
/// its own, which may not start inside a test's tokio runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("postgres client thread"))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `cmd` run as `nobody` when we are root (PostgreSQL refuses root).
fn as_server_user(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl PgServer {
    /// A new cluster on a free port, started and answering.
    pub fn start() -> Self {
        let mut p = Self::init();
        p.restart();
        p
    }

    /// [`Self::start`] with TLS on (`ssl = on`): a CA and a server
    /// certificate for 127.0.0.1 ([`super::tls::test_certs`]); plain connections are
    /// still accepted.
    pub fn start_tls() -> Self {
        let mut p = Self::init();
        let d = p.dir.clone();
        crate::common::tls::test_certs(&d);
        if is_root() {
            for f in ["server.key", "server.pem"] {
                std::os::unix::fs::chown(d.join(f), Some(65534), Some(65534)).unwrap();
            }
        }
        p.extra = vec![
            "-c".into(),
            "ssl=on".into(),
            "-c".into(),
            format!("ssl_cert_file={}", d.join("server.pem").display()),
            "-c".into(),
            format!("ssl_key_file={}", d.join("server.key").display()),
        ];
        p.ca_file = Some(d.join("ca.pem"));
        p.restart();
        p
    }

    /// `initdb` into a new folder; not started.
    fn init() -> Self {
        let bin = bin_dir().expect("PostgreSQL installed");
        let dir = std::env::temp_dir().join(format!("cb-pg-{}", callbridge::signature::random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        }
        let out = as_server_user(&bin.join("initdb"))
            .args(["-D"])
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "cb", "-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(&dir)
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self { port, ca_file: None, dir, bin, extra: Vec::new(), child: None }
    }

    /// `postgres://cb@127.0.0.1:{port}/{db}`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://cb@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database; its URL.
    pub fn database(&self, name: &str) -> String {
        off_runtime(|| {
            let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
            c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        });
        self.url(name)
    }

    /// One SQL statement's rows on database `db`, each row's columns as text.
    pub fn query(&self, db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        off_runtime(|| {
            let mut c = postgres::Client::connect(&self.url(db), postgres::NoTls).unwrap();
            c.simple_query(sql)
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect()
        })
    }

    /// Stop the server (fast shutdown: clients are cut off); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it (again) on the same port, with its data, and wait until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = as_server_user(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(&self.dir)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(&self.extra)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let t0 = Instant::now();
        let url = self.url("postgres");
        while off_runtime(|| postgres::Client::connect(&url, postgres::NoTls).is_err()) {
            assert!(t0.elapsed() < Duration::from_secs(20), "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
