//! The per-call brain: a sans-IO state machine in the style of `quinn_proto` and
//! `str0m`.
//!
//! Drive it with [`Session::handle_input`] and [`Session::handle_timeout`] (each
//! with the current instant), then drain [`Session::poll_output`] until `None`
//! and sleep until [`Session::poll_timeout`]. It never reads the clock, never
//! awaits and never touches a socket, so every scenario is testable in virtual
//! time. Audio outputs borrow the session's buffers; drain them before the next
//! input. [`crate::call::Call`] is the one driver that does all of that.
//!
//! What it decides: when the caller's turn starts and ends (VAD + endpointing,
//! [`turn`]), when the caller interrupts the bot (barge-in policy, also on the
//! engine's own speech detection), which response audio is stale (by
//! `ResponseId`), when outbound audio may go and what the caller heard of it
//! ([`playback`]), where each side's audio lands in the recording
//! ([`record`]), and everything that involves the backend ([`agent`]): tool
//! calls with their filler, budget and fallback, held transcripts, the
//! conversation record and the callback events it produces.

pub mod agent;
mod brain;
pub mod builtin;
pub mod conversation;
mod inbound;
mod limits;
pub mod playback;
pub mod record;
pub mod turn;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::audio::resample::{ResampleError, Resampler};
use crate::audio::vad::{VadConfig, VadError, VoiceDetector};
use crate::carrier::{Capabilities, CarrierCommand, CarrierEvent, StreamInfo};
use crate::contract::{CallSummary, Event};
use crate::engine::{AudioRef, EngineCommand, EngineEvent, EngineFormat, InputAudio};
use crate::ids::{MarkId, ResponseId};
use agent::Agent;
pub use agent::{AgentConfig, Incident, Prompts, Reply, ReplyFailure, Request, RequestId};
use playback::{Interrupted, Playback, PlaybackConfig};
use record::RecordClock;
pub use record::RecordOp;
use turn::echo::EchoCheck;
use turn::{EndedBy, TurnConfig, TurnDetector};

/// Everything a session is tuned by, final when the session is built.
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    /// Turn-taking and barge-in.
    pub turn: TurnConfig,
    /// Voice activity detection.
    pub vad: VadConfig,
    /// Outbound playback.
    pub playback: PlaybackConfig,
    /// The backend side: callbacks, prompts, budgets.
    pub agent: AgentConfig,
    /// Emit [`Output::Record`] for both sides of the call.
    pub record: bool,
}

/// Errors building a session for a stream.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The VAD could not be built for this rate.
    #[error(transparent)]
    Vad(#[from] VadError),
    /// The engine's and carrier's rates cannot be converted.
    #[error(transparent)]
    Resample(#[from] ResampleError),
    /// The engine wants the carrier's encoded audio in another format.
    #[error("the engine wants {wanted:?} passthrough audio but the stream is {stream:?}")]
    Passthrough {
        /// what the engine declared
        wanted: crate::carrier::AudioFormat,
        /// what the stream carries
        stream: crate::carrier::AudioFormat,
    },
}

/// Commands from outside the call (control API, server shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlCommand {
    /// Hang up now.
    Hangup,
    /// Stop the bot talking (as if the caller had barged in).
    Interrupt,
    /// The server is shutting down.
    Shutdown,
    /// The carrier call was transferred away: its end is a transfer.
    Transferred,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    /// The carrier stopped the stream (caller hung up).
    CarrierStop,
    /// Hung up through the control API.
    Control,
    /// Server shutdown.
    Shutdown,
    /// The stream ended after a transfer.
    Transferred,
    /// The engine is gone for good.
    EngineError,
    /// The plan's `max_duration_s` was reached (after a goodbye line).
    MaxDuration,
    /// Nobody spoke for the plan's `silence_timeout_s` (after a goodbye line).
    SilenceTimeout,
    /// The backend's reply said to hang up (after it was heard).
    AgentHangup,
}

impl HangupReason {
    /// Stable code for logs and callbacks.
    pub fn code(&self) -> &'static str {
        match self {
            HangupReason::CarrierStop => "caller_hangup",
            HangupReason::Control => "hangup",
            HangupReason::Shutdown => "shutdown",
            HangupReason::Transferred => "transferred",
            HangupReason::EngineError => "engine_error",
            HangupReason::MaxDuration => "max_duration",
            HangupReason::SilenceTimeout => "silence_timeout",
            HangupReason::AgentHangup => "agent_hangup",
        }
    }
}

/// Measurements the session reports (the shell records them as metrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Telemetry {
    /// The caller's turn started.
    TurnStarted,
    /// The caller's turn ended.
    TurnEnded {
        /// speech onset of the turn
        start: Instant,
        /// last speech frame
        end: Instant,
        /// what decided the end
        by: EndedBy,
    },
    /// The caller spoke again within `turn.resume_grace_ms` of the end of
    /// their turn: that end was premature. The bot yields at once.
    TurnResumed {
        /// what had decided the premature end
        by: EndedBy,
        /// end of turn → speech again
        after: Duration,
    },
    /// A run of caller "speech" was the bot's own echo and was ignored.
    EchoIgnored,
    /// End of caller speech → first bot audio frame sent.
    ResponseLatency(Duration),
    /// Engine asked (end of turn) → its first audio.
    EngineFirstAudio(Duration),
    /// The caller interrupted the bot.
    BargeIn {
        /// speech onset → clear sent
        latency: Duration,
        /// what the caller heard of the interrupted response
        heard_ms: u32,
        /// the interrupted response
        response: ResponseId,
        /// caller speech onset
        onset: Instant,
    },
    /// A response that reached the carrier is over: all of it was sent, or it
    /// was interrupted. (Responses cut off before any audio went out are not
    /// reported.)
    ResponseFinished {
        /// the response
        response: ResponseId,
        /// its first audio was sent at
        started: Instant,
        /// audio sent to the carrier
        sent_ms: u32,
        /// audio the caller heard
        heard_ms: u32,
        /// cut off by a barge-in or the control API
        interrupted: bool,
    },
    /// Samples of stale (interrupted) response audio discarded on arrival.
    StaleAudioDropped(usize),
    /// Samples of response audio dropped because the queue was full.
    QueueOverflow(usize),
    /// Caller pressed a key.
    Dtmf(char),
    /// Response audio ran dry mid-response: the caller heard a gap (the
    /// engine is slower than real time); playback resumes when audio comes.
    Underrun,
    /// One stage of answering a turn (`endpoint`, `stt_final`,
    /// `backend_first_text`, `tts_first_audio`, `overhead`: the rest).
    Stage {
        /// stage name
        stage: &'static str,
        /// its latency
        latency: Duration,
    },
}

/// One input to the session.
#[derive(Debug)]
pub enum Input<'a> {
    /// From the carrier codec.
    Carrier(CarrierEvent<'a>),
    /// From the engine.
    Engine(EngineEvent),
    /// From outside the call.
    Control(ControlCommand),
    /// The backend answered (or failed to answer) a [`Request`]; for a
    /// streamed reply, after its deltas.
    Reply(Reply),
    /// How long the backend itself took to its first words for request
    /// `id` (sent just before them): the `backend_first_text` stage.
    ReplyTiming {
        /// the request
        id: RequestId,
        /// HTTP request sent → first words read
        backend: Duration,
    },
    /// Part of a streamed reply to request `id` (`reply_delta`).
    ReplyDelta {
        /// the request
        id: RequestId,
        /// the words
        text: String,
    },
    /// The end-of-turn model's answer to [`Output::TurnQuery`] `id`:
    /// P(turn complete), or `None` when it could not answer in time.
    TurnVerdict {
        /// the query answered
        id: u32,
        /// P(complete)
        p: Option<f32>,
    },
}

/// A question for the end-of-turn model: is the caller's turn so far complete?
/// (One per pause candidate, never per frame; owns its audio.)
#[derive(Debug, Clone, PartialEq)]
pub struct TurnQuery {
    /// Quote it in [`Input::TurnVerdict`].
    pub id: u32,
    /// The caller's turn so far, ending now (at most the last 8 s).
    pub audio: Vec<i16>,
    /// Its sample rate.
    pub rate: u32,
}

/// One output of the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<'a> {
    /// Send to the carrier.
    ToCarrier(CarrierCommand<'a>),
    /// Send to the engine.
    ToEngine(EngineCommand<'a>),
    /// Record a measurement.
    Telemetry(Telemetry),
    /// A non-blocking callback event (ordered delivery; also the transcript).
    Event(Event),
    /// A blocking callback request; answer with [`Input::Reply`].
    Request(Request),
    /// Abandon a request still in flight (a streamed reply the caller cut
    /// off, a turn superseded or past its budget): close its connection.
    CancelRequest(RequestId),
    /// Transfer the call (the backend's reply said so); the shell checks the
    /// number's allowed destinations and asks the carrier.
    Transfer(String),
    /// Ask the end-of-turn model; answer with [`Input::TurnVerdict`].
    TurnQuery(TurnQuery),
    /// A transcript-only record (no callback of its own), e.g. a tool result.
    Note(&'static str, serde_json::Value),
    /// Something went wrong that the operator should see (metric + log).
    Incident(Incident),
    /// Audio for the recording, placed on the caller's timeline.
    Record(RecordOp<'a>),
    /// The call is over; close everything.
    End(HangupReason),
}

/// Cold outputs (rare, owning their data) waiting in order with the hot ones.
#[derive(Debug)]
enum Cold {
    Engine(EngineCommand<'static>),
    Event(Event),
    Request(Request),
    CancelRequest(RequestId),
    Transfer(String),
    TurnQuery(TurnQuery),
    Note(&'static str, serde_json::Value),
    Incident(Incident),
}

#[derive(Debug)]
enum Pending {
    Clear,
    Mark(MarkId),
    EngineStart,
    EngineAudio,
    EngineEndOfTurn,
    EngineCancel { response: ResponseId, heard_ms: u32 },
    EngineStop,
    Telemetry(Telemetry),
    RecordCaller,
    RecordBot { pos: u64 },
    RecordClear { pos: u64 },
    End(HangupReason),
    Cold(Box<Cold>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingStart,
    Active,
    Ended,
}

/// Per-call state machine.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    caps: Capabilities,
    engine: EngineFormat,
    phase: Phase,
    now: Instant,
    stream: Option<StreamInfo>,
    frame: usize,
    in_acc: Vec<i16>,
    vad: VoiceDetector,
    turn: TurnDetector,
    /// The caller's recent audio for end-of-turn questions (smart detector only).
    turn_audio: inbound::TurnAudio,
    echo: EchoCheck,
    /// When the newest whole caller frame arrived: the echo check's caller
    /// timeline is that frame's end, and moves on with the clock from there.
    echo_caller_at: Instant,
    /// The carrier's stamps on caller audio.
    caller_stamps: inbound::CallerStamps,
    /// A run of frames is being ignored as echo.
    in_echo: bool,
    /// When the last caller turn ended, and what decided it.
    turn_ended: Option<(Instant, EndedBy)>,
    playback: Playback,
    to_engine: Option<Resampler>,
    /// Caller audio for the engine, sent at the next poll (PCM or encoded).
    engine_audio: Vec<i16>,
    engine_encoded: Vec<u8>,
    engine_audio_queued: bool,
    /// Caller audio of this input for the recording.
    rec_caller: Vec<i16>,
    rec: RecordClock,
    /// Responses with id ≤ this were interrupted; their audio is stale.
    cancelled_upto: Option<ResponseId>,
    /// End of caller speech awaiting its first response frame.
    awaiting_response: Option<Instant>,
    /// End of the turn the engine was asked to answer, awaiting its first audio.
    awaiting_engine: Option<Instant>,
    interrupted: Vec<Interrupted>,
    pending: VecDeque<Pending>,
    /// Speech onset of the caller's current turn.
    turn_onset: Option<Instant>,
    agent: Agent,
    transferred: bool,
    limits: limits::TimeLimits,
    /// The next responses to start may not be talked over (a greeting or
    /// `say` marked not interruptible), and those that are playing.
    protect_next: u8,
    protected: Vec<ResponseId>,
    /// The caller has been out of reach since then (nothing came from them):
    /// a reply cut off by the end of the call was heard only up to it.
    unreachable_since: Option<Instant>,
}

impl Session {
    /// A session for a stream with `caps` answered by an engine speaking
    /// `engine`, waiting for the carrier's start. Everything per-frame is
    /// allocated here.
    pub fn new(
        cfg: SessionConfig,
        caps: Capabilities,
        engine: EngineFormat,
        now: Instant,
    ) -> Result<Self, SessionError> {
        let limits = limits::TimeLimits::new(cfg.agent.max_duration, cfg.agent.silence_timeout);
        let cfg_greeting_interruptible = cfg.agent.greeting_interruptible;
        let rate = caps.format.rate;
        let frame = crate::audio::frame_samples(rate);
        let mut play_cfg = cfg.playback.clone();
        if let Some(n) = caps.frames_per_message {
            play_cfg.frames_per_message = n;
        }
        if !caps.far_end_buffer {
            // No buffer at the far end: send in real time, one message ahead at most.
            play_cfg.lead_ms = 20 * play_cfg.frames_per_message;
        }
        let playback = Playback::new(&play_cfg, rate, engine.output_rate, caps.marks)?;
        let (to_engine, engine_audio, engine_encoded) = match engine.input {
            InputAudio::None => (None, Vec::new(), Vec::new()),
            InputAudio::Pcm { rate: er } => {
                let r = if er == rate { None } else { Some(Resampler::new(rate, er, frame)?) };
                (r, Vec::with_capacity(crate::audio::frame_samples(er) * 4), Vec::new())
            }
            InputAudio::Passthrough(f) => {
                if f != caps.format {
                    return Err(SessionError::Passthrough { wanted: f, stream: caps.format });
                }
                (None, Vec::new(), Vec::with_capacity(frame * 4))
            }
        };
        let rec_caller = if cfg.record { Vec::with_capacity(frame * 4) } else { Vec::new() };
        let turn = TurnDetector::new(&cfg.turn);
        let turn_audio = inbound::TurnAudio::new(cfg.turn.detector == turn::Detector::Smart, rate);
        let echo = EchoCheck::new(&cfg.turn.echo, rate);
        Ok(Self {
            vad: VoiceDetector::new(&cfg.vad, rate)?,
            agent: Agent::new(cfg.agent.clone(), now),
            cfg,
            caps,
            engine,
            phase: Phase::AwaitingStart,
            now,
            stream: None,
            frame,
            in_acc: Vec::with_capacity(frame),
            turn,
            turn_audio,
            echo,
            echo_caller_at: now,
            caller_stamps: inbound::CallerStamps::default(),
            in_echo: false,
            turn_ended: None,
            playback,
            to_engine,
            engine_audio,
            engine_encoded,
            engine_audio_queued: false,
            rec_caller,
            rec: RecordClock::default(),
            cancelled_upto: None,
            awaiting_response: None,
            awaiting_engine: None,
            interrupted: Vec::with_capacity(4),
            pending: VecDeque::with_capacity(16),
            turn_onset: None,
            transferred: false,
            limits,
            protect_next: u8::from(!cfg_greeting_interruptible),
            protected: Vec::new(),
            unreachable_since: None,
        })
    }

    /// The carrier stream, once started.
    pub fn stream(&self) -> Option<&StreamInfo> {
        self.stream.as_ref()
    }

    /// Samples in one 20 ms frame at the stream's rate.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Whether the call has ended.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Whether the stream started and the call is live.
    pub fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }

    /// Whether the call was transferred away.
    pub fn transferred(&self) -> bool {
        self.transferred
    }

    /// Whether the bot is audible (or about to be) at `now`.
    pub fn bot_playing(&self, now: Instant) -> bool {
        self.playback.is_playing(now)
    }

    /// Feed one input.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.advance(now);
        match input {
            Input::Carrier(ev) => self.on_carrier(ev),
            Input::Engine(ev) => self.on_engine(ev),
            Input::Control(c) => self.on_control(c),
            Input::Reply(r) => {
                if self.phase == Phase::Active {
                    self.agent_reply(r);
                }
            }
            Input::ReplyDelta { id, text } => self.brain_delta(id, text),
            Input::ReplyTiming { id, backend } => self.brain_timing(id, backend),
            Input::TurnVerdict { id, p } => {
                if self.phase == Phase::Active {
                    let ev = self.turn.on_verdict(now, id, p);
                    self.on_turn_event(ev);
                }
            }
        }
    }

    /// Speak on the call's behalf (control API `say`): a clip, or text for
    /// engines that speak text; after what is playing, or interrupting it.
    pub fn say(&mut self, now: Instant, what: Say, interrupt: bool, interruptible: bool) {
        self.advance(now);
        if self.phase != Phase::Active {
            return;
        }
        if !interruptible {
            self.protect_next += 1;
        }
        if interrupt {
            self.interrupt(None);
        }
        let cmd = match what {
            Say::Clip(c) => EngineCommand::Play(c),
            Say::Text(t) => EngineCommand::Say(t),
        };
        self.cold(Cold::Engine(cmd));
    }

    /// The deadline from [`Session::poll_timeout`] passed (or any wake-up).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.phase != Phase::Active {
            return;
        }
        let ev = self.turn.expire(now);
        self.on_turn_event(ev);
        self.agent_timeout();
        self.builtin_timeout();
        self.limits_tick();
    }

    /// Time limits: a goodbye line when one is reached, then the end.
    fn limits_tick(&mut self) {
        let now = self.now;
        // A response awaited counts as activity for a while (an engine that never answers does not hold the call open).
        let awaiting =
            self.awaiting_response.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(10));
        let busy = self.turn_onset.is_some() || awaiting || self.playback.is_playing(now);
        match self.limits.check(now, busy, self.playback.last_play_at()) {
            limits::LimitEvent::None => {}
            limits::LimitEvent::Close(reason) => {
                let clip = self.agent.goodbye(reason == HangupReason::MaxDuration);
                self.interrupt(None);
                let len = Duration::from_millis(clip.len() as u64 * 1000 / 8000);
                self.cold(Cold::Engine(EngineCommand::Play(clip)));
                self.limits.closing(reason, now, len);
            }
            limits::LimitEvent::End(reason) => self.end(reason),
        }
    }

    /// When the session next needs [`Session::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Active {
            return None;
        }
        let release = self.playback.next_release(self.now);
        // Frames normally end turns; the timer only matters if audio stops coming.
        let endpoint = self.turn.endpoint_deadline().map(|d| d + 2 * crate::audio::FRAME);
        let limits = self.limits.deadline(self.playback.last_play_at());
        [release, endpoint, self.agent.poll_timeout(), limits, self.builtin_deadline(), self.brain_due_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Next output. Audio is released lazily here, at real time plus the lead.
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        if self.engine_audio_queued && !self.pending.iter().any(|p| matches!(p, Pending::EngineAudio)) {
            self.engine_audio.clear();
            self.engine_encoded.clear();
            self.engine_audio_queued = false;
        }
        if !self.rec_caller.is_empty() && !self.pending.iter().any(|p| matches!(p, Pending::RecordCaller)) {
            self.rec_caller.clear();
        }
        if let Some(p) = self.pending.pop_front() {
            return Some(self.pending_output(p));
        }
        if self.phase != Phase::Active {
            return None;
        }
        let now = self.now;
        let play_at = now + self.playback.buffered(now);
        let released = self.playback.release(now);
        if self.playback.take_underrun() {
            self.pending.push_back(Pending::Telemetry(Telemetry::Underrun));
        }
        while let Some(f) = self.playback.take_retired() {
            self.finished(&f, false);
        }
        let Some(released) = released else {
            return self.pending.pop_front().map(|p| self.pending_output(p));
        };
        if let Some(mark) = self.playback.take_due_mark() {
            self.pending.push_back(Pending::Mark(mark));
        }
        if self.cfg.record {
            let pos = self.rec.bot(self.playback.frame().len() as u64, play_at > now);
            self.pending.push_back(Pending::RecordBot { pos });
        }
        let ahead = self.echo_ahead(play_at);
        self.echo.on_played(ahead, self.playback.frame(), play_at > now);
        if released.first {
            let speech = self.agent.live().speech;
            self.live(speech, |at_ms| Event::SpeechStarted { who: "agent".into(), at_ms }, play_at);
        }
        if let (true, Some(speech_end)) = (released.first, self.awaiting_response) {
            self.awaiting_response = None;
            self.telemetry(Telemetry::ResponseLatency(now.saturating_duration_since(speech_end)));
        }
        Some(Output::ToCarrier(CarrierCommand::Audio(self.playback.frame())))
    }

    /// How far `at` lies ahead of the caller audio received so far, in
    /// caller samples. That audio ends where the caller's timeline stood when
    /// its newest frame arrived: measuring from `now` instead would misplace
    /// bot audio by up to a whole frame, by where the release falls between
    /// two arrivals. (A caller stream that stalls counts as one frame late at
    /// most.)
    fn echo_ahead(&self, at: Instant) -> u64 {
        let rate = self.caps.format.rate as u64;
        let frame_time = Duration::from_micros(self.frame as u64 * 1_000_000 / rate);
        let from = self.echo_caller_at.max(self.now.checked_sub(frame_time).unwrap_or(self.now));
        at.saturating_duration_since(from).as_micros() as u64 * rate / 1_000_000
    }

    fn pending_output(&mut self, p: Pending) -> Output<'_> {
        match p {
            Pending::Clear => Output::ToCarrier(CarrierCommand::Clear),
            Pending::Mark(m) => Output::ToCarrier(CarrierCommand::Mark(m)),
            Pending::EngineStart => Output::ToEngine(EngineCommand::Start),
            Pending::EngineAudio => Output::ToEngine(EngineCommand::Audio(match self.engine.input {
                InputAudio::Passthrough(_) => AudioRef::Encoded(&self.engine_encoded),
                _ => AudioRef::Pcm(&self.engine_audio),
            })),
            Pending::EngineEndOfTurn => Output::ToEngine(EngineCommand::EndOfTurn),
            Pending::EngineCancel { response, heard_ms } => {
                Output::ToEngine(EngineCommand::Cancel { response, heard_ms })
            }
            Pending::EngineStop => Output::ToEngine(EngineCommand::Stop),
            Pending::Telemetry(t) => Output::Telemetry(t),
            Pending::RecordCaller => Output::Record(RecordOp::Caller { pcm: &self.rec_caller }),
            Pending::RecordBot { pos } => Output::Record(RecordOp::Bot { pcm: self.playback.frame(), pos }),
            Pending::RecordClear { pos } => Output::Record(RecordOp::Clear { pos }),
            Pending::End(r) => Output::End(r),
            Pending::Cold(c) => match *c {
                Cold::Engine(cmd) => Output::ToEngine(cmd),
                Cold::Event(e) => Output::Event(e),
                Cold::Request(r) => Output::Request(r),
                Cold::CancelRequest(id) => Output::CancelRequest(id),
                Cold::Transfer(to) => Output::Transfer(to),
                Cold::TurnQuery(q) => Output::TurnQuery(q),
                Cold::Note(k, v) => Output::Note(k, v),
                Cold::Incident(i) => Output::Incident(i),
            },
        }
    }

    fn cold(&mut self, c: Cold) {
        self.pending.push_back(Pending::Cold(Box::new(c)));
    }

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Account for telemetry: metrics (always) and the conversation (when
    /// events are on).
    fn telemetry(&mut self, t: Telemetry) {
        self.pending.push_back(Pending::Telemetry(t));
        if self.agent.cfg.brain
            && let Some(stage) = self.brain_account(&t)
        {
            self.pending.push_back(Pending::Telemetry(stage));
        }
        if self.agent.events_on() {
            for ev in self.agent.conversation.on_telemetry(&t, self.now) {
                self.cold(Cold::Event(ev));
            }
        }
    }

    /// Report a response that reached the carrier and is now over (not one
    /// cut off before any of its audio went out).
    fn finished(&mut self, r: &Interrupted, interrupted: bool) {
        self.brain_finished(r.response, interrupted);
        if let Some(started) = r.started {
            let speech = self.agent.live().speech;
            self.live(speech, |at_ms| Event::SpeechStopped { who: "agent".into(), at_ms }, self.now);
            self.telemetry(Telemetry::ResponseFinished {
                response: r.response,
                started,
                sent_ms: r.sent_ms,
                heard_ms: r.heard_ms,
                interrupted,
            });
        }
    }

    /// A live event, when the plan asked for its kind.
    fn live(&mut self, on: bool, ev: impl FnOnce(u64) -> Event, at: Instant) {
        if on {
            let at_ms = self.agent.conversation.at_ms(at);
            self.cold(Cold::Event(ev(at_ms)));
        }
    }

    fn start_turn(&mut self, onset: Instant) {
        self.turn_onset = Some(onset);
        self.limits.activity(self.now);
        let speech = self.agent.live().speech;
        self.live(speech, |at_ms| Event::SpeechStarted { who: "caller".into(), at_ms }, onset);
        let run = self.now.saturating_duration_since(onset) + crate::audio::FRAME;
        self.turn_audio.start_turn(run);
        self.turn.start_turn();
        self.awaiting_response = None;
        self.telemetry(Telemetry::TurnStarted);
    }

    fn on_turn_event(&mut self, ev: turn::TurnEvent) {
        match ev {
            turn::TurnEvent::None => {}
            turn::TurnEvent::Ended { speech_end, by } => self.end_turn(speech_end, by),
            turn::TurnEvent::Ask { id } => {
                let q = TurnQuery { id, audio: self.turn_audio.snapshot(), rate: self.caps.format.rate };
                self.cold(Cold::TurnQuery(q));
            }
        }
    }

    fn end_turn(&mut self, speech_end: Instant, by: EndedBy) {
        self.limits.activity(self.now);
        let speech = self.agent.live().speech;
        self.live(speech, |at_ms| Event::SpeechStopped { who: "caller".into(), at_ms }, speech_end);
        self.awaiting_response = Some(speech_end);
        self.awaiting_engine = Some(self.now);
        self.turn_ended = Some((self.now, by));
        let start = self.turn_onset.take().unwrap_or(speech_end).min(speech_end);
        self.telemetry(Telemetry::TurnEnded { start, end: speech_end, by });
        self.pending.push_back(Pending::EngineEndOfTurn);
    }

    /// Stop the bot: clear the carrier if it holds audio, drop queued audio,
    /// cancel the engine's responses with what the caller heard.
    fn interrupt(&mut self, onset: Option<Instant>) {
        let now = self.now;
        let carrier_had_audio = self.playback.carrier_buffered(now);
        self.interrupted.clear();
        self.playback.interrupt(now, &mut self.interrupted);
        if carrier_had_audio && self.caps.clear {
            self.pending.push_back(Pending::Clear);
            // What the carrier held from now on never plays.
            let ahead = self.echo_ahead(now);
            self.echo.cut(ahead);
        }
        if carrier_had_audio && self.cfg.record {
            let pos = self.rec.clear();
            self.pending.push_back(Pending::RecordClear { pos });
        }
        self.brain_interrupted();
        let interrupted = std::mem::take(&mut self.interrupted);
        if let (Some(onset), Some(first)) = (onset, interrupted.first()) {
            self.telemetry(Telemetry::BargeIn {
                latency: now.saturating_duration_since(onset),
                heard_ms: first.heard_ms,
                response: first.response,
                onset,
            });
        }
        for i in &interrupted {
            self.cancelled_upto = Some(self.cancelled_upto.map_or(i.response, |c| c.max(i.response)));
            self.pending.push_back(Pending::EngineCancel { response: i.response, heard_ms: i.heard_ms });
            self.finished(i, true);
        }
        self.interrupted = interrupted;
    }

    fn on_engine(&mut self, ev: EngineEvent) {
        if self.phase != Phase::Active {
            return;
        }
        let stale = |id: ResponseId, c: Option<ResponseId>| c.is_some_and(|c| id <= c);
        match ev {
            EngineEvent::ResponseStarted(id) => {
                if !stale(id, self.cancelled_upto) {
                    self.playback.start_response(id);
                    self.brain_response_started(id);
                    if self.protect_next > 0 {
                        self.protect_next -= 1;
                        self.protected.push(id);
                    }
                }
            }
            EngineEvent::Audio(chunk) => {
                if stale(chunk.response, self.cancelled_upto) {
                    self.pending.push_back(Pending::Telemetry(Telemetry::StaleAudioDropped(chunk.len())));
                } else {
                    if !chunk.is_empty()
                        && let Some(asked) = self.awaiting_engine.take()
                    {
                        self.telemetry(Telemetry::EngineFirstAudio(self.now.saturating_duration_since(asked)));
                    }
                    let dropped = self.playback.push(chunk);
                    if dropped > 0 {
                        self.pending.push_back(Pending::Telemetry(Telemetry::QueueOverflow(dropped)));
                    }
                }
            }
            EngineEvent::ResponseDone(id) => self.playback.finish(id),
            EngineEvent::SpeechStarted => {
                // The engine heard the caller: stop the bot now (our own VAD may
                // follow; it finds nothing left to interrupt).
                if self.playback.is_playing(self.now) && !self.protected_playing() {
                    self.interrupt(Some(self.now));
                }
            }
            other => self.agent_engine_event(other),
        }
    }

    fn on_control(&mut self, c: ControlCommand) {
        match c {
            ControlCommand::Hangup => self.end(HangupReason::Control),
            ControlCommand::Shutdown => self.end(HangupReason::Shutdown),
            ControlCommand::Transferred => {
                self.transferred = true;
                let status = self.agent.live().status;
                self.live(status, |at_ms| Event::CallStatus { status: "transferring".into(), at_ms }, self.now);
                if !self.caps.stream_ends_on_transfer {
                    self.end(HangupReason::Transferred);
                }
            }
            ControlCommand::Interrupt => {
                if self.phase == Phase::Active {
                    self.interrupt(None);
                }
            }
        }
    }

    fn end(&mut self, reason: HangupReason) {
        if self.phase == Phase::Ended {
            return;
        }
        if self.phase == Phase::Active {
            // A response cut off by the end of the call: report what was
            // heard (by a caller out of reach, only up to their last sign of life).
            self.interrupted.clear();
            let heard_at = self.unreachable_since.map_or(self.now, |t| t.min(self.now));
            self.playback.interrupt(heard_at, &mut self.interrupted);
            let interrupted = std::mem::take(&mut self.interrupted);
            for i in &interrupted {
                self.finished(i, true);
            }
            self.interrupted = interrupted;
            if let Some(ev) = self.agent.conversation.flush()
                && self.agent.events_on()
            {
                self.cold(Cold::Event(ev));
            }
            self.pending.push_back(Pending::EngineStop);
        }
        let reason =
            if reason == HangupReason::CarrierStop && self.transferred { HangupReason::Transferred } else { reason };
        self.phase = Phase::Ended;
        self.pending.push_back(Pending::End(reason));
    }

    /// Whether what is playing may not be talked over.
    fn protected_playing(&mut self) -> bool {
        let playing = self.playback.front_response();
        self.protected.retain(|p| playing.is_some_and(|f| *p >= f));
        playing.is_some_and(|f| self.protected.contains(&f))
    }

    /// The `call.ended` report so far (without the shell's fields: recording,
    /// events dropped, the logged conversation).
    pub fn summary(&self, reason: &str, now: Instant) -> CallSummary {
        self.agent.conversation.summary(reason, now, 0)
    }

    /// Nothing has come from the caller since `at` (the peer went silent):
    /// if the call ends now, what was played after `at` was not heard.
    pub fn caller_unreachable_since(&mut self, at: Instant) {
        self.unreachable_since = Some(at);
    }

    /// What the caller has heard of the current response so far.
    pub fn heard_ms(&self, now: Instant) -> u32 {
        self.playback.heard_ms(now)
    }

    /// Marks sent and not yet echoed.
    pub fn pending_marks(&self) -> usize {
        self.playback.pending_marks()
    }
}

/// What [`Session::say`] speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Say {
    /// A clip (8 kHz PCM).
    Clip(std::sync::Arc<[i16]>),
    /// Text (engines that speak text).
    Text(String),
}
