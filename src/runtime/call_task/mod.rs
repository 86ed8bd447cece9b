//! The call task: one tokio task per call that owns the carrier connection,
//! the [`Call`] (session + carrier codec + engine) and the call's outputs, and
//! moves bytes between them. It knows no carrier and no engine by name.
//!
//! Phases: [`setup`] (wait for `start`, admit, build), the loop below, and
//! [`end`] (close frame, report). The loop waits for the first of {control
//! command, engine link update, callback reply, carrier I/O, deadline}, reads
//! the clock once, feeds the call, and lets queued writes go out in one flush
//! per wake-up. Control and `clear` jump ahead of queued audio.
//!
//! Invariants: nothing here blocks or holds a lock across an await; every
//! queue is bounded and counts what it drops; a failing call only ever closes
//! itself.

mod end;
mod io;
mod setup;
mod telemetry;

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

pub use end::{CallEnd, end_parked, report_unconnected};

use crate::call::Call;
use crate::callback::client::CallbackClient;
use crate::callback::delivery::DeliveryConfig;
use crate::carrier::{Carrier, WireOut};
use crate::config::CallbacksConfig;
use crate::engine::registry::EngineRegistry;
use crate::ids::CallId;
use crate::runtime::admission::PendingCalls;
use crate::runtime::dashboard::LiveCall;
use crate::runtime::engine_link::LinkEvents;
use crate::runtime::registry::{CallControl, CallHandle, Registry};
use crate::runtime::transport::{Received, Transport, WriteError};
use crate::session::{Prompts, Reply, SessionConfig};
use io::ShellIo;

/// Per-call transport settings (from `[server]`).
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Close a peer that takes no writes for this long.
    pub write_timeout: Duration,
    /// Close a peer that sends nothing for this long.
    pub idle_timeout: Duration,
    /// Close a stream that sends no `start` within this long.
    pub start_timeout: Duration,
    /// Outbound messages queued before audio is dropped.
    pub max_queued_messages: usize,
    /// Non-fatal protocol errors tolerated.
    pub max_protocol_errors: u32,
}

/// What every call needs from the server.
pub struct CallContext {
    /// Session tuning (turn, VAD, playback; the plan may override turns).
    pub session: SessionConfig,
    /// Transport limits.
    pub limits: CallLimits,
    /// Engines by name.
    pub engines: EngineRegistry,
    /// Live calls.
    pub registry: Arc<Registry>,
    /// Routes decided by the webhooks, waiting for their streams.
    pub pending: Arc<PendingCalls>,
    /// Concurrent-call limits (slots reserved at the webhooks).
    pub capacity: Arc<crate::runtime::capacity::Capacity>,
    /// Calls transferred away, waiting for the outcome.
    pub parked: Arc<crate::runtime::parked::ParkedCalls>,
    /// Streams must present the single-use token their webhook issued.
    pub require_stream_token: bool,
    /// Callback HTTP client.
    pub client: CallbackClient,
    /// Event delivery settings.
    pub delivery: DeliveryConfig,
    /// Delivery tasks still running (shutdown waits for them).
    pub deliveries: Arc<crate::callback::delivery::Deliveries>,
    /// Lines callbridge speaks itself.
    pub prompts: Prompts,
    /// Callback budgets.
    pub callbacks: CallbacksConfig,
    /// Recording writer.
    pub recordings: Option<crate::recording::RecordingService>,
    /// Record calls whose plan does not say.
    pub record_by_default: bool,
    /// Call reports and transcripts.
    pub store: Option<crate::callstore::CallStore>,
    /// Public HTTP base (recording URLs).
    pub public_http: String,
    /// The end-of-turn model's workers (the smart detector), if loaded.
    pub turn_pool: Option<Arc<crate::runtime::turn_pool::TurnPool>>,
    /// Carriers' call control (a backend's reply may transfer the call).
    pub carriers: Vec<Arc<dyn crate::api::carrier_control::CarrierControl>>,
    /// The live dashboard's feed.
    pub dashboard: Arc<crate::runtime::dashboard::Dashboard>,
}

impl CallContext {
    /// The ordered event stream of call `call_id` to `tenant`'s backend, its
    /// first event numbered `seq_used + 1`, kept in the call store too.
    pub fn event_stream(
        &self,
        tenant: &crate::tenant::Tenant,
        call_id: &str,
        seq_used: u64,
    ) -> crate::callback::delivery::EventSender {
        let target =
            crate::callback::client::Target { url: tenant.callback_url.clone(), secret: tenant.secret.clone() };
        crate::callback::delivery::EventSender::spawn(
            self.client.clone(),
            target,
            self.delivery,
            call_id,
            seq_used,
            &self.deliveries,
        )
        .with_store(self.store.clone())
    }
}

/// Answers that come back to a call task: the backend's replies and the
/// end-of-turn model's verdicts.
#[derive(Debug)]
pub(super) enum Answer {
    Backend(Reply),
    /// Part of a streamed reply.
    Delta(crate::session::RequestId, String),
    /// How long the backend itself took to its first words (sent before them).
    Timing(crate::session::RequestId, std::time::Duration),
    Turn {
        id: u32,
        p: Option<f32>,
    },
}

enum Io {
    Read(Received),
    WriteFailed(WriteError),
}

/// Drive queued writes, then wait for the next inbound message.
fn poll_io<T: Transport>(transport: &mut T, wire: &mut WireOut, cx: &mut Context<'_>) -> Poll<Io> {
    if (!wire.is_empty() || transport.flush_pending())
        && let Poll::Ready(Err(e)) = transport.poll_write(cx, wire)
    {
        return Poll::Ready(Io::WriteFailed(e));
    }
    transport.poll_recv(cx).map(Io::Read)
}

/// Run one call over `transport`, speaking `carrier`'s protocol, to its end.
pub async fn run_call<T: Transport>(
    mut transport: T,
    mut carrier: Box<dyn Carrier>,
    ctx: Arc<CallContext>,
) -> CallOutcome {
    let provisional = CallId::random();
    let label = carrier.name();
    let (control_tx, mut control) = mpsc::channel(16);
    let mut registration = ctx.registry.register(
        provisional,
        CallHandle { control: control_tx, carrier: label, details: None, live: LiveCall::new() },
    );
    metrics::counter!(crate::metrics::CALLS_TOTAL, "carrier" => label).increment(1);
    let admitted = match setup::await_start(&mut transport, carrier.as_mut(), &mut control, &ctx).await {
        Ok(info) => {
            if let Some(token) = info.token.as_deref() {
                ctx.pending.claim_shared(label, &info.call_id, token).await;
            }
            setup::admit(&ctx, info, carrier, &mut registration)
        }
        Err(e) => Err(e),
    };
    let setup::Admitted { mut call, mut io, mut links, mut replies, info, slot } = match admitted {
        Ok(a) => *a,
        Err(end) => {
            end::goodbye(&mut transport, None, &end).await;
            end::count(label, provisional, end.reason());
            return CallOutcome { reason: end.reason(), carrier_call_id: None };
        }
    };
    let carrier_call_id = info.call_id.clone();
    call.start(Instant::now().into_std(), info, &mut io);
    let end = run_loop(&mut transport, &mut call, &mut io, &mut control, &mut links, &mut replies, &ctx).await;
    if call.ended().is_none() {
        // The stream ended under a live session (idle timeout, a fault, a
        // failed write, a stalled peer): end the session as the caller gone,
        // so the reply it cut off (with what was heard of it) and the
        // caller's unfinished turn are in the report like any other end.
        call.on_carrier_gone(Instant::now().into_std(), &mut io);
    }
    end::goodbye(&mut transport, Some(&mut io), &end).await;
    let reason = end.reason();
    end::count(label, io.id, reason);
    io.abort_requests();
    if reason == "transferred" && io.transfer_to.is_some() {
        end::park(&ctx, &call, &mut io);
    } else {
        end::report(&ctx, &call, &mut io, reason);
    }
    // The transport's resources (a browser call's UDP port) go before the
    // call leaves the registry: a caller who saw it gone may call again at once.
    drop(transport);
    drop(registration);
    drop(slot);
    CallOutcome { reason, carrier_call_id: Some(carrier_call_id) }
}

/// How a call task ended, for the carrier's module (a carrier whose call
/// outlives its media stream hangs it up through its REST API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The `call.ended` reason.
    pub reason: &'static str,
    /// The carrier's id of the call, if the stream started and was admitted.
    pub carrier_call_id: Option<String>,
}

impl CallOutcome {
    /// The carrier's call, if it may still be up: the call ended on our side
    /// (not by the caller hanging up, and not moved elsewhere).
    pub fn call_to_hang_up(&self) -> Option<&str> {
        match self.reason {
            "caller_hangup" | "transferred" => None,
            _ => self.carrier_call_id.as_deref(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_loop<T: Transport>(
    transport: &mut T,
    call: &mut Call,
    io: &mut ShellIo,
    control: &mut mpsc::Receiver<CallControl>,
    links: &mut LinkEvents,
    replies: &mut mpsc::Receiver<Answer>,
    ctx: &CallContext,
) -> CallEnd {
    let limits = &ctx.limits;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut sleep = pin!(tokio::time::sleep_until(far));
    let mut last_rx = Instant::now();
    let mut stalled: Option<Instant> = None;
    let mut control_open = true;
    let mut inbound = 0u64;
    let idle_timeout = transport.idle_timeout().map_or(limits.idle_timeout, |t| t.min(limits.idle_timeout));
    loop {
        if let Some(r) = call.ended() {
            return CallEnd::Hangup(r);
        }
        let mut deadline = last_rx + idle_timeout;
        if let Some(t) = call.poll_timeout() {
            deadline = deadline.min(Instant::from_std(t));
        }
        if let Some(s) = stalled {
            deadline = deadline.min(s + limits.write_timeout);
        }
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        enum Woke {
            Control(Option<CallControl>),
            Link(Option<(usize, crate::runtime::engine_link::LinkUpdate, Instant)>),
            Answer(Answer),
            Io(Io),
            Timer,
        }
        let woke = tokio::select! {
            biased;
            cmd = control.recv(), if control_open => Woke::Control(cmd),
            upd = links.next() => Woke::Link(upd),
            Some(r) = replies.recv() => Woke::Answer(r),
            x = poll_fn(|cx| poll_io(transport, &mut io.wire, cx)) => Woke::Io(x),
            () = &mut sleep => Woke::Timer,
        };
        // The clock, once per wake-up.
        let tnow = Instant::now();
        let now = tnow.into_std();
        match woke {
            Woke::Control(Some(CallControl::Session(cmd))) => call.on_control(now, cmd, io),
            Woke::Control(Some(CallControl::Say { what, interrupt, interruptible, reply })) => {
                let _ = reply.send(call.say(now, what, interrupt, interruptible, io));
            }
            Woke::Control(Some(CallControl::Transferring { to })) => {
                io.transfer_to = Some(to);
                call.on_control(now, crate::session::ControlCommand::Transferred, io);
            }
            Woke::Control(None) => control_open = false,
            Woke::Link(Some((link, update, read_at))) => {
                call.on_link_read_at(now, read_at.into_std(), link, update.as_event(), io)
            }
            Woke::Link(None) => call.on_link(now, 0, crate::engine::LinkEvent::Down("engine links ended"), io),
            Woke::Answer(Answer::Backend(r)) => call.on_reply(now, r, io),
            Woke::Answer(Answer::Delta(id, text)) => call.on_reply_delta(now, id, text, io),
            Woke::Answer(Answer::Timing(id, backend)) => call.on_reply_timing(now, id, backend, io),
            Woke::Answer(Answer::Turn { id, p }) => call.on_turn_verdict(now, id, p, io),
            Woke::Io(Io::WriteFailed(e)) => {
                tracing::debug!(call = %io.id, error = %e, "write failed");
                return CallEnd::Transport;
            }
            Woke::Io(Io::Read(received)) => {
                if !matches!(received, Received::Control) {
                    last_rx = tnow;
                }
                if let Some(wire) = received.wire() {
                    // Processing time of one message in eight, for the metric (the
                    // only second clock read; the call itself only sees `now`).
                    inbound += 1;
                    let sample = inbound.is_multiple_of(8).then(std::time::Instant::now);
                    if let Err(fault) = call.on_wire(now, wire, io) {
                        return CallEnd::Fault(fault);
                    }
                    if let Some(t) = sample {
                        crate::metrics::observe(&io.metrics.frame_processing, t.elapsed());
                    }
                } else {
                    match received {
                        Received::Control => {}
                        Received::Closed => {
                            call.on_carrier_gone(now, io);
                            return call.ended().map_or(CallEnd::PeerClosed, CallEnd::Hangup);
                        }
                        Received::Lost => {
                            // Not the carrier ending the call: the connection broke.
                            // The session ends as the caller gone (the reply it cut
                            // off is reported), the reason says what happened, and a
                            // carrier whose call outlives its stream hangs it up.
                            call.on_carrier_gone(now, io);
                            return CallEnd::Lost;
                        }
                        Received::TooBig => {
                            io.metrics.protocol_error("message_too_big");
                            warn!(call = %io.id, "message over the size limit; closing");
                            return CallEnd::TooBig;
                        }
                        _ => return CallEnd::Transport,
                    }
                }
            }
            Woke::Timer => {
                if stalled.is_some_and(|s| tnow >= s + limits.write_timeout) {
                    io.metrics.protocol_error("slow_consumer");
                    warn!(call = %io.id, "peer stopped reading; disconnecting");
                    return CallEnd::SlowConsumer;
                }
                if tnow >= last_rx + idle_timeout {
                    io.metrics.protocol_error("idle_timeout");
                    warn!(call = %io.id, "peer sent nothing for {idle_timeout:?}; disconnecting");
                    // The peer's last sign of life is as far as the caller
                    // can have heard: the call ends there.
                    call.on_carrier_silent(now, last_rx.into_std(), io);
                    return CallEnd::Idle;
                }
                call.on_timeout(now, io);
            }
        }
        // A write that could not complete this turn marks the start of a stall.
        if io.wire.is_empty() && !transport.flush_pending() {
            stalled = None;
        } else {
            stalled.get_or_insert(tnow);
        }
    }
}
