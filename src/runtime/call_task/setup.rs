//! A call's setup: wait (a bounded time) for the stream's `start`, then admit
//! it — check its single-use token and claim the route the webhook decided —
//! and build the call with its final configuration: the engine the plan asks
//! for, the session tuned by the plan, recording, events and the store row.
//! Nothing reaches an engine before a stream is admitted.

use std::pin::pin;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::CallContext;
use super::end::CallEnd;
use super::io::{Requests, RouteInfo, ShellIo};
use crate::call::{Call, Fault};
use crate::callback::client::Target;
use crate::callback::delivery::EventSender;
use crate::carrier::{Carrier, CarrierEvent, Severity, StreamInfo, WireOut};
use crate::engine::registry::EngineRequest;
use crate::ids::CallId;
use crate::metrics::CallMetrics;
use crate::runtime::admission::{ClaimError, Route};
use crate::runtime::registry::{CallControl, CallDetails, Registration};
use crate::runtime::transport::{Received, Transport};
use crate::session::{AgentConfig, ControlCommand, HangupReason, Session, SessionConfig};

/// Read until the stream's `start` (within `limits.start_timeout`). Pings are
/// not activity; anything else before `start` is the codec's to judge.
pub(super) async fn await_start<T: Transport>(
    transport: &mut T,
    carrier: &mut dyn Carrier,
    control: &mut mpsc::Receiver<CallControl>,
    ctx: &CallContext,
) -> Result<StreamInfo, CallEnd> {
    let deadline = Instant::now() + ctx.limits.start_timeout;
    let mut sleep = pin!(tokio::time::sleep_until(deadline));
    let mut errors = 0u32;
    let label = carrier.name();
    loop {
        let received = tokio::select! {
            biased;
            cmd = control.recv() => match cmd {
                Some(CallControl::Session(ControlCommand::Shutdown)) => return Err(CallEnd::Hangup(HangupReason::Shutdown)),
                Some(CallControl::Session(ControlCommand::Hangup)) => return Err(CallEnd::Hangup(HangupReason::Control)),
                Some(CallControl::Say { reply, .. }) => {
                    let _ = reply.send(Err(crate::call::SayError::NotActive));
                    continue;
                }
                Some(_) => continue,
                None => return Err(CallEnd::Hangup(HangupReason::Shutdown)),
            },
            r = std::future::poll_fn(|cx| transport.poll_recv(cx)) => r,
            () = &mut sleep => {
                metrics::counter!(crate::metrics::PROTOCOL_ERRORS, "carrier" => label, "kind" => "no_start").increment(1);
                warn!(carrier = label, "stream sent no start in {:?}; closing", ctx.limits.start_timeout);
                return Err(CallEnd::NoStart);
            }
        };
        let now = Instant::now().into_std();
        let Some(wire) = received.wire() else {
            match received {
                Received::Control => continue,
                Received::Closed | Received::Lost => return Err(CallEnd::PeerClosed),
                Received::TooBig => {
                    metrics::counter!(crate::metrics::PROTOCOL_ERRORS, "carrier" => label, "kind" => "message_too_big")
                        .increment(1);
                    return Err(CallEnd::TooBig);
                }
                _ => return Err(CallEnd::Transport),
            }
        };
        match carrier.decode(now, wire) {
            Ok(CarrierEvent::Start(info)) => return Ok(info),
            Ok(_) => {}
            Err(e) => {
                metrics::counter!(crate::metrics::PROTOCOL_ERRORS, "carrier" => label, "kind" => e.code()).increment(1);
                warn!(carrier = label, kind = e.code(), error = %e, "carrier protocol error before start");
                match e.severity() {
                    Severity::Fatal => {
                        return Err(CallEnd::Fault(Fault {
                            code: e.code(),
                            close_code: e.close_code(),
                            message: e.to_string(),
                        }));
                    }
                    Severity::Skip => {
                        errors += 1;
                        if errors > ctx.limits.max_protocol_errors {
                            return Err(CallEnd::Fault(Fault {
                                code: "too_many_errors",
                                close_code: crate::carrier::close::POLICY,
                                message: "too many protocol errors".into(),
                            }));
                        }
                    }
                    Severity::Ignorable => {}
                }
            }
        }
    }
}

/// A call ready to go live.
pub(super) struct Admitted {
    pub call: Call,
    pub io: ShellIo,
    pub links: crate::runtime::engine_link::LinkEvents,
    pub replies: mpsc::Receiver<super::Answer>,
    pub info: StreamInfo,
    /// The call's slot, held until it ends.
    pub slot: Arc<crate::runtime::capacity::Slot>,
}

/// Check the stream came from our webhook, claim its route, and build the call.
/// Boxed: the call task's future keeps the `Result` it matched on for its
/// whole life, so an unboxed `Admitted` would be stored twice in every call
/// (once there, once in the fields taken out of it): the task measured
/// 9,750 B per call unboxed, 6,000 B boxed (`scripts/heap.sh`).
pub(super) fn admit(
    ctx: &Arc<CallContext>,
    info: StreamInfo,
    carrier: Box<dyn Carrier>,
    registration: &mut Registration,
) -> Result<Box<Admitted>, CallEnd> {
    let label = carrier.name();
    let unauthorized = |why: &'static str| {
        // One reason for every stream that fails to prove itself; the log says which way.
        metrics::counter!(crate::metrics::AUTH_REJECTED, "reason" => "bad_stream_token").increment(1);
        warn!(carrier = label, detail = why, "stream refused");
        CallEnd::Unauthorized(why)
    };
    // A route the webhook decided is claimed with its single-use token, signed or
    // not; only streams no webhook announced go without one (local development).
    let mut route = match info.token.as_deref() {
        Some(token) => match ctx.pending.claim(label, &info.call_id, token) {
            Ok(r) => r,
            Err(ClaimError::Unknown) if !ctx.require_stream_token => {
                Route::unannounced(CallId::random(), &info.from, &info.to)
            }
            Err(e) => return Err(unauthorized(e.code())),
        },
        None if ctx.require_stream_token => return Err(unauthorized("no_stream_token")),
        None if ctx.pending.contains(label, &info.call_id) => return Err(unauthorized("no_stream_token")),
        None => Route::unannounced(CallId::random(), &info.from, &info.to),
    };
    let slot = match route.slot.clone() {
        Some(s) => s,
        None => match ctx.capacity.try_reserve(route.tenant.as_ref().map(|t| t.id.as_str())) {
            Ok(s) => Arc::new(s),
            Err(f) => {
                metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => f.code(), "carrier" => label)
                    .increment(1);
                return Err(CallEnd::Busy);
            }
        },
    };
    let now = Instant::now().into_std();
    let id = route.call_id;
    let plan = &route.plan;
    let resumed = route.resume.is_some();
    let request = EngineRequest { plan, stream: info.format, greet: !resumed };
    let chosen = ctx.engines.build(plan.engine.as_deref(), &request);
    if let Some(why) = &chosen.fallback_reason {
        warn!(call = %id, reason = %why, "the engine asked for cannot answer; using {}", chosen.engine.label());
    }
    let mut engine = chosen.engine;
    if engine.needs_brain() && route.tenant.is_none() {
        // Its words come from a number's backend, and this call has none.
        warn!(call = %id, engine = engine.label(), "this engine speaks a backend's replies and the call has no backend; using local");
        engine = ctx.engines.build(Some("local"), &request).engine;
    }
    let record = route.plan.record.unwrap_or(ctx.record_by_default) && ctx.recordings.is_some();
    let events_on = route.tenant.is_some() || ctx.store.is_some() || route.tap.is_some();
    let cfg = SessionConfig {
        turn: {
            let mut t = route.plan.turn.apply(&ctx.session.turn);
            if t.detector == crate::session::turn::Detector::Smart && ctx.turn_pool.is_none() {
                debug!(call = %id, "the plan asks for the smart detector but no turn model is loaded; silence rule");
                t.detector = crate::session::turn::Detector::Silence;
            }
            t
        },
        vad: ctx.session.vad.clone(),
        playback: ctx.session.playback.clone(),
        agent: AgentConfig {
            prompts: ctx.prompts.clone(),
            filler_after: std::time::Duration::from_millis(ctx.callbacks.filler_after_ms),
            blocking_timeout: std::time::Duration::from_millis(ctx.callbacks.blocking_timeout_ms),
            events: events_on,
            backend: route.tenant.is_some(),
            expect_transcripts: engine.transcribes_caller(),
            brain: engine.needs_brain() && route.tenant.is_some(),
            plan_failed: route.plan_failed,
            resumed,
            live: crate::session::agent::LiveEvents::from_names(&route.plan.events),
            max_duration: route.plan.max_duration_s.map(|s| std::time::Duration::from_secs(s.into())),
            silence_timeout: route.plan.silence_timeout_s.map(|s| std::time::Duration::from_secs(s.into())),
            builtins: crate::session::builtin::Builtins::from_plan(&route.plan),
            greeting_interruptible: route.plan.greeting_interruptible.unwrap_or(true) || resumed,
        },
        record,
    };
    let session_turn = cfg.turn.smart.clone();
    let session = match Session::new(cfg, carrier.capabilities(), engine.format(), now) {
        Ok(s) => s,
        Err(e) => {
            warn!(call = %id, error = %e, "cannot set up the call");
            // The backend heard `call.started`: it hears how it ended.
            super::end::report_unconnected(ctx, route, "protocol_error");
            return Err(CallEnd::Setup(e.to_string()));
        }
    };
    registration.admit(
        id,
        CallDetails {
            tenant: route.tenant.as_ref().map(|t| t.id.clone()),
            from: route.from.clone(),
            to: route.to.clone(),
            carrier: label,
            carrier_call_id: info.call_id.clone(),
            carrier_ids: info.carrier_ids.clone(),
            engine: engine.label(),
            started_at: SystemTime::now(),
        },
    );
    info!(call = %id, carrier = label, engine = engine.label(), stream = %info.stream_id, "stream started");
    let target = route.tenant.as_ref().map(|t| Target { url: t.callback_url.clone(), secret: t.secret.clone() });
    let (reply_tx, replies) = mpsc::channel(8);
    let requests = Requests {
        client: ctx.client.clone(),
        target,
        budget: std::time::Duration::from_millis(ctx.callbacks.blocking_timeout_ms),
        replies: reply_tx,
    };
    let wire = WireOut::new(ctx.limits.max_queued_messages, crate::carrier::ARENA_BYTES);
    let mut io = ShellIo::new(id, label, wire, CallMetrics::new(label, engine.label()), requests);
    io.turn_pool = ctx.turn_pool.clone().map(|p| (p, session_turn.clone()));
    io.feed = Some(ctx.dashboard.feed(registration.live().clone(), route.tenant.as_ref().map(|t| t.id.as_str())));
    io.transfers = ctx
        .carriers
        .iter()
        .find(|c| c.carrier() == label)
        .map(|c| super::io::Transfers { control: c.clone(), registry: ctx.registry.clone() });
    io.engine_frame = crate::audio::frame_samples(engine.format().output_rate).max(1);
    let id_s = id.to_string();
    if record && let Some(svc) = &ctx.recordings {
        io.recorder = Some(svc.begin(id, info.format.rate));
    }
    if let (Some(st), false) = (&ctx.store, resumed) {
        st.started(crate::callstore::CallRow {
            call_id: id_s.clone(),
            tenant: route.tenant.as_ref().map(|t| t.id.clone()),
            from: route.from.clone(),
            to: route.to.clone(),
            started_at: crate::callstore::unix_ms(SystemTime::now()),
            ended_at: None,
            reason: None,
            recording: io.recorder.as_ref().map(|r| r.path.display().to_string()),
            recording_loss: None,
        });
    }
    io.events = match (route.resume.take().or_else(|| route.early.take()), &route.tenant) {
        // Back from a failed transfer, or begun while it rang: the same event stream goes on.
        (Some(events), _) => events,
        (None, Some(t)) => ctx.event_stream(t, &id_s, route.seq_used),
        (None, None) => EventSender::disabled(&id_s).with_store(ctx.store.clone()),
    };
    if let Some(tap) = route.tap.take() {
        io.events.set_tap(tap);
    }
    io.route = Some(RouteInfo {
        tenant: route.tenant.clone(),
        plan: route.plan.clone(),
        from: route.from.clone(),
        to: route.to.clone(),
        carrier_call_id: info.call_id.clone(),
        engine: engine.label(),
        received_at: route.received_at,
        answered_at: SystemTime::now(),
        direction: route.direction,
        answered_by: route.answered_by.clone(),
    });
    let (lanes, links) = crate::runtime::engine_link::spawn(engine.links());
    io.lanes = lanes;
    let call = Call::new(session, carrier, engine, ctx.limits.max_protocol_errors);
    Ok(Box::new(Admitted { call, io, links, replies, info, slot }))
}
