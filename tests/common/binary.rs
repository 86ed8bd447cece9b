//! The real `callbridge` binary in a child process on 127.0.0.1, for tests
//! that signal it (SIGTERM, SIGKILL) or restart it: a config in a temporary
//! folder with tenant A's callback, database and recordings; killed and
//! reaped on drop, folder removed.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::calls::*;

pub struct Binary {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

/// A fresh folder for one test's config, database and recordings.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cb-{name}-{}", callbridge::signature::random_hex()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A validating config with tenant A (callback at `callback_url`, API token
/// `tenant-a-token`), the SQLite store and recordings under `dir`, then `extra`.
pub fn tenant_config(dir: &Path, callback_url: &str, extra: &str) -> String {
    let base = format!(
        r#"
[server]
public_url = "{PUBLIC}"
validate_twilio_signatures = true
[engine.local]
greeting_wav = ""
[storage]
database = "{db}"
[recording]
enabled = true
dir = "{rec}"
[callbacks]
allow_private_networks = ["127.0.0.0/8"]
[[numbers]]
number = "{NUMBER_A}"
callback_url = "{callback_url}"
secret = "{SECRET_A}"
api_token = "tenant-a-token"
"#,
        db = dir.join("cb.db").display(),
        rec = dir.join("rec").display(),
    );
    merge_toml(&base, extra)
}

impl Binary {
    /// Start the binary on `config` (written to `dir/cb.toml`) and wait until
    /// `/healthz` answers.
    pub async fn start(dir: &Path, config: &str) -> Self {
        Self::start_env(dir, config, &[]).await
    }

    /// [`Self::start`] with more environment variables (an admin token, say);
    /// `{ADDR}` in `config` becomes the address it listens on.
    pub async fn start_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let cfg = dir.join("cb.toml");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // `{ADDR}` in the config: the address the binary listens on.
        std::fs::write(&cfg, config.replace("{ADDR}", &addr.to_string())).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_callbridge"))
            .args(["serve", "--config", cfg.to_str().unwrap(), "--listen", &addr.to_string()])
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("RUST_LOG", std::env::var("CB_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().copied())
            .stdout(if std::env::var_os("CB_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .stderr(if std::env::var_os("CB_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .unwrap();
        let b = Self { addr, dir: dir.to_path_buf(), child };
        let t0 = std::time::Instant::now();
        while b.get("/healthz", None).await != 200 {
            assert!(t0.elapsed() < Duration::from_secs(20), "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b
    }

    /// The folder its config (and, with `tenant_config`, its database) is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// GET `path`; the status (0 if it did not answer).
    pub async fn get(&self, path: &str, token: Option<&str>) -> u16 {
        let mut r = reqwest::Client::new().get(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// Send `signal` (`TERM`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
    }

    /// Wait for the process to exit (bounded).
    pub fn wait_exit(&mut self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WAV whose header counts every sample in the file, and its length in
/// seconds (stereo 16-bit: caller and bot).
pub fn valid_wav_secs(path: &Path) -> f64 {
    let size = std::fs::metadata(path).unwrap().len();
    let rd = hound::WavReader::open(path).unwrap();
    let spec = rd.spec();
    let bytes_per_frame = spec.channels as u64 * spec.bits_per_sample as u64 / 8;
    let frames = rd.duration() as u64;
    assert_eq!(44 + frames * bytes_per_frame, size, "{}: the header counts every sample", path.display());
    frames as f64 / spec.sample_rate as f64
}

/// [`valid_wav_secs`] once the recording's writer (a thread of its own) has
/// finished the file: polled, bounded.
pub async fn finished_wav_secs(path: &Path, within: Duration) -> f64 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let done = (|| {
            let size = std::fs::metadata(path).ok()?.len();
            let rd = hound::WavReader::open(path).ok()?;
            let spec = rd.spec();
            let frame = spec.channels as u64 * spec.bits_per_sample as u64 / 8;
            (44 + rd.duration() as u64 * frame == size).then_some(())
        })();
        if done.is_some() || std::time::Instant::now() >= deadline {
            return valid_wav_secs(path);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
