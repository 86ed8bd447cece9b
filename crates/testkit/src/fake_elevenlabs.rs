//! [`FakeElevenLabs`] is a FAKE ElevenLabs multi-context text-to-speech
//! server on loopback speaking the real
//! `/v1/text-to-speech/{voice_id}/multi-stream-input` protocol (PROTOCOLS
//! §6.1): per-context initialise / text / `flush` / `close_context`, the
//! keep-alive (empty text), `close_socket`; it answers with base64 audio
//! (`ulaw_8000` or `pcm_16000`, per the query) carrying per-character
//! `alignment` relative to each chunk, and `isFinal` when a closed context
//! has spoken everything. Its "voice" is a tone, `ms_per_char` long per
//! character; it can be slower than real time. It records what it received.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeElevenLabsConfig {
    /// Audio per character.
    pub ms_per_char: u32,
    /// Characters per audio message.
    pub chars_per_chunk: usize,
    /// Wait before each audio message (0: as fast as it can; above
    /// `ms_per_char * chars_per_chunk`: slower than real time).
    pub chunk_delay_ms: u64,
    /// Take every message and never speak (a voice gone silent).
    pub mute: bool,
}

impl Default for FakeElevenLabsConfig {
    fn default() -> Self {
        Self { ms_per_char: 60, chars_per_chunk: 10, chunk_delay_ms: 0, mute: false }
    }
}

/// One connection: voice id, `xi-api-key`, query.
pub type Opened = (String, String, HashMap<String, String>);

#[derive(Default)]
struct Shared {
    connections: AtomicU32,
    /// (voice id, xi-api-key, query) per connection.
    opened: Mutex<Vec<Opened>>,
    /// Every message received, in order.
    received: Mutex<Vec<Value>>,
}

/// A running fake.
pub struct FakeElevenLabs {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeElevenLabs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeElevenLabs {
    /// Start on 127.0.0.1 (random port).
    pub async fn start(cfg: FakeElevenLabsConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/text-to-speech/{voice}/multi-stream-input", get(upgrade))
            .with_state((Arc::new(cfg), shared.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The `ELEVENLABS_URL` to give callbridge.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Connections accepted.
    pub fn connections(&self) -> u32 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// (voice id, `xi-api-key`, query) of each connection.
    pub fn opened(&self) -> Vec<Opened> {
        self.shared.opened.lock().expect("lock").clone()
    }

    /// Messages received, in order.
    pub fn received(&self) -> Vec<Value> {
        self.shared.received.lock().expect("lock").clone()
    }
}

type St = (Arc<FakeElevenLabsConfig>, Arc<Shared>);

async fn upgrade(
    State((cfg, shared)): State<St>,
    Path(voice): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let key = headers.get("xi-api-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let pcm = q.get("output_format").is_some_and(|f| f.starts_with("pcm_"));
    shared.opened.lock().expect("lock").push((voice, key, q));
    ws.on_upgrade(move |socket| serve(socket, cfg, shared, pcm))
}

/// Work for a context's speaker task.
enum Job {
    Speak(String),
    Close,
}

async fn serve(socket: WebSocket, cfg: Arc<FakeElevenLabsConfig>, shared: Arc<Shared>, pcm: bool) {
    use futures_util::{SinkExt, StreamExt};
    let (mut tx, mut rx) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if tx.send(Message::text(m)).await.is_err() {
                break;
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    });
    // One speaker per context: text buffered until a flush, spoken in order.
    let mut contexts: HashMap<String, (mpsc::UnboundedSender<Job>, String)> = HashMap::new();
    let mut speakers = Vec::new();
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(t) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
        shared.received.lock().expect("lock").push(v.clone());
        if v["close_socket"] == true {
            break;
        }
        if cfg.mute {
            continue;
        }
        let id = v["context_id"].as_str().unwrap_or("default").to_string();
        let (jobs, buffered) = contexts.entry(id.clone()).or_insert_with(|| {
            let (jtx, jrx) = mpsc::unbounded_channel();
            speakers.push(tokio::spawn(speaker(cfg.clone(), id.clone(), jrx, out_tx.clone(), pcm)));
            (jtx, String::new())
        });
        if let Some(text) = v["text"].as_str() {
            buffered.push_str(text);
        }
        if v["flush"] == true || v["close_context"] == true {
            let text = std::mem::take(buffered);
            if !text.trim().is_empty() {
                let _ = jobs.send(Job::Speak(text.trim().to_string()));
            }
        }
        if v["close_context"] == true {
            let _ = jobs.send(Job::Close);
            contexts.remove(&id);
        }
    }
    for s in speakers {
        s.abort();
    }
    drop(out_tx);
    let _ = writer.await;
}

/// Speak a context's flushed texts in order; a `Close` ends it with
/// `isFinal` once what was flushed before it is spoken (as the service
/// documents: a closed context "will continue flushing").
async fn speaker(
    cfg: Arc<FakeElevenLabsConfig>,
    id: String,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    out: mpsc::Sender<String>,
    pcm: bool,
) {
    let rate = if pcm { 16000 } else { 8000 };
    while let Some(job) = jobs.recv().await {
        let text = match job {
            Job::Speak(t) => t + " ",
            Job::Close => break,
        };
        let chars: Vec<char> = text.chars().collect();
        let mut tick = tokio::time::interval(Duration::from_millis(cfg.chunk_delay_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for chunk in chars.chunks(cfg.chars_per_chunk.max(1)) {
            if cfg.chunk_delay_ms > 0 {
                tick.tick().await;
            }
            let samples = chunk.len() * cfg.ms_per_char as usize * rate / 1000;
            let audio: Vec<u8> = (0..samples)
                .flat_map(|i| {
                    let s = (((i as f32) * 2.0 * std::f32::consts::PI * 440.0 / rate as f32).sin() * 6000.0) as i16;
                    if pcm { s.to_le_bytes().to_vec() } else { vec![callbridge::audio::g711::ulaw_encode_sample(s)] }
                })
                .collect();
            let starts: Vec<u32> = (0..chunk.len()).map(|i| i as u32 * cfg.ms_per_char).collect();
            let msg = json!({
                "audio": base64::engine::general_purpose::STANDARD.encode(audio),
                "contextId": id,
                "isFinal": null,
                "alignment": {"chars": chunk.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                    "charStartTimesMs": starts, "charDurationsMs": vec![cfg.ms_per_char; chunk.len()]},
                "normalizedAlignment": null,
            });
            if out.send(msg.to_string()).await.is_err() {
                return;
            }
        }
    }
    let _ = out.send(json!({"isFinal": true, "contextId": id}).to_string()).await;
}
