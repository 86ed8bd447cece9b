//! A fake tenant backend, a fake Twilio REST API and a fake Telnyx Call
//! Control API on loopback (FAKES: they
//! speak the real wire formats but decide nothing). The backend records every
//! callback with its signature header and answers per event type as told.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

/// How the fake backend answers one event type.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200 with this JSON.
    Json(Value),
    /// This status, empty body.
    Status(u16),
    /// 200 with a body that is not JSON.
    NotJson,
    /// 200 with a body of this many bytes (valid JSON).
    Huge(usize),
    /// 302 to elsewhere.
    Redirect,
    /// Never answer (until the client gives up).
    Hang,
    /// Fail with 503 this many times, then 200 `{}`.
    FailTimes(u32),
    /// 200 `application/x-ndjson`: each line after its delay (ms after the previous one).
    Ndjson(Vec<(u64, Value)>),
}

/// One recorded callback.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub signature: String,
    pub raw: Vec<u8>,
    pub body: Value,
}

impl Received {
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
}

#[derive(Default)]
struct Inner {
    arrived: Arc<tokio::sync::Notify>,
    modes: HashMap<String, Mode>,
    failures: HashMap<String, u32>,
    received: Vec<Received>,
    twilio_updates: Vec<(String, String, HashMap<String, String>)>,
    twilio_status: u16,
    /// Calls placed through the fake Twilio "create call": (account, form, sid).
    twilio_creates: Vec<TwilioCreate>,
    /// What "create call" answers (201, or an error status).
    twilio_create_status: u16,
    telnyx_actions: Vec<CarrierAction>,
    vonage_updates: Vec<CarrierAction>,
    /// Streamed replies whose reader went away before the last line (and when).
    streams_cancelled: Vec<Instant>,
    /// When each streamed line was handed to the connection.
    lines_sent: Vec<(Instant, Value)>,
}

/// A call placed through the fake Twilio "create call": account, form pairs in order, the sid given ("" if refused).
pub type TwilioCreate = (String, Vec<(String, String)>, String);

/// One REST command a fake carrier API received (Telnyx Call Control, Vonage Voice API).
#[derive(Debug, Clone)]
pub struct CarrierAction {
    pub call_control_id: String,
    pub action: String,
    pub authorization: String,
    pub body: Value,
}

/// The fake backend (and fake Twilio REST on the same listener).
#[derive(Clone)]
pub struct FakeBackend {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl FakeBackend {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner { twilio_status: 200, twilio_create_status: 201, ..Default::default() }));
        let app = Router::new()
            .route("/cb", post(callback))
            .route("/audio.wav", get(audio))
            .route("/2010-04-01/Accounts/{account}/Calls.json", post(twilio_create))
            .route("/2010-04-01/Accounts/{account}/Calls/{call}", post(twilio_update))
            .route("/v2/calls/{id}/actions/{action}", post(telnyx_action))
            .route("/v2/calls", post(telnyx_dial))
            .route("/v1/calls", post(vonage_create))
            .route("/v1/calls/{uuid}", axum::routing::put(vonage_update))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task: Arc::new(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}/cb", self.addr)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, kind: &str, mode: Mode) {
        self.inner.lock().unwrap().modes.insert(kind.into(), mode);
    }

    pub fn set_twilio_status(&self, status: u16) {
        self.inner.lock().unwrap().twilio_status = status;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn telnyx_actions(&self) -> Vec<CarrierAction> {
        self.inner.lock().unwrap().telnyx_actions.clone()
    }

    /// `PUT /v1/calls/{uuid}` requests the fake Vonage received (`action` from the body).
    pub fn vonage_updates(&self) -> Vec<CarrierAction> {
        self.inner.lock().unwrap().vonage_updates.clone()
    }

    /// Wait (bounded) until the fake Vonage received `action`; returns it.
    pub async fn wait_vonage(&self, action: &str, within: Duration) -> CarrierAction {
        self.wait_action(within, |g| g.vonage_updates.iter().find(|a| a.action == action).cloned()).await
    }

    /// Wait (bounded) until the fake Telnyx received `action`; returns it.
    pub async fn wait_telnyx(&self, action: &str, within: Duration) -> CarrierAction {
        self.wait_action(within, |g| g.telnyx_actions.iter().find(|a| a.action == action).cloned()).await
    }

    /// Wait (bounded) until a carrier command matching `pred` arrived (Telnyx or Vonage); returns it.
    pub async fn wait_command(&self, within: Duration, pred: impl Fn(&CarrierAction) -> bool) -> CarrierAction {
        self.wait_action(within, |g| g.telnyx_actions.iter().chain(&g.vonage_updates).find(|a| pred(a)).cloned()).await
    }

    /// Wait (bounded) until the callbacks received satisfy `done`; returns them.
    pub async fn wait_received(&self, within: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        let arrived = self.inner.lock().unwrap().arrived.clone();
        loop {
            let notified = arrived.notified();
            let r = self.received();
            if done(&r) {
                return r;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("not within {within:?}: {:?}", r.iter().map(|e| e.kind().to_string()).collect::<Vec<_>>());
            }
        }
    }

    async fn wait_action(&self, within: Duration, find: impl Fn(&Inner) -> Option<CarrierAction>) -> CarrierAction {
        let deadline = tokio::time::Instant::now() + within;
        let arrived = self.inner.lock().unwrap().arrived.clone();
        loop {
            // Register before looking, so an arrival in between is not missed.
            let notified = arrived.notified();
            if let Some(a) = find(&self.inner.lock().unwrap()) {
                return a;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let g = self.inner.lock().unwrap();
                panic!("no such carrier command within {within:?}: {:?} {:?}", g.telnyx_actions, g.vonage_updates);
            }
        }
    }

    /// Streamed replies callbridge stopped reading before their end.
    pub fn streams_cancelled(&self) -> Vec<Instant> {
        self.inner.lock().unwrap().streams_cancelled.clone()
    }

    /// Streamed lines written, with when.
    pub fn lines_sent(&self) -> Vec<(Instant, Value)> {
        self.inner.lock().unwrap().lines_sent.clone()
    }

    pub fn set_twilio_create_status(&self, status: u16) {
        self.inner.lock().unwrap().twilio_create_status = status;
    }

    /// Calls placed through the fake Twilio REST: (account, form pairs in order, the sid it gave).
    pub fn twilio_creates(&self) -> Vec<TwilioCreate> {
        self.inner.lock().unwrap().twilio_creates.clone()
    }

    /// Wait (bounded) for the first call placed through the fake Twilio REST.
    pub async fn wait_twilio_create(&self, within: Duration) -> TwilioCreate {
        let deadline = tokio::time::Instant::now() + within;
        let arrived = self.inner.lock().unwrap().arrived.clone();
        loop {
            let notified = arrived.notified();
            if let Some(c) = self.twilio_creates().first().cloned() {
                return c;
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .unwrap_or_else(|_| panic!("no call placed within {within:?}"));
        }
    }

    pub fn twilio_updates(&self) -> Vec<(String, String, HashMap<String, String>)> {
        self.inner.lock().unwrap().twilio_updates.clone()
    }

    /// Wait (bounded) until an event of `kind` arrived; returns all received so far.
    /// The `call.ended` of a call whose `carrier` connection broke while the
    /// built-in reply played: reason `stream_lost`, the caller's turn kept,
    /// the cut-off reply reported `interrupted` and heard at least
    /// `min_heard_ms` but not all of it. Returns its body.
    pub async fn ended_lost_mid_reply(&self, carrier: &str, min_heard_ms: u64) -> serde_json::Value {
        let events = self.wait_for("call.ended", Duration::from_secs(10)).await;
        let ended = events.iter().find(|e| e.kind() == "call.ended").unwrap().body.clone();
        assert_eq!(ended["reason"], "stream_lost", "the connection broke; the carrier did not end the call");
        assert_eq!(ended["carrier"], carrier);
        let convo = ended["conversation"].as_array().expect("call.ended carries the conversation");
        let user = convo.iter().position(|t| t["type"] == "turn.user").expect("the caller's turn is kept");
        let agent = convo[user..].iter().find(|t| t["type"] == "turn.agent").expect("the cut-off reply is reported");
        let heard = agent["heard_ms"].as_u64().unwrap();
        let reply_ms = callbridge::engine::local::load_clip("builtin:reply").unwrap().len() as u64 / 8;
        assert!(heard < reply_ms, "heard {heard} ms of a {reply_ms} ms reply: not all of it");
        assert!(heard >= min_heard_ms, "heard {heard} ms: what was played before the drop counts");
        assert_eq!(agent["interrupted"], true, "{agent}");
        ended
    }

    pub async fn wait_for(&self, kind: &str, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        let arrived = self.inner.lock().unwrap().arrived.clone();
        loop {
            // Register before looking, so an arrival in between is not missed.
            let notified = arrived.notified();
            let r = self.received();
            if r.iter().any(|e| e.kind() == kind) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} within {within:?}; got {:?}",
                r.iter().map(|e| e.kind().to_string()).collect::<Vec<_>>()
            );
            let _ = tokio::time::timeout_at(deadline.into(), notified).await;
        }
    }
}

async fn callback(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, raw: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let kind = body["type"].as_str().unwrap_or("").to_string();
    let mode = {
        let mut g = inner.lock().unwrap();
        g.received.push(Received {
            at: Instant::now(),
            signature: headers.get("x-callbridge-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
            raw: raw.to_vec(),
            body,
        });
        g.arrived.notify_waiters();
        let mode = g.modes.get(&kind).cloned().unwrap_or(Mode::Json(serde_json::json!({})));
        if let Mode::FailTimes(n) = mode {
            let f = g.failures.entry(kind.clone()).or_default();
            *f += 1;
            if *f <= n { Mode::Status(503) } else { Mode::Json(serde_json::json!({})) }
        } else {
            mode
        }
    };
    match mode {
        Mode::Json(v) => axum::Json(v).into_response(),
        Mode::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Mode::NotJson => ([(header::CONTENT_TYPE, "text/html")], "<html>oops</html>").into_response(),
        Mode::Huge(n) => {
            let mut s = String::from("{\"instructions\":\"");
            s.push_str(&"x".repeat(n));
            s.push_str("\"}");
            ([(header::CONTENT_TYPE, "application/json")], s).into_response()
        }
        Mode::Redirect => (StatusCode::FOUND, [(header::LOCATION, "http://127.0.0.1:9/elsewhere")]).into_response(),
        Mode::Hang => std::future::pending().await,
        Mode::Ndjson(lines) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
            let inner = inner.clone();
            tokio::spawn(async move {
                for (delay, line) in lines {
                    // Pacing of a slow backend (a fake's own timing, not a wait in a test).
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let mut bytes = line.to_string().into_bytes();
                    bytes.push(b'\n');
                    if tx.send(Ok(bytes)).await.is_err() {
                        inner.lock().unwrap().streams_cancelled.push(Instant::now());
                        return;
                    }
                    inner.lock().unwrap().lines_sent.push((Instant::now(), line));
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
            ([(header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(stream)).into_response()
        }
        Mode::FailTimes(_) => unreachable!(),
    }
}

async fn audio() -> Response {
    let bytes = std::fs::read("fixtures/audio/bot_filler_8k.wav").unwrap();
    ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response()
}

async fn telnyx_action(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut g = inner.lock().unwrap();
    let gone = g.telnyx_actions.iter().any(|a| a.call_control_id == id && a.action == "hangup");
    g.telnyx_actions.push(CarrierAction { call_control_id: id, action, authorization, body });
    g.arrived.notify_waiters();
    if gone {
        let err = serde_json::json!({"errors": [{"code": "90018", "title": "Call has already ended"}]});
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(err)).into_response();
    }
    axum::Json(serde_json::json!({"data": {"result": "ok"}})).into_response()
}

/// Telnyx `POST /v2/calls` (dial): recorded as action `dial` under the id it gives.
async fn telnyx_dial(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut g = inner.lock().unwrap();
    let id = format!("v3:out-{}", g.telnyx_actions.len());
    g.telnyx_actions.push(CarrierAction { call_control_id: id.clone(), action: "dial".into(), authorization, body });
    g.arrived.notify_waiters();
    let data = serde_json::json!({"data": {"call_control_id": id, "call_leg_id": "leg-out", "call_session_id": "session-out",
        "is_alive": false, "record_type": "call"}});
    axum::Json(data).into_response()
}

/// Vonage `POST /v1/calls` (create): recorded as action `create` under the uuid it gives.
async fn vonage_create(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut g = inner.lock().unwrap();
    let uuid = format!("63f61863-4a51-4f6b-86e1-46edebc{:05}", g.vonage_updates.len());
    g.vonage_updates.push(CarrierAction {
        call_control_id: uuid.clone(),
        action: "create".into(),
        authorization,
        body,
    });
    g.arrived.notify_waiters();
    let answer = serde_json::json!({"uuid": uuid, "status": "started", "direction": "outbound",
        "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22"});
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn vonage_update(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let action = body["action"].as_str().unwrap_or("").to_string();
    let mut g = inner.lock().unwrap();
    g.vonage_updates.push(CarrierAction { call_control_id: uuid, action, authorization, body });
    g.arrived.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

async fn twilio_create(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    form.push((
        "_authorization".into(),
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").into(),
    ));
    let mut g = inner.lock().unwrap();
    let sid = format!("CA{:032x}", g.twilio_creates.len() as u128 + 0xabc0);
    let status = g.twilio_create_status;
    if status == 201 {
        g.twilio_creates.push((account, form, sid.clone()));
        g.arrived.notify_waiters();
        let body = serde_json::json!({"sid": sid, "status": "queued", "direction": "outbound-api"});
        return (StatusCode::CREATED, axum::Json(body)).into_response();
    }
    g.twilio_creates.push((account, form, String::new()));
    let body =
        serde_json::json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": status});
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

async fn twilio_update(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut f = form;
    f.insert(
        "_authorization".into(),
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").into(),
    );
    let mut g = inner.lock().unwrap();
    g.twilio_updates.push((account, call.trim_end_matches(".json").to_string(), f));
    match g.twilio_status {
        200 => axum::Json(serde_json::json!({"sid": "CA", "status": "in-progress"})).into_response(),
        404 => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"code": 20404, "message": "The requested resource was not found"})),
        )
            .into_response(),
        s => (
            StatusCode::from_u16(s).unwrap(),
            axum::Json(serde_json::json!({"code": 20003, "message": "Authenticate"})),
        )
            .into_response(),
    }
}
