//! A real `redis-server` (Debian's) in a child process on a free 127.0.0.1
//! port, without persistence: started for one test, stopped (and restartable
//! on the same port) by it, killed and reaped on drop. Tests that need it skip
//! with a message when the binary is missing, unless `CALLBRIDGE_REQUIRE_REDIS`
//! is set (`.ci/run` sets it and installs Redis), when they fail instead.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    /// With TLS: the TLS port, and the folder holding the CA (`ca.pem`).
    pub tls: Option<(u16, std::path::PathBuf)>,
    child: Option<Child>,
}

/// Whether `redis-server` is installed; panics in CI when it is not.
pub fn available() -> bool {
    let ok = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CALLBRIDGE_REQUIRE_REDIS").is_none(),
            "redis-server is required here (apt-get install redis-server)"
        );
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}

impl RedisServer {
    /// Start on a free port and wait until it answers.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Self { port, tls: None, child: None };
        r.restart();
        r
    }

    /// [`Self::start`] with a TLS port too (test CA, certificate for 127.0.0.1).
    pub fn start_tls() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("cb-redis-tls-{}", callbridge::signature::random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        super::tls::test_certs(&dir);
        let mut r = Self { port, tls: Some((tls_port, dir)), child: None };
        r.restart();
        r
    }

    /// `rediss://127.0.0.1:{tls port}/` and the CA file that verifies it.
    pub fn tls_url(&self) -> (String, String) {
        let (port, dir) = self.tls.as_ref().expect("started with TLS");
        (format!("rediss://127.0.0.1:{port}/"), dir.join("ca.pem").display().to_string())
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port (empty).
    pub fn restart(&mut self) {
        self.stop();
        let mut tls = Vec::new();
        if let Some((port, dir)) = &self.tls {
            tls = vec![
                "--tls-port".to_string(),
                port.to_string(),
                "--tls-cert-file".into(),
                dir.join("server.pem").display().to_string(),
                "--tls-key-file".into(),
                dir.join("server.key").display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ];
        }
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let t0 = Instant::now();
        while self.ping().is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One command over a plain socket (RESP inline form); the raw reply.
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{line}\r\n").as_bytes())?;
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn ping(&self) -> std::io::Result<()> {
        let r = self.command("PING")?;
        if r.starts_with("+PONG") { Ok(()) } else { Err(std::io::Error::other(r)) }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some((_, dir)) = &self.tls {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
