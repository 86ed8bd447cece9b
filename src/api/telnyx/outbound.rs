//! Telnyx's side of an outbound call placed by `POST /v1/calls`
//! ([`super::rest::TelnyxRest::dial_call`]). The call's webhooks carry the
//! `client_state` we dialled with (`out:<call id>`): `call.answered` starts
//! the media stream (`streaming_start`, our single-use token in its
//! `client_state`) unless machine detection runs, in which case
//! `call.machine.detection.ended` decides — a human is connected, a machine
//! is hung up on (`hangup`) or, under `leave_message`, connected once
//! `call.machine.greeting.ended` says its greeting is over. `call.hangup`
//! before any of that reports the outcome (`busy`, `no_answer`, `canceled`,
//! `failed`).

use std::sync::Arc;

use tracing::{info, warn};

use super::{Payload, Telnyx};
use crate::api::AppState;
use crate::carrier::telnyx::{client_state, token_from_client_state};
use crate::ids::CallId;
use crate::runtime::dialing::{MachineDetection, answered_by};

/// The `client_state` an outbound call `id` is dialled with.
pub fn dial_state(id: CallId) -> String {
    client_state(&format!("out:{id}"))
}

fn our_call(p: &Payload) -> Option<CallId> {
    token_from_client_state(p.client_state.as_deref()?)?.strip_prefix("out:")?.parse().ok()
}

/// Our word for why a dialled call that was never connected ended.
fn outcome(cause: &str) -> &'static str {
    match cause {
        "user_busy" | "call_rejected" => "busy",
        "timeout" | "no_answer" => "no_answer",
        "originator_cancel" => "canceled",
        "normal_clearing" => "missed",
        _ => "failed",
    }
}

/// Handle a webhook of an outbound call we dialled; false if it is not one
/// (or no longer ours to decide: the webhook module goes on with it).
pub(super) fn on_event(s: &Arc<AppState>, t: &Arc<Telnyx>, event: &str, p: &Payload) -> bool {
    let Some(id) = our_call(p) else { return false };
    let machine = match s.dialing.with(id, |d| d.machine) {
        Some(m) => m,
        None => return event != "call.hangup", // a hang-up after we connected: the stream's business
    };
    let verdict = p.result.as_deref().unwrap_or("");
    match event {
        "call.answered" if machine == MachineDetection::Off => connect(s, t, id, p),
        "call.machine.detection.ended" => {
            let by = answered_by(verdict);
            s.dialing.with(id, |d| d.route.answered_by = by.into());
            match (by, machine) {
                ("machine", MachineDetection::Hangup) => hang_up_on_machine(s, t, id, p),
                // Wait for the end of its greeting to leave the message.
                ("machine", MachineDetection::LeaveMessage) => {}
                _ => connect(s, t, id, p),
            }
        }
        "call.machine.greeting.ended" if machine == MachineDetection::LeaveMessage => connect(s, t, id, p),
        "call.hangup" => {
            if let Some(d) = s.dialing.take(id, &p.call_control_id) {
                let reason = outcome(p.hangup_cause.as_deref().unwrap_or(""));
                info!(call = %id, reason, "the outbound call was not answered");
                metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => reason, "carrier" => "telnyx")
                    .increment(1);
                crate::runtime::call_task::report_unconnected(&s.call, d.route, reason);
            }
        }
        _ => {}
    }
    true
}

fn hang_up_on_machine(s: &Arc<AppState>, t: &Arc<Telnyx>, id: CallId, p: &Payload) {
    let Some(d) = s.dialing.take(id, &p.call_control_id) else { return };
    info!(call = %id, "a machine answered the outbound call: hanging up");
    metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => "machine", "carrier" => "telnyx").increment(1);
    crate::runtime::call_task::report_unconnected(&s.call, d.route, "machine");
    let (rest, ccid) = (t.rest.clone(), p.call_control_id.clone());
    tokio::spawn(async move { crate::api::carrier_control::report_hangup("telnyx", rest.hangup(&ccid).await) });
}

/// The callee is there: its route waits for the stream, which Call Control starts.
fn connect(s: &Arc<AppState>, t: &Arc<Telnyx>, id: CallId, p: &Payload) {
    let ccid = p.call_control_id.clone();
    let Some(d) = s.dialing.take(id, &ccid) else { return };
    metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => "answered", "carrier" => "telnyx").increment(1);
    if let Some(tenant) = d.route.tenant.clone() {
        t.remember(ccid.clone(), id, tenant);
    }
    let token = s.call.pending.insert("telnyx", &ccid, d.route);
    let stream_url = format!("{}/telnyx/stream", s.config.server.public_url.trim_end_matches('/'));
    let (s, t) = (s.clone(), t.clone());
    tokio::spawn(async move {
        if let Err(e) = t.rest.stream(&ccid, &stream_url, &t.codec, &client_state(&token)).await {
            metrics::counter!(crate::metrics::CALL_ERRORS, "source" => "carrier_answer").increment(1);
            warn!(call = %id, error = %e.summary(), "Telnyx streaming_start failed");
            if let Some(route) = s.call.pending.take("telnyx", &ccid) {
                crate::runtime::call_task::report_unconnected(&s.call, route, "carrier_error");
            }
            crate::api::carrier_control::report_hangup("telnyx", t.rest.hangup(&ccid).await);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangup_causes_in_our_words() {
        for (cause, ours) in [
            ("user_busy", "busy"),
            ("call_rejected", "busy"),
            ("timeout", "no_answer"),
            ("originator_cancel", "canceled"),
            ("normal_clearing", "missed"),
            ("unspecified", "failed"),
        ] {
            assert_eq!(outcome(cause), ours, "{cause}");
        }
        let p = Payload { client_state: Some(dial_state(CallId(42))), ..Default::default() };
        assert_eq!(our_call(&p), Some(CallId(42)));
        let transfer = Payload { client_state: Some(client_state("xfer:42")), ..Default::default() };
        assert_eq!(our_call(&transfer), None, "a transfer's state is not a dialled call");
    }
}
