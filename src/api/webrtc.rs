//! Browser calls: WHIP-style signalling over HTTP and the `/phone` page.
//!
//! - `POST /webrtc/offer` with `Content-Type: application/sdp` (the browser's
//!   offer; audio sendrecv) answers `201 Created` with the SDP answer and a
//!   `Location: /webrtc/sessions/{key}`. `?number=` picks the number called:
//!   a registered number needs its tenant's bearer token; none is the
//!   embedded default (answered as an unknown number would be). `?from=`
//!   labels the caller (default `browser`).
//! - `DELETE /webrtc/sessions/{key}` hangs up.
//! - `GET /webrtc/sessions/{key}/events`: the call's events as server-sent
//!   events (envelope JSON, as the backend gets them), one reader.
//!
//! The session key is random and unguessable: holding it is holding the call
//! (a tenant's call also needs the tenant's token). The call itself is an
//! ordinary call task on the [`WebRtcCodec`] and [`WebRtcTransport`]: same
//! admission, plan, engine, events, recording and metrics as a phone call.
//!
//! [`WebRtcTransport`]: crate::runtime::webrtc::WebRtcTransport

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::AppState;
use super::arrival::{Arrival, Disposition, Refusal, disposition, route_call, settle};
use super::control::{ApiError, api_error, bearer, error};
use crate::carrier::webrtc::{NAME, StartMessage, WebRtcCodec};
use crate::ids::CallId;
use crate::runtime::webrtc::{OfferError, PeerSettings, answer};

/// Events queued for a page that reads slowly (then dropped, never waited on).
const TAP_QUEUE: usize = 256;
/// Largest SDP offer taken.
const MAX_OFFER_BYTES: usize = 64 * 1024;

/// One browser call.
struct Entry {
    call_id: CallId,
    tenant: Option<String>,
    events: std::sync::Mutex<Option<mpsc::Receiver<Arc<str>>>>,
}

/// Browser calls in progress, by session key.
pub struct WebRtc {
    settings: PeerSettings,
    opus_bitrate: i32,
    opus_complexity: u8,
    audio_rate: u32,
    sessions: DashMap<String, Arc<Entry>>,
}

impl WebRtc {
    /// From `[webrtc]` and the TURN credential.
    pub fn new(config: &crate::config::WebRtcConfig, turn_credential: Option<&str>) -> Arc<Self> {
        Arc::new(Self {
            settings: PeerSettings::from_config(config, turn_credential),
            opus_bitrate: config.opus_bitrate,
            opus_complexity: config.opus_complexity,
            audio_rate: config.audio_rate,
            sessions: DashMap::new(),
        })
    }

    /// Browser calls in progress.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// The routes (all 404 when `webrtc.enabled` is off).
pub fn routes(webrtc: Arc<WebRtc>) -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/webrtc/offer", axum::routing::post(offer))
        .route("/webrtc/sessions/{key}", axum::routing::delete(hang_up))
        .route("/webrtc/sessions/{key}/events", axum::routing::get(events))
        .route("/phone", axum::routing::get(phone_page))
        .layer(Extension(webrtc))
}

/// `?number=&from=` of an offer.
#[derive(Debug, Default, Deserialize)]
pub struct OfferQuery {
    #[serde(default)]
    number: String,
    #[serde(default)]
    from: String,
}

/// The checks an offer's body passes before the WebRTC stack sees it: a
/// bounded SDP (`v=0` first) with an audio section. The error is the answer's
/// code and message.
pub fn looks_like_offer(body: &str) -> Result<(), (&'static str, &'static str)> {
    if body.len() > MAX_OFFER_BYTES || !body.starts_with("v=0") {
        return Err(("bad_offer", "the body is not an SDP offer"));
    }
    if !body.lines().any(|l| l.starts_with("m=audio ")) {
        return Err(("no_audio", "the offer has no audio section"));
    }
    Ok(())
}

/// `POST /webrtc/offer`.
pub async fn offer(
    State(s): State<Arc<AppState>>,
    Extension(w): Extension<Arc<WebRtc>>,
    Query(q): Query<OfferQuery>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !s.config.webrtc.enabled {
        return error(StatusCode::NOT_FOUND, "webrtc_disabled", "browser calls are off (webrtc.enabled)");
    }
    let sdp_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !sdp_type.trim().to_ascii_lowercase().starts_with("application/sdp") {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_sdp", "the offer must be Content-Type: application/sdp");
    }
    if let Err((code, why)) = looks_like_offer(&body) {
        return error(StatusCode::BAD_REQUEST, code, why);
    }
    if let Err((status, why)) = s.admit_stream() {
        return error(status, "unavailable", why);
    }
    let number = q.number.trim().to_string();
    let tenant = if number.is_empty() {
        None
    } else {
        let Some(t) = s.tenants.get(&number) else {
            return error(StatusCode::NOT_FOUND, "unknown_number", "no such number");
        };
        match bearer(&headers).and_then(|tok| s.tenants.by_token(tok)) {
            Some(by) if by.id == t.id => {}
            _ => {
                metrics::counter!(crate::metrics::AUTH_REJECTED, "reason" => "webrtc_no_tenant_token").increment(1);
                return error(StatusCode::UNAUTHORIZED, "unauthorized", "calling a number needs its tenant's token");
            }
        }
        Some(t.id.clone())
    };
    let from: String = if q.from.trim().is_empty() { "browser".into() } else { q.from.chars().take(64).collect() };
    let key = crate::signature::random_hex();
    let arrival = Arrival {
        carrier: NAME,
        carrier_call_id: key.clone(),
        from: from.clone(),
        to: number.clone(),
        account_id: String::new(),
        signed: true,
        caller: crate::contract::CallerInfo { direction: "inbound".into(), ..Default::default() },
    };
    let mut route = match route_call(&s, &arrival).await {
        Ok(r) => r,
        Err(Refusal::Busy(_) | Refusal::ShuttingDown) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "busy", "no call slot is free");
        }
        Err(r) => return error(StatusCode::FORBIDDEN, r.code(), "this call is not taken"),
    };
    match disposition(&route) {
        Disposition::Answer => {}
        Disposition::Reject { .. } => {
            settle(&s, route, "rejected");
            return error(StatusCode::FORBIDDEN, "rejected", "the number's backend rejected the call");
        }
        Disposition::Forward(_) => {
            settle(&s, route, "forwarded");
            return error(StatusCode::CONFLICT, "forwarded", "the plan forwards the call; a browser cannot follow");
        }
    }
    let codec = match WebRtcCodec::new(w.audio_rate)
        .and_then(|c| c.with_bitrate(w.opus_bitrate)?.with_complexity(w.opus_complexity))
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot set up Opus");
            crate::runtime::call_task::report_unconnected(&s.call, route, "protocol_error");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "opus", "the Opus codec is unavailable");
        }
    };
    let (tap_tx, tap_rx) = mpsc::channel(TAP_QUEUE);
    route.tap = Some(tap_tx);
    let call_id = route.call_id;
    let token = s.call.pending.insert(NAME, &key, route);
    let start = StartMessage::new(&key, &from, &number, Some(token), false);
    let (sdp, transport) = match answer(&body, &w.settings, start).await {
        Ok(x) => x,
        Err(e) => {
            warn!(call = %call_id, error = %e, "browser offer not answered");
            if let Some(route) = s.call.pending.take(NAME, &key) {
                crate::runtime::call_task::report_unconnected(&s.call, route, "protocol_error");
            }
            let status = match e {
                OfferError::GatherTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
                OfferError::NoPort => StatusCode::SERVICE_UNAVAILABLE,
                OfferError::Stack(_) | OfferError::NoOpus => StatusCode::BAD_REQUEST,
            };
            return error(status, "offer_failed", e.to_string());
        }
    };
    let entry = Arc::new(Entry { call_id, tenant, events: std::sync::Mutex::new(Some(tap_rx)) });
    w.sessions.insert(key.clone(), entry);
    info!(call = %call_id, "browser call answered");
    let ctx = s.call.clone();
    let (w2, key2) = (w.clone(), key.clone());
    tokio::spawn(async move {
        crate::runtime::call_task::run_call(transport, Box::new(codec), ctx).await;
        w2.sessions.remove(&key2);
    });
    let location = format!("/webrtc/sessions/{key}");
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
            (header::HeaderName::from_static("x-callbridge-call-id"), call_id.to_string()),
        ],
        sdp,
    )
        .into_response()
}

/// The session under `key`, if the request may act on it.
fn session(s: &AppState, w: &WebRtc, key: &str, headers: &HeaderMap) -> Result<Arc<Entry>, ApiError> {
    let not_found = || api_error(StatusCode::NOT_FOUND, "not_found", "no such session");
    let entry = w.sessions.get(key).map(|e| e.clone()).ok_or_else(not_found)?;
    if let Some(tenant) = &entry.tenant {
        let ok = bearer(headers).and_then(|t| s.tenants.by_token(t)).is_some_and(|t| &t.id == tenant);
        if !ok {
            return Err(not_found());
        }
    }
    Ok(entry)
}

/// `DELETE /webrtc/sessions/{key}`: hang up.
pub async fn hang_up(
    State(s): State<Arc<AppState>>,
    Extension(w): Extension<Arc<WebRtc>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let entry = match session(&s, &w, &key, &headers) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    if let Some(h) = s.call.registry.get(entry.call_id) {
        use crate::runtime::registry::CallControl;
        use crate::session::ControlCommand;
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            h.control.send(CallControl::Session(ControlCommand::Hangup)),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return error(StatusCode::SERVICE_UNAVAILABLE, "busy", "the call is not taking commands");
        }
    } else if let Some(route) = s.call.pending.take(NAME, &key) {
        // Hung up before the media connected.
        crate::runtime::call_task::report_unconnected(&s.call, route, "missed");
        w.sessions.remove(&key);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /webrtc/sessions/{key}/events`: server-sent events until the call ends.
pub async fn events(
    State(s): State<Arc<AppState>>,
    Extension(w): Extension<Arc<WebRtc>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let entry = match session(&s, &w, &key, &headers) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    let Some(rx) = entry.events.lock().expect("events lock").take() else {
        return error(StatusCode::CONFLICT, "taken", "the events are already being read");
    };
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let text = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(Event::default().data(&*text)), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// `GET /phone`: the softphone page (no build step, no external service).
pub async fn phone_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        include_str!("pages/phone.html"),
    )
        .into_response()
}
