//! Twilio's side of an outbound call placed by `POST /v1/calls`
//! ([`super::rest::TwilioRest::create_call`]): the answer webhook (`Url`),
//! which connects the answered call to our media stream — or hangs up on a
//! machine when asked to — and the status callback, which reports a call
//! that was never answered (busy, no answer, failed, canceled).
//!
//! Both name our call id in the query (`?call=`) and Twilio's `CallSid` in
//! the signed form; the call's entry is taken only when both match, so each
//! outbound call has exactly one outcome.

use std::sync::Arc;

use axum::Form;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::info;

use super::{connect_twiml, hangup_twiml, signature_refusal, twiml};
use crate::api::AppState;
use crate::carrier::twilio::{FROM_PARAM, TO_PARAM, TOKEN_PARAM};
use crate::ids::CallId;
use crate::runtime::dialing::{Dialing, MachineDetection, answered_by};

/// Twilio requests this when the callee answers (`Url` of "create call").
pub const ANSWER_PATH: &str = "/twilio/outbound";
/// Twilio reports the call's end or failure here (`StatusCallback`).
pub const STATUS_PATH: &str = "/twilio/outbound-status";

type Params = Query<std::collections::HashMap<String, String>>;

fn field<'a>(form: &'a [(String, String)], k: &str) -> &'a str {
    form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// The dialled call the request is about, if it names one we placed.
fn take(s: &AppState, q: &Params, form: &[(String, String)]) -> Option<Dialing> {
    let id: CallId = q.get("call")?.parse().ok()?;
    let sid = field(form, "CallSid");
    if sid.is_empty() {
        return None;
    }
    s.dialing.take(id, sid)
}

/// `POST /twilio/outbound?call=<id>`: the callee answered (after machine
/// detection, when it was asked for: `AnsweredBy`). A machine under
/// `hangup` is hung up on (`call.ended` reason `machine`); anyone else is
/// connected to the media stream, and the call runs like an inbound one.
pub async fn answered(
    State(s): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    q: Params,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = signature_refusal(&s, &uri, &headers, &form, ("outbound_unsigned", "outbound_bad_signature"))
    {
        return refused;
    }
    let Some(mut d) = take(&s, &q, &form) else { return hangup_twiml() };
    let by = field(&form, "AnsweredBy");
    if !by.is_empty() {
        d.route.answered_by = answered_by(by).into();
    }
    let machine = matches!(d.route.answered_by.as_str(), "machine" | "fax");
    if machine && d.machine == MachineDetection::Hangup {
        info!(call = %d.route.call_id, answered_by = by, "a machine answered the outbound call: hanging up");
        metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => "machine", "carrier" => "twilio")
            .increment(1);
        crate::runtime::call_task::report_unconnected(&s.call, d.route, "machine");
        return hangup_twiml();
    }
    if !s.accepting.load(std::sync::atomic::Ordering::Acquire) {
        crate::runtime::call_task::report_unconnected(&s.call, d.route, "shutdown");
        return hangup_twiml();
    }
    metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => "answered", "carrier" => "twilio").increment(1);
    let (from, to) = (d.route.from.clone(), d.route.to.clone());
    let token = s.call.pending.insert("twilio", field(&form, "CallSid"), d.route);
    let status = format!("{}{}", s.config.public_http_url(), super::STATUS_PATH);
    let params = [(FROM_PARAM, from.as_str()), (TO_PARAM, to.as_str()), (TOKEN_PARAM, token.as_str())];
    twiml(connect_twiml(&s.config.server.public_url, Some(&status), &params))
}

/// `POST /twilio/outbound-status?call=<id>`: how the call ended. A call
/// still waiting for its answer was never answered: `busy`, `no_answer`,
/// `failed`, `canceled` (or `missed` when Twilio says completed without
/// having asked for its TwiML). An answered call was taken already: nothing
/// to do (its stream reports its end).
pub async fn status(
    State(s): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    q: Params,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = signature_refusal(&s, &uri, &headers, &form, ("outbound_unsigned", "outbound_bad_signature"))
    {
        return refused;
    }
    let reason = match field(&form, "CallStatus") {
        "busy" => "busy",
        "no-answer" => "no_answer",
        "failed" => "failed",
        "canceled" => "canceled",
        "completed" => "missed",
        _ => return StatusCode::NO_CONTENT.into_response(),
    };
    if let Some(mut d) = take(&s, &q, &form) {
        let by = field(&form, "AnsweredBy");
        if !by.is_empty() {
            d.route.answered_by = answered_by(by).into();
        }
        info!(call = %d.route.call_id, reason, "the outbound call was not answered");
        metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => reason, "carrier" => "twilio").increment(1);
        crate::runtime::call_task::report_unconnected(&s.call, d.route, reason);
    }
    StatusCode::NO_CONTENT.into_response()
}
