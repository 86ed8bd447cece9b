//! The end of a call: why it ended (one stable reason), the close frame that
//! says so (built here and nowhere else), the goodbye on the socket (bounded in
//! time), and the report — `call.ended` with the whole conversation, the call
//! store's row, the recording's status.

use std::future::poll_fn;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::CallContext;
use super::io::ShellIo;
use crate::call::{Call, Fault};
use crate::carrier::close;
use crate::contract::Event;
use crate::runtime::transport::Transport;
use crate::session::HangupReason;

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    /// The session ended it (caller hung up, control API, shutdown, engine gone).
    Hangup(HangupReason),
    /// The peer closed the socket while the session was not live.
    PeerClosed,
    /// The connection went away without a closing handshake mid-call.
    Lost,
    /// A protocol error made the stream unusable.
    Fault(Fault),
    /// A message over the size limit.
    TooBig,
    /// The peer stopped taking our writes.
    SlowConsumer,
    /// The peer went silent.
    Idle,
    /// The stream sent no `start` in time.
    NoStart,
    /// The socket failed.
    Transport,
    /// The stream could not prove it came from our webhook.
    Unauthorized(&'static str),
    /// No call slot was free (a stream no webhook announced, at capacity).
    Busy,
    /// The call could not be set up (format the session cannot serve).
    Setup(String),
}

impl CallEnd {
    /// Stable reason for `call.ended`, logs and the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            CallEnd::Hangup(r) => r.code(),
            CallEnd::PeerClosed => "peer_closed",
            CallEnd::Lost => "stream_lost",
            CallEnd::Fault(_) | CallEnd::TooBig | CallEnd::Setup(_) => "protocol_error",
            CallEnd::SlowConsumer => "slow_consumer",
            CallEnd::Idle => "idle_timeout",
            CallEnd::NoStart => "no_start",
            CallEnd::Transport => "transport_error",
            CallEnd::Unauthorized(_) => "unauthorized",
            CallEnd::Busy => "rejected",
        }
    }

    /// The close frame to send, if the socket can still take one.
    pub fn close_frame(&self) -> Option<(u16, String)> {
        match self {
            CallEnd::Hangup(HangupReason::Shutdown) => Some((close::GOING_AWAY, "call ended: shutdown".into())),
            CallEnd::Hangup(r) => Some((close::NORMAL, format!("call ended: {}", r.code()))),
            CallEnd::Fault(f) => Some((f.close_code, f.message.clone())),
            CallEnd::TooBig => Some((close::TOO_BIG, "message too big".into())),
            CallEnd::Idle => Some((close::POLICY, "idle timeout".into())),
            CallEnd::NoStart => Some((close::POLICY, "no start message in time".into())),
            CallEnd::Unauthorized(_) => Some((close::POLICY, "unauthorized".into())),
            CallEnd::Busy => Some((close::TRY_AGAIN_LATER, "at capacity".into())),
            CallEnd::Setup(why) => Some((close::INTERNAL, why.clone())),
            CallEnd::PeerClosed | CallEnd::Lost => None,
            CallEnd::SlowConsumer | CallEnd::Transport => None,
        }
    }

    /// Whether the socket can still take a goodbye.
    fn socket_usable(&self) -> bool {
        !matches!(self, CallEnd::SlowConsumer | CallEnd::Transport | CallEnd::Lost)
    }
}

/// Flush what is queued and close the socket, within a second.
pub(super) async fn goodbye<T: Transport>(transport: &mut T, io: Option<&mut ShellIo>, end: &CallEnd) {
    if !end.socket_usable() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        match io {
            Some(io) => {
                let _ = poll_fn(|cx| transport.poll_write(cx, &mut io.wire)).await;
            }
            None => {
                let mut empty = crate::carrier::WireOut::new(1, 0);
                let _ = poll_fn(|cx| transport.poll_write(cx, &mut empty)).await;
            }
        }
        transport.close(end.close_frame()).await;
    })
    .await;
}

/// Count the end and log it (every call, admitted or not).
pub(super) fn count(carrier: &'static str, id: impl std::fmt::Display, reason: &'static str) {
    metrics::counter!(crate::metrics::CALLS_ENDED, "reason" => reason, "carrier" => carrier).increment(1);
    info!(call = %id, carrier, reason, "call ended");
}

/// `call.status` `ended` just before `call.ended`, when the plan asks for status events.
fn status_ended(events: &mut crate::callback::delivery::EventSender, plan: &crate::contract::CallPlan, at_ms: u64) {
    if crate::session::agent::LiveEvents::from_names(&plan.events).status {
        events.send(Event::CallStatus { status: "ended".into(), at_ms });
    }
}

/// The report of a call whose `call.started` went out but which never became a
/// live call (its stream never came, or failed before it could start):
/// `call.ended` with `reason`, and its row in the store.
pub fn report_unconnected(ctx: &CallContext, mut route: crate::runtime::admission::Route, reason: &'static str) {
    let id = route.call_id.to_string();
    metrics::counter!(crate::metrics::CALLS_ENDED, "reason" => reason, "carrier" => "none").increment(1);
    if let Some(mut events) = route.resume.take() {
        // Back from a failed transfer and the new stream never came: its own stream ends it.
        status_ended(&mut events, &route.plan, 0);
        let conversation = events.take_log();
        let summary = crate::contract::CallSummary {
            reason: reason.into(),
            carrier: route.carrier.into(),
            carrier_call_id: route.carrier_call_id.clone(),
            from: route.from.clone(),
            to: route.to.clone(),
            direction: route.direction.into(),
            answered_by: route.answered_by.clone(),
            started_at: crate::contract::rfc3339(route.received_at),
            ended_at: crate::contract::rfc3339(std::time::SystemTime::now()),
            transcript: crate::contract::plain_transcript(&conversation),
            conversation,
            ..Default::default()
        };
        events.send(Event::CallEnded(summary));
        if let Some(st) = &ctx.store {
            st.ended(&id, reason, None);
        }
        return;
    }
    if let Some(st) = &ctx.store {
        st.started(crate::callstore::CallRow {
            call_id: id.clone(),
            tenant: route.tenant.as_ref().map(|t| t.id.clone()),
            from: route.from.clone(),
            to: route.to.clone(),
            started_at: crate::callstore::unix_ms(std::time::SystemTime::now()),
            ended_at: None,
            reason: None,
            recording: None,
            recording_loss: None,
        });
    }
    let Some(t) = &route.tenant else {
        if let Some(st) = &ctx.store {
            st.ended(&id, reason, None);
        }
        return;
    };
    let mut events = match route.early.take() {
        Some(e) => e,
        None => ctx.event_stream(t, &id, route.seq_used),
    };
    status_ended(&mut events, &route.plan, 0);
    let summary = crate::contract::CallSummary {
        reason: reason.into(),
        carrier: route.carrier.into(),
        carrier_call_id: route.carrier_call_id.clone(),
        from: route.from.clone(),
        to: route.to.clone(),
        direction: route.direction.into(),
        answered_by: route.answered_by.clone(),
        started_at: crate::contract::rfc3339(route.received_at),
        ended_at: crate::contract::rfc3339(std::time::SystemTime::now()),
        ..Default::default()
    };
    events.send(Event::CallEnded(summary));
    if let Some(st) = &ctx.store {
        st.ended(&id, reason, None);
    }
}

/// The call left us for a transfer: keep its event stream and report until
/// the carrier says how the transfer went.
pub(super) fn park(ctx: &CallContext, call: &Call, io: &mut ShellIo) {
    let now = Instant::now().into_std();
    let mut summary = call.session().summary("transferred", now);
    if let Some(r) = &io.route {
        r.fill(&mut summary, io.carrier);
    }
    let engine = call.engine().report();
    (summary.model, summary.voice, summary.usage) = (engine.model, engine.voice, engine.usage);
    let rate = call.session().stream().map_or(8000, |s| s.format.rate).max(1) as u64;
    summary.recording_url = io.recorder.take().map(|r| {
        summary.recording_duration_ms = Some(r.samples() * 1000 / rate);
        crate::callstore::recording_url(&ctx.public_http, &io.id.to_string())
    });
    let events = std::mem::replace(&mut io.events, crate::callback::delivery::EventSender::disabled(""));
    let route = io.route.take().expect("an admitted call has its route");
    ctx.parked.park(crate::runtime::parked::Parked::new(
        io.id,
        route.tenant,
        route.plan,
        route.from,
        route.to,
        io.transfer_to.take().unwrap_or_default(),
        events,
        summary,
    ));
}

/// A parked call is over: `call.ended` with `reason` (after its transfer
/// event, if any) and the store row.
pub fn end_parked(
    ctx: &CallContext,
    mut p: crate::runtime::parked::Parked,
    before: Option<Event>,
    reason: &'static str,
) {
    if let Some(ev) = before {
        p.events.send(ev);
    }
    status_ended(&mut p.events, &p.plan, p.summary.duration_ms);
    p.summary.reason = reason.into();
    p.summary.events_dropped = p.events.dropped();
    p.summary.conversation = p.events.take_log();
    p.summary.transcript = crate::contract::plain_transcript(&p.summary.conversation);
    p.summary.ended_at = crate::contract::rfc3339(std::time::SystemTime::now());
    p.events.send(Event::CallEnded(p.summary.clone()));
    if let Some(st) = &ctx.store {
        st.ended(&p.call_id.to_string(), reason, None);
    }
    metrics::counter!(crate::metrics::CALLS_ENDED, "reason" => reason, "carrier" => "none").increment(1);
}

/// The report of an admitted call: `call.ended` (last of its events) and the store row.
pub(super) fn report(ctx: &CallContext, call: &Call, io: &mut ShellIo, reason: &'static str) {
    let now = Instant::now().into_std();
    let mut summary = call.session().summary(reason, now);
    if let Some(r) = &io.route {
        r.fill(&mut summary, io.carrier);
    }
    summary.events_dropped = io.events.dropped();
    let engine = call.engine().report();
    (summary.model, summary.voice, summary.usage) = (engine.model, engine.voice, engine.usage);
    let rate = call.session().stream().map_or(8000, |s| s.format.rate).max(1) as u64;
    let loss = io.recorder.take().and_then(|r| {
        summary.recording_url = Some(crate::callstore::recording_url(&ctx.public_http, &io.id.to_string()));
        summary.recording_duration_ms = Some(r.samples() * 1000 / rate);
        r.status().loss()
    });
    summary.recording_loss = loss.clone();
    if let Some(r) = &io.route {
        status_ended(&mut io.events, &r.plan, summary.duration_ms);
    }
    summary.conversation = io.events.take_log();
    summary.transcript = crate::contract::plain_transcript(&summary.conversation);
    io.events.send(Event::CallEnded(summary));
    if let Some(st) = &ctx.store {
        st.ended(&io.id.to_string(), reason, loss);
    }
}
