//! [`FakeDeepgram`] is a FAKE Deepgram live-transcription server on loopback
//! speaking the real `/v1/listen` protocol (PROTOCOLS §6.2): binary audio in
//! (µ-law or linear16, per the query), `KeepAlive` / `Finalize` /
//! `CloseStream` text messages, `Results` (interim and final, with word
//! timings), `SpeechStarted` and `Metadata` out. It recognises nothing: each
//! run of loud audio followed by `endpointing` ms of quiet (or a `Finalize`)
//! is "said" as the next line of its script, words spread evenly over the run.
//! It can drop the first connection mid-utterance.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

/// How the fake behaves.
#[derive(Debug, Clone, Default)]
pub struct FakeDeepgramConfig {
    /// What the caller "says", one line per utterance, in order.
    pub script: Vec<String>,
    /// Close connection 1 abruptly once it has received this many audio bytes.
    pub drop_after_bytes: Option<usize>,
}

#[derive(Default)]
struct Shared {
    connections: AtomicU32,
    /// Next script line.
    line: AtomicUsize,
    /// (Authorization header, query) per connection.
    opened: Mutex<Vec<(String, HashMap<String, String>)>>,
    /// Text messages received.
    controls: Mutex<Vec<Value>>,
    /// Audio bytes received, per connection.
    audio: Mutex<Vec<Vec<u8>>>,
    /// Final transcripts sent.
    finals: Mutex<Vec<String>>,
}

/// A running fake.
pub struct FakeDeepgram {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDeepgram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDeepgram {
    /// Start on 127.0.0.1 (random port).
    pub async fn start(cfg: FakeDeepgramConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new().route("/v1/listen", get(upgrade)).with_state((Arc::new(cfg), shared.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The `DEEPGRAM_URL` to give callbridge.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/listen", self.addr)
    }

    /// Connections accepted.
    pub fn connections(&self) -> u32 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// (Authorization, query) of each connection.
    pub fn opened(&self) -> Vec<(String, HashMap<String, String>)> {
        self.shared.opened.lock().expect("lock").clone()
    }

    /// Control messages received (`KeepAlive`, `Finalize`, `CloseStream`).
    pub fn controls(&self) -> Vec<Value> {
        self.shared.controls.lock().expect("lock").clone()
    }

    /// Audio bytes received on each connection.
    pub fn audio(&self) -> Vec<Vec<u8>> {
        self.shared.audio.lock().expect("lock").clone()
    }

    /// Final transcripts it sent, in order.
    pub fn finals(&self) -> Vec<String> {
        self.shared.finals.lock().expect("lock").clone()
    }
}

type St = (Arc<FakeDeepgramConfig>, Arc<Shared>);

async fn upgrade(
    State((cfg, shared)): State<St>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let n = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    shared.opened.lock().expect("lock").push((auth, q.clone()));
    shared.audio.lock().expect("lock").push(Vec::new());
    ws.on_upgrade(move |socket| serve(socket, cfg, shared, q, n))
}

/// One connection's recogniser state.
struct Listener {
    bytes_per_sample: usize,
    rate: usize,
    endpointing_ms: usize,
    /// Samples received.
    pos: usize,
    /// Current loud run: its start and last loud sample.
    run: Option<(usize, usize)>,
    /// Partial frame of samples.
    acc: Vec<i16>,
    last_interim: usize,
}

impl Listener {
    fn secs(&self, samples: usize) -> f64 {
        samples as f64 / self.rate as f64
    }
}

async fn serve(
    mut socket: WebSocket,
    cfg: Arc<FakeDeepgramConfig>,
    shared: Arc<Shared>,
    q: HashMap<String, String>,
    n: u32,
) {
    let linear = q.get("encoding").is_some_and(|e| e == "linear16");
    let rate: usize = q.get("sample_rate").and_then(|r| r.parse().ok()).unwrap_or(8000);
    let mut l = Listener {
        bytes_per_sample: if linear { 2 } else { 1 },
        rate,
        endpointing_ms: q.get("endpointing").and_then(|e| e.parse().ok()).unwrap_or(10),
        pos: 0,
        run: None,
        acc: Vec::new(),
        last_interim: 0,
    };
    let vad_events = q.get("vad_events").is_some_and(|v| v == "true");
    let mut received = 0usize;
    while let Some(Ok(msg)) = socket.recv().await {
        let mut out: Vec<Value> = Vec::new();
        match msg {
            Message::Binary(b) => {
                received += b.len();
                shared.audio.lock().expect("lock")[n as usize - 1].extend_from_slice(&b);
                if n == 1 && cfg.drop_after_bytes.is_some_and(|d| received >= d) {
                    return; // abrupt: no close frame
                }
                let samples: Vec<i16> = if l.bytes_per_sample == 2 {
                    b.chunks_exact(2).map(|p| i16::from_le_bytes([p[0], p[1]])).collect()
                } else {
                    b.iter().map(|&x| callbridge::audio::g711::ulaw_decode_sample(x)).collect()
                };
                l.acc.extend(samples);
                let frame = l.rate / 50;
                while l.acc.len() >= frame {
                    let f: Vec<i16> = l.acc.drain(..frame).collect();
                    let loud = f.iter().map(|s| s.unsigned_abs() as u64).sum::<u64>() / frame as u64 > 300;
                    let at = l.pos;
                    l.pos += frame;
                    match (&mut l.run, loud) {
                        (None, true) => {
                            l.run = Some((at, l.pos));
                            l.last_interim = at;
                            if vad_events {
                                out.push(json!({"type": "SpeechStarted", "channel": [0], "timestamp": l.secs(at)}));
                            }
                        }
                        (Some(r), true) => r.1 = l.pos,
                        (Some(r), false) if (l.pos - r.1) * 1000 / l.rate >= l.endpointing_ms => {
                            let run = *r;
                            l.run = None;
                            out.push(say(&cfg, &shared, &l, run, true, false));
                        }
                        _ => {}
                    }
                    if let Some(r) = l.run
                        && l.pos - l.last_interim >= l.rate * 3 / 10
                    {
                        l.last_interim = l.pos;
                        out.push(say(&cfg, &shared, &l, r, false, false));
                    }
                }
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                shared.controls.lock().expect("lock").push(v.clone());
                match v["type"].as_str() {
                    Some("Finalize") => match l.run.take() {
                        Some(run) => out.push(say(&cfg, &shared, &l, run, true, true)),
                        None => out.push(json!({"type": "Results", "is_final": true, "speech_final": false,
                            "from_finalize": true, "start": l.secs(l.pos), "duration": 0.0,
                            "channel": {"alternatives": [{"transcript": "", "confidence": 0.0, "words": []}]}})),
                    },
                    Some("CloseStream") => {
                        if let Some(run) = l.run.take() {
                            out.push(say(&cfg, &shared, &l, run, true, false));
                        }
                        out.push(json!({"type": "Metadata", "request_id": "fake", "duration": l.secs(l.pos)}));
                        for v in out {
                            let _ = socket.send(Message::text(v.to_string())).await;
                        }
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                    _ => {} // KeepAlive: no reply
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
        for v in out {
            if socket.send(Message::text(v.to_string())).await.is_err() {
                return;
            }
        }
    }
}

/// A `Results` message for `run`: final takes the next script line, interim
/// a prefix of it proportional to the run so far.
fn say(
    cfg: &FakeDeepgramConfig,
    shared: &Shared,
    l: &Listener,
    run: (usize, usize),
    is_final: bool,
    finalize: bool,
) -> Value {
    let idx = shared.line.load(Ordering::Relaxed);
    let line = cfg.script.get(idx % cfg.script.len().max(1)).cloned().unwrap_or_default();
    let words: Vec<&str> = line.split_whitespace().collect();
    let (start, end) = (l.secs(run.0), l.secs(run.1.max(run.0 + 1)));
    let shown =
        if is_final { words.len() } else { (words.len() * (l.pos - run.0) / (l.rate * 2)).clamp(1, words.len()) };
    let step = (end - start) / words.len().max(1) as f64;
    let timed: Vec<Value> = words[..shown.min(words.len())]
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"word": w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase(), "start": start + step * i as f64,
            "end": start + step * (i + 1) as f64, "confidence": 0.99, "punctuated_word": w}))
        .collect();
    let transcript = words[..shown.min(words.len())].join(" ");
    if is_final {
        shared.line.fetch_add(1, Ordering::Relaxed);
        shared.finals.lock().expect("lock").push(transcript.clone());
    }
    let end_at = if is_final { l.secs(l.pos) } else { end };
    json!({"type": "Results", "channel_index": [0, 1], "start": start, "duration": end_at - start,
        "is_final": is_final, "speech_final": is_final && !finalize, "from_finalize": finalize,
        "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.98, "words": timed}]},
        "metadata": {"request_id": "fake", "model_info": {"name": "fake", "version": "0", "arch": "fake"}}})
}
