//! The control API (`/v1`): numbers (admin token) and live calls (tenant
//! token). Documented in `docs/openapi.json`, served at `/openapi.json`.
//!
//! Isolation: a tenant token resolves to exactly one number, and every call
//! lookup is filtered by that tenant's id, so another tenant's call is
//! indistinguishable from one that does not exist (404). Handlers never touch
//! a call's state directly; they send a [`CallControl`] down its bounded lane.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use super::AppState;
use super::carrier_control::ControlError;
use crate::destination::TransferTarget;
use crate::ids::CallId;
use crate::runtime::dashboard::CallState;
use crate::runtime::registry::{CallControl, CallDetails};
use crate::session::{ControlCommand, Say};
use crate::tenant::{Tenant, TenantError};

/// Largest audio file `say` fetches.
const MAX_AUDIO_BYTES: usize = 8 * 1024 * 1024;

/// A JSON error: `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response()
    }
}

/// Build an [`ApiError`].
pub fn api_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError { status, code, message: message.into() }
}

/// An error response.
pub fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    api_error(status, code, message).into_response()
}

/// The request's bearer token, if it has one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(super) fn is_admin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(admin) = s.secrets.admin_token.as_deref() else {
        return Err(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "the admin API is off: set CALLBRIDGE_ADMIN_TOKEN",
        ));
    };
    match bearer(headers) {
        Some(t) if bool::from(t.as_bytes().ct_eq(admin.as_bytes())) => Ok(()),
        _ => Err(api_error(StatusCode::UNAUTHORIZED, "unauthorized", "admin bearer token required")),
    }
}

pub(super) fn tenant(s: &AppState, headers: &HeaderMap) -> Result<Arc<Tenant>, ApiError> {
    let t = bearer(headers)
        .and_then(|t| s.tenants.by_token(t))
        .ok_or_else(|| api_error(StatusCode::UNAUTHORIZED, "unauthorized", "tenant bearer token required"))?;
    if let Err(wait) = s.rate.check(&t.id, std::time::Instant::now()) {
        metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => "api_rate_limited").increment(1);
        return Err(api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this number; retry in {} ms", (wait * 1000.0).ceil() as u64),
        ));
    }
    Ok(t)
}

fn number_json(t: &Tenant) -> serde_json::Value {
    json!({"number": t.number, "callback_url": t.callback_url, "created_at": t.created_at, "source": t.source,
        "transfer_allow": t.transfer_allow, "carrier": if t.carrier.is_empty() { None } else { Some(&t.carrier) }})
}

/// `POST /v1/numbers` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNumber {
    number: String,
    callback_url: String,
    secret: String,
    #[serde(default)]
    transfer_allow: Vec<String>,
    #[serde(default)]
    carrier: String,
}

fn tenant_error(e: TenantError) -> ApiError {
    match e {
        TenantError::Invalid(m) => api_error(StatusCode::BAD_REQUEST, "invalid", m),
        TenantError::Exists(_) => api_error(StatusCode::CONFLICT, "exists", e.to_string()),
        TenantError::FromConfig(_) => api_error(StatusCode::CONFLICT, "declared_in_config", e.to_string()),
        TenantError::Db(_) | TenantError::Io(_) => {
            tracing::error!(error = %e, "number store failed");
            api_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", "the number store failed")
        }
    }
}

/// `POST /v1/numbers` (admin).
pub async fn create_number(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<NewNumber>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = is_admin(&s, &headers) {
        return r.into_response();
    }
    let Json(n) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", e.body_text()),
    };
    let store = s.tenants.clone();
    if let Ok(url) = reqwest::Url::parse(&n.callback_url)
        && let Err(e) = s.call.client.check_url(&url)
    {
        return error(StatusCode::BAD_REQUEST, "invalid", format!("callback_url: {e}"));
    }
    // Cluster mode: Redis holds the number, and one node wins it.
    if let Some(c) = &s.cluster {
        let (t, token) = match store.prepare(&n.number, &n.callback_url, &n.secret, &n.transfer_allow, &n.carrier) {
            Ok(p) => p,
            Err(e) => return tenant_error(e).into_response(),
        };
        return match c.create_number(&t).await {
            Ok(true) => {
                let t = store.insert_shared(t);
                let mut v = number_json(&t);
                v["api_token"] = json!(token);
                (StatusCode::CREATED, Json(v)).into_response()
            }
            Ok(false) => tenant_error(TenantError::Exists(n.number)).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: number not registered");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    "the cluster cannot register numbers right now; retry",
                )
            }
        };
    }
    let res = tokio::task::spawn_blocking(move || {
        store.register(&n.number, &n.callback_url, &n.secret, &n.transfer_allow, &n.carrier)
    })
    .await;
    match res {
        Ok(Ok((t, token))) => {
            let mut v = number_json(&t);
            v["api_token"] = json!(token);
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Ok(Err(e)) => tenant_error(e).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "registration failed"),
    }
}

/// `GET /v1/numbers/{number}` (admin, or the number's own tenant).
pub async fn get_number(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(number): Path<String>) -> Response {
    let allowed = is_admin(&s, &headers).is_ok() || tenant(&s, &headers).is_ok_and(|t| t.number == number);
    if !allowed {
        // Same answer whether or not the number exists.
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "admin token or this number's token required");
    }
    match s.tenants.get(&number) {
        Some(t) => Json(number_json(&t)).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "number not registered"),
    }
}

/// `DELETE /v1/numbers/{number}` (admin): the number and everything of its
/// tenant — transcripts, reports, recordings — are erased. Refused (409) while
/// the tenant has live calls. Whoever registers the number next is a new
/// tenant and sees nothing of the old one.
pub async fn delete_number(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(number): Path<String>) -> Response {
    if let Err(r) = is_admin(&s, &headers) {
        return r.into_response();
    }
    let Some(t) = s.tenants.get(&number) else {
        return error(StatusCode::NOT_FOUND, "not_found", "number not registered");
    };
    if t.source == crate::tenant::Source::Config {
        return tenant_error(TenantError::FromConfig(number)).into_response();
    }
    if !s.call.registry.live_calls(Some(&t.id)).is_empty() {
        return error(StatusCode::CONFLICT, "calls_live", "the number has live calls; hang them up first");
    }
    // Cluster mode: no node may hold a call of it, and Redis lets it go first
    // (its announcement may reach this node's index before the removal below).
    let in_cluster = s.cluster.is_some();
    if let Some(c) = &s.cluster {
        let gone = match c.remote_calls(&t.id).await {
            Ok(calls) if !calls.is_empty() => {
                return error(StatusCode::CONFLICT, "calls_live", "the number has live calls; hang them up first");
            }
            Ok(_) => c.delete_number(&number).await,
            Err(e) => Err(e),
        };
        if let Err(e) = gone {
            tracing::warn!(error = %e, "cluster: number not deleted");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                "the cluster cannot delete numbers right now; retry",
            );
        }
        // Every node erases its part of the call data (now, or when it reconnects).
        if let Err(e) = c.erase_tenant(&t.id).await {
            tracing::warn!(error = %e, "cluster: the other nodes were not told to erase the number's call data");
        }
    }
    let store = s.tenants.clone();
    let calls = s.call.store.clone();
    let res = tokio::task::spawn_blocking(move || {
        let removed = store.remove(&number)?.or(in_cluster.then_some(t));
        let erased = match (&removed, calls) {
            (Some(t), Some(c)) => c.delete_tenant(&t.id).map_err(|e| TenantError::Invalid(e.to_string()))?,
            _ => 0,
        };
        Ok::<_, TenantError>(removed.map(|_| erased))
    })
    .await;
    match res {
        Ok(Ok(Some(erased))) => {
            tracing::info!(calls_erased = erased, "number deleted with its call data");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "not_found", "number not registered"),
        Ok(Err(e)) => tenant_error(e).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "removal failed"),
    }
}

/// A live call as the control API and the dashboard show it.
pub(super) fn call_json(id: CallId, d: &CallDetails, state: CallState) -> serde_json::Value {
    let started = d.started_at.duration_since(UNIX_EPOCH).map_or(0, |t| t.as_millis() as u64);
    json!({
        "call_id": id.to_string(),
        "from": d.from,
        "to": d.to,
        "carrier": d.carrier,
        "carrier_call_id": d.carrier_call_id,
        "engine": d.engine,
        "started_at_ms": started,
        "duration_ms": d.started_at.elapsed().map_or(0, |e| e.as_millis() as u64),
        "state": state.label(),
    })
}

/// `GET /v1/calls` (tenant): its live calls, and its outbound calls still ringing (`state: dialing`).
pub async fn list_calls(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let t = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut calls: Vec<_> =
        s.call.registry.live_calls(Some(&t.id)).iter().map(|(id, d, state)| call_json(*id, d, *state)).collect();
    // The other nodes' calls, in cluster mode; a view Redis could not give is marked partial.
    let mut partial = false;
    if let Some(c) = &s.cluster {
        for call in &mut calls {
            call["node"] = json!(c.node);
        }
        match c.remote_calls(&t.id).await {
            Ok(remote) => calls.extend(remote.iter().map(|r| r.json())),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: other nodes' calls not listed");
                partial = true;
            }
        }
    }
    // Outbound calls still ringing.
    calls.extend(s.dialing.of_tenant(&t.id).into_iter().map(|(id, to, carrier, carrier_call_id, placed)| {
        json!({"call_id": id.to_string(), "from": t.number, "to": to, "carrier": carrier,
            "carrier_call_id": carrier_call_id, "engine": "", "state": "dialing",
            "started_at_ms": placed.duration_since(UNIX_EPOCH).map_or(0, |t| t.as_millis() as u64),
            "duration_ms": placed.elapsed().map_or(0, |e| e.as_millis() as u64)})
    }));
    if partial {
        return Json(json!({ "calls": calls, "partial": true })).into_response();
    }
    Json(json!({ "calls": calls })).into_response()
}

/// A live call of the tenant on this node, or the response to give.
fn own_call(
    s: &AppState,
    t: &Tenant,
    id: &str,
) -> Result<(CallId, crate::runtime::registry::CallHandle, Arc<CallDetails>), ApiError> {
    let not_found = || api_error(StatusCode::NOT_FOUND, "not_found", "no such call");
    let call_id = id.parse::<CallId>().map_err(|_| not_found())?;
    let handle = s.call.registry.get(call_id);
    match handle {
        Some(h) => match h.details.clone() {
            Some(d) if d.tenant.as_deref() == Some(t.id.as_str()) => Ok((call_id, h, d)),
            _ => Err(not_found()),
        },
        None if s.call.registry.ended_recently(call_id, &t.id) => {
            Err(api_error(StatusCode::GONE, "call_ended", "the call has ended"))
        }
        None => Err(not_found()),
    }
}

/// What the control API does to one live call; in cluster mode it travels
/// to the node holding the call as this JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", content = "body", rename_all = "snake_case")]
pub enum CallOp {
    /// `GET /v1/calls/{id}`.
    Get,
    /// `POST …/interrupt`.
    Interrupt,
    /// `POST …/hangup`.
    Hangup,
    /// `POST …/say`.
    Say(SayBody),
    /// `POST …/transfer`.
    Transfer(Transfer),
}

/// Do `op` to the tenant's call `id`: here if this node holds it, else (in
/// cluster mode) on the node that does.
async fn run(s: &Arc<AppState>, headers: &HeaderMap, id: &str, op: CallOp) -> Response {
    let t = match tenant(s, headers) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    match own_call(s, &t, id) {
        Ok(call) => run_here(s, t, call, op).await,
        Err(e) if e.status == StatusCode::NOT_FOUND && s.cluster.is_some() => {
            super::cluster_control::route(s, &t, id, op).await
        }
        Err(e) => e.into_response(),
    }
}

/// Do `op` to call `id` if this node holds it (a request another node routed here).
pub(super) async fn run_local(s: &Arc<AppState>, t: Arc<Tenant>, id: &str, op: CallOp) -> Response {
    match own_call(s, &t, id) {
        Ok(call) => run_here(s, t, call, op).await,
        Err(e) => e.into_response(),
    }
}

async fn run_here(
    s: &AppState,
    t: Arc<Tenant>,
    (call_id, h, d): (CallId, crate::runtime::registry::CallHandle, Arc<CallDetails>),
    op: CallOp,
) -> Response {
    match op {
        CallOp::Get => {
            let mut v = call_json(call_id, &d, h.live.state());
            if let Some(c) = &s.cluster {
                v["node"] = json!(c.node);
            }
            Json(v).into_response()
        }
        CallOp::Interrupt => match send(&h, CallControl::Session(ControlCommand::Interrupt)).await {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({"status": "interrupted"}))).into_response(),
            Err(r) => r.into_response(),
        },
        CallOp::Hangup => match send(&h, CallControl::Session(ControlCommand::Hangup)).await {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({"status": "hanging_up"}))).into_response(),
            Err(r) => r.into_response(),
        },
        CallOp::Say(req) => say_here(s, &h, req).await,
        CallOp::Transfer(req) => transfer_here(s, &t, call_id, &h, &d, req).await,
    }
}

/// `GET /v1/calls/{id}` (tenant).
pub async fn get_call(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    run(&s, &headers, &id, CallOp::Get).await
}

async fn send(h: &crate::runtime::registry::CallHandle, cmd: CallControl) -> Result<(), ApiError> {
    // Bounded lane; a call that cannot take a command within a second is stuck or gone.
    match tokio::time::timeout(Duration::from_secs(1), h.control.send(cmd)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(api_error(StatusCode::GONE, "call_ended", "the call has ended")),
        Err(_) => Err(api_error(StatusCode::SERVICE_UNAVAILABLE, "busy", "the call is not taking commands")),
    }
}

/// `POST /v1/calls/{id}/interrupt` (tenant).
pub async fn interrupt(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    run(&s, &headers, &id, CallOp::Interrupt).await
}

/// `POST /v1/calls/{id}/hangup` (tenant).
pub async fn hangup(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    run(&s, &headers, &id, CallOp::Hangup).await
}

/// `POST /v1/calls/{id}/say` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SayBody {
    text: Option<String>,
    audio_url: Option<String>,
    /// Stop the bot first (default false: queued after what it is saying).
    #[serde(default)]
    interrupt: bool,
    /// The caller may talk over it (default true; false: a barge-in waits for its end).
    #[serde(default = "yes")]
    interruptible: bool,
}

impl SayBody {
    /// Whether it says a clip fetched from a URL.
    pub fn has_audio_url(&self) -> bool {
        self.audio_url.is_some()
    }
}

fn yes() -> bool {
    true
}

async fn fetch_audio(s: &AppState, url: &str) -> Result<Arc<[i16]>, ApiError> {
    let bad = |m: String| api_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_audio", m);
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("audio_url: {e}")))?;
    if let Err(e) = s.call.client.check_url(&parsed) {
        return Err(bad(format!("audio_url: {e}")));
    }
    // Bounded: each fetch may hold up to 8 MiB.
    let Ok(_permit) = tokio::time::timeout(Duration::from_secs(1), s.fetches.clone().acquire_owned()).await else {
        return Err(api_error(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many audio fetches in progress; retry"));
    };
    let fetch = async {
        // Network errors get one uniform answer: the reason (refused, reset,
        // timed out) would tell a tenant what listens where.
        let mut resp = s.call.client.http().get(parsed).send().await.map_err(|e| {
            tracing::debug!(error = %e.without_url(), "audio_url fetch failed");
            "audio_url could not be fetched".to_string()
        })?;
        if !resp.status().is_success() {
            return Err(format!("audio_url answered HTTP {}", resp.status().as_u16()));
        }
        let mut buf = Vec::new();
        while let Some(c) = resp.chunk().await.map_err(|_| "audio_url could not be fetched".to_string())? {
            if buf.len() + c.len() > MAX_AUDIO_BYTES {
                return Err(format!("audio over {MAX_AUDIO_BYTES} bytes"));
            }
            buf.extend_from_slice(&c);
        }
        Ok(buf)
    };
    let bytes = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| bad("audio_url timed out".into()))?
        .map_err(bad)?;
    // Decoding is CPU work proportional to the clip: keep it off the runtime threads.
    tokio::task::spawn_blocking(move || crate::engine::local::clip_from_wav(&bytes, "audio_url"))
        .await
        .map_err(|_| bad("decoding failed".into()))?
        .map_err(|e| bad(format!("{e} (a mono or stereo 16-bit PCM WAV is expected)")))
}

/// `POST /v1/calls/{id}/say` (tenant).
pub async fn say(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<SayBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => run(&s, &headers, &id, CallOp::Say(b)).await,
        // The caller is identified first: a stranger learns nothing from the body's errors.
        Err(e) => match tenant(&s, &headers) {
            Ok(_) => error(StatusCode::BAD_REQUEST, "invalid", e.body_text()),
            Err(r) => r.into_response(),
        },
    }
}

async fn say_here(s: &AppState, h: &crate::runtime::registry::CallHandle, req: SayBody) -> Response {
    let what = match (req.text, &req.audio_url) {
        (None, None) | (Some(_), Some(_)) => {
            return error(StatusCode::BAD_REQUEST, "invalid", "give exactly one of text or audio_url");
        }
        (_, Some(url)) => match fetch_audio(s, url).await {
            Ok(c) => Say::Clip(c),
            Err(r) => return r.into_response(),
        },
        (Some(text), None) => Say::Text(text),
    };
    let (tx, rx) = oneshot::channel();
    if let Err(r) =
        send(h, CallControl::Say { what, interrupt: req.interrupt, interruptible: req.interruptible, reply: tx }).await
    {
        return r.into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), rx).await {
        Ok(Ok(Ok(()))) => {
            (StatusCode::ACCEPTED, Json(json!({"status": "queued", "interrupt": req.interrupt}))).into_response()
        }
        Ok(Ok(Err(m))) => error(StatusCode::UNPROCESSABLE_ENTITY, "cannot_say", m.to_string()),
        Ok(Err(_)) => error(StatusCode::GONE, "call_ended", "the call has ended"),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "busy", "the call did not answer"),
    }
}

/// `POST /v1/calls/{id}/transfer` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    to: String,
}

/// `POST /v1/calls/{id}/transfer` (tenant): through the call's carrier's REST API.
pub async fn transfer(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Transfer>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => run(&s, &headers, &id, CallOp::Transfer(b)).await,
        Err(e) => match tenant(&s, &headers) {
            Ok(_) => error(StatusCode::BAD_REQUEST, "invalid", e.body_text()),
            Err(r) => r.into_response(),
        },
    }
}

async fn transfer_here(
    s: &AppState,
    t: &Tenant,
    call_id: CallId,
    h: &crate::runtime::registry::CallHandle,
    d: &CallDetails,
    req: Transfer,
) -> Response {
    let target = match TransferTarget::parse(&req.to) {
        Ok(t) => t,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid", m),
    };
    if !t.destinations().allows(&target) {
        metrics::counter!(crate::metrics::CALL_ERRORS, "source" => "transfer_refused").increment(1);
        return error(
            StatusCode::FORBIDDEN,
            "destination_not_allowed",
            "this number may not transfer there (see the number's transfer_allow)",
        );
    }
    let Some(carrier) = s.carrier_control(d.carrier) else {
        return error(StatusCode::CONFLICT, "unsupported", "this carrier cannot transfer calls");
    };
    match carrier.transfer(call_id, d, &target).await {
        Ok(()) => {
            let _ = send(h, CallControl::Transferring { to: target.as_str().to_string() }).await;
            (StatusCode::ACCEPTED, Json(json!({"status": "transferring", "to": req.to}))).into_response()
        }
        Err(e @ ControlError::NoCredentials(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "no_credentials", e.to_string())
        }
        Err(ControlError::CallGone) => error(StatusCode::GONE, "call_ended", "the carrier says the call has ended"),
        Err(ControlError::NoCarrierCall) => {
            error(StatusCode::CONFLICT, "no_carrier_call", "the carrier did not identify this call")
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, "carrier_error", e.to_string()),
    }
}

/// The OpenAPI document of this API.
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");
/// The JSON schema of callback events.
pub const CALLBACKS_SCHEMA_JSON: &str = include_str!("../../docs/callbacks.schema.json");

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// `GET /schema/callbacks.json`.
pub async fn callbacks_schema() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], CALLBACKS_SCHEMA_JSON).into_response()
}

/// The tenant's stored call (live or ended), read on a blocking thread.
async fn stored_call(s: &AppState, headers: &HeaderMap, id: &str) -> Result<crate::callstore::CallRow, ApiError> {
    let t = tenant(s, headers)?;
    let not_found = || api_error(StatusCode::NOT_FOUND, "not_found", "no such call");
    if id.parse::<CallId>().is_err() {
        return Err(not_found());
    }
    let Some(store) = s.call.store.clone() else { return Err(not_found()) };
    let id = id.to_string();
    let row = tokio::task::spawn_blocking(move || store.call(&id))
        .await
        .map_err(|_| api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lookup failed"))?
        .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    match row {
        Some(r) if r.tenant.as_deref() == Some(t.id.as_str()) => Ok(r),
        _ => Err(not_found()),
    }
}

/// A stored call this node does not have: in cluster mode, from the node
/// that ran it; otherwise the error.
async fn elsewhere(
    s: &Arc<AppState>,
    e: ApiError,
    method: axum::http::Method,
    headers: &HeaderMap,
    id: &str,
    rest: &str,
) -> Response {
    if e.status != StatusCode::NOT_FOUND {
        return e.into_response();
    }
    match super::cluster_control::proxy_call_data(s, method, headers, id, rest).await {
        Some(r) => r,
        None => e.into_response(),
    }
}

/// `GET /v1/calls/{id}/transcript` (tenant): the call's report and every event, in order.
pub async fn transcript(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let row = match stored_call(&s, &headers, &id).await {
        Ok(r) => r,
        Err(e) => return elsewhere(&s, e, axum::http::Method::GET, &headers, &id, "/transcript").await,
    };
    let store = s.call.store.clone().expect("stored_call checked");
    let cid = row.call_id.clone();
    let events = match tokio::task::spawn_blocking(move || store.events(&cid)).await {
        Ok(Ok(ev)) => ev,
        _ => return error(StatusCode::INTERNAL_SERVER_ERROR, "storage", "reading the transcript failed"),
    };
    let recording_url =
        row.recording.as_ref().map(|_| crate::callstore::recording_url(&s.call.public_http, &row.call_id));
    Json(json!({
        "call_id": row.call_id,
        "from": row.from,
        "to": row.to,
        "started_at_ms": row.started_at,
        "ended_at_ms": row.ended_at,
        "reason": row.reason,
        "recording_url": recording_url,
        "recording_loss": row.recording_loss,
        "events": events,
    }))
    .into_response()
}

/// `GET /v1/calls/{id}/recording` (tenant): the stereo WAV; supports `Range`.
pub async fn recording(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> Response {
    let row = match stored_call(&s, req.headers(), &id).await {
        Ok(r) => r,
        Err(e) => return elsewhere(&s, e, axum::http::Method::GET, req.headers(), &id, "/recording").await,
    };
    let Some(path) = row.recording.clone().filter(|p| std::path::Path::new(p).exists()) else {
        // A shared store lists calls of every node; the file is on the one that ran it.
        if row.recording.is_some()
            && let Some(r) =
                super::cluster_control::proxy_call_data(&s, axum::http::Method::GET, req.headers(), &id, "/recording")
                    .await
        {
            return r;
        }
        return error(StatusCode::NOT_FOUND, "no_recording", "this call has no recording");
    };
    use tower::ServiceExt;
    match tower_http::services::ServeFile::new_with_mime(&path, &"audio/wav".parse().expect("static mime"))
        .oneshot(req)
        .await
    {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
    }
}

/// `DELETE /v1/calls/{id}` (tenant): erase the call's recording and transcript.
pub async fn delete_call(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Ok(cid) = id.parse::<CallId>()
        && s.call.registry.get(cid).is_some_and(|h| {
            h.details.as_ref().is_some_and(|d| tenant(&s, &headers).is_ok_and(|t| d.tenant.as_deref() == Some(&t.id)))
        })
    {
        return error(StatusCode::CONFLICT, "call_live", "the call is still in progress; hang up first");
    }
    // Nor one running on another node of the cluster.
    if let (Some(c), Ok(cid), Ok(t)) = (&s.cluster, id.parse::<CallId>(), tenant(&s, &headers)) {
        match c.find_call(cid).await {
            Ok(Some(live)) if live.tenant == t.id => {
                return error(StatusCode::CONFLICT, "call_live", "the call is still in progress; hang up first");
            }
            Ok(_) => {}
            Err(e) => return super::cluster_control::unavailable(&e.to_string()),
        }
    }
    let row = match stored_call(&s, &headers, &id).await {
        Ok(r) => r,
        Err(e) => return elsewhere(&s, e, axum::http::Method::DELETE, &headers, &id, "").await,
    };
    // A shared store (PostgreSQL) also holds other nodes' calls: one recorded
    // there is erased by that node, which has the file.
    if row.recording.as_deref().is_some_and(|p| !std::path::Path::new(p).exists())
        && let Some(r) =
            super::cluster_control::proxy_call_data(&s, axum::http::Method::DELETE, &headers, &id, "").await
    {
        return r;
    }
    let store = s.call.store.clone().expect("stored_call checked");
    match tokio::task::spawn_blocking(move || store.delete(&row.call_id)).await {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "storage", "deletion failed"),
    }
}
