//! Vonage's side of an outbound call placed by `POST /v1/calls`
//! ([`super::rest::VonageRest::create_call`]): the `answer_url` Vonage
//! requests when the callee answers — answered, like an inbound call's, with
//! the NCCO that connects the leg to our WebSocket — and the `event_url`,
//! where a call that was never answered reports how it ended (`busy`,
//! `timeout`/`unanswered`, `rejected`, `failed`, `cancelled`) and machine
//! detection its verdict (`machine`, `human`).
//!
//! Both carry our call id in the query (`?call=`) and Vonage's `uuid` in the
//! signed body; the call's entry is taken only when both match. Under
//! `machine_detection: "hangup"` Vonage itself hangs up on a machine and says
//! so (`status: machine`); under `leave_message` (Vonage's `continue`) the
//! agent speaks from the answer on — Vonage's basic detection does not wait
//! for the beep.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::info;

use super::{Vonage, connect_ncco, ncco, read};
use crate::api::AppState;
use crate::ids::CallId;
use crate::runtime::dialing::{Dialing, answered_by};

/// Vonage requests this when the callee answers (`answer_url`).
pub const ANSWER_PATH: &str = "/vonage/outbound";
/// Vonage reports the call's progress here (`event_url`).
pub const EVENT_PATH: &str = "/vonage/outbound-event";

fn take(s: &AppState, query: &HashMap<String, String>, f: &HashMap<String, String>) -> Option<Dialing> {
    let id: CallId = query.get("call")?.parse().ok()?;
    let uuid = f.get("uuid").map(String::as_str).unwrap_or("");
    if uuid.is_empty() {
        return None;
    }
    s.dialing.take(id, uuid)
}

/// Our word for how a dialled call that was never connected ended.
fn outcome(status: &str) -> Option<&'static str> {
    Some(match status {
        "busy" | "rejected" => "busy",
        "timeout" | "unanswered" => "no_answer",
        "failed" => "failed",
        "cancelled" => "canceled",
        "machine" => "machine",
        "completed" => "missed",
        _ => return None,
    })
}

/// `GET|POST /vonage/outbound?call=<id>`: the callee answered; connect it to our WebSocket.
pub async fn answered(
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
    let Some(d) = take(&s, &query, &f) else {
        return ncco(json!([{"action": "talk", "text": "Goodbye."}]));
    };
    metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => "answered", "carrier" => "vonage").increment(1);
    let uuid = d.route.carrier_call_id.clone();
    connect_ncco(&s, &v, &uuid, d.route)
}

/// `GET|POST /vonage/outbound-event?call=<id>`: progress of a dialled call.
/// A call still waiting for its answer that ends is reported with its
/// outcome; `human`/`machine` verdicts are kept for the report.
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
    let status = f.get("status").map(String::as_str).unwrap_or("");
    if status == "human"
        && let Some(id) = query.get("call").and_then(|c| c.parse::<CallId>().ok())
    {
        s.dialing.with(id, |d| d.route.answered_by = answered_by("human").into());
    }
    if let Some(reason) = outcome(status)
        && let Some(mut d) = take(&s, &query, &f)
    {
        if reason == "machine" {
            d.route.answered_by = "machine".into();
        }
        info!(call = %d.route.call_id, reason, "the outbound call was not answered");
        metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => reason, "carrier" => "vonage").increment(1);
        crate::runtime::call_task::report_unconnected(&s.call, d.route, reason);
    } else if matches!(status, "completed" | "failed" | "timeout" | "rejected" | "cancelled" | "unanswered")
        && let Some(uuid) = f.get("uuid")
        && let Some(route) = s.call.pending.take("vonage", uuid)
    {
        // Answered, then gone before the WebSocket came.
        crate::runtime::call_task::report_unconnected(&s.call, route, "missed");
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vonage_statuses_in_our_words() {
        for (st, ours) in [
            ("busy", Some("busy")),
            ("rejected", Some("busy")),
            ("timeout", Some("no_answer")),
            ("unanswered", Some("no_answer")),
            ("cancelled", Some("canceled")),
            ("machine", Some("machine")),
            ("ringing", None),
            ("answered", None),
        ] {
            assert_eq!(outcome(st), ours, "{st}");
        }
    }
}
