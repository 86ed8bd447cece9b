//! A call arriving at a carrier's webhook, whichever carrier: who it is for
//! (the number's tenant, or the embedded default), whether it may be taken
//! (unknown numbers, unsigned requests for a tenant, capacity — a slot is
//! reserved here, atomically), and what the backend wants done with it (the
//! `call.started` callback, within its budget; the defaults and the fallback
//! line if that fails). Each carrier's webhook turns the outcome into its own
//! answer (TwiML, a Call Control command, an NCCO).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::AppState;
use crate::callback::client::Target;
use crate::config::UnknownNumbers;
use crate::contract::{CallPlan, Envelope, Event};
use crate::ids::CallId;
use crate::runtime::admission::Route;

/// What the carrier's webhook told us.
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    /// Carrier label.
    pub carrier: &'static str,
    /// The carrier's id of the call.
    pub carrier_call_id: String,
    /// Caller.
    pub from: String,
    /// Called number.
    pub to: String,
    /// The carrier account, if given.
    pub account_id: String,
    /// Whether the carrier's signature on the request was checked.
    pub signed: bool,
    /// What else the carrier said about the caller.
    pub caller: crate::contract::CallerInfo,
}

/// Why a call is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nobody registered the number (and unknown numbers are not answered).
    NotInService,
    /// The number is registered with another carrier.
    WrongCarrier,
    /// A tenant's number reached unsigned, without the development flag.
    Unsigned,
    /// The server or the tenant is at its concurrent-call limit.
    Busy(crate::runtime::capacity::Full),
    /// The server is shutting down.
    ShuttingDown,
}

impl Refusal {
    /// Stable code for metrics.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NotInService => "unknown_number",
            Refusal::WrongCarrier => "wrong_carrier",
            Refusal::Unsigned => "unsigned_tenant_call",
            Refusal::Busy(f) => f.code(),
            Refusal::ShuttingDown => "shutting_down",
        }
    }
}

/// Decide about an arriving call; on success the route holds its reserved
/// slot and the backend's plan.
pub async fn route_call(s: &Arc<AppState>, a: &Arrival) -> Result<Route, Refusal> {
    let refused = |r: Refusal| {
        metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => r.code(), "carrier" => a.carrier).increment(1);
        r
    };
    if !s.accepting.load(std::sync::atomic::Ordering::Acquire) {
        return Err(refused(Refusal::ShuttingDown));
    }
    let tenant = s.tenants.get(&a.to);
    let answer_unknown = match s.config.callbacks.unknown_numbers {
        UnknownNumbers::Answer => true,
        UnknownNumbers::Reject => false,
        UnknownNumbers::Auto => s.tenants.is_empty(),
    };
    if tenant.is_none() && !answer_unknown {
        info!(carrier = a.carrier, "call to an unregistered number refused");
        return Err(refused(Refusal::NotInService));
    }
    // A browser call (the `/phone` page, its tenant's token checked) may try
    // any of its numbers, whichever carrier the number is with.
    if let Some(t) = &tenant
        && !t.carrier.is_empty()
        && t.carrier != a.carrier
        && a.carrier != crate::carrier::webrtc::NAME
    {
        warn!(carrier = a.carrier, registered = %t.carrier, "call refused: the number is registered with another carrier");
        return Err(refused(Refusal::WrongCarrier));
    }
    if tenant.is_some() && !a.signed && !s.config.server.allow_unsigned_tenant_calls {
        warn!(
            carrier = a.carrier,
            "unsigned webhook for a registered number refused (turn signature validation on; \
             server.allow_unsigned_tenant_calls = true is for development only)"
        );
        return Err(refused(Refusal::Unsigned));
    }
    let busy = |f: crate::runtime::capacity::Full| {
        warn!(carrier = a.carrier, reason = f.code(), "call refused: busy");
        refused(Refusal::Busy(f))
    };
    let tenant_id = tenant.as_ref().map(|t| t.id.as_str());
    let slot = s.call.capacity.try_reserve(tenant_id).map_err(busy)?;
    let call_id = CallId::random();
    // Cluster mode: the cluster's limits too (atomically, across nodes).
    let slot = match &s.cluster {
        Some(c) => {
            let lease = c
                .reserve(call_id, tenant_id, s.config.cluster.max_calls, s.config.limits.max_calls_per_tenant)
                .await
                .map_err(busy)?;
            slot.with_lease(lease)
        }
        None => slot,
    };
    let mut route = Route::unannounced(call_id, &a.from, &a.to);
    route.tenant = tenant.clone();
    route.slot = Some(Arc::new(slot));
    route.carrier = a.carrier;
    route.carrier_call_id = a.carrier_call_id.clone();
    ask_plan(s, &mut route, a).await;
    ringing(&s.call, &mut route);
    Ok(route)
}

/// `call.status` `ringing`, when the plan asks for status events: the call's
/// event stream begins here — at the carrier's webhook, or as an outbound
/// call is placed — and the call task carries it on (`at_ms` 0: the
/// envelope's `timestamp` says when).
pub fn ringing(ctx: &crate::runtime::call_task::CallContext, route: &mut Route) {
    let Some(t) = &route.tenant else { return };
    if !crate::session::agent::LiveEvents::from_names(&route.plan.events).status {
        return;
    }
    let mut events = ctx.event_stream(t, &route.call_id.to_string(), route.seq_used);
    events.send(Event::CallStatus { status: "ringing".into(), at_ms: 0 });
    route.early = Some(events);
}

/// Tell the route's backend the call exists (`call.started`, within the
/// blocking budget) and take its reply as the plan; on failure the call runs
/// on the defaults and hears the fallback line. No backend: nothing to ask.
pub async fn ask_plan(s: &AppState, route: &mut Route, a: &Arrival) {
    let Some(t) = route.tenant.clone() else { return };
    let call_id = route.call_id;
    let target = Target { url: t.callback_url.clone(), secret: t.secret.clone() };
    let event = Event::CallStarted {
        from: a.from.clone(),
        to: a.to.clone(),
        carrier: a.carrier.into(),
        carrier_call_id: a.carrier_call_id.clone(),
        account_id: a.account_id.clone(),
        caller: a.caller.clone(),
    };
    route.seq_used = 1;
    let env = Envelope::new(&call_id.to_string(), 1, SystemTime::now(), event);
    let budget = Duration::from_millis(s.config.callbacks.blocking_timeout_ms);
    let started = std::time::Instant::now();
    let reply = s.call.client.post(&target, &env, budget).await;
    crate::metrics::observe(
        &metrics::histogram!(crate::metrics::CALLBACK_LATENCY, "type" => "call.started"),
        started.elapsed(),
    );
    match reply.and_then(|v| {
        if v.is_null() {
            Ok(CallPlan::default())
        } else {
            serde_json::from_value::<CallPlan>(v)
                .map_err(|e| crate::callback::client::CallbackError::BadBody(e.to_string()))
        }
    }) {
        Ok(plan) => route.plan = plan,
        Err(e) => {
            metrics::counter!(crate::metrics::CALLBACK_FALLBACKS, "type" => "call.started", "kind" => e.kind())
                .increment(1);
            warn!(call = %call_id, error = %e, "call plan unavailable; answering on defaults with the fallback line");
            route.plan_failed = true;
        }
    }
}

/// What the plan wants done with a call it was asked about.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Answer with an engine (the usual case).
    Answer,
    /// Refuse it; `busy` says how, `say` what to say first (where the carrier can).
    Reject {
        /// the line is busy, rather than refused
        busy: bool,
        /// said before hanging up
        say: Option<String>,
    },
    /// Connect the caller straight to this destination.
    Forward(crate::destination::TransferTarget),
}

/// The plan's disposition of `route`. A `forward` outside the number's
/// `transfer_allow` (or unparsable) is refused and the call answered as usual.
pub fn disposition(route: &Route) -> Disposition {
    use crate::contract::RejectReason;
    if let Some(r) = &route.plan.reject {
        let say = r.say.clone().filter(|s| !s.trim().is_empty());
        return Disposition::Reject { busy: r.reason == RejectReason::Busy, say };
    }
    let Some(to) = route.plan.forward.as_deref() else { return Disposition::Answer };
    let target = match crate::destination::TransferTarget::parse(to) {
        Ok(t) => t,
        Err(e) => {
            warn!(call = %route.call_id, error = %e, "the plan's forward is not a destination; answering");
            return Disposition::Answer;
        }
    };
    match &route.tenant {
        Some(t) if t.destinations().allows(&target) => Disposition::Forward(target),
        _ => {
            metrics::counter!(crate::metrics::CALL_ERRORS, "source" => "forward_refused").increment(1);
            warn!(call = %route.call_id, "the plan's forward is outside the number's transfer_allow; answering");
            Disposition::Answer
        }
    }
}

/// End the backend's view of a call the plan rejected or forwarded:
/// `call.ended` with `reason` (`rejected`, `forwarded`), slot released.
pub fn settle(s: &AppState, route: Route, reason: &'static str) {
    info!(call = %route.call_id, reason, "the plan disposed of the call without an engine");
    crate::runtime::call_task::report_unconnected(&s.call, route, reason);
}
