//! `POST /v1/calls` (tenant token): place an outbound call from the tenant's
//! number through its carrier's REST API. The call then runs exactly like an
//! inbound one — `call.started` (with `direction: "outbound"`; its reply is
//! the plan unless the request brought one), the same events, report and
//! recording — and a call that is never answered ends with `call.ended`
//! reason `busy`, `no_answer`, `failed`, `canceled` or `machine`.
//!
//! The carrier is the number's (`carrier`), or for a number bound to none
//! the first carrier configured to dial.
//!
//! Safe by default: a tenant calls only from its own number and only where
//! its number may transfer to (`transfer_allow`; by default its own country),
//! within the server's and the tenant's call limits and the tenant's
//! outbound limit (`limits.max_outbound_calls_per_tenant`, counting calls
//! from placement to their end).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use super::AppState;
use super::arrival::{Arrival, ask_plan, settle};
use super::carrier_control::{ControlError, Dial};
use super::control::{error, tenant};
use crate::contract::CallPlan;
use crate::destination::TransferTarget;
use crate::ids::CallId;
use crate::runtime::admission::Route;
use crate::runtime::dialing::MachineDetection;

/// How long a callee's phone rings unless the request says (seconds).
pub const DEFAULT_RING_TIMEOUT_S: u32 = 30;

/// `POST /v1/calls` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCall {
    /// Number (E.164) or SIP URI to call.
    to: String,
    /// Caller ID: the tenant's number (the default).
    #[serde(default)]
    from: Option<String>,
    /// The plan (the shape of a `call.started` reply); without it the
    /// backend's reply to `call.started` is the plan.
    #[serde(default)]
    plan: Option<CallPlan>,
    /// `off` (default), `hangup`, `leave_message`.
    #[serde(default)]
    machine_detection: MachineDetection,
    /// Seconds to let it ring (5–120).
    #[serde(default)]
    ring_timeout_s: Option<u32>,
}

/// `POST /v1/calls`: answers `202` with the call id once the carrier
/// accepted the call.
pub async fn create_call(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<NewCall>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let t = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if !s.accepting.load(std::sync::atomic::Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down");
    }
    if s.config.limits.max_outbound_calls_per_tenant == 0 {
        return error(
            StatusCode::FORBIDDEN,
            "outbound_disabled",
            "outbound calls are off (limits.max_outbound_calls_per_tenant = 0)",
        );
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", e.body_text()),
    };
    let from = req.from.clone().unwrap_or_else(|| t.number.clone());
    if from != t.number {
        return error(StatusCode::FORBIDDEN, "from_not_owned", "calls go out from this token's own number only");
    }
    let target = match TransferTarget::parse(&req.to) {
        Ok(t) => t,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid", m),
    };
    if !t.destinations().allows(&target) {
        metrics::counter!(crate::metrics::CALL_ERRORS, "source" => "outbound_refused").increment(1);
        return error(
            StatusCode::FORBIDDEN,
            "destination_not_allowed",
            "this number may not call there (see the number's transfer_allow)",
        );
    }
    let ring = req.ring_timeout_s.unwrap_or(DEFAULT_RING_TIMEOUT_S);
    if !(5..=120).contains(&ring) {
        return error(StatusCode::BAD_REQUEST, "invalid", "ring_timeout_s must be 5–120");
    }
    // The number's carrier; a number not bound to one calls through the first
    // carrier configured to place calls (Twilio, Telnyx, Vonage).
    let carrier = if t.carrier.is_empty() {
        s.carriers.iter().find(|c| c.dials()).cloned()
    } else {
        s.carrier_control(&t.carrier).cloned()
    };
    let Some(carrier) = carrier else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_credentials",
            "no carrier is configured to place calls (see README, Outbound calls)",
        );
    };
    let slot = match s.call.capacity.try_reserve(Some(&t.id)) {
        Ok(slot) => slot,
        Err(f) => {
            metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => f.code(), "carrier" => carrier.carrier())
                .increment(1);
            return error(StatusCode::TOO_MANY_REQUESTS, f.code(), "at the concurrent-call limit; try again later");
        }
    };
    let Ok(outbound) = s.outbound.try_reserve(Some(&t.id)) else {
        metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => "outbound_limit", "carrier" => carrier.carrier())
            .increment(1);
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "outbound_limit",
            "this number has as many outbound calls as limits.max_outbound_calls_per_tenant allows",
        );
    };
    let call_id = CallId::random();
    // Cluster mode: the cluster's limits too.
    let slot = match &s.cluster {
        Some(c) => match c
            .reserve(call_id, Some(&t.id), s.config.cluster.max_calls, s.config.limits.max_calls_per_tenant)
            .await
        {
            Ok(lease) => slot.with_lease(lease),
            Err(f) => {
                metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => f.code(), "carrier" => carrier.carrier())
                    .increment(1);
                return error(StatusCode::TOO_MANY_REQUESTS, f.code(), "at the concurrent-call limit; try again later");
            }
        },
        None => slot,
    };
    let mut route = Route::unannounced(call_id, &from, target.as_str());
    route.tenant = Some(t.clone());
    route.slot = Some(Arc::new(slot.holding(outbound)));
    route.carrier = carrier.carrier();
    route.direction = "outbound";
    let arrival = Arrival {
        carrier: carrier.carrier(),
        from: from.clone(),
        to: target.as_str().to_string(),
        signed: true,
        caller: crate::contract::CallerInfo { direction: "outbound".into(), ..Default::default() },
        ..Default::default()
    };
    ask_plan(&s, &mut route, &arrival).await;
    if let Some(plan) = req.plan {
        (route.plan, route.plan_failed) = (plan, false);
    }
    super::arrival::ringing(&s.call, &mut route);
    if route.plan.reject.is_some() {
        settle(&s, route, "rejected");
        return error(StatusCode::CONFLICT, "rejected", "the backend's plan rejected the call");
    }
    s.dialing.insert(route, req.machine_detection);
    let dial = Dial { call_id, to: target, from, ring_timeout_s: ring, machine: req.machine_detection };
    match carrier.dial(&dial).await {
        Ok(carrier_call_id) => {
            s.dialing.set_carrier_call_id(call_id, &carrier_call_id);
            metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => "placed", "carrier" => carrier.carrier())
                .increment(1);
            info!(call = %call_id, carrier = carrier.carrier(), "outbound call placed");
            let body = json!({"call_id": call_id.to_string(), "status": "dialing", "carrier": carrier.carrier(),
                "carrier_call_id": carrier_call_id});
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(e) => {
            warn!(call = %call_id, error = %e.summary(), "the carrier did not place the outbound call");
            if let Some(d) = s.dialing.remove(call_id) {
                crate::runtime::call_task::report_unconnected(&s.call, d.route, "failed");
            }
            metrics::counter!(crate::metrics::OUTBOUND_OUTCOMES, "outcome" => "failed", "carrier" => carrier.carrier())
                .increment(1);
            match e {
                ControlError::NoCredentials(_) => {
                    error(StatusCode::SERVICE_UNAVAILABLE, "no_credentials", e.to_string())
                }
                ControlError::Unsupported(_) => error(StatusCode::NOT_IMPLEMENTED, "unsupported", e.to_string()),
                _ => error(StatusCode::BAD_GATEWAY, "carrier_error", e.to_string()),
            }
        }
    }
}
