//! Twilio entry points: the voice webhook that answers with TwiML, and the
//! Media Streams WebSocket upgrade (the call then runs on the carrier-neutral
//! call task with the [`TwilioCodec`]); [`rest`] acts on live calls.

pub mod outbound;
pub mod rest;

use std::sync::Arc;

use axum::Form;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use super::AppState;
use super::arrival::{Arrival, Disposition, Refusal, disposition, route_call, settle};
use crate::carrier::twilio::signature as twilio_sig;
use crate::carrier::twilio::{FROM_PARAM, TO_PARAM, TOKEN_PARAM, TwilioCodec};
use crate::runtime::admission::Route;
use crate::runtime::call_task::run_call;
use crate::runtime::transport::AxumSocket;

/// Header Twilio signs requests with.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Escape text for an XML attribute value.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            c => o.push(c),
        }
    }
    o
}

/// TwiML connecting a call to our bidirectional media stream. Data goes in
/// `<Parameter>`s, never in the URL's query string (Twilio drops it).
/// `status_callback` (if given) receives Twilio's stream lifecycle webhooks.
pub fn connect_twiml(public_url: &str, status_callback: Option<&str>, params: &[(&str, &str)]) -> String {
    let url = format!("{}/twilio/stream", public_url.trim_end_matches('/'));
    let mut x = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url=""#);
    x.push_str(&xml_escape(&url));
    x.push('"');
    if let Some(cb) = status_callback {
        x.push_str(r#" statusCallback=""#);
        x.push_str(&xml_escape(cb));
        x.push_str(r#"" statusCallbackMethod="POST""#);
    }
    x.push('>');
    for (k, v) in params {
        x.push_str(&format!(r#"<Parameter name="{}" value="{}"/>"#, xml_escape(k), xml_escape(v)));
    }
    x.push_str("</Stream></Connect></Response>");
    x
}

/// TwiML refusing a call we cannot take now (the caller hears busy).
pub const BUSY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>"#;

/// TwiML for a number nobody registered.
pub const NOT_IN_SERVICE_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>The number you have dialed is not in service.</Say><Hangup/></Response>"#;

pub(super) fn twiml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn refuse(reason: &'static str) -> Response {
    metrics::counter!(crate::metrics::AUTH_REJECTED, "reason" => reason).increment(1);
    warn!(reason, "Twilio request refused");
    (StatusCode::FORBIDDEN, "invalid Twilio signature\n").into_response()
}

/// What the server needs from Twilio's module at start-up.
pub struct Setup {
    /// Twilio's call-control REST API.
    pub control: Arc<dyn crate::api::carrier_control::CarrierControl>,
    /// Webhooks and streams must be signed (and streams present their token).
    pub validating: bool,
}

/// Check Twilio's settings (signature validation needs the auth token;
/// unsigned is for loopback development only) and build its REST client.
pub fn setup(
    config: &crate::config::Config,
    secrets: &crate::config::Secrets,
    http: &reqwest::Client,
) -> Result<Setup, String> {
    let validating = config.server.validate_twilio_signatures;
    if validating && secrets.twilio_auth_tokens.is_empty() {
        return Err("server.validate_twilio_signatures is on but TWILIO_AUTH_TOKEN is not set".into());
    }
    if !validating {
        if !config.server.listen.ip().is_loopback() && !secrets.allow_unsigned {
            return Err(format!(
                "server.validate_twilio_signatures = false is for local development, but the server listens on {}; \
                 turn validation on (with TWILIO_AUTH_TOKEN) or set CALLBRIDGE_ALLOW_UNSIGNED=1",
                config.server.listen
            ));
        }
        warn!(
            "Twilio signatures are NOT validated (server.validate_twilio_signatures = false): local development only"
        );
    }
    let control =
        Arc::new(rest::TwilioRest::new(http.clone(), &config.twilio.api_base_url, secrets, &config.public_http_url()));
    Ok(Setup { control, validating })
}

/// Twilio's routes.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/twilio/voice", axum::routing::post(voice))
        .route("/twilio/stream", axum::routing::get(stream))
        .route(STATUS_PATH, axum::routing::post(stream_status))
        .route(TRANSFER_STATUS_PATH, axum::routing::post(transfer_status))
        .route(outbound::ANSWER_PATH, axum::routing::post(outbound::answered))
        .route(outbound::STATUS_PATH, axum::routing::post(outbound::status))
}

/// Check a signed webhook (signed over our public URL with its query, and
/// the form) when validating: the refusal to answer if it fails. `codes`
/// are the refusal reasons for an unsigned and a badly signed request.
pub(super) fn signature_refusal(
    s: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    form: &[(String, String)],
    codes: (&'static str, &'static str),
) -> Option<Response> {
    if !validating(s) {
        return None;
    }
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{path}", s.config.public_http_url());
    let sig = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if twilio_sig::validate(&s.secrets.twilio_auth_tokens, &url, form, sig) {
        None
    } else {
        Some(refuse(if sig.is_empty() { codes.0 } else { codes.1 }))
    }
}

/// TwiML that ends the call.
pub(super) fn hangup_twiml() -> Response {
    twiml(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#.to_string())
}

/// Whether Twilio requests must be signed.
fn validating(s: &AppState) -> bool {
    s.config.server.validate_twilio_signatures
}

/// `POST /twilio/voice`: Twilio's incoming-call webhook. Validates the
/// signature, looks the called number up, asks its backend for the call plan
/// (within the blocking budget), and answers `<Connect><Stream>` with a token
/// bound to the CallSid.
pub async fn voice(
    State(s): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = signature_refusal(&s, &uri, &headers, &form, ("webhook_unsigned", "webhook_bad_signature")) {
        return refused;
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let (call_sid, from, to) = (get("CallSid"), get("From"), get("To"));
    let arrival = Arrival {
        carrier: "twilio",
        carrier_call_id: call_sid.into(),
        from: from.into(),
        to: to.into(),
        account_id: get("AccountSid").into(),
        signed: validating(&s),
        caller: crate::contract::CallerInfo {
            caller_name: get("CallerName").chars().take(64).collect(),
            forwarded_from: get("ForwardedFrom").chars().take(32).collect(),
            direction: get("Direction").chars().take(32).collect(),
            parent_call_id: get("ParentCallSid").chars().take(64).collect(),
        },
    };
    let route = match route_call(&s, &arrival).await {
        Ok(r) => r,
        Err(Refusal::NotInService | Refusal::WrongCarrier) => return twiml(NOT_IN_SERVICE_TWIML.to_string()),
        Err(Refusal::Unsigned) => return refuse("webhook_unsigned_tenant"),
        Err(Refusal::Busy(_) | Refusal::ShuttingDown) => return twiml(BUSY_TWIML.to_string()),
    };
    match disposition(&route) {
        Disposition::Answer => {}
        Disposition::Reject { busy, say } => {
            settle(&s, route, "rejected");
            return twiml(match say {
                Some(text) => format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>{}</Say><Hangup/></Response>"#,
                    xml_escape(&text)
                ),
                None => format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="{}"/></Response>"#,
                    if busy { "busy" } else { "rejected" }
                ),
            });
        }
        Disposition::Forward(target) => {
            settle(&s, route, "forwarded");
            return twiml(rest::dial_twiml(&target, None));
        }
    }
    let mut params = vec![(FROM_PARAM, from), (TO_PARAM, to)];
    let token;
    if !call_sid.is_empty() {
        token = s.call.pending.insert("twilio", call_sid, route);
        params.push((TOKEN_PARAM, token.as_str()));
    }
    params.retain(|(_, v)| !v.is_empty());
    let status = format!("{}{STATUS_PATH}", s.config.public_http_url());
    twiml(connect_twiml(&s.config.server.public_url, Some(&status), &params))
}

/// Where Twilio reports the stream's lifecycle (`<Stream statusCallback>`).
pub(super) const STATUS_PATH: &str = "/twilio/stream-status";
/// Where Twilio reports a transfer's outcome (`<Dial action>`).
pub const TRANSFER_STATUS_PATH: &str = "/twilio/transfer-status";

/// `POST /twilio/transfer-status?call=<id>`: the `<Dial action>` of a
/// transfer. Answered or completed: the call ends (`transfer.completed`, then
/// `call.ended` reason `transferred`). Busy, no answer, failed: the caller
/// comes back to the bot on the same call (`transfer.failed`; the answer is a
/// new `<Connect><Stream>` that resumes it), or hears goodbye when no slot is
/// free.
pub async fn transfer_status(
    State(s): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = signature_refusal(&s, &uri, &headers, &form, ("transfer_unsigned", "transfer_bad_signature"))
    {
        return refused;
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let hangup = hangup_twiml;
    let Some(parked) = q.get("call").and_then(|c| c.parse().ok()).and_then(|id| s.call.parked.take(id)) else {
        return hangup();
    };
    let status = get("DialCallStatus").to_string();
    let destination = parked.destination.clone();
    if matches!(status.as_str(), "completed" | "answered") {
        let ev = crate::contract::Event::TransferCompleted { to: destination, status };
        crate::runtime::call_task::end_parked(&s.call, parked, Some(ev), "transferred");
        return hangup();
    }
    metrics::counter!(crate::metrics::CALL_ERRORS, "source" => "transfer").increment(1);
    warn!(call = %parked.call_id, status = %status, "transfer did not connect; the caller comes back");
    let failed = crate::contract::Event::TransferFailed { to: destination, status };
    let slot = match s.call.capacity.try_reserve(parked.tenant.as_ref().map(|t| t.id.as_str())) {
        Ok(slot) => slot,
        Err(_) => {
            crate::runtime::call_task::end_parked(&s.call, parked, Some(failed), "transfer_failed");
            return hangup();
        }
    };
    let mut parked = parked;
    parked.events.send(failed);
    let mut route = Route::unannounced(parked.call_id, &parked.from, &parked.to);
    route.tenant = parked.tenant;
    route.plan = parked.plan;
    if parked.summary.direction == "outbound" {
        route.direction = "outbound";
    }
    route.answered_by = std::mem::take(&mut parked.summary.answered_by);
    route.slot = Some(Arc::new(slot));
    route.resume = Some(parked.events);
    let (from, to) = (route.from.clone(), route.to.clone());
    let token = s.call.pending.insert("twilio", get("CallSid"), route);
    let status_cb = format!("{}{STATUS_PATH}", s.config.public_http_url());
    let params = [(FROM_PARAM, from.as_str()), (TO_PARAM, to.as_str()), (TOKEN_PARAM, token.as_str())];
    twiml(connect_twiml(&s.config.server.public_url, Some(&status_cb), &params))
}

/// `POST /twilio/stream-status`: Twilio's stream lifecycle webhook. A stream
/// that stopped or failed before it ever started means the call will not
/// come: its route is taken and the backend hears `call.ended` (`missed` if
/// the caller hung up first, `stream_error` if the stream failed).
pub async fn stream_status(
    State(s): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = signature_refusal(&s, &uri, &headers, &form, ("status_unsigned", "status_bad_signature")) {
        return refused;
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let reason = match get("StreamEvent") {
        "stream-stopped" => "missed",
        "stream-error" => {
            warn!(error = get("StreamError").chars().take(200).collect::<String>(), "Twilio reports a stream error");
            "stream_error"
        }
        _ => return StatusCode::NO_CONTENT.into_response(),
    };
    if let Some(route) = s.call.pending.take("twilio", get("CallSid")) {
        info!(call = %route.call_id, reason, "the stream ended before it started");
        crate::runtime::call_task::report_unconnected(&s.call, route, reason);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /twilio/stream`: the Media Streams WebSocket.
pub async fn stream(State(s): State<Arc<AppState>>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if validating(&s) {
        // Signed over the stream URL exactly as in <Stream url>, no parameters.
        let url = format!("{}/twilio/stream", s.config.server.public_url.trim_end_matches('/'));
        let sig = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !twilio_sig::validate(&s.secrets.twilio_auth_tokens, &url, &[], sig) {
            return refuse(if sig.is_empty() { "stream_unsigned" } else { "stream_bad_signature" });
        }
    }
    if let Err(refusal) = s.admit_stream() {
        metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => refusal.1, "carrier" => "twilio").increment(1);
        return refusal.into_response();
    }
    let cfg = &s.config.server;
    let ctx = s.call.clone();
    let codec = TwilioCodec::new(crate::carrier::twilio::TwilioLimits {
        max_payload_bytes: (cfg.max_message_bytes / 4 * 3).min(64 * 1024),
    });
    super::stream_socket(ws, cfg, 0).on_upgrade(move |socket| async move {
        // Closing a <Connect><Stream> ends the call at Twilio: nothing to hang up.
        run_call(AxumSocket::new(socket), Box::new(codec), ctx).await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_has_stream_url_without_query_and_escaped_parameters() {
        let x = connect_twiml("wss://cb.example.com/", None, &[("from", "+1555<&>\"")]);
        assert_eq!(
            x,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://cb.example.com/twilio/stream"><Parameter name="from" value="+1555&lt;&amp;&gt;&quot;"/></Stream></Connect></Response>"#
        );
    }
}
