//! Vonage entry points: the answer webhook (`GET|POST /vonage/answer`, answered
//! with an NCCO), the event webhook (`POST /vonage/event`) and the WebSocket
//! Vonage connects to (`GET /vonage/stream`; the call then runs on the
//! carrier-neutral call task with the [`VonageCodec`]); [`rest`] acts on calls.
//!
//! Webhooks are verified before anything else is read (HS256 JWT with a body
//! hash, env `VONAGE_SIGNATURE_SECRET`; without a secret only on a loopback
//! listener or with `CALLBRIDGE_ALLOW_UNSIGNED=1`). The answer decides the call
//! (`route_call`, the same `call.started` callback as every carrier) and
//! connects it to our WebSocket with the call id, the numbers and a
//! single-use token in the endpoint's headers. A call whose leg ends before its
//! WebSocket came is `missed`; transfer outcomes come back as events marked
//! with our call id. A call that ends on our side is hung up through the Voice
//! API (closing the WebSocket leaves the caller's leg up).

pub mod outbound;
pub mod rest;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::AppState;
use super::arrival::{Arrival, Disposition, Refusal, disposition, route_call, settle};
use crate::carrier::vonage::jwt::{AppKey, query_payload, verify_webhook};
use crate::carrier::vonage::{CALL_HEADER, FROM_HEADER, TO_HEADER, TOKEN_HEADER, VonageCodec, content_type};
use crate::runtime::call_task::run_call;
use crate::runtime::transport::AxumSocket;

/// Vonage's state in the server.
pub struct Vonage {
    /// Voice API client.
    pub rest: Arc<rest::VonageRest>,
    secret: Option<String>,
    unsigned_ok: bool,
    rate: u32,
}

/// What the server needs from Vonage's module at start-up.
pub struct Setup {
    /// Shared state for the routes.
    pub vonage: Arc<Vonage>,
    /// Voice API (transfer) for the control API.
    pub control: Arc<dyn crate::api::carrier_control::CarrierControl>,
}

/// Check Vonage's settings (the private key is read and parsed here, so a bad
/// one stops start-up) and build its Voice API client.
pub fn setup(
    config: &crate::config::Config,
    secrets: &crate::config::Secrets,
    http: &reqwest::Client,
) -> Result<Setup, String> {
    let key = match (&secrets.vonage_application_id, &secrets.vonage_private_key_path) {
        (Some(app), Some(path)) => {
            let pem = std::fs::read_to_string(path).map_err(|e| format!("VONAGE_PRIVATE_KEY_PATH {path}: {e}"))?;
            Some(AppKey::from_pem(app, &pem)?)
        }
        (None, None) => None,
        _ => return Err("set both VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY_PATH, or neither".into()),
    };
    let secret = secrets.vonage_signature_secret.clone();
    let unsigned_ok = secret.is_none() && super::unsigned_allowed(config, secrets);
    let rest = Arc::new(rest::VonageRest::new(http.clone(), &config.vonage.api_url, key, &config.public_http_url()));
    let vonage = Arc::new(Vonage { rest: rest.clone(), secret, unsigned_ok, rate: config.vonage.rate });
    Ok(Setup { vonage, control: rest })
}

/// Vonage's routes.
pub fn routes(vonage: Arc<Vonage>) -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/vonage/answer", axum::routing::get(answer).post(answer))
        .route("/vonage/event", axum::routing::post(event).get(event))
        .route("/vonage/stream", axum::routing::get(stream))
        .route(outbound::ANSWER_PATH, axum::routing::post(outbound::answered).get(outbound::answered))
        .route(outbound::EVENT_PATH, axum::routing::post(outbound::event).get(outbound::event))
        .layer(Extension(vonage))
}

fn refuse(reason: &'static str) -> Response {
    metrics::counter!(crate::metrics::AUTH_REJECTED, "reason" => reason).increment(1);
    warn!(reason, "Vonage webhook refused");
    (StatusCode::FORBIDDEN, "invalid Vonage signature\n").into_response()
}

/// Verify a webhook; `Err` is why it is refused. A GET's hash covers its query.
fn check(
    v: &Vonage,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), &'static str> {
    match &v.secret {
        Some(secret) => {
            let auth = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()).unwrap_or("");
            let covered = if *method == Method::GET { query_payload(uri.query().unwrap_or("")) } else { body.to_vec() };
            verify_webhook(secret, auth, &covered, SystemTime::now()).map_err(|e| e.code())
        }
        None if v.unsigned_ok => Ok(()),
        None => Err("webhook_no_signature_secret"),
    }
}

/// Why a webhook is not read.
enum Unread {
    /// Its signature did not verify (the code says how).
    Unverified(&'static str),
    /// Its body is not the JSON object Vonage sends.
    Malformed,
}

impl IntoResponse for Unread {
    fn into_response(self) -> Response {
        match self {
            Unread::Unverified(why) => refuse(why),
            Unread::Malformed => malformed(),
        }
    }
}

/// A webhook verified, then read: its fields (query and JSON body).
fn read(
    v: &Vonage,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<HashMap<String, String>, Unread> {
    check(v, method, uri, headers, body).map_err(Unread::Unverified)?;
    fields(method, query.clone(), body).ok_or(Unread::Malformed)
}

/// A webhook's fields: the query (GET) or the JSON body (POST).
fn fields(method: &Method, query: HashMap<String, String>, body: &[u8]) -> Option<HashMap<String, String>> {
    if *method == Method::GET || body.is_empty() {
        return Some(query);
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut out = query;
    if let Some(o) = v.as_object() {
        for (k, v) in o {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Some(out)
}

fn malformed() -> Response {
    (StatusCode::BAD_REQUEST, "malformed webhook body\n").into_response()
}

fn ncco(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// `GET|POST /vonage/answer`: answer with the NCCO that connects the caller to our WebSocket.
pub async fn answer(
    State(s): State<Arc<AppState>>,
    Extension(v): Extension<Arc<Vonage>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let f = match read(&v, &method, &uri, &headers, &query, &body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let uuid = get("uuid");
    if !crate::carrier::vonage::valid_uuid(&uuid) {
        return (StatusCode::BAD_REQUEST, "answer webhook without a usable uuid\n").into_response();
    }
    // Vonage numbers come without the plus; the registry holds E.164.
    let e164 = |n: String| {
        if n.is_empty() || n.starts_with('+') || !n.bytes().all(|b| b.is_ascii_digit()) { n } else { format!("+{n}") }
    };
    let (from, to) = (e164(get("from")), e164(get("to")));
    let arrival = Arrival {
        carrier: "vonage",
        carrier_call_id: uuid.clone(),
        from: from.clone(),
        to: to.clone(),
        account_id: get("conversation_uuid"),
        signed: v.secret.is_some(),
        caller: crate::contract::CallerInfo { direction: "inbound".into(), ..Default::default() },
    };
    let route = match route_call(&s, &arrival).await {
        Ok(r) => r,
        Err(Refusal::NotInService | Refusal::WrongCarrier) => {
            return ncco(json!([{"action": "talk", "text": "The number you have dialed is not in service."}]));
        }
        Err(Refusal::Unsigned) => return refuse("webhook_unsigned_tenant"),
        Err(Refusal::Busy(_) | Refusal::ShuttingDown) => {
            return ncco(json!([{"action": "talk", "text": "All our lines are busy. Please call again later."}]));
        }
    };
    match disposition(&route) {
        Disposition::Answer => {}
        Disposition::Reject { busy, say } => {
            settle(&s, route, "rejected");
            let text = say.unwrap_or_else(|| {
                if busy {
                    "All our lines are busy. Please call again later."
                } else {
                    "Sorry, we cannot take your call."
                }
                .to_string()
            });
            return ncco(json!([{"action": "talk", "text": text}]));
        }
        Disposition::Forward(target) => {
            settle(&s, route, "forwarded");
            // Vonage calls out from one of the account's numbers: the one that was called.
            let from = to.trim_start_matches('+');
            return ncco(json!([{"action": "connect", "from": from, "endpoint": [rest::endpoint(&target)]}]));
        }
    }
    connect_ncco(&s, &v, &uuid, route)
}

/// Keep `route` for the WebSocket of leg `uuid` and answer the NCCO that
/// connects the leg to it, with the single-use token in its headers.
fn connect_ncco(s: &AppState, v: &Vonage, uuid: &str, route: crate::runtime::admission::Route) -> Response {
    let (from, to) = (route.from.clone(), route.to.clone());
    let token = s.call.pending.insert("vonage", uuid, route);
    let uri = format!("{}/vonage/stream", s.config.server.public_url.trim_end_matches('/'));
    let event_url = format!("{}/vonage/event", s.config.public_http_url());
    ncco(json!([{
        "action": "connect",
        "eventUrl": [event_url],
        "endpoint": [{
            "type": "websocket",
            "uri": uri,
            "content-type": content_type(v.rate),
            "headers": {TOKEN_HEADER: token, CALL_HEADER: uuid, FROM_HEADER: from, TO_HEADER: to},
        }],
    }]))
}

/// `POST /vonage/event`: call status. A caller's leg that ends before its
/// WebSocket came is `missed`; with `?transfer=<call id>`, the outcome of a
/// transfer we made.
pub async fn event(
    State(s): State<Arc<AppState>>,
    Extension(v): Extension<Arc<Vonage>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let f = match read(&v, &method, &uri, &headers, &query, &body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let transfer = query.get("transfer").and_then(|t| t.parse::<crate::ids::CallId>().ok());
    let status = f.get("status").map(String::as_str).unwrap_or("");
    let uuid = f.get("uuid").map(String::as_str).unwrap_or("");
    let ended = matches!(status, "completed" | "busy" | "failed" | "timeout" | "rejected" | "cancelled" | "unanswered");
    if let Some(id) = transfer {
        let outcome = match status {
            "answered" => Some(true),
            "busy" | "failed" | "timeout" | "rejected" | "cancelled" | "unanswered" => Some(false),
            _ => None,
        };
        if let Some(ok) = outcome
            && let Some(parked) = s.call.parked.take(id)
        {
            let to = parked.destination.clone();
            let (ev, reason) = if ok {
                (crate::contract::Event::TransferCompleted { to, status: status.into() }, "transferred")
            } else {
                metrics::counter!(crate::metrics::CALL_ERRORS, "source" => "transfer").increment(1);
                (crate::contract::Event::TransferFailed { to, status: status.into() }, "transfer_failed")
            };
            crate::runtime::call_task::end_parked(&s.call, parked, Some(ev), reason);
        }
    } else if ended && let Some(route) = s.call.pending.take("vonage", uuid) {
        info!(call = %route.call_id, status, "the caller's leg ended before the WebSocket came");
        crate::runtime::call_task::report_unconnected(&s.call, route, "missed");
    } else {
        debug!(status, "Vonage event");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /vonage/stream`: the WebSocket Vonage connects to.
pub async fn stream(
    State(s): State<Arc<AppState>>,
    Extension(v): Extension<Arc<Vonage>>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(refusal) = s.admit_stream() {
        metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => refusal.1, "carrier" => "vonage").increment(1);
        return refusal.into_response();
    }
    let cfg = &s.config.server;
    let ctx = s.call.clone();
    super::stream_socket(ws, cfg, 2048).on_upgrade(move |socket| async move {
        let outcome = run_call(AxumSocket::new(socket), Box::new(VonageCodec::new()), ctx).await;
        // Closing the WebSocket leaves the caller's leg up: hang it up.
        if let Some(id) = outcome.call_to_hang_up() {
            crate::api::carrier_control::report_hangup("vonage", v.rest.hangup(id).await);
        }
    })
}
