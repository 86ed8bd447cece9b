//! The caller's side of the session: carrier events, re-framing into 20 ms,
//! voice activity, turn starts and ends, barge-in, and caller audio for the
//! engine and the recording.
//!
//! Per frame this allocates nothing: every buffer was sized when the session
//! was built.

use super::{Cold, HangupReason, Pending, Phase, Session, Telemetry, turn};
use crate::carrier::CarrierEvent;
use crate::engine::InputAudio;

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

    /// One whole 20 ms caller frame is in `in_acc`.
    fn on_frame(&mut self) {
        let now = self.now;
        let d = self.vad.process(&self.in_acc);
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
        let loud = d.level_dbfs >= self.cfg.turn.echo_guard_dbfs;
        let ev = self.turn.on_frame(now, crate::audio::FRAME, d.speech, loud);
        if let turn::TurnEvent::Ended { speech_end } = ev {
            self.end_turn(speech_end);
            return;
        }
        if !d.speech || self.turn.in_turn() {
            return;
        }
        if self.playback.is_playing(now) {
            if turn::should_barge_in(&self.cfg.turn, self.turn.loud_run(), self.playback.playing_for(now)) {
                let onset = self.turn.run_start().unwrap_or(now);
                self.interrupt(Some(onset));
                self.start_turn(onset);
            }
        } else if turn::should_start_turn(&self.cfg.turn, self.turn.speech_run()) {
            // A response still being generated (nothing audible yet) is moot now.
            if self.playback.has_live_response() {
                self.interrupt(None);
            }
            self.start_turn(self.turn.run_start().unwrap_or(now));
        }
    }
}
