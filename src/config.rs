//! Typed configuration: one TOML tree, mirrored key for key in
//! `config/default.toml` (which is embedded in the binary as the default).
//!
//! Every struct denies unknown keys, so a typo is an error at start, not a
//! silently ignored setting. Secrets never live here; they come from the
//! environment when later features need them.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::session::SessionConfig;

/// The embedded default configuration file.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Io {
        /// path
        path: String,
        /// cause
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("parsing config {path}: {source}")]
    Parse {
        /// path (or `<embedded>`)
        path: String,
        /// cause
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Root of the configuration tree.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and transport limits.
    pub server: ServerConfig,
    /// Turn-taking and barge-in (`[turn]`).
    #[serde(default)]
    pub turn: crate::session::turn::TurnConfig,
    /// Voice activity detection (`[vad]`).
    #[serde(default)]
    pub vad: crate::audio::vad::VadConfig,
    /// Outbound playback (`[playback]`).
    #[serde(default)]
    pub playback: crate::session::playback::PlaybackConfig,
    /// Speech engine selection.
    pub engine: EngineConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Public base URL of the server as carriers reach it (`wss://host`), used
    /// in TwiML `<Stream url>`.
    pub public_url: String,
    /// Largest WebSocket message accepted from a carrier.
    pub max_message_bytes: usize,
    /// WebSocket read buffer (tungstenite zero-fills it per read; keep it small).
    pub read_buffer_bytes: usize,
    /// A call whose peer does not take our writes for this long is closed.
    pub write_timeout_ms: u64,
    /// Outbound messages queued per call before audio is dropped.
    pub max_queued_messages: usize,
    /// Protocol errors tolerated per call before it is closed.
    pub max_protocol_errors: u32,
    /// Concurrent calls accepted; more are refused with 503.
    pub max_calls: usize,
    /// How long live calls may go on after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// Tokio worker threads (0 = one per core).
    pub worker_threads: usize,
    /// A call that sends nothing (not even `start`) for this long is closed.
    pub idle_timeout_ms: u64,
    /// Kernel send buffer per connection (SO_SNDBUF); 0 keeps the OS default.
    /// Bounds kernel memory per call and how long a dead peer goes unnoticed.
    pub socket_send_buffer_bytes: usize,
}

/// `[engine]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Which engine answers calls.
    pub kind: EngineKind,
    /// The embedded local engine.
    pub local: LocalEngineConfig,
}

/// Engine choice.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// Embedded clips, no network.
    Local,
}

/// `[engine.local]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalEngineConfig {
    /// Greeting clip: a WAV path, `builtin:greeting`, or empty for none.
    pub greeting_wav: String,
    /// Reply clip: a WAV path or `builtin:reply`.
    pub reply_wav: String,
}

impl Config {
    /// The embedded default.
    pub fn embedded() -> Self {
        Self::from_toml(DEFAULT_TOML, "<embedded>").expect("embedded default config is valid")
    }

    /// Parse a TOML document. Keys missing from it take the embedded defaults.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut base: toml::Table =
            DEFAULT_TOML.parse().map_err(|e| ConfigError::Parse { path: "<embedded>".into(), source: Box::new(e) })?;
        let over: toml::Table =
            text.parse().map_err(|e| ConfigError::Parse { path: origin.into(), source: Box::new(e) })?;
        merge(&mut base, over);
        let cfg: Config = toml::Value::Table(base)
            .try_into()
            .map_err(|e| ConfigError::Parse { path: origin.into(), source: Box::new(e) })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Load a file over the embedded defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.display().to_string(), source })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Session settings for one call.
    pub fn session(&self) -> SessionConfig {
        SessionConfig { turn: self.turn.clone(), vad: self.vad.clone(), playback: self.playback.clone() }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.turn.endpoint_silence_ms < 100 || self.turn.endpoint_silence_ms > 5000 {
            return bad("turn.endpoint_silence_ms must be within 100..=5000");
        }
        if self.playback.lead_ms < 20 || self.playback.lead_ms > 2000 {
            return bad("playback.lead_ms must be within 20..=2000");
        }
        if !(1..=10).contains(&self.playback.frames_per_message) {
            return bad("playback.frames_per_message must be within 1..=10");
        }
        if self.playback.lead_ms < 20 * (self.playback.frames_per_message + 1) {
            return bad(
                "playback.lead_ms must hold at least one more frame than a message (20 ms × (frames_per_message + 1))",
            );
        }
        if self.playback.mark_interval_ms < 20 {
            return bad("playback.mark_interval_ms must be at least 20");
        }
        if self.server.max_message_bytes < 1024 {
            return bad("server.max_message_bytes must be at least 1024");
        }
        if !(self.server.public_url.starts_with("ws://") || self.server.public_url.starts_with("wss://")) {
            return bad("server.public_url must start with wss:// (or ws:// for local testing)");
        }
        Ok(())
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_matches_struct_defaults() {
        let c = Config::embedded();
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.engine.kind, EngineKind::Local);
        // default.toml mirrors every default in code
        assert_eq!(c.turn, crate::session::turn::TurnConfig::default());
        assert_eq!(c.vad, crate::audio::vad::VadConfig::default());
        assert_eq!(c.playback, crate::session::playback::PlaybackConfig::default());
    }

    #[test]
    fn partial_file_overrides_and_typos_are_errors() {
        let c = Config::from_toml("[turn]\nendpoint_silence_ms = 300\n", "t").unwrap();
        assert_eq!(c.turn.endpoint_silence_ms, 300);
        assert_eq!(c.server.listen.port(), 8080);
        let e = Config::from_toml("[turn]\nendpoint_silense_ms = 300\n", "t").unwrap_err();
        assert!(e.to_string().contains("endpoint_silense_ms"), "{e}");
        assert!(Config::from_toml("[turn]\nendpoint_silence_ms = 10\n", "t").is_err());
    }
}
