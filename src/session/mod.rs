//! The per-call brain: a sans-IO state machine in the style of `quinn_proto` and
//! `str0m`.
//!
//! Drive it with [`Session::handle_input`] and [`Session::handle_timeout`] (each
//! with the current instant), then drain [`Session::poll_output`] until `None`
//! and sleep until [`Session::poll_timeout`]. It never reads the clock, never
//! awaits and never touches a socket, so every scenario is testable in virtual
//! time. Audio outputs borrow the session's buffers; drain them before the next
//! input.
//!
//! What it decides: when the caller's turn starts and ends (VAD + endpointing),
//! when the caller interrupts the bot (barge-in policy), which response audio is
//! stale (by `ResponseId`), when outbound audio may go (pacer), and what the
//! caller actually heard of each response.

pub mod playback;
pub mod turn;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::audio::FRAME;
use crate::audio::resample::{ResampleError, Resampler};
use crate::audio::vad::{VadConfig, VadError, VoiceDetector};
use crate::carrier::{CarrierCommand, CarrierEvent, StreamInfo};
use crate::engine::{EngineCommand, EngineEvent, EngineFormat};
use crate::ids::ResponseId;
use playback::{Interrupted, Playback, PlaybackConfig};
use turn::{TurnConfig, TurnDetector, TurnEvent};

/// Everything a session is tuned by.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Turn-taking and barge-in.
    pub turn: TurnConfig,
    /// Voice activity detection.
    pub vad: VadConfig,
    /// Outbound playback.
    pub playback: PlaybackConfig,
}

/// Errors building session parts for a stream.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The VAD could not be built for this rate.
    #[error(transparent)]
    Vad(#[from] VadError),
    /// The engine's and carrier's rates cannot be converted.
    #[error(transparent)]
    Resample(#[from] ResampleError),
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
}

impl HangupReason {
    /// Stable code for logs and callbacks.
    pub fn code(&self) -> &'static str {
        match self {
            HangupReason::CarrierStop => "caller_hangup",
            HangupReason::Control => "hangup",
            HangupReason::Shutdown => "shutdown",
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
    },
    /// End of caller speech → first bot audio frame sent.
    ResponseLatency(Duration),
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
}

/// One output of the session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output<'a> {
    /// Send to the carrier.
    ToCarrier(CarrierCommand<'a>),
    /// Send to the engine.
    ToEngine(EngineCommand<'a>),
    /// Record a measurement.
    Telemetry(Telemetry),
    /// The call is over; close everything.
    End(HangupReason),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pending {
    Clear,
    Mark(crate::ids::MarkId),
    EngineStart,
    EngineAudio,
    EngineCreate,
    EngineCancel { response: ResponseId, heard_ms: u32 },
    EngineStop,
    Telemetry(Telemetry),
    End(HangupReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingStart,
    Active,
    Ended,
}

/// Report a response that reached the carrier and is now over (not one cut
/// off before any of its audio went out).
fn report_finished(pending: &mut VecDeque<Pending>, r: &Interrupted, interrupted: bool) {
    if let Some(started) = r.started {
        pending.push_back(Pending::Telemetry(Telemetry::ResponseFinished {
            response: r.response,
            started,
            sent_ms: r.sent_ms,
            heard_ms: r.heard_ms,
            interrupted,
        }));
    }
}

/// Per-call state machine.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    engine: EngineFormat,
    phase: Phase,
    now: Instant,
    stream: Option<StreamInfo>,
    frame: usize,
    in_acc: Vec<i16>,
    vad: Option<VoiceDetector>,
    turn: TurnDetector,
    playback: Option<Playback>,
    to_engine: Option<Resampler>,
    engine_audio: Vec<i16>,
    engine_audio_queued: bool,
    /// Responses with id ≤ this were interrupted; their audio is stale.
    cancelled_upto: Option<ResponseId>,
    /// End of caller speech awaiting its first response frame.
    awaiting_response: Option<Instant>,
    interrupted: Vec<Interrupted>,
    pending: VecDeque<Pending>,
    /// Speech onset of the caller's current turn.
    turn_onset: Option<Instant>,
}

impl Session {
    /// A session for an engine speaking `engine`, waiting for the carrier's start.
    pub fn new(cfg: SessionConfig, engine: EngineFormat, now: Instant) -> Self {
        let endpoint = Duration::from_millis(cfg.turn.endpoint_silence_ms as u64);
        Self {
            cfg,
            engine,
            phase: Phase::AwaitingStart,
            now,
            stream: None,
            frame: 0,
            in_acc: Vec::new(),
            vad: None,
            turn: TurnDetector::new(endpoint),
            playback: None,
            to_engine: None,
            engine_audio: Vec::new(),
            engine_audio_queued: false,
            cancelled_upto: None,
            awaiting_response: None,
            interrupted: Vec::with_capacity(4),
            pending: VecDeque::with_capacity(16),
            turn_onset: None,
        }
    }

    /// The carrier stream, once started.
    pub fn stream(&self) -> Option<&StreamInfo> {
        self.stream.as_ref()
    }

    /// Samples in one 20 ms frame at the stream's rate (0 before `start`).
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Whether the call has ended.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Whether the bot is audible (or about to be) at `now`.
    pub fn bot_playing(&self, now: Instant) -> bool {
        self.playback.as_ref().is_some_and(|p| p.is_playing(now))
    }

    /// Feed one input.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), SessionError> {
        self.advance(now);
        match input {
            Input::Carrier(ev) => self.on_carrier(ev)?,
            Input::Engine(ev) => self.on_engine(ev),
            Input::Control(c) => self.on_control(c),
        }
        Ok(())
    }

    /// The deadline from [`Session::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.phase != Phase::Active {
            return;
        }
        if let TurnEvent::Ended { speech_end } = self.turn.expire(now) {
            self.end_turn(speech_end);
        }
    }

    /// When the session next needs [`Session::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Active {
            return None;
        }
        let release = self.playback.as_ref().and_then(|p| p.next_release(self.now));
        // Frames normally end turns; the timer only matters if audio stops coming.
        let endpoint = self.turn.endpoint_deadline().map(|d| d + 2 * FRAME);
        match (release, endpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next output. Audio is released lazily here, at real time plus the lead.
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        if self.engine_audio_queued && !self.pending.contains(&Pending::EngineAudio) {
            self.engine_audio.clear();
            self.engine_audio_queued = false;
        }
        if let Some(p) = self.pending.pop_front() {
            return Some(self.pending_output(p));
        }
        if self.phase != Phase::Active {
            return None;
        }
        let now = self.now;
        let playback = self.playback.as_mut()?;
        let released = playback.release(now);
        while let Some(f) = playback.take_retired() {
            report_finished(&mut self.pending, &f, false);
        }
        let Some(released) = released else {
            return self.pending.pop_front().map(|p| self.pending_output(p));
        };
        if let Some(mark) = playback.take_due_mark() {
            self.pending.push_back(Pending::Mark(mark));
        }
        if let (true, Some(speech_end)) = (released.first, self.awaiting_response) {
            self.awaiting_response = None;
            self.pending
                .push_back(Pending::Telemetry(Telemetry::ResponseLatency(now.saturating_duration_since(speech_end))));
        }
        Some(Output::ToCarrier(CarrierCommand::Audio(self.playback.as_ref()?.frame())))
    }

    fn pending_output(&self, p: Pending) -> Output<'_> {
        match p {
            Pending::Clear => Output::ToCarrier(CarrierCommand::Clear),
            Pending::Mark(m) => Output::ToCarrier(CarrierCommand::Mark(m)),
            Pending::EngineStart => Output::ToEngine(EngineCommand::Start),
            Pending::EngineAudio => Output::ToEngine(EngineCommand::Audio(&self.engine_audio)),
            Pending::EngineCreate => Output::ToEngine(EngineCommand::CreateResponse),
            Pending::EngineCancel { response, heard_ms } => {
                Output::ToEngine(EngineCommand::Cancel { response, heard_ms })
            }
            Pending::EngineStop => Output::ToEngine(EngineCommand::Stop),
            Pending::Telemetry(t) => Output::Telemetry(t),
            Pending::End(r) => Output::End(r),
        }
    }

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    fn on_carrier(&mut self, ev: CarrierEvent<'_>) -> Result<(), SessionError> {
        match ev {
            CarrierEvent::Start(info) => {
                if self.phase != Phase::AwaitingStart {
                    return Ok(());
                }
                let rate = info.sample_rate;
                self.frame = crate::audio::frame_samples(rate);
                self.in_acc = Vec::with_capacity(self.frame);
                self.vad = Some(VoiceDetector::new(&self.cfg.vad, rate)?);
                self.playback = Some(Playback::new(&self.cfg.playback, rate, self.engine.output_rate)?);
                if let Some(er) = self.engine.input_rate {
                    if er != rate {
                        self.to_engine = Some(Resampler::new(rate, er, self.frame)?);
                    }
                    self.engine_audio = Vec::with_capacity(crate::audio::frame_samples(er) * 4);
                }
                self.stream = Some(info);
                self.phase = Phase::Active;
                self.pending.push_back(Pending::EngineStart);
            }
            CarrierEvent::Audio(a) => {
                if self.phase != Phase::Active {
                    return Ok(());
                }
                let mut pcm = a.pcm;
                while !pcm.is_empty() {
                    let take = (self.frame - self.in_acc.len()).min(pcm.len());
                    self.in_acc.extend_from_slice(&pcm[..take]);
                    pcm = &pcm[take..];
                    if self.in_acc.len() == self.frame {
                        self.on_frame();
                        self.in_acc.clear();
                    }
                }
            }
            CarrierEvent::Dtmf(d) => self.pending.push_back(Pending::Telemetry(Telemetry::Dtmf(d))),
            CarrierEvent::Mark(Some(m)) => {
                if let Some(p) = &mut self.playback {
                    p.on_mark(m);
                }
            }
            CarrierEvent::Mark(None) | CarrierEvent::Connected | CarrierEvent::Ignored => {}
            CarrierEvent::Stop => self.end(HangupReason::CarrierStop),
        }
        Ok(())
    }

    /// One whole 20 ms caller frame is in `in_acc`.
    fn on_frame(&mut self) {
        let now = self.now;
        let Some(vad) = self.vad.as_mut() else { return };
        let d = vad.process(&self.in_acc);
        if self.engine.input_rate.is_some() {
            let start = self.engine_audio.len();
            match &mut self.to_engine {
                Some(r) => {
                    let n = r.output_len(self.in_acc.len());
                    self.engine_audio.resize(start + n, 0);
                    r.process(&self.in_acc, &mut self.engine_audio[start..]);
                }
                None => self.engine_audio.extend_from_slice(&self.in_acc),
            }
            if !self.engine_audio_queued {
                self.engine_audio_queued = true;
                self.pending.push_back(Pending::EngineAudio);
            }
        }
        let loud = d.level_dbfs >= self.cfg.turn.echo_guard_dbfs;
        let ev = self.turn.on_frame(now, FRAME, d.speech, loud);
        if let TurnEvent::Ended { speech_end } = ev {
            self.end_turn(speech_end);
            return;
        }
        if !d.speech || self.turn.in_turn() {
            return;
        }
        let playback = self.playback.as_ref().expect("active session has playback");
        if playback.is_playing(now) {
            if turn::should_barge_in(&self.cfg.turn, self.turn.loud_run(), playback.playing_for(now)) {
                let onset = self.turn.run_start().unwrap_or(now);
                self.interrupt(Some(onset));
                self.start_turn(onset);
            }
        } else if turn::should_start_turn(&self.cfg.turn, self.turn.speech_run()) {
            // A response still being generated (nothing audible yet) is moot now.
            if playback.has_live_response() {
                self.interrupt(None);
            }
            self.start_turn(self.turn.run_start().unwrap_or(now));
        }
    }

    fn start_turn(&mut self, onset: Instant) {
        self.turn_onset = Some(onset);
        self.turn.start_turn();
        self.awaiting_response = None;
        self.pending.push_back(Pending::Telemetry(Telemetry::TurnStarted));
    }

    fn end_turn(&mut self, speech_end: Instant) {
        self.awaiting_response = Some(speech_end);
        let start = self.turn_onset.take().unwrap_or(speech_end).min(speech_end);
        self.pending.push_back(Pending::Telemetry(Telemetry::TurnEnded { start, end: speech_end }));
        self.pending.push_back(Pending::EngineCreate);
    }

    /// Stop the bot: clear the carrier if it holds audio, drop queued audio,
    /// cancel the engine's responses with what the caller heard.
    fn interrupt(&mut self, onset: Option<Instant>) {
        let now = self.now;
        let Some(playback) = self.playback.as_mut() else {
            return;
        };
        let carrier_had_audio = playback.carrier_buffered(now);
        self.interrupted.clear();
        playback.interrupt(now, &mut self.interrupted);
        if carrier_had_audio {
            self.pending.push_back(Pending::Clear);
        }
        if let (Some(onset), Some(first)) = (onset, self.interrupted.first()) {
            self.pending.push_back(Pending::Telemetry(Telemetry::BargeIn {
                latency: now.saturating_duration_since(onset),
                heard_ms: first.heard_ms,
                response: first.response,
                onset,
            }));
        }
        for i in &self.interrupted {
            self.cancelled_upto = Some(self.cancelled_upto.map_or(i.response, |c| c.max(i.response)));
            self.pending.push_back(Pending::EngineCancel { response: i.response, heard_ms: i.heard_ms });
            report_finished(&mut self.pending, i, true);
        }
    }

    fn on_engine(&mut self, ev: EngineEvent) {
        if self.phase != Phase::Active {
            return;
        }
        let stale = |id: ResponseId, c: Option<ResponseId>| c.is_some_and(|c| id <= c);
        let Some(playback) = self.playback.as_mut() else {
            return;
        };
        match ev {
            EngineEvent::ResponseStarted(id) => {
                if !stale(id, self.cancelled_upto) {
                    playback.start_response(id);
                }
            }
            EngineEvent::Audio(chunk) => {
                if stale(chunk.response, self.cancelled_upto) {
                    self.pending.push_back(Pending::Telemetry(Telemetry::StaleAudioDropped(chunk.len())));
                } else {
                    let dropped = playback.push(chunk);
                    if dropped > 0 {
                        self.pending.push_back(Pending::Telemetry(Telemetry::QueueOverflow(dropped)));
                    }
                }
            }
            EngineEvent::ResponseDone(id) => playback.finish(id),
        }
    }

    fn on_control(&mut self, c: ControlCommand) {
        match c {
            ControlCommand::Hangup => self.end(HangupReason::Control),
            ControlCommand::Shutdown => self.end(HangupReason::Shutdown),
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
            // A response cut off by the end of the call: report what was heard.
            if let Some(playback) = self.playback.as_mut() {
                self.interrupted.clear();
                playback.interrupt(self.now, &mut self.interrupted);
                for i in &self.interrupted {
                    report_finished(&mut self.pending, i, true);
                }
            }
            self.pending.push_back(Pending::EngineStop);
        }
        self.phase = Phase::Ended;
        self.pending.push_back(Pending::End(reason));
    }

    /// Change the engine's audio formats; only before the stream starts (later
    /// calls are ignored: the resamplers are built at `start`).
    pub fn set_engine_format(&mut self, engine: EngineFormat) {
        if self.phase == Phase::AwaitingStart {
            self.engine = engine;
        }
    }

    /// Replace the turn settings (a call plan's overrides). Takes effect for the
    /// next decision; meant for the moment the stream starts.
    pub fn set_turn_config(&mut self, turn: turn::TurnConfig) {
        if self.cfg.turn.endpoint_silence_ms != turn.endpoint_silence_ms && !self.turn.in_turn() {
            self.turn = TurnDetector::new(Duration::from_millis(turn.endpoint_silence_ms as u64));
        }
        self.cfg.turn = turn;
    }

    /// What the caller has heard of the current response so far.
    pub fn heard_ms(&self, now: Instant) -> u32 {
        self.playback.as_ref().map_or(0, |p| p.heard_ms(now))
    }

    /// When the carrier will start playing the last audio frame output.
    pub fn last_play_at(&self) -> Option<Instant> {
        self.playback.as_ref().and_then(|p| p.last_play_at())
    }

    /// Marks sent and not yet echoed.
    pub fn pending_marks(&self) -> usize {
        self.playback.as_ref().map_or(0, |p| p.pending_marks())
    }
}
