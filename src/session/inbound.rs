//! The caller's side of the session: carrier events, re-framing into 20 ms,
//! voice activity, turn starts and ends, barge-in, and caller audio for the
//! engine and the recording.
//!
//! Per frame this allocates nothing: every buffer was sized when the session
//! was built. (A question for the end-of-turn model copies the turn's audio:
//! once per pause candidate, not per frame.)

use std::time::Duration;

use super::{Cold, HangupReason, Pending, Phase, Session, Telemetry, turn};
use crate::carrier::CarrierEvent;
use crate::engine::InputAudio;

/// Longest gap in the caller's timestamps taken for lost audio; a longer
/// jump is a new count, not a loss.
const MAX_GAP_MS: u64 = 10_000;
/// Stamps in a row that advanced by exactly their audio's length before a
/// gap is believed.
const STEADY_STAMPS: u8 = 3;

/// The carrier's stamps on caller audio (ms since the stream began), read to
/// tell audio lost on the way from frames that are late or out of order.
#[derive(Debug, Default)]
pub(super) struct CallerStamps {
    /// The stamp the next caller audio should carry.
    next: Option<u64>,
    /// Stamps in a row that were exactly `next`.
    steady: u8,
}

impl CallerStamps {
    /// Audio stamped `ts` lasting `len_ms`: the ms lost just before it, when
    /// the gap is a frame (`frame_ms`) or more and the stamps have been
    /// advancing by exactly their audio's length (ms on the stream's clock).
    /// Stamps in other units, or a wall clock that jitters, never report a
    /// loss. Frames out of order are not gaps; a jump back of more than a
    /// second is a new count.
    fn on_audio(&mut self, ts: u64, len_ms: u64, frame_ms: u64) -> Option<u64> {
        let end = ts + len_ms;
        let mut lost = None;
        (self.next, self.steady) = match self.next {
            Some(next) if ts == next => (Some(end), self.steady.saturating_add(1)),
            Some(next) if ts >= next + frame_ms && ts - next <= MAX_GAP_MS => {
                lost = (self.steady >= STEADY_STAMPS).then_some(ts - next);
                (Some(end), 0)
            }
            Some(next) if ts + 1000 >= next => (Some(next.max(end)), 0),
            _ => (Some(end), 0),
        };
        lost
    }
}

impl Session {
    pub(super) fn on_carrier(&mut self, ev: CarrierEvent<'_>) {
        match ev {
            CarrierEvent::Start(info) => {
                if self.phase != Phase::AwaitingStart {
                    return;
                }
                self.stream = Some(info);
                self.phase = Phase::Active;
                self.agent.started(self.now);
                self.limits.start(self.now);
                if self.agent.live().status {
                    let at_ms = self.agent.conversation.at_ms(self.now);
                    self.cold(Cold::Event(crate::contract::Event::CallStatus { status: "answered".into(), at_ms }));
                }
                if let Some(clip) = self.agent.fallback_at_start() {
                    self.cold(Cold::Engine(crate::engine::EngineCommand::Play(clip)));
                }
                self.pending.push_back(Pending::EngineStart);
            }
            CarrierEvent::Audio(a) => {
                if self.phase != Phase::Active {
                    return;
                }
                if let InputAudio::Passthrough(_) = self.engine.input
                    && !a.encoded.is_empty()
                {
                    self.engine_encoded.extend_from_slice(a.encoded);
                    if !self.engine_audio_queued {
                        self.engine_audio_queued = true;
                        self.pending.push_back(Pending::EngineAudio);
                    }
                }
                if self.cfg.record {
                    self.rec.caller(a.pcm.len() as u64);
                    if self.rec_caller.is_empty() {
                        self.pending.push_back(Pending::RecordCaller);
                    }
                    self.rec_caller.extend_from_slice(a.pcm);
                }
                if let Some(ts) = a.timestamp_ms {
                    self.on_caller_timestamp(ts, a.pcm.len());
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
            CarrierEvent::Dtmf(d) => self.telemetry(Telemetry::Dtmf(d)),
            CarrierEvent::Mark(Some(m)) => {
                self.playback.on_mark(m);
            }
            CarrierEvent::Mark(None) | CarrierEvent::Connected | CarrierEvent::Ignored => {}
            CarrierEvent::Stop => self.end(HangupReason::CarrierStop),
        }
    }

    /// Caller audio of `len` samples stamped `ts` ms by the carrier: audio
    /// lost before it reached us moves the echo check's timeline on, as the
    /// far end's clock did.
    fn on_caller_timestamp(&mut self, ts: u64, len: usize) {
        let rate = self.caps.format.rate as u64;
        let frame_ms = (self.frame as u64 * 1000 / rate).max(1);
        if let Some(lost_ms) = self.caller_stamps.on_audio(ts, len as u64 * 1000 / rate, frame_ms) {
            self.echo.skip(lost_ms * rate / 1000);
        }
    }

    /// One whole 20 ms caller frame is in `in_acc`.
    fn on_frame(&mut self) {
        let now = self.now;
        let d = self.vad.process(&self.in_acc);
        self.echo.on_caller(&self.in_acc);
        self.echo_caller_at = now;
        self.turn_audio.push(&self.in_acc);
        if let InputAudio::Pcm { .. } = self.engine.input {
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
        // The bot's own voice coming back is not the caller speaking.
        let mut speech = d.speech;
        if speech && !self.turn.in_turn() && self.echo.explains(self.in_acc.len()) {
            speech = false;
            if !self.in_echo {
                self.in_echo = true;
                self.telemetry(Telemetry::EchoIgnored);
            }
        } else if speech {
            self.in_echo = false;
        }
        let loud = d.level_dbfs >= self.cfg.turn.echo_guard_dbfs;
        let ev = self.turn.on_frame(now, crate::audio::FRAME, speech, loud);
        if !matches!(ev, turn::TurnEvent::None) {
            self.on_turn_event(ev);
            return;
        }
        if !speech || self.turn.in_turn() {
            return;
        }
        // Speaking again right after the end of their turn: they were not done.
        let resumed = self.turn_ended.filter(|(at, _)| {
            now.saturating_duration_since(*at) <= Duration::from_millis(self.cfg.turn.resume_grace_ms as u64)
        });
        if self.playback.is_playing(now) {
            if self.protected_playing() {
                return; // not to be talked over: the caller's turn starts when it ends
            }
            let protect = if resumed.is_some() { Duration::MAX } else { self.playback.playing_for(now) };
            if turn::should_barge_in(&self.cfg.turn, self.turn.loud_run(), protect) {
                let onset = self.turn.run_start().unwrap_or(now);
                self.resumed(resumed, onset);
                self.interrupt(Some(onset));
                self.start_turn(onset);
            }
        } else if turn::should_start_turn(&self.cfg.turn, self.turn.speech_run()) {
            let onset = self.turn.run_start().unwrap_or(now);
            self.resumed(resumed, onset);
            // A response still being generated (nothing audible yet) is moot now.
            if self.playback.has_live_response() {
                self.interrupt(None);
            }
            self.start_turn(onset);
        }
    }

    fn resumed(&mut self, resumed: Option<(std::time::Instant, turn::EndedBy)>, onset: std::time::Instant) {
        if let Some((at, by)) = resumed {
            self.turn_ended = None;
            self.telemetry(Telemetry::TurnResumed { by, after: onset.saturating_duration_since(at) });
        }
    }
}

/// The caller's last 8 s (plus pre-roll) for end-of-turn questions: a ring
/// written every frame, copied out once per pause candidate. Empty (and
/// free) unless the smart detector is on.
#[derive(Debug)]
pub(super) struct TurnAudio {
    ring: Box<[i16]>,
    /// Samples written so far.
    written: u64,
    /// Where the current turn's audio starts.
    turn_start: u64,
    rate: u32,
}

/// Audio before the detected onset that belongs to the turn (VAD attack).
const PRE_ROLL: Duration = Duration::from_millis(500);

impl TurnAudio {
    pub(super) fn new(on: bool, rate: u32) -> Self {
        let len = if on { (rate as usize) * 8 + (rate as usize) / 2 } else { 0 };
        Self { ring: vec![0; len].into_boxed_slice(), written: 0, turn_start: 0, rate }
    }

    pub(super) fn push(&mut self, pcm: &[i16]) {
        if self.ring.is_empty() {
            return;
        }
        let n = self.ring.len();
        let mut at = (self.written % n as u64) as usize;
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (n - at).min(rest.len());
            self.ring[at..at + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            at = (at + take) % n;
        }
        self.written += pcm.len() as u64;
    }

    /// The turn started `run` ago (its speech so far).
    pub(super) fn start_turn(&mut self, run: Duration) {
        let back = ((run + PRE_ROLL).as_micros() as u64) * self.rate as u64 / 1_000_000;
        self.turn_start = self.written.saturating_sub(back);
    }

    /// The current turn's audio, oldest first (at most the ring).
    pub(super) fn snapshot(&self) -> Vec<i16> {
        let n = self.ring.len() as u64;
        if n == 0 {
            return Vec::new();
        }
        let from = self.turn_start.max(self.written.saturating_sub(n));
        let mut out = Vec::with_capacity((self.written - from) as usize);
        for i in from..self.written {
            out.push(self.ring[(i % n) as usize]);
        }
        out
    }
}
