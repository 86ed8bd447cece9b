//! Telnyx entry points: the Call Control webhook (`POST /telnyx/webhook`) and
//! the media-streaming WebSocket (`GET /telnyx/stream`; the call then runs on
//! the carrier-neutral call task with the [`TelnyxCodec`]); [`rest`] issues
//! Call Control commands.
//!
//! Webhooks are verified before anything else is read (Ed25519, env
//! `TELNYX_PUBLIC_KEY`; without a key only on a loopback listener or with
//! `CALLBRIDGE_ALLOW_UNSIGNED=1`), de-duplicated on `data.id` (Telnyx retries
//! and may deliver out of order) and answered 200 at once: the work runs in a
//! task. `call.initiated` (incoming) → the call plan (`route_call`, the same
//! `call.started` callback as every carrier) → `answer` with the stream and
//! our single-use token in `client_state`, or `reject`. `call.hangup` before
//! the stream came ends the pending call (`missed`); after a transfer it
//! settles the parked call. A call that ends on our side is hung up through
//! Call Control (closing the stream does not end a Telnyx call).

pub mod outbound;
pub mod rest;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::AppState;
use super::arrival::{Arrival, Disposition, Refusal, disposition, route_call, settle};
use crate::carrier::telnyx::signature::{PublicKey, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::carrier::telnyx::{TelnyxCodec, TelnyxLimits, client_state, token_from_client_state};
use crate::runtime::call_task::run_call;
use crate::runtime::transport::AxumSocket;

/// Webhook ids remembered for de-duplication.
const SEEN_CAP: usize = 20_000;
/// Calls remembered after their answer (for the carrier's recording, which
/// comes after the call ended).
const ANSWERED_CAP: usize = 50_000;
/// How long an answered call is remembered.
const ANSWERED_FOR: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Telnyx's state in the server.
pub struct Telnyx {
    /// Call Control client.
    pub rest: Arc<rest::TelnyxRest>,
    key: Option<PublicKey>,
    unsigned_ok: bool,
    seen: Mutex<Seen>,
    answered: Mutex<Answered>,
    pub(super) codec: String,
}

impl Telnyx {
    /// Remember answered call `ccid` (ours: `call`, of `tenant`) for the
    /// recording Telnyx reports after it ended.
    pub(super) fn remember(&self, ccid: String, call: crate::ids::CallId, tenant: Arc<crate::tenant::Tenant>) {
        self.answered.lock().unwrap_or_else(|p| p.into_inner()).insert(ccid, call, tenant);
    }
}

/// Our call and its tenant by Telnyx call_control_id, oldest first.
#[derive(Default)]
struct Answered {
    map: std::collections::HashMap<String, (crate::ids::CallId, Arc<crate::tenant::Tenant>)>,
    order: VecDeque<(std::time::Instant, String)>,
}

impl Answered {
    fn insert(&mut self, ccid: String, call: crate::ids::CallId, tenant: Arc<crate::tenant::Tenant>) {
        let now = std::time::Instant::now();
        while let Some((at, old)) = self.order.front() {
            if self.order.len() < ANSWERED_CAP && now.duration_since(*at) < ANSWERED_FOR {
                break;
            }
            self.map.remove(old);
            self.order.pop_front();
        }
        self.order.push_back((now, ccid.clone()));
        self.map.insert(ccid, (call, tenant));
    }
}

#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Telnyx {
    /// Whether webhook `id` is new (and remember it).
    fn first_time(&self, id: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if id.is_empty() || !seen.set.insert(id.to_string()) {
            return id.is_empty();
        }
        seen.order.push_back(id.to_string());
        if seen.order.len() > SEEN_CAP
            && let Some(old) = seen.order.pop_front()
        {
            seen.set.remove(&old);
        }
        true
    }
}

/// What the server needs from Telnyx's module at start-up.
pub struct Setup {
    /// Shared state for the routes.
    pub telnyx: Arc<Telnyx>,
    /// Call Control (transfer) for the control API.
    pub control: Arc<dyn crate::api::carrier_control::CarrierControl>,
}

/// Check Telnyx's settings and build its Call Control client.
pub fn setup(
    config: &crate::config::Config,
    secrets: &crate::config::Secrets,
    http: &reqwest::Client,
) -> Result<Setup, String> {
    let key = secrets.telnyx_public_key.as_deref().map(PublicKey::from_base64).transpose()?;
    let unsigned_ok = key.is_none() && super::unsigned_allowed(config, secrets);
    let rest = Arc::new(
        rest::TelnyxRest::new(http.clone(), &config.telnyx.api_url, secrets.telnyx_api_key.clone())
            .with_outbound(&config.telnyx.connection_id, &format!("{}/telnyx/webhook", config.public_http_url())),
    );
    let telnyx = Arc::new(Telnyx {
        rest: rest.clone(),
        key,
        unsigned_ok,
        seen: Mutex::new(Seen::default()),
        answered: Mutex::new(Answered::default()),
        codec: config.telnyx.codec.clone(),
    });
    Ok(Setup { telnyx, control: rest })
}

/// Telnyx's routes.
pub fn routes(telnyx: Arc<Telnyx>) -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/telnyx/webhook", axum::routing::post(webhook))
        .route("/telnyx/stream", axum::routing::get(stream))
        .layer(Extension(telnyx))
}

#[derive(Deserialize)]
struct Envelope {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    id: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    payload: Payload,
}

#[derive(Deserialize, Default)]
pub(super) struct Payload {
    #[serde(default)]
    call_control_id: String,
    #[serde(default)]
    connection_id: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    caller_id_name: String,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    hangup_cause: Option<String>,
    #[serde(default)]
    hangup_source: Option<String>,
    #[serde(default)]
    recording_urls: std::collections::BTreeMap<String, Option<String>>,
    #[serde(default)]
    public_recording_urls: std::collections::BTreeMap<String, Option<String>>,
    #[serde(default)]
    channels: Option<String>,
    #[serde(default)]
    recording_started_at: Option<String>,
    #[serde(default)]
    recording_ended_at: Option<String>,
    /// Machine detection's verdict (`human`, `machine`, `not_sure`; `beep_detected`, …).
    #[serde(default)]
    result: Option<String>,
}

fn refuse(reason: &'static str) -> Response {
    metrics::counter!(crate::metrics::AUTH_REJECTED, "reason" => reason).increment(1);
    warn!(reason, "Telnyx webhook refused");
    (StatusCode::FORBIDDEN, "invalid Telnyx signature\n").into_response()
}

/// `POST /telnyx/webhook`: Call Control events.
pub async fn webhook(
    State(s): State<Arc<AppState>>,
    Extension(t): Extension<Arc<Telnyx>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    match &t.key {
        Some(key) => {
            if let Err(e) = key.verify(header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER), &body, SystemTime::now()) {
                return refuse(e.code());
            }
        }
        None if !t.unsigned_ok => return refuse("webhook_no_public_key"),
        None => {}
    }
    let env: Envelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            debug!(error = %e, "malformed Telnyx webhook");
            return (StatusCode::BAD_REQUEST, "malformed webhook\n").into_response();
        }
    };
    if !t.first_time(&env.data.id) {
        metrics::counter!(crate::metrics::CARRIER_WEBHOOKS, "carrier" => "telnyx", "outcome" => "duplicate")
            .increment(1);
        return StatusCode::OK.into_response();
    }
    metrics::counter!(crate::metrics::CARRIER_WEBHOOKS, "carrier" => "telnyx", "outcome" => "accepted").increment(1);
    let signed = t.key.is_some();
    let p = env.data.payload;
    if outbound::on_event(&s, &t, &env.data.event_type, &p) {
        return StatusCode::OK.into_response();
    }
    match env.data.event_type.as_str() {
        "call.initiated" if p.direction == "incoming" || p.direction.is_empty() => {
            tokio::spawn(answer_call(s, t, p, signed));
        }
        "call.hangup" => call_gone(&s, &p),
        "call.recording.saved" => recording_saved(&s, &t, p),
        "call.bridged" => {
            // A transfer we made connected: the call is no longer ours.
            if let Some(id) = transferred_call(&p)
                && let Some(parked) = s.call.parked.take(id)
            {
                let ev = crate::contract::Event::TransferCompleted {
                    to: parked.destination.clone(),
                    status: "bridged".into(),
                };
                crate::runtime::call_task::end_parked(&s.call, parked, Some(ev), "transferred");
            }
        }
        other => debug!(event = other, "Telnyx webhook ignored"),
    }
    StatusCode::OK.into_response()
}

/// Our call id, if this call's `client_state` marks a transfer we made.
fn transferred_call(p: &Payload) -> Option<crate::ids::CallId> {
    let state = token_from_client_state(p.client_state.as_deref()?)?;
    state.strip_prefix("xfer:")?.parse().ok()
}

/// `call.hangup`: a call whose stream never came is `missed`; a transfer
/// that never bridged failed (the caller is gone, so the call ends).
fn call_gone(s: &Arc<AppState>, p: &Payload) {
    let cause = p.hangup_cause.as_deref().unwrap_or("unspecified");
    if let Some(route) = s.call.pending.take("telnyx", &p.call_control_id) {
        info!(call = %route.call_id, cause, source = p.hangup_source.as_deref().unwrap_or(""), "hung up before the stream started");
        crate::runtime::call_task::report_unconnected(&s.call, route, "missed");
        return;
    }
    if let Some(id) = transferred_call(p)
        && let Some(parked) = s.call.parked.take(id)
    {
        let ev = crate::contract::Event::TransferFailed { to: parked.destination.clone(), status: cause.into() };
        crate::runtime::call_task::end_parked(&s.call, parked, Some(ev), "transfer_failed");
        return;
    }
    // A live call: its stream's stop ends it; the cause is worth a log line.
    info!(cause, source = p.hangup_source.as_deref().unwrap_or(""), "Telnyx call hung up");
}

/// `call.recording.saved`: Telnyx's own recording of a call we answered goes
/// to the number's backend as `carrier.recording` (after `call.ended`, so on
/// its own: `seq` 0), with up to three attempts; shutdown waits for it.
fn recording_saved(s: &Arc<AppState>, t: &Telnyx, p: Payload) {
    let Some((call_id, tenant)) =
        t.answered.lock().unwrap_or_else(|e| e.into_inner()).map.get(&p.call_control_id).cloned()
    else {
        debug!("a Telnyx recording of a call that is not ours (or long gone)");
        return;
    };
    let flat = |m: std::collections::BTreeMap<String, Option<String>>| {
        m.into_iter().filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v))).collect()
    };
    let event = crate::contract::Event::CarrierRecording {
        carrier: "telnyx".into(),
        carrier_call_id: p.call_control_id.clone(),
        urls: flat(p.recording_urls),
        public_urls: flat(p.public_recording_urls),
        channels: p.channels.unwrap_or_default(),
        started_at: p.recording_started_at.unwrap_or_default(),
        ended_at: p.recording_ended_at.unwrap_or_default(),
    };
    let env = crate::contract::Envelope::new(&call_id.to_string(), 0, SystemTime::now(), event);
    let target = crate::callback::client::Target { url: tenant.callback_url.clone(), secret: tenant.secret.clone() };
    let client = s.call.client.clone();
    let guard = s.call.deliveries.start();
    tokio::spawn(async move {
        let _guard = guard;
        for attempt in 0..3u32 {
            match client.post(&target, &env, std::time::Duration::from_secs(10)).await {
                Ok(_) => return,
                Err(e) => {
                    debug!(call = %call_id, attempt, error = %e, "carrier.recording not delivered yet");
                    tokio::time::sleep(std::time::Duration::from_secs(1 << (2 * attempt))).await;
                }
            }
        }
        metrics::counter!(crate::metrics::CALLBACK_FAILURES, "type" => "carrier.recording").increment(1);
        warn!(call = %call_id, "carrier.recording could not be delivered");
    });
}

/// `call.initiated`: decide, then answer with the stream or reject.
async fn answer_call(s: Arc<AppState>, t: Arc<Telnyx>, p: Payload, signed: bool) {
    let id = p.call_control_id.clone();
    if !crate::carrier::telnyx::valid_id(&id) {
        warn!("Telnyx call.initiated without a usable call_control_id");
        return;
    }
    let arrival = Arrival {
        carrier: "telnyx",
        carrier_call_id: id.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
        account_id: p.connection_id.clone(),
        signed,
        caller: crate::contract::CallerInfo {
            caller_name: p.caller_id_name.chars().take(64).collect(),
            direction: p.direction.chars().take(32).collect(),
            ..Default::default()
        },
    };
    let route = match route_call(&s, &arrival).await {
        Ok(r) => r,
        Err(refusal) => {
            let busy = matches!(refusal, Refusal::Busy(_) | Refusal::ShuttingDown);
            if let Err(e) = t.rest.reject(&id, busy).await {
                warn!(error = %e, "Telnyx reject failed");
            }
            return;
        }
    };
    match disposition(&route) {
        Disposition::Answer => {}
        Disposition::Reject { busy, .. } => {
            settle(&s, route, "rejected");
            if let Err(e) = t.rest.reject(&id, busy).await {
                warn!(error = %e, "Telnyx reject failed");
            }
            return;
        }
        Disposition::Forward(target) => {
            settle(&s, route, "forwarded");
            // A transfer on call.initiated: Telnyx dials and bridges the caller when it answers.
            if let Err(e) = t.rest.action(&id, "transfer", serde_json::json!({"to": target.as_str()})).await {
                warn!(error = %e, "Telnyx forward failed");
            }
            return;
        }
    }
    let call_id = route.call_id;
    if let Some(tenant) = route.tenant.clone() {
        t.remember(id.clone(), call_id, tenant);
    }
    let token = s.call.pending.insert("telnyx", &id, route);
    let stream_url = format!("{}/telnyx/stream", s.config.server.public_url.trim_end_matches('/'));
    if let Err(e) = t.rest.answer(&id, &stream_url, &t.codec, &client_state(&token)).await {
        metrics::counter!(crate::metrics::CALL_ERRORS, "source" => "carrier_answer").increment(1);
        warn!(call = %call_id, error = %e, "Telnyx answer failed");
        if let Some(route) = s.call.pending.take("telnyx", &id) {
            crate::runtime::call_task::report_unconnected(&s.call, route, "carrier_error");
        }
    }
}

/// `GET /telnyx/stream`: the media WebSocket.
pub async fn stream(
    State(s): State<Arc<AppState>>,
    Extension(t): Extension<Arc<Telnyx>>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(refusal) = s.admit_stream() {
        metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => refusal.1, "carrier" => "telnyx").increment(1);
        return refusal.into_response();
    }
    let cfg = &s.config.server;
    let ctx = s.call.clone();
    let codec = TelnyxCodec::new(TelnyxLimits { max_payload_bytes: (cfg.max_message_bytes / 4 * 3).min(64 * 1024) });
    super::stream_socket(ws, cfg, 0).on_upgrade(move |socket| async move {
        let outcome = run_call(AxumSocket::new(socket), Box::new(codec), ctx).await;
        // Closing the stream does not end a Telnyx call: hang it up.
        if let Some(id) = outcome.call_to_hang_up() {
            crate::api::carrier_control::report_hangup("telnyx", t.rest.hangup(id).await);
        }
    })
}
