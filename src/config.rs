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

/// Secrets, read from the environment only (never from config files or logs).
#[derive(Clone, Default)]
pub struct Secrets {
    /// `CALLBRIDGE_ADMIN_TOKEN`: bearer token for `/v1/numbers`.
    pub admin_token: Option<String>,
    /// `TWILIO_AUTH_TOKEN` (and `TWILIO_AUTH_TOKEN_SECONDARY` during rotation).
    pub twilio_auth_tokens: Vec<String>,
    /// `TWILIO_ACCOUNT_SID`.
    pub twilio_account_sid: Option<String>,
    /// `TWILIO_API_KEY` + `TWILIO_API_SECRET` (preferred over the auth token for REST).
    pub twilio_api_key: Option<(String, String)>,
    /// `OPENAI_API_KEY`.
    pub openai_api_key: Option<String>,
    /// `CALLBRIDGE_ALLOW_UNSIGNED=1`: allow unvalidated Twilio requests on a non-loopback address.
    pub allow_unsigned: bool,
    /// `OPENAI_REALTIME_URL`: overrides `engine.openai_realtime.url` (not a secret, but from the environment).
    pub openai_realtime_url: Option<String>,
    /// `CALLBRIDGE_METRICS_TOKEN`: bearer token for `/metrics` on the public listener.
    pub metrics_token: Option<String>,
    /// `TELNYX_API_KEY`: bearer key for Telnyx Call Control.
    pub telnyx_api_key: Option<String>,
    /// `TELNYX_PUBLIC_KEY`: the account's Ed25519 webhook key (base64; not secret, but from the environment).
    pub telnyx_public_key: Option<String>,
    /// `VONAGE_SIGNATURE_SECRET`: the account's webhook signature secret (HS256).
    pub vonage_signature_secret: Option<String>,
    /// `VONAGE_APPLICATION_ID`: the Voice application (Voice API tokens).
    pub vonage_application_id: Option<String>,
    /// `VONAGE_PRIVATE_KEY_PATH`: the application's private key file (PKCS#8 PEM).
    pub vonage_private_key_path: Option<String>,
    /// `DEEPGRAM_API_KEY`, `DEEPGRAM_URL`, `ELEVENLABS_API_KEY`, `ELEVENLABS_URL` (cascaded engine).
    pub cascaded: crate::engine::cascaded::CascadedEnv,
    /// `CALLBRIDGE_TURN_CREDENTIAL`: the password for `webrtc.ice_username` on the TURN servers.
    pub turn_credential: Option<String>,
    /// `CALLBRIDGE_REDIS_URL`: wins over `cluster.redis_url` (it may hold a password).
    pub redis_url: Option<String>,
    /// `CALLBRIDGE_POSTGRES_URL`: wins over `storage.postgres_url` (it may hold a password).
    pub postgres_url: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("twilio_auth_tokens", &self.twilio_auth_tokens.len())
            .field("twilio_account_sid", &self.twilio_account_sid)
            .field("twilio_api_key", &self.twilio_api_key.as_ref().map(|(k, _)| k))
            .field("openai_api_key", &self.openai_api_key.as_ref().map(|_| "<set>"))
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<set>"))
            .field("telnyx_api_key", &self.telnyx_api_key.as_ref().map(|_| "<set>"))
            .field("telnyx_public_key", &self.telnyx_public_key.is_some())
            .field("vonage_signature_secret", &self.vonage_signature_secret.as_ref().map(|_| "<set>"))
            .field("vonage_application_id", &self.vonage_application_id)
            .field("vonage_private_key_path", &self.vonage_private_key_path)
            .field("deepgram_api_key", &self.cascaded.deepgram_key.as_ref().map(|_| "<set>"))
            .field("elevenlabs_api_key", &self.cascaded.elevenlabs_key.as_ref().map(|_| "<set>"))
            .field("turn_credential", &self.turn_credential.as_ref().map(|_| "<set>"))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("postgres_url", &self.postgres_url.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Secrets {
    /// Read them from the process environment (empty values count as unset).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            admin_token: var("CALLBRIDGE_ADMIN_TOKEN"),
            twilio_auth_tokens: ["TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN_SECONDARY"]
                .iter()
                .filter_map(|k| var(k))
                .collect(),
            twilio_account_sid: var("TWILIO_ACCOUNT_SID"),
            twilio_api_key: var("TWILIO_API_KEY").zip(var("TWILIO_API_SECRET")),
            openai_api_key: var("OPENAI_API_KEY"),
            allow_unsigned: var("CALLBRIDGE_ALLOW_UNSIGNED").is_some_and(|v| v == "1"),
            openai_realtime_url: var("OPENAI_REALTIME_URL"),
            metrics_token: var("CALLBRIDGE_METRICS_TOKEN"),
            telnyx_api_key: var("TELNYX_API_KEY"),
            telnyx_public_key: var("TELNYX_PUBLIC_KEY"),
            vonage_signature_secret: var("VONAGE_SIGNATURE_SECRET"),
            vonage_application_id: var("VONAGE_APPLICATION_ID"),
            vonage_private_key_path: var("VONAGE_PRIVATE_KEY_PATH"),
            cascaded: crate::engine::cascaded::CascadedEnv {
                deepgram_key: var("DEEPGRAM_API_KEY"),
                deepgram_url: var("DEEPGRAM_URL"),
                elevenlabs_key: var("ELEVENLABS_API_KEY"),
                elevenlabs_url: var("ELEVENLABS_URL"),
            },
            turn_credential: var("CALLBRIDGE_TURN_CREDENTIAL"),
            redis_url: var("CALLBRIDGE_REDIS_URL"),
            postgres_url: var("CALLBRIDGE_POSTGRES_URL"),
        }
    }
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
    /// The end-of-turn model for the smart detector (`[turn_model]`).
    #[serde(default)]
    pub turn_model: TurnModelConfig,
    /// Voice activity detection (`[vad]`).
    #[serde(default)]
    pub vad: crate::audio::vad::VadConfig,
    /// Outbound playback (`[playback]`).
    #[serde(default)]
    pub playback: crate::session::playback::PlaybackConfig,
    /// Speech engine selection.
    pub engine: EngineConfig,
    /// Backend callbacks (`[callbacks]`).
    pub callbacks: CallbacksConfig,
    /// Where persistent data lives (`[storage]`).
    pub storage: StorageConfig,
    /// Call recording (`[recording]`).
    pub recording: RecordingConfig,
    /// Twilio account access (`[twilio]`).
    pub twilio: TwilioConfig,
    /// Telnyx Call Control (`[telnyx]`).
    #[serde(default)]
    pub telnyx: TelnyxConfig,
    /// Vonage Voice API (`[vonage]`).
    #[serde(default)]
    pub vonage: VonageConfig,
    /// Browser calls over WebRTC (`[webrtc]`).
    #[serde(default)]
    pub webrtc: WebRtcConfig,
    /// Several nodes sharing numbers, calls and control through Redis (`[cluster]`).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Limits per tenant and on the HTTP server (`[limits]`).
    pub limits: LimitsConfig,
    /// Numbers declared in the file (`[[numbers]]`); more are registered over the API.
    #[serde(default)]
    pub numbers: Vec<NumberConfig>,
}

/// `[turn_model]`: the smart-turn model behind `turn.detector = "smart"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TurnModelConfig {
    /// The ONNX model file ("" = none).
    pub model: String,
    /// The ONNX Runtime shared library ("" = none).
    pub runtime: String,
    /// Inference threads.
    pub workers: usize,
    /// Questions waiting beyond this are answered "overloaded" at once.
    pub queue: usize,
}

impl Default for TurnModelConfig {
    fn default() -> Self {
        Self { model: String::new(), runtime: String::new(), workers: 1, queue: 8 }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent calls per tenant (0 = only `server.max_calls`).
    pub max_calls_per_tenant: usize,
    /// Concurrent outbound calls per tenant, from placement to their end (0 = no outbound calls).
    pub max_outbound_calls_per_tenant: usize,
    /// Control API requests per second per tenant (sustained; 0 = unlimited).
    pub api_requests_per_second: u32,
    /// Control API burst per tenant.
    pub api_burst: u32,
    /// `say` audio fetches at once, server-wide.
    pub max_concurrent_fetches: usize,
    /// Open HTTP connections at once; more are closed at accept.
    pub max_connections: usize,
    /// A connection must send its request headers within this long.
    pub header_read_timeout_ms: u64,
    /// A request (not a WebSocket once upgraded) must be answered within this long.
    pub request_timeout_ms: u64,
}

/// `[callbacks]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Budget for blocking requests (`call.started` → plan, `tool.call` → result).
    pub blocking_timeout_ms: u64,
    /// While a blocking request runs this long, the caller hears the filler.
    pub filler_after_ms: u64,
    /// Per-attempt timeout for non-blocking events.
    pub event_timeout_ms: u64,
    /// Attempts per non-blocking event (first try included) before it is dropped.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles per attempt up to 8×.
    pub retry_backoff_ms: u64,
    /// Events queued per call before new ones are dropped (counted).
    pub max_queued_events: usize,
    /// Largest callback response body read.
    pub max_response_bytes: usize,
    /// Networks tenant URLs (callbacks, `say` audio) may reach although they are
    /// private or loopback (CIDRs, e.g. `["127.0.0.0/8"]` for development).
    #[serde(default)]
    pub allow_private_networks: Vec<String>,
    /// What happens to calls to numbers nobody registered: "auto" (answer with the
    /// configured engine while no number is registered at all, refuse once any
    /// is), "reject", or "answer".
    pub unknown_numbers: UnknownNumbers,
}

/// Policy for calls to unregistered numbers.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnknownNumbers {
    /// Answer while the number table is empty, refuse once it is not.
    Auto,
    /// "Not in service".
    Reject,
    /// Answer with the configured engine, no callback.
    Answer,
}

/// `[storage]`
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// SQLite database file (created with its folder, owner-only); "" keeps data in memory.
    /// Numbers live here (or in Redis in cluster mode); call data too unless `postgres_url` is set.
    pub database: String,
    /// `postgres://user:password@host:port/db`: call reports and transcripts
    /// in a PostgreSQL every node of a cluster shares ("" = in `database`).
    /// `CALLBRIDGE_POSTGRES_URL` wins over it. Never logged.
    #[serde(default)]
    pub postgres_url: String,
    /// CA certificates (PEM) that verify PostgreSQL's certificate when the URL
    /// has `sslmode=require` ("" = the public roots).
    #[serde(default)]
    pub postgres_ca_file: String,
    /// Delete call data (transcripts, recordings) older than this many days; 0 = keep.
    pub retention_days: u32,
    /// With no database file, keep at most this many calls in memory (oldest ended first out).
    pub memory_max_calls: usize,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("StorageConfig")
            .field("database", &self.database)
            .field("postgres_url", &if self.postgres_url.is_empty() { "" } else { "<set>" })
            .field("postgres_ca_file", &self.postgres_ca_file)
            .field("retention_days", &self.retention_days)
            .field("memory_max_calls", &self.memory_max_calls)
            .finish()
    }
}

/// `[recording]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Record every call (a call plan's `record` decides per call).
    pub enabled: bool,
    /// Folder for `<call_id>.wav` (created owner-only).
    pub dir: String,
    /// 20 ms slots per call (at 8 kHz; scaled with the call's rate) between
    /// the call task and the recording mixer, which drains them every 50 ms.
    pub ring_slots: usize,
    /// Audio handed to the disk and not yet written, all calls together, in
    /// MiB (what a disk stall can take); beyond it audio is recorded as silence.
    pub max_buffered_mb: usize,
    /// How often the WAV header is rewritten (what survives a crash).
    pub header_update_ms: u64,
}

/// `[twilio]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// Twilio REST base URL (tests point it at a fake on loopback).
    pub api_base_url: String,
}

/// `[telnyx]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelnyxConfig {
    /// Call Control REST base URL (tests point it at a fake on loopback).
    pub api_url: String,
    /// G.711 law for the bidirectional stream: "PCMU" or "PCMA".
    pub codec: String,
    /// The Call Control application (connection) outbound calls are placed on ("" = no outbound calls).
    pub connection_id: String,
}

impl Default for TelnyxConfig {
    fn default() -> Self {
        Self { api_url: "https://api.telnyx.com".into(), codec: "PCMU".into(), connection_id: String::new() }
    }
}

/// `[vonage]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VonageConfig {
    /// Voice API base URL (tests point it at a fake on loopback).
    pub api_url: String,
    /// Sample rate of the WebSocket's 16-bit PCM: 8000 or 16000.
    pub rate: u32,
}

impl Default for VonageConfig {
    fn default() -> Self {
        Self { api_url: "https://api.nexmo.com".into(), rate: 16000 }
    }
}

/// `[webrtc]`: browser calls (`POST /webrtc/offer`, the `/phone` page).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Take browser calls at all.
    pub enabled: bool,
    /// Local addresses the per-call UDP sockets bind (port 0: any free port;
    /// each address gives one host candidate). Loopback by default: a real
    /// deployment lists its public interface, e.g. `["0.0.0.0:0"]`.
    pub udp_addrs: Vec<String>,
    /// With `udp_port_max`: the UDP ports calls' sockets take (one per call,
    /// on every address of `udp_addrs` whose port is 0), so a firewall can
    /// open one range; the range bounds concurrent browser calls. 0 and 0:
    /// any port the OS gives.
    pub udp_port_min: u16,
    /// Last port of the range (inclusive).
    pub udp_port_max: u16,
    /// Public addresses to advertise in place of the bound ones (a host
    /// behind 1:1 NAT, e.g. a cloud VM's public IP); empty: the bound ones.
    pub public_ips: Vec<String>,
    /// STUN/TURN server URLs offered to ICE (`stun:host:port`, `turn:host:port`).
    pub ice_servers: Vec<String>,
    /// Username for the TURN servers ("" = none).
    pub ice_username: String,
    /// How long to wait for ICE candidate gathering before answering, ms.
    pub gather_timeout_ms: u64,
    /// A browser call from which no media arrives for this long is over, ms
    /// (`call.ended` reason `idle_timeout`, heard as of the last packet). A
    /// browser sends a packet every 20 ms while its peer connection lives
    /// (we never negotiate DTX), so silence means the tab closed, crashed or
    /// lost its network: the WebRTC stack itself would notice only when ICE
    /// fails, ≈ 30 s later. Keep it above the longest network hiccup a call
    /// should survive.
    pub media_timeout_ms: u64,
    /// Opus encoder bitrate for the agent's voice, bit/s.
    pub opus_bitrate: i32,
    /// The call's PCM rate: libopus decodes to it and encodes from it (8000,
    /// 12000, 16000, 24000 or 48000). 16 kHz (wideband) by default: the
    /// engines take 8–24 kHz, and a frame in and out costs ≈ 1.6× as much at
    /// 48 kHz (BENCHMARKS.md §9).
    pub audio_rate: u32,
    /// Opus encoder complexity, 0–10 (libopus's own default is 9, which
    /// costs about twice what 5 does per frame; BENCHMARKS.md §9).
    pub opus_complexity: u8,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            udp_addrs: vec!["127.0.0.1:0".into()],
            udp_port_min: 0,
            udp_port_max: 0,
            public_ips: Vec::new(),
            ice_servers: Vec::new(),
            ice_username: String::new(),
            gather_timeout_ms: 2000,
            media_timeout_ms: 5000,
            opus_bitrate: 32_000,
            audio_rate: crate::carrier::webrtc::DEFAULT_RATE,
            opus_complexity: 5,
        }
    }
}

/// `[cluster]`: several nodes behind one load balancer, coordinated through
/// Redis. Off (one node, everything in process) while `redis_url` is empty.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]` ("" = single node). The
    /// environment's `CALLBRIDGE_REDIS_URL` wins over it (keeps a password
    /// out of the file). Never logged.
    pub redis_url: String,
    /// CA certificates (PEM) that verify Redis's certificate for a
    /// `rediss://` URL ("" = the public roots).
    pub redis_ca_file: String,
    /// This node's name in the cluster ("" = host name and a random suffix).
    /// Unique per running process.
    pub node_id: String,
    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    pub key_prefix: String,
    /// How often the node writes its live calls to Redis, ms.
    pub heartbeat_ms: u64,
    /// How long a call stays in the cluster view without a heartbeat, ms
    /// (a killed node's calls vanish after this; at least 2 heartbeats).
    pub call_ttl_ms: u64,
    /// How long a control request routed to another node waits for its
    /// answer, ms (a `say` with `audio_url` gets the audio fetch's 10 s on top).
    pub route_timeout_ms: u64,
    /// How long one Redis command may take before it counts as failed, ms.
    pub command_timeout_ms: u64,
    /// Where the other nodes reach this node's HTTP listener (e.g.
    /// `http://10.0.0.5:8080`), for the call data it keeps (transcripts,
    /// recordings): a request for it on another node is proxied here. ""
    /// = other nodes cannot reach this node's call data.
    pub advertise_url: String,
    /// Concurrent calls across the whole cluster (0 = no cluster-wide limit;
    /// each node still has `server.max_calls`). `limits.max_calls_per_tenant`
    /// counts across the cluster too.
    pub max_calls: usize,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("ClusterConfig")
            .field("redis_url", &if self.redis_url.is_empty() { "" } else { "<set>" })
            .field("redis_ca_file", &self.redis_ca_file)
            .field("node_id", &self.node_id)
            .field("key_prefix", &self.key_prefix)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("call_ttl_ms", &self.call_ttl_ms)
            .field("route_timeout_ms", &self.route_timeout_ms)
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field("max_calls", &self.max_calls)
            .field("advertise_url", &self.advertise_url)
            .finish()
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            redis_ca_file: String::new(),
            node_id: String::new(),
            key_prefix: "callbridge:".into(),
            heartbeat_ms: 1000,
            call_ttl_ms: 5000,
            route_timeout_ms: 3000,
            command_timeout_ms: 500,
            advertise_url: String::new(),
            max_calls: 0,
        }
    }
}

/// `[[numbers]]`: a number declared in the config file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NumberConfig {
    /// E.164 number, e.g. "+15551230000".
    pub number: String,
    /// Where callback events are POSTed.
    pub callback_url: String,
    /// HMAC secret for `X-Callbridge-Signature`.
    pub secret: String,
    /// Bearer token for this tenant's control API ("" = none).
    #[serde(default)]
    pub api_token: String,
    /// Transfer destinations allowed (number prefixes like "+1", SIP domains
    /// like "pbx.example.com" or "*.example.com"); empty = the number's own country only.
    #[serde(default)]
    pub transfer_allow: Vec<String>,
    /// The carrier the number is with (`twilio`, `telnyx`, `vonage`); "" = any.
    #[serde(default)]
    pub carrier: String,
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
    /// Check `X-Twilio-Signature` on webhooks and stream upgrades (needs env
    /// `TWILIO_AUTH_TOKEN`). `false` is for local development only.
    pub validate_twilio_signatures: bool,
    /// A stream that sends no `start` within this long is closed.
    pub start_timeout_ms: u64,
    /// A call announced by a webhook whose stream has not connected after this
    /// long is over (`call.ended` reason `no_stream`).
    pub stream_wait_ms: u64,
    /// Development only: answer registered (tenant) numbers whose webhook was
    /// not signed. Off, an unsigned request for a tenant's number is refused.
    pub allow_unsigned_tenant_calls: bool,
    /// Serve `/metrics` and the admin API (`/v1/numbers`) on this address
    /// instead of the public listener ("" = on the public listener; there
    /// `/metrics` needs `CALLBRIDGE_METRICS_TOKEN` unless it listens on loopback).
    pub admin_listen: String,
}

/// `[engine]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Which engine answers calls without a plan choice (a registered engine
    /// name: `local`, `openai_realtime`).
    pub kind: String,
    /// The embedded local engine.
    pub local: LocalEngineConfig,
    /// OpenAI Realtime (`[engine.openai_realtime]`).
    pub openai_realtime: OpenAiRealtimeConfig,
    /// Deepgram → the backend → ElevenLabs (`[engine.cascaded]`).
    #[serde(default)]
    pub cascaded: crate::engine::cascaded::CascadedSettings,
}

/// `[engine.openai_realtime]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenAiRealtimeConfig {
    /// WebSocket endpoint (env `OPENAI_REALTIME_URL` overrides); `?model=` is added.
    pub url: String,
    /// Model.
    pub model: String,
    /// Interface generation: "ga" (the beta interface is retired and refused).
    pub api: String,
    /// Voice (a call plan may override).
    pub voice: String,
    /// Instructions when the plan gives none.
    pub instructions: String,
    /// Said first when the plan gives no greeting ("" = wait for the caller).
    pub greeting: String,
    /// "local" (our VAD ends turns and creates responses) or "server_vad".
    pub turn_detection: crate::engine::openai_realtime::TurnMode,
    /// Input transcription model for `turn.user` transcripts ("" = none).
    pub transcription_model: String,
    /// Server VAD silence before the engine answers (server_vad only).
    pub silence_duration_ms: u32,
    /// Deadline for connecting to the engine.
    pub connect_timeout_ms: u64,
    /// Messages queued towards the engine per call before audio is dropped.
    pub max_queued_messages: usize,
    /// A response asked for with nothing from the engine for this long is
    /// given up (the caller hears the fallback; the call goes on).
    pub answer_timeout_ms: u64,
    /// Caller audio per `input_audio_buffer.append` in local turn mode, ms
    /// (sent whole at the end of the turn; 0 = every frame).
    pub append_ms: u32,
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

    /// The public HTTP(S) base URL (the stream URL with `ws`→`http`), which
    /// Twilio signs webhook requests with.
    pub fn public_http_url(&self) -> String {
        let u = self.server.public_url.trim_end_matches('/');
        match u.split_once("://") {
            Some(("wss", rest)) => format!("https://{rest}"),
            Some(("ws", rest)) => format!("http://{rest}"),
            _ => u.to_string(),
        }
    }

    /// This configuration with every secret replaced by `<redacted>` (for the
    /// start-up log: numbers' signing secrets and API tokens).
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if !c.cluster.redis_url.is_empty() {
            c.cluster.redis_url = "<redacted>".into();
        }
        if !c.storage.postgres_url.is_empty() {
            c.storage.postgres_url = "<redacted>".into();
        }
        for n in &mut c.numbers {
            for s in [&mut n.secret, &mut n.api_token] {
                if !s.is_empty() {
                    *s = "<redacted>".into();
                }
            }
        }
        c
    }

    /// Session settings for one call (the plan may still change turns; the
    /// agent's part is filled in per call).
    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            turn: self.turn.clone(),
            vad: self.vad.clone(),
            playback: self.playback.clone(),
            ..SessionConfig::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        self.turn.validate().map_err(ConfigError::Invalid)?;
        let w = &self.webrtc;
        if (w.udp_port_min == 0) != (w.udp_port_max == 0) || w.udp_port_min > w.udp_port_max {
            return bad("webrtc.udp_port_min and udp_port_max: both 0 (any port) or a range min <= max");
        }
        if ![8000, 12000, 16000, 24000, 48000].contains(&w.audio_rate) {
            return bad("webrtc.audio_rate: 8000, 12000, 16000, 24000 or 48000");
        }
        if w.opus_complexity > 10 {
            return bad("webrtc.opus_complexity: 0 to 10");
        }
        if w.media_timeout_ms < 200 {
            return bad("webrtc.media_timeout_ms: at least 200 (a browser sends media every 20 ms)");
        }
        if self.engine.openai_realtime.append_ms > 1000 {
            return bad("engine.openai_realtime.append_ms: at most 1000");
        }
        if self.recording.max_buffered_mb == 0 {
            return bad("recording.max_buffered_mb: at least 1 (audio waiting for the disk)");
        }
        let c = &self.cluster;
        if c.heartbeat_ms == 0 || c.call_ttl_ms < 2 * c.heartbeat_ms {
            return bad("cluster.call_ttl_ms must be at least twice cluster.heartbeat_ms (> 0)");
        }
        if c.route_timeout_ms == 0 || c.command_timeout_ms == 0 {
            return bad("cluster.route_timeout_ms and command_timeout_ms must be > 0");
        }
        if !c.advertise_url.is_empty()
            && !url::Url::parse(&c.advertise_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.path() == "/")
        {
            return bad("cluster.advertise_url: an http(s) origin such as http://10.0.0.5:8080");
        }
        if c.key_prefix.is_empty() || c.node_id.contains([':', ' ', '*', '?', '[']) {
            return bad(
                "cluster.key_prefix must not be empty; cluster.node_id must not hold ':', spaces or glob characters",
            );
        }
        let Ok(addrs) = w.udp_addrs.iter().map(|a| a.parse::<std::net::SocketAddr>()).collect::<Result<Vec<_>, _>>()
        else {
            return bad("webrtc.udp_addrs: each must be ip:port (port 0: any, or from the port range)");
        };
        if w.udp_port_min != 0 {
            // Every call binds the leased port on each address: each must take it, and two
            // addresses of one family must not overlap (a wildcard covers the others).
            if addrs.iter().any(|a| a.port() != 0) {
                return bad("webrtc.udp_addrs: with a port range, every address needs port 0");
            }
            for fam in [true, false] {
                let same: Vec<_> = addrs.iter().filter(|a| a.is_ipv4() == fam).collect();
                if same.len() > 1 && same.iter().any(|a| a.ip().is_unspecified()) {
                    return bad("webrtc.udp_addrs: a wildcard address overlaps the family's other addresses");
                }
            }
        }
        if self.turn.detector == crate::session::turn::Detector::Smart
            && (self.turn_model.model.is_empty() || self.turn_model.runtime.is_empty())
        {
            return bad("turn.detector = \"smart\" needs turn_model.model and turn_model.runtime \
                 (run scripts/fetch-smart-turn.sh)");
        }
        if !(1..=64).contains(&self.turn_model.workers) || !(1..=4096).contains(&self.turn_model.queue) {
            return bad("turn_model.workers must be within 1..=64 and turn_model.queue within 1..=4096");
        }
        if !matches!(self.vonage.rate, 8000 | 16000) {
            return bad("vonage.rate must be 8000 or 16000");
        }
        if !matches!(self.telnyx.codec.as_str(), "PCMU" | "PCMA") {
            return bad("telnyx.codec must be \"PCMU\" or \"PCMA\"");
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
        if self.callbacks.max_attempts == 0 || self.callbacks.max_attempts > 20 {
            return bad("callbacks.max_attempts must be within 1..=20");
        }
        crate::netguard::NetPolicy::new(&self.callbacks.allow_private_networks)
            .map_err(|e| ConfigError::Invalid(format!("callbacks.allow_private_networks: {e}")))?;
        if self.callbacks.blocking_timeout_ms == 0 || self.callbacks.max_queued_events == 0 {
            return bad("callbacks.blocking_timeout_ms and callbacks.max_queued_events must be positive");
        }
        for n in &self.numbers {
            if !crate::tenant::is_e164(&n.number) {
                return Err(ConfigError::Invalid(format!("numbers: {:?} is not an E.164 number", n.number)));
            }
            crate::tenant::check_callback_url(&n.callback_url)
                .map_err(|e| ConfigError::Invalid(format!("numbers {}: {e}", n.number)))?;
            if !crate::tenant::valid_carrier(&n.carrier) {
                return Err(ConfigError::Invalid(format!(
                    "numbers {}: carrier must be one of {:?} (or absent: any)",
                    n.number,
                    crate::tenant::CARRIERS
                )));
            }
        }
        match self.engine.openai_realtime.api.as_str() {
            "ga" => {}
            "beta" => {
                return bad(
                    "engine.openai_realtime.api = \"beta\": OpenAI retired the beta Realtime interface in 2026 \
                     (beta sessions are refused with beta_api_shape_disabled); use \"ga\"",
                );
            }
            other => return Err(ConfigError::Invalid(format!("engine.openai_realtime.api = {other:?}: use \"ga\""))),
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
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap());
        assert_eq!(c.engine.kind, "local");
        // default.toml mirrors every default in code
        assert_eq!(c.turn, crate::session::turn::TurnConfig::default());
        assert_eq!(c.vad, crate::audio::vad::VadConfig::default());
        assert_eq!(c.playback, crate::session::playback::PlaybackConfig::default());
        assert_eq!(c.webrtc, WebRtcConfig::default());
    }

    #[test]
    fn webrtc_settings_that_cannot_work_are_refused() {
        let bad = |t: &str| Config::from_toml(&format!("[webrtc]\n{t}\n"), "t").unwrap_err().to_string();
        assert!(bad("udp_port_min = 40000").contains("udp_port_min"));
        assert!(bad("udp_port_min = 40010\nudp_port_max = 40000").contains("udp_port_min"));
        assert!(bad("udp_port_min = 40000\nudp_port_max = 40010\nudp_addrs = [\"127.0.0.1:5000\"]").contains("port 0"));
        assert!(
            bad("udp_port_min = 40000\nudp_port_max = 40010\nudp_addrs = [\"0.0.0.0:0\", \"127.0.0.1:0\"]")
                .contains("wildcard")
        );
        assert!(bad("udp_addrs = [\"localhost\"]").contains("ip:port"));
        assert!(bad("audio_rate = 44100").contains("audio_rate"));
        assert!(bad("opus_complexity = 11").contains("opus_complexity"));
        let ok = "[webrtc]\nudp_port_min = 40000\nudp_port_max = 40010\nudp_addrs = [\"0.0.0.0:0\", \"[::]:0\"]\n";
        assert!(Config::from_toml(ok, "t").is_ok(), "a wildcard per family is fine");
    }

    #[test]
    fn cluster_settings_that_cannot_work_are_refused_and_the_url_is_never_shown() {
        let bad = |t: &str| Config::from_toml(&format!("[cluster]\n{t}\n"), "t").unwrap_err().to_string();
        assert!(bad("heartbeat_ms = 1000\ncall_ttl_ms = 1500").contains("call_ttl_ms"));
        assert!(bad("heartbeat_ms = 0").contains("heartbeat_ms"));
        assert!(bad("node_id = \"a:b\"").contains("node_id"));
        assert!(bad("key_prefix = \"\"").contains("key_prefix"));
        let c = Config::from_toml("[cluster]\nredis_url = \"redis://:hunter2@10.0.0.9:6379/\"\n", "t").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "Debug hides the password");
        assert!(!toml::to_string(&c.redacted()).unwrap().contains("hunter2"), "the logged config hides it");
        assert_eq!(Config::from_toml("", "t").unwrap().cluster, ClusterConfig::default(), "off by default");
        let c = Config::from_toml("[storage]\npostgres_url = \"postgres://cb:hunter2@10.0.0.9/cb\"\n", "t").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "Debug hides the PostgreSQL password");
        assert!(!toml::to_string(&c.redacted()).unwrap().contains("hunter2"), "the logged config hides it");
        assert!(Config::from_toml("", "t").unwrap().storage.postgres_url.is_empty(), "SQLite by default");
    }

    #[test]
    fn partial_file_overrides_and_typos_are_errors() {
        let c = Config::from_toml("[turn]\nendpoint_silence_ms = 300\n", "t").unwrap();
        assert_eq!(c.turn.endpoint_silence_ms, 300);
        assert_eq!(c.server.listen.port(), 8080);
        let e = Config::from_toml("[turn]\nendpoint_silense_ms = 300\n", "t").unwrap_err();
        assert!(e.to_string().contains("endpoint_silense_ms"), "{e}");
        assert!(Config::from_toml("[turn]\nendpoint_silence_ms = 10\n", "t").is_err());
        let beta = Config::from_toml("[engine.openai_realtime]\napi = \"beta\"\n", "t").unwrap_err();
        assert!(beta.to_string().contains("retired"), "{beta}");
    }
}
