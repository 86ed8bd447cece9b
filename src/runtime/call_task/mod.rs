//! The call task: one tokio task per call that owns the carrier socket, the
//! codec, the session and the engine, and moves bytes between them.
//!
//! Loop: wait for the first of {control command, carrier message, socket
//! progress, session deadline}, feed the session, drain its outputs into a
//! bounded outbound queue, and flush that queue in one write per wake-up
//! (batching). Control and `clear` jump ahead of queued audio (priority lane).
//!
//! Invariants: nothing here blocks or holds a lock across an await; every queue
//! is bounded and counts what it drops; a failing call only ever closes itself.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::callback::client::{CallbackClient, Target};
use crate::callback::conversation::Conversation;
use crate::callback::delivery::{DeliveryConfig, EventSender};
use crate::callback::{CallPlan, Envelope, Event, ToolResult};
use crate::carrier::twilio::{TwilioCodec, TwilioLimits};
use crate::carrier::{CarrierCommand, CarrierEvent, StreamInfo};
use crate::config::{CallbacksConfig, EngineKind, OpenAiRealtimeConfig};
use crate::engine::local::{LocalClips, LocalEngine, Prompts};
use crate::engine::openai_realtime::{ApiFlavor, RealtimeCodec, RealtimeConfig, RealtimeOutput, WireAudio};
use crate::ids::CallId;
use crate::metrics::{CallMetrics, observe};
use crate::runtime::admission::{PendingCalls, Route};
use crate::runtime::engine_driver::{Engine, Realtime};
use crate::runtime::engine_link::{EngineLink, LinkConfig, LinkEvent};
use crate::runtime::registry::{CallControl, CallDetails, CallHandle, Registration, Registry};
use crate::session::{ControlCommand, HangupReason, Input, Output, Session, SessionConfig, Telemetry};
use crate::signature::StreamTokens;

mod engine_side;

/// The `<Parameter>` carrying the per-call stream token.
pub const TOKEN_PARAM: &str = "cb_token";

/// WebSocket close codes we use.
pub mod close {
    /// Normal end of call.
    pub const NORMAL: u16 = 1000;
    /// Server going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Data we cannot accept (wrong format).
    pub const UNSUPPORTED: u16 = 1003;
    /// Protocol violation.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL: u16 = 1011;
}

/// Per-call transport settings (from `[server]`).
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Close a peer that takes no writes for this long.
    pub write_timeout: Duration,
    /// Close a peer that sends nothing for this long.
    pub idle_timeout: Duration,
    /// Outbound messages queued before audio is dropped.
    pub max_queued_messages: usize,
    /// Non-fatal protocol errors tolerated.
    pub max_protocol_errors: u32,
    /// Codec limits.
    pub twilio: TwilioLimits,
}

/// What a call needs from the server.
pub struct CallContext {
    /// Session tuning.
    pub session: SessionConfig,
    /// Transport limits.
    pub limits: CallLimits,
    /// Local engine clips.
    pub clips: LocalClips,
    /// Live calls.
    pub registry: Arc<Registry>,
    /// Routes decided by the voice webhook, waiting for their streams.
    pub pending: Arc<PendingCalls>,
    /// Stream tokens (checked on `start` when `validate` is on).
    pub tokens: StreamTokens,
    /// Whether streams must prove they come from our webhook.
    pub validate: bool,
    /// Callback HTTP client.
    pub client: CallbackClient,
    /// Event delivery settings.
    pub delivery: DeliveryConfig,
    /// Lines callbridge speaks itself.
    pub prompts: Prompts,
    /// Callback budgets.
    pub callbacks: CallbacksConfig,
    /// Engine for calls without a plan choice.
    pub default_engine: EngineKind,
    /// OpenAI Realtime settings.
    pub realtime: OpenAiRealtimeConfig,
    /// OpenAI Realtime endpoint (config or `OPENAI_REALTIME_URL`).
    pub realtime_url: String,
    /// `OPENAI_API_KEY`.
    pub openai_api_key: Option<String>,
    /// Recording writer.
    pub recordings: Option<crate::recording::RecordingService>,
    /// Record calls whose plan does not say.
    pub record_by_default: bool,
    /// Call reports and transcripts.
    pub store: Option<crate::callstore::CallStore>,
    /// Public HTTP base (recording URLs).
    pub public_http: String,
}

/// How a call ended, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    /// The session ended it.
    Hangup(HangupReason),
    /// The peer closed the socket.
    PeerClosed,
    /// A protocol error made the stream unusable.
    Protocol(&'static str),
    /// The peer stopped taking our writes.
    SlowConsumer,
    /// The peer went silent.
    Idle,
    /// The socket failed.
    Transport,
    /// The stream could not prove it came from our webhook.
    Unauthorized,
}

impl CallEnd {
    fn code(&self) -> &'static str {
        match self {
            CallEnd::Hangup(r) => r.code(),
            CallEnd::PeerClosed => "peer_closed",
            CallEnd::Protocol(_) => "protocol_error",
            CallEnd::SlowConsumer => "slow_consumer",
            CallEnd::Idle => "idle_timeout",
            CallEnd::Transport => "transport_error",
            CallEnd::Unauthorized => "unauthorized",
        }
    }
}

struct Outbound {
    msg: Message,
    audio: bool,
}

/// The socket plus its bounded outbound queue. The socket is not split: one
/// poll drives both directions, so there is no lock between two halves.
struct Conn {
    sink: WebSocket,
    queue: VecDeque<Outbound>,
    cap: usize,
    needs_flush: bool,
    stalled_since: Option<Instant>,
    text: String,
}

impl Conn {
    fn has_work(&self) -> bool {
        !self.queue.is_empty() || self.needs_flush
    }

    /// Queue one encoded message. Audio is dropped (returns false) when full;
    /// control is always queued, ahead of audio if `priority`.
    fn push(&mut self, audio: bool, priority: bool) -> bool {
        let text = std::mem::replace(&mut self.text, String::with_capacity(320));
        let msg = Message::Text(Utf8Bytes::from(text));
        if priority {
            // Audio still queued here belongs to what is being cleared.
            self.queue.retain(|m| !m.audio);
            self.queue.push_front(Outbound { msg, audio });
            return true;
        }
        if audio && self.queue.len() >= self.cap {
            return false;
        }
        self.queue.push_back(Outbound { msg, audio });
        true
    }

    /// Drive queued writes, then wait for the next inbound message.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Io> {
        if self.has_work() {
            match self.poll_write(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Io::WriteFailed(e)),
                Poll::Ready(Ok(())) => self.stalled_since = None,
                Poll::Pending => {}
            }
        }
        self.sink.poll_next_unpin(cx).map(Io::Read)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        while !self.queue.is_empty() {
            ready!(self.sink.poll_ready_unpin(cx))?;
            let m = self.queue.pop_front().expect("non-empty");
            self.sink.start_send_unpin(m.msg)?;
            self.needs_flush = true;
        }
        if self.needs_flush {
            ready!(self.sink.poll_flush_unpin(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }
}

enum Io {
    Read(Option<Result<Message, axum::Error>>),
    WriteFailed(axum::Error),
}

/// Run one Twilio media-stream call to its end.
pub async fn run_twilio_call(socket: WebSocket, ctx: Arc<CallContext>) {
    let id = CallId::random();
    let (control_tx, control_rx) = mpsc::channel(16);
    let registration = ctx.registry.register(id, CallHandle { control: control_tx, carrier: "twilio", details: None });
    metrics::counter!(crate::metrics::CALLS_TOTAL, "carrier" => "twilio").increment(1);
    let engine = Engine::Local(LocalEngine::new(ctx.clips.clone()));
    let format = engine.format();
    let m = CallMetrics::new("twilio", engine.label());
    let mut call = Call {
        id,
        ctx: ctx.clone(),
        codec: TwilioCodec::new(ctx.limits.twilio),
        session: Session::new(ctx.session.clone(), format, Instant::now().into_std()),
        engine,
        conn: Conn {
            sink: socket,
            queue: VecDeque::with_capacity(ctx.limits.max_queued_messages.min(64)),
            cap: ctx.limits.max_queued_messages,
            needs_flush: false,
            stalled_since: None,
            text: String::with_capacity(320),
        },
        metrics: m,
        protocol_errors: 0,
        logged_errors: 0,
        inbound_count: 0,
        in_samples: 0,
        engine_frame: crate::audio::frame_samples(format.output_rate).max(1),
        registration,
        conversation: Conversation::new(Instant::now().into_std()),
        events: EventSender::disabled(&id.to_string()),
        admitted: false,
        transferred: false,
        engine_failed: None,
        target: None,
        pending_tools: Vec::new(),
        tool_tx: None,
        recorder: None,
        rec_scratch: Vec::new(),
    };
    let end = call.run(control_rx).await;
    let reason = if call.engine_failed.is_some() {
        "engine_error"
    } else if call.transferred && matches!(end, CallEnd::Hangup(_) | CallEnd::PeerClosed) {
        "transferred"
    } else {
        end.code()
    };
    metrics::counter!(crate::metrics::CALLS_ENDED, "reason" => reason).increment(1);
    info!(call = %call.id, reason, "call ended");
    if call.admitted {
        if let Some(ev) = call.conversation.flush() {
            call.events.send(ev);
        }
        let mut summary = call.conversation.summary(reason, Instant::now().into_std(), call.events.dropped());
        let loss = call.recorder.take().and_then(|r| {
            summary.recording_url = Some(crate::callstore::recording_url(&call.ctx.public_http, &call.id.to_string()));
            r.status().loss()
        });
        summary.recording_loss = loss.clone();
        summary.conversation = call.events.take_log();
        call.events.send(Event::CallEnded(summary));
        if let Some(st) = &call.ctx.store {
            st.ended(&call.id.to_string(), reason, loss);
        }
    }
}

struct Call {
    id: CallId,
    ctx: Arc<CallContext>,
    codec: TwilioCodec,
    session: Session,
    engine: Engine,
    conn: Conn,
    metrics: CallMetrics,
    protocol_errors: u32,
    logged_errors: u32,
    inbound_count: u64,
    in_samples: u64,
    /// Samples per 20 ms of engine audio (dropped audio is counted in frames).
    engine_frame: usize,
    registration: Registration,
    conversation: Conversation,
    events: EventSender,
    /// The stream started and was accepted.
    admitted: bool,
    /// The control API transferred the call away.
    transferred: bool,
    /// The engine failed for good (the call ends with `engine_error`).
    engine_failed: Option<String>,
    /// The tenant's callback, if any.
    target: Option<Target>,
    /// Blocking tool calls in flight.
    pending_tools: Vec<PendingTool>,
    /// Where tool results come back.
    tool_tx: Option<mpsc::Sender<ToolOutcome>>,
    /// This call's recording, if recorded.
    recorder: Option<crate::recording::Recorder>,
    /// Bot audio waiting for its play time (recording).
    rec_scratch: Vec<i16>,
}

/// A `tool.call` waiting for the backend.
struct PendingTool {
    call_id: String,
    started: Instant,
    filler_played: bool,
}

/// The backend's answer to a `tool.call` (or why there is none).
struct ToolOutcome {
    call_id: String,
    result: Result<serde_json::Value, String>,
}

enum Step {
    Continue,
    End(CallEnd, Option<(u16, String)>),
}

impl Call {
    async fn run(&mut self, mut control: mpsc::Receiver<CallControl>) -> CallEnd {
        let limits = self.ctx.limits.clone();
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut sleep = pin!(tokio::time::sleep_until(far));
        let mut last_rx = Instant::now();
        let mut control_open = true;
        let (tool_tx, mut tool_rx) = mpsc::channel::<ToolOutcome>(8);
        self.tool_tx = Some(tool_tx);
        let filler_after = Duration::from_millis(self.ctx.callbacks.filler_after_ms);
        let (end, close) = loop {
            // Everything the last input caused, then the next deadline.
            if let Some(end) = self.pump() {
                break (
                    CallEnd::Hangup(end),
                    Some((
                        if end == HangupReason::Shutdown { close::GOING_AWAY } else { close::NORMAL },
                        format!("call ended: {}", end.code()),
                    )),
                );
            }
            let now = Instant::now();
            let mut deadline = last_rx + limits.idle_timeout;
            if let Some(t) = self.session.poll_timeout() {
                deadline = deadline.min(Instant::from_std(t));
            }
            if let Some(s) = self.conn.stalled_since {
                deadline = deadline.min(s + limits.write_timeout);
            }
            for t in self.pending_tools.iter().filter(|t| !t.filler_played) {
                deadline = deadline.min(t.started + filler_after);
            }
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            let step = tokio::select! {
                biased;
                cmd = control.recv(), if control_open => match cmd {
                    Some(cmd) => { self.on_control(cmd); Step::Continue }
                    None => { control_open = false; Step::Continue }
                },
                ev = link_event(&mut self.engine) => self.on_link(ev),
                Some(outcome) = tool_rx.recv() => { self.on_tool_result(outcome); Step::Continue }
                io = poll_fn(|cx| self.conn.poll_io(cx)) => match io {
                    Io::Read(msg) => {
                        last_rx = Instant::now();
                        self.on_message(msg)
                    }
                    Io::WriteFailed(e) => {
                        debug!(call = %self.id, error = %e, "write failed");
                        Step::End(CallEnd::Transport, None)
                    }
                },
                () = &mut sleep => {
                    let now = Instant::now();
                    if self.conn.stalled_since.is_some_and(|s| now >= s + limits.write_timeout) {
                        self.metrics.protocol_error("slow_consumer");
                        warn!(call = %self.id, "peer stopped reading; disconnecting");
                        Step::End(CallEnd::SlowConsumer, None)
                    } else if now >= last_rx + limits.idle_timeout {
                        self.metrics.protocol_error("idle_timeout");
                        warn!(call = %self.id, "peer sent nothing for {:?}; disconnecting", limits.idle_timeout);
                        Step::End(CallEnd::Idle, Some((close::POLICY, "idle timeout".into())))
                    } else {
                        self.session.handle_timeout(now.into_std());
                        self.play_due_fillers(now, filler_after);
                        Step::Continue
                    }
                }
            };
            let step = match step {
                Step::Continue => self.after_engine(),
                end => end,
            };
            // A write that could not complete this turn marks the start of a stall.
            if self.conn.has_work() {
                self.conn.stalled_since.get_or_insert(now);
            } else {
                self.conn.stalled_since = None;
            }
            if let Step::End(end, close) = step {
                break (end, close);
            }
        };
        // Say goodbye where the socket can still take it (bounded in time).
        if !matches!(end, CallEnd::SlowConsumer | CallEnd::Transport) {
            let _ = self.pump();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = poll_fn(|cx| self.conn.poll_write(cx)).await;
                if let Some((code, reason)) = close {
                    let reason: String = reason.chars().take(120).collect();
                    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
                    let _ = self.conn.sink.send(Message::Close(Some(frame))).await;
                }
                let _ = self.conn.sink.close().await;
            })
            .await;
        }
        end
    }

    fn on_message(&mut self, msg: Option<Result<Message, axum::Error>>) -> Step {
        let started = std::time::Instant::now();
        self.inbound_count += 1;
        let now = Instant::now().into_std();
        let step = match msg {
            None => {
                let _ = self.session.handle_input(now, Input::Carrier(CarrierEvent::Stop));
                if self.session.is_ended() { Step::Continue } else { Step::End(CallEnd::PeerClosed, None) }
            }
            Some(Err(e)) => {
                let too_big = match e.into_inner().downcast::<tungstenite::Error>() {
                    Ok(te) => matches!(*te, tungstenite::Error::Capacity(_)),
                    Err(_) => false,
                };
                if too_big {
                    self.metrics.protocol_error("message_too_big");
                    warn!(call = %self.id, "message over the size limit; closing");
                    Step::End(CallEnd::Protocol("message_too_big"), Some((close::TOO_BIG, "message too big".into())))
                } else {
                    Step::End(CallEnd::Transport, None)
                }
            }
            Some(Ok(Message::Text(text))) => match self.codec.decode(text.as_str()) {
                Ok(CarrierEvent::Start(info)) if !self.admitted => {
                    if let Err(why) = self.admit(&info) {
                        metrics::counter!(crate::metrics::AUTH_REJECTED, "reason" => why).increment(1);
                        warn!(call = %self.id, reason = why, "stream refused");
                        return Step::End(CallEnd::Unauthorized, Some((close::POLICY, "unauthorized".into())));
                    }
                    info!(call = %self.id, stream = %info.stream_sid, "stream started");
                    match self.session.handle_input(now, Input::Carrier(CarrierEvent::Start(info))) {
                        Ok(()) => Step::Continue,
                        Err(e) => {
                            warn!(call = %self.id, error = %e, "cannot set up the call");
                            Step::End(CallEnd::Protocol("setup"), Some((close::INTERNAL, e.to_string())))
                        }
                    }
                }
                Ok(ev) => {
                    if let CarrierEvent::Audio(a) = &ev
                        && self.admitted
                    {
                        self.engine.forward_ulaw(a.encoded);
                        if let Some(rec) = &mut self.recorder {
                            rec.caller(a.pcm);
                        }
                    }
                    if let CarrierEvent::Audio(a) = &ev {
                        let frame = self.session.frame_samples().max(1) as u64;
                        if !(a.pcm.len() as u64).is_multiple_of(frame) {
                            self.metrics.protocol_error("partial_frame");
                        }
                        let before = self.in_samples / frame;
                        self.in_samples += a.pcm.len() as u64;
                        self.metrics.frames_in.increment(self.in_samples / frame - before);
                    }
                    match self.session.handle_input(now, Input::Carrier(ev)) {
                        Ok(()) => Step::Continue,
                        Err(e) => {
                            warn!(call = %self.id, error = %e, "cannot set up the call");
                            Step::End(CallEnd::Protocol("setup"), Some((close::INTERNAL, e.to_string())))
                        }
                    }
                }
                Err(e) => {
                    let code = e.code();
                    self.metrics.protocol_error(code);
                    self.protocol_errors += 1;
                    if self.logged_errors < 5 {
                        self.logged_errors += 1;
                        warn!(call = %self.id, kind = code, error = %e, "carrier protocol error");
                    }
                    if e.is_fatal() {
                        let close = if code == "unsupported_format" { close::UNSUPPORTED } else { close::POLICY };
                        Step::End(CallEnd::Protocol(code), Some((close, e.to_string())))
                    } else if self.protocol_errors > self.ctx.limits.max_protocol_errors {
                        Step::End(
                            CallEnd::Protocol("too_many_errors"),
                            Some((close::POLICY, "too many protocol errors".into())),
                        )
                    } else {
                        Step::Continue
                    }
                }
            },
            Some(Ok(Message::Binary(_))) => {
                self.metrics.protocol_error("binary_frame");
                self.protocol_errors += 1;
                if self.protocol_errors > self.ctx.limits.max_protocol_errors {
                    Step::End(
                        CallEnd::Protocol("too_many_errors"),
                        Some((close::POLICY, "too many protocol errors".into())),
                    )
                } else {
                    Step::Continue
                }
            }
            Some(Ok(Message::Close(_))) => {
                let _ = self.session.handle_input(now, Input::Carrier(CarrierEvent::Stop));
                Step::Continue
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Step::Continue,
        };
        if let Step::Continue = step
            && let Some(end) = self.pump()
        {
            return Step::End(CallEnd::Hangup(end), Some((close::NORMAL, format!("call ended: {}", end.code()))));
        }
        if self.inbound_count.is_multiple_of(8) {
            observe(&self.metrics.frame_processing, started.elapsed());
        }
        step
    }

    /// Drain session outputs (and the engine's answers) until both are quiet.
    /// Returns the hang-up reason if the session ended the call.
    fn pump(&mut self) -> Option<HangupReason> {
        let mut ended = None;
        let frame = self.session.frame_samples().max(1);
        let now = Instant::now().into_std();
        let Call {
            session,
            engine,
            codec,
            conn,
            metrics,
            id,
            engine_frame,
            conversation,
            events,
            recorder,
            rec_scratch,
            ..
        } = self;
        loop {
            let mut progressed = false;
            while let Some(out) = session.poll_output() {
                progressed = true;
                match out {
                    Output::ToCarrier(cmd) => {
                        if let Some(rec) = recorder.as_mut() {
                            match cmd {
                                CarrierCommand::Audio(pcm) => rec_scratch.extend_from_slice(pcm),
                                CarrierCommand::Clear => rec.clear(),
                                CarrierCommand::Mark(_) => {}
                            }
                        }
                        if codec.encode(&cmd, &mut conn.text).is_err() {
                            conn.text.clear();
                            continue;
                        }
                        let frames = match cmd {
                            CarrierCommand::Audio(pcm) => pcm.len().div_ceil(frame) as u64,
                            _ => 0,
                        };
                        if conn.push(frames > 0, matches!(cmd, CarrierCommand::Clear)) {
                            metrics.frames_out.increment(frames);
                        } else {
                            metrics.dropped_queue.increment(frames);
                        }
                    }
                    Output::ToEngine(cmd) => engine.command(cmd, now),
                    Output::Telemetry(t) => {
                        record(metrics, *id, *engine_frame, t);
                        if events.active() {
                            for ev in conversation.on_telemetry(&t, now) {
                                events.send(ev);
                            }
                        }
                    }
                    Output::End(r) => ended = Some(r),
                }
                if !rec_scratch.is_empty() {
                    if let (Some(rec), Some(at)) = (recorder.as_mut(), session.last_play_at()) {
                        rec.bot(rec_scratch, at, now);
                    }
                    rec_scratch.clear();
                }
            }
            while let Some(ev) = engine.poll_event() {
                progressed = true;
                // Engine events never fail (only a carrier start can).
                let _ = session.handle_input(now, Input::Engine(ev));
            }
            if !progressed {
                break;
            }
        }
        engine.flush();
        ended
    }
}

impl Call {
    /// The stream started: check it came from our webhook, claim the route the
    /// webhook decided, and set the call up for it. Nothing reached an engine yet.
    fn admit(&mut self, info: &StreamInfo) -> Result<(), &'static str> {
        let param = |k: &str| info.custom_parameters.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if self.ctx.validate && !self.ctx.tokens.check(&info.call_sid, param(TOKEN_PARAM).unwrap_or("")) {
            return Err("bad_stream_token");
        }
        let route = match self.ctx.pending.take(&info.call_sid) {
            Some(r) => r,
            None => {
                if self.ctx.validate {
                    warn!(call = %self.id, "stream has a valid token but no pending route; answering on defaults");
                }
                Route {
                    call_id: self.id,
                    tenant: None,
                    plan: CallPlan::default(),
                    plan_failed: false,
                    from: param("from").unwrap_or_default().to_string(),
                    to: param("to").unwrap_or_default().to_string(),
                    seq_used: 0,
                }
            }
        };
        let now = Instant::now().into_std();
        self.id = route.call_id;
        let engine = self.engine.label();
        self.registration.admit(
            route.call_id,
            CallDetails {
                tenant: route.tenant.as_ref().map(|t| t.number.clone()),
                from: route.from.clone(),
                to: route.to.clone(),
                carrier_call_id: info.call_sid.clone(),
                account_id: info.account_sid.clone(),
                engine,
                started_at: std::time::SystemTime::now(),
            },
        );
        self.conversation = Conversation::new(now);
        let id = self.id.to_string();
        let record = route.plan.record.unwrap_or(self.ctx.record_by_default);
        if record && let Some(svc) = &self.ctx.recordings {
            let rec = svc.begin(self.id, info.sample_rate);
            self.rec_scratch = Vec::with_capacity(crate::audio::frame_samples(info.sample_rate) * 4);
            self.recorder = Some(rec);
        }
        if let Some(st) = &self.ctx.store {
            st.started(crate::callstore::CallRow {
                call_id: id.clone(),
                tenant: route.tenant.as_ref().map(|t| t.number.clone()),
                from: route.from.clone(),
                to: route.to.clone(),
                started_at: crate::callstore::unix_ms(std::time::SystemTime::now()),
                ended_at: None,
                reason: None,
                recording: self.recorder.as_ref().map(|r| r.path.display().to_string()),
                recording_loss: None,
            });
        }
        self.events = match &route.tenant {
            Some(t) => EventSender::spawn(
                self.ctx.client.clone(),
                Target { url: t.callback_url.clone(), secret: t.secret.clone() },
                self.ctx.delivery,
                &id,
                route.seq_used,
            ),
            None => EventSender::disabled(&id),
        }
        .with_store(self.ctx.store.clone());
        self.target = route.tenant.as_ref().map(|t| Target { url: t.callback_url.clone(), secret: t.secret.clone() });
        self.session.set_turn_config(route.plan.turn.apply(&self.ctx.session.turn));
        if let Some(engine) = self.choose_engine(&route.plan, info) {
            self.session.set_engine_format(engine.format());
            self.engine = engine;
            self.metrics = CallMetrics::new("twilio", self.engine.label());
            self.engine_frame = crate::audio::frame_samples(self.engine.format().output_rate).max(1);
        }
        if let Engine::Realtime(r) = &self.engine {
            self.conversation.expect_transcripts(!r.codec.config().transcription_model.is_empty());
        }
        if route.plan_failed {
            self.engine.inject(&self.ctx.prompts.fallback);
        }
        self.admitted = true;
        Ok(())
    }

    fn on_control(&mut self, cmd: CallControl) {
        let now = Instant::now().into_std();
        match cmd {
            CallControl::Session(c) => {
                let _ = self.session.handle_input(now, Input::Control(c));
            }
            CallControl::Transferred => self.transferred = true,
            CallControl::Say { clip, text, interrupt, reply } => {
                let result = if self.session.stream().is_none() || self.session.is_ended() {
                    Err("the call's stream is not active".to_string())
                } else if clip.is_none() && text.is_none() {
                    Err("nothing to say".to_string())
                } else if clip.is_none() && matches!(self.engine, Engine::Local(_)) {
                    Err("the local engine cannot speak text; send audio_url".to_string())
                } else {
                    if interrupt {
                        let _ =
                            self.session.handle_input(now, Input::Control(crate::session::ControlCommand::Interrupt));
                    }
                    match (clip, text) {
                        (Some(clip), _) => {
                            self.engine.inject(&clip);
                            Ok(())
                        }
                        (None, Some(text)) => self.engine.say_text(&text),
                        (None, None) => Ok(()),
                    }
                };
                let _ = reply.send(result);
            }
        }
    }
}

/// The next event of a realtime engine's socket (never resolves for the local engine).
async fn link_event(engine: &mut Engine) -> Option<LinkEvent> {
    match engine {
        Engine::Realtime(r) => r.link.rx.recv().await,
        Engine::Local(_) => std::future::pending().await,
    }
}

fn record(metrics: &CallMetrics, id: CallId, engine_frame: usize, t: Telemetry) {
    match t {
        Telemetry::TurnStarted => metrics.turns.increment(1),
        Telemetry::TurnEnded { .. } | Telemetry::ResponseFinished { .. } => {}
        Telemetry::ResponseLatency(d) => observe(&metrics.response_latency, d),
        Telemetry::BargeIn { latency, heard_ms, .. } => {
            metrics.barge_ins.increment(1);
            observe(&metrics.barge_in_latency, latency);
            debug!(call = %id, latency_ms = latency.as_millis() as u64, heard_ms, "barge-in");
        }
        Telemetry::StaleAudioDropped(n) => metrics.dropped_stale.increment(n.div_ceil(engine_frame) as u64),
        Telemetry::QueueOverflow(n) => metrics.dropped_queue.increment(n.div_ceil(engine_frame) as u64),
        Telemetry::Dtmf(_) => metrics.dtmf.increment(1),
    }
}
