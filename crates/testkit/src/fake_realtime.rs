//! [`FakeRealtime`] is a FAKE OpenAI Realtime server on loopback that speaks
//! the real GA event protocol (PROTOCOLS §5): it accepts
//! `session.update`, `input_audio_buffer.append/commit`, `response.create`,
//! `response.cancel`, `conversation.item.truncate` and
//! `conversation.item.create`; it answers with a canned µ-law clip as audio
//! deltas (all at once, faster than real time, as the real service does),
//! a transcript, function calls, `error` events, or a dropped socket, and it
//! records everything it received. A socket opened with the retired beta
//! header is refused the way the service refuses it (`error`
//! `beta_api_shape_disabled`, then close 4000). It understands nothing it hears.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeRealtimeConfig {
    /// µ-law audio of every spoken response.
    pub reply_ulaw: Arc<[u8]>,
    /// Audio per delta, in ms.
    pub delta_ms: u32,
    /// The first `response.create` after caller audio yields this function call
    /// (name, JSON arguments) instead of audio.
    pub tool_call: Option<(String, String)>,
    /// Transcript sent after each commit.
    pub transcript: Option<String>,
    /// Drop connection number 1 (abruptly) after this many audio deltas.
    pub drop_after_deltas: Option<u32>,
    /// Refuse connections after the first one (a persistent failure).
    pub refuse_reconnect: bool,
    /// Refuse every upgrade with this HTTP status (401: bad key, 429: quota).
    pub refuse_status: Option<u16>,
    /// Server VAD: emit `input_audio_buffer.speech_started` when loud caller
    /// audio starts (once per run of loud appends).
    pub server_vad: bool,
    /// Say nothing at all (socket open, no `response.created`, no error) to
    /// this many `response.create`s after caller audio: an engine gone silent.
    pub ignore_creates: u32,
}

impl FakeRealtimeConfig {
    /// Answers every response with `reply_ulaw`, GA names.
    pub fn new(reply_ulaw: Arc<[u8]>) -> Self {
        Self {
            reply_ulaw,
            delta_ms: 100,
            tool_call: None,
            transcript: None,
            drop_after_deltas: None,
            refuse_reconnect: false,
            refuse_status: None,
            server_vad: false,
            ignore_creates: 0,
        }
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<(Instant, Value)>>,
    appended: Mutex<Vec<u8>>,
    appends: AtomicU64,
    connections: AtomicU32,
    headers: Mutex<Vec<(String, Option<String>)>>,
    responses: AtomicU32,
    ignored: AtomicU32,
    tool_used: Mutex<bool>,
}

/// A running fake.
pub struct FakeRealtime {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRealtime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRealtime {
    /// Start on 127.0.0.1 (random port).
    pub async fn start(cfg: FakeRealtimeConfig) -> std::io::Result<Self> {
        Self::start_on(cfg, 0).await
    }

    /// Start on 127.0.0.1:`port` (0 = random).
    pub async fn start_on(cfg: FakeRealtimeConfig, port: u16) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new().route("/v1/realtime", get(upgrade)).with_state((Arc::new(cfg), shared.clone()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The URL to give callbridge.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/realtime", self.addr)
    }

    /// Client events received (all but `input_audio_buffer.append`), with arrival times.
    pub fn received(&self) -> Vec<(Instant, Value)> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Client events of one type.
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.received().into_iter().filter(|(_, v)| v["type"] == kind).map(|(_, v)| v).collect()
    }

    /// Every appended audio byte, in order.
    pub fn appended(&self) -> Vec<u8> {
        self.shared.appended.lock().expect("lock").clone()
    }

    /// `append` messages received.
    pub fn appends(&self) -> u64 {
        self.shared.appends.load(Ordering::Relaxed)
    }

    /// Connections accepted.
    pub fn connections(&self) -> u32 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// (Authorization, OpenAI-Beta) header of each connection.
    pub fn headers(&self) -> Vec<(String, Option<String>)> {
        self.shared.headers.lock().expect("lock").clone()
    }

    /// Wait (bounded) until `n` events of `kind` arrived.
    pub async fn wait_for(&self, kind: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.of_type(kind);
            if v.len() >= n || Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

type St = (Arc<FakeRealtimeConfig>, Arc<Shared>);

async fn upgrade(State((cfg, shared)): State<St>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if let Some(s) = cfg.refuse_status {
        return (StatusCode::from_u16(s).unwrap_or(StatusCode::UNAUTHORIZED), "{\"error\":\"refused\"}")
            .into_response();
    }
    let n = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    if n > 1 && cfg.refuse_reconnect {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    shared.headers.lock().expect("lock").push((h("authorization").unwrap_or_default(), h("openai-beta")));
    let beta = h("openai-beta").is_some();
    ws.max_message_size(16 << 20).on_upgrade(move |socket| async move {
        if beta { refuse_beta(socket).await } else { serve(socket, cfg, shared, n).await }
    })
}

/// What the service does to a beta-interface socket since it retired it.
async fn refuse_beta(mut ws: WebSocket) {
    use axum::extract::ws::CloseFrame;
    let err = json!({"type": "error", "error": {"type": "invalid_request_error", "code": "beta_api_shape_disabled",
        "message": "The beta Realtime API interface is no longer supported."}});
    let _ = ws.send(Message::text(err.to_string())).await;
    let _ = ws.send(Message::Close(Some(CloseFrame { code: 4000, reason: "beta_api_shape_disabled".into() }))).await;
}

struct Conn {
    ws: WebSocket,
    deltas_sent: u32,
    drop_after: Option<u32>,
}

impl Conn {
    async fn send(&mut self, v: Value) -> bool {
        self.ws.send(Message::text(v.to_string())).await.is_ok()
    }
}

async fn serve(ws: WebSocket, cfg: Arc<FakeRealtimeConfig>, shared: Arc<Shared>, n: u32) {
    let mut c = Conn { ws, deltas_sent: 0, drop_after: if n == 1 { cfg.drop_after_deltas } else { None } };
    let b64 = base64::engine::general_purpose::STANDARD;
    let _ = c.send(json!({"type": "session.created", "session": {"id": format!("sess_{n}")}})).await;
    let mut active: Option<String> = None;
    let mut since_commit = false;
    let mut in_speech = false;
    while let Some(Ok(msg)) = c.ws.recv().await {
        let Message::Text(t) = msg else { continue };
        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
        let kind = v["type"].as_str().unwrap_or("").to_string();
        if kind == "input_audio_buffer.append" {
            shared.appends.fetch_add(1, Ordering::Relaxed);
            let bytes = b64.decode(v["audio"].as_str().unwrap_or("")).unwrap_or_default();
            let loud = bytes.iter().any(|&b| (b & 0x7F) < 0x50);
            shared.appended.lock().expect("lock").extend_from_slice(&bytes);
            since_commit = true;
            if cfg.server_vad && loud && !in_speech {
                let _ = c
                    .send(
                        json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_in"}),
                    )
                    .await;
            }
            in_speech = loud;
            continue;
        }
        shared.received.lock().expect("lock").push((Instant::now(), v.clone()));
        let ok = match kind.as_str() {
            "session.update" => c.send(json!({"type": "session.updated", "session": v["session"]})).await,
            "input_audio_buffer.commit" => {
                let mut ok = c.send(json!({"type": "input_audio_buffer.committed", "item_id": "item_user"})).await;
                if let Some(t) = &cfg.transcript {
                    ok &= c
                        .send(json!({"type": "conversation.item.input_audio_transcription.completed",
                            "item_id": "item_user", "content_index": 0, "transcript": t}))
                        .await;
                }
                ok
            }
            "response.cancel" => {
                if let Some(id) = active.take() {
                    c.send(json!({"type": "response.done", "response": {"id": id, "status": "cancelled"}})).await
                } else {
                    c.send(json!({"type": "error", "error": {"type": "invalid_request_error",
                        "code": "response_cancel_not_active", "message": "no active response"}}))
                        .await
                }
            }
            "conversation.item.truncate" => {
                c.send(json!({"type": "conversation.item.truncated", "item_id": v["item_id"],
                    "content_index": 0, "audio_end_ms": v["audio_end_ms"]}))
                    .await
            }
            "response.create" if since_commit && shared.ignored.load(Ordering::Relaxed) < cfg.ignore_creates => {
                shared.ignored.fetch_add(1, Ordering::Relaxed);
                since_commit = false;
                true
            }
            "response.create" => {
                let r = shared.responses.fetch_add(1, Ordering::Relaxed) + 1;
                let id = format!("resp_{n}_{r}");
                let tool = {
                    let mut used = shared.tool_used.lock().expect("lock");
                    match (&cfg.tool_call, *used, since_commit) {
                        (Some(t), false, true) => {
                            *used = true;
                            Some(t.clone())
                        }
                        _ => None,
                    }
                };
                since_commit = false;
                match tool {
                    Some((name, args)) => respond_tool(&mut c, &id, &name, &args).await,
                    None => {
                        active = Some(id.clone());
                        let ok = respond_audio(&mut c, &id, &cfg).await;
                        if ok && active.is_some() {
                            active = None;
                            c.send(json!({"type": "response.done", "response": {"id": id, "status": "completed"}}))
                                .await
                        } else {
                            ok
                        }
                    }
                }
            }
            _ => true,
        };
        if !ok {
            return; // dropped (deliberately or not)
        }
    }
}

async fn respond_tool(c: &mut Conn, id: &str, name: &str, args: &str) -> bool {
    c.send(json!({"type": "response.created", "response": {"id": id, "status": "in_progress"}})).await
        && c.send(json!({"type": "response.output_item.added", "response_id": id,
            "item": {"id": format!("item_fc_{id}"), "type": "function_call", "name": name}}))
            .await
        && c.send(json!({"type": "response.function_call_arguments.done", "response_id": id,
            "item_id": format!("item_fc_{id}"), "call_id": format!("call_{id}"), "name": name, "arguments": args}))
            .await
        && c.send(json!({"type": "response.done", "response": {"id": id, "status": "completed"}})).await
}

async fn respond_audio(c: &mut Conn, id: &str, cfg: &FakeRealtimeConfig) -> bool {
    let item = format!("item_{id}");
    let b64 = base64::engine::general_purpose::STANDARD;
    let ok = c.send(json!({"type": "response.created", "response": {"id": id, "status": "in_progress"}})).await
        && c.send(json!({"type": "response.output_item.added", "response_id": id,
            "item": {"id": item, "type": "message", "role": "assistant"}}))
            .await;
    if !ok {
        return false;
    }
    let per = (cfg.delta_ms.max(10) * 8) as usize;
    let audio_delta = "response.output_audio.delta";
    for chunk in cfg.reply_ulaw.chunks(per) {
        if c.drop_after.is_some_and(|n| c.deltas_sent >= n) {
            return false; // drop the socket mid-response
        }
        let v = json!({"type": audio_delta, "response_id": id, "item_id": item, "output_index": 0,
            "content_index": 0, "delta": b64.encode(chunk)});
        if !c.send(v).await {
            return false;
        }
        c.deltas_sent += 1;
    }
    let transcript = "response.output_audio_transcript.delta";
    c.send(json!({"type": transcript, "response_id": id, "item_id": item, "delta": "I can book a technician for tomorrow."}))
        .await
}
