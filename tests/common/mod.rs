//! Shared test helpers: a virtual-time session harness and synthetic audio.
#![allow(dead_code)]

pub mod backend;
pub mod calls;
pub mod net;

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::audio::vad::{VadConfig, VadKind};
use callbridge::carrier::{AudioEncoding, AudioIn, CarrierCommand, CarrierEvent, StreamInfo};
use callbridge::engine::local::{LocalClips, LocalEngine};
use callbridge::engine::{EngineCommand, EngineEvent};
use callbridge::ids::{MarkId, ResponseId};
use callbridge::session::{ControlCommand, HangupReason, Input, Output, Session, SessionConfig, Telemetry};

pub const FRAME: Duration = Duration::from_millis(20);

/// A 20 ms 8 kHz frame of a 440 Hz tone at `dbfs` (mean-square level).
pub fn tone(dbfs: f32) -> Vec<i16> {
    let rms = 10f32.powf(dbfs / 20.0) * 32768.0;
    let amp = rms * std::f32::consts::SQRT_2;
    (0..160).map(|i| (amp * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8000.0).sin()) as i16).collect()
}

pub fn silence() -> Vec<i16> {
    vec![0; 160]
}

pub fn stream_info() -> StreamInfo {
    StreamInfo {
        carrier: "test",
        call_sid: "CA1".into(),
        stream_sid: "MZ1".into(),
        account_sid: "AC1".into(),
        custom_parameters: vec![],
        encoding: AudioEncoding::Pcmu,
        sample_rate: 8000,
    }
}

/// Energy VAD so tone frames are "speech" exactly when loud enough; a 60 ms
/// playback lead (3 frames) that the scenarios count with.
pub fn energy_config() -> SessionConfig {
    SessionConfig {
        vad: VadConfig { kind: VadKind::Energy, ..VadConfig::default() },
        playback: callbridge::session::playback::PlaybackConfig {
            lead_ms: 60,
            mark_interval_ms: 200,
            frames_per_message: 1,
            ..Default::default()
        },
        ..SessionConfig::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    Audio { at: Instant, first_sample: i16 },
    Mark(MarkId),
    Clear { at: Instant },
}

/// Drives a Session plus the local engine in virtual time, recording outputs.
pub struct Harness {
    pub session: Session,
    pub engine: LocalEngine,
    pub t0: Instant,
    pub now: Instant,
    pub sent: Vec<Sent>,
    pub telemetry: Vec<(Instant, Telemetry)>,
    pub engine_cmds: Vec<(Instant, String)>,
    pub cancels: Vec<(ResponseId, u32)>,
    pub ended: Option<HangupReason>,
}

impl Harness {
    pub fn new(cfg: SessionConfig, clips: LocalClips) -> Self {
        let t0 = Instant::now();
        let engine = LocalEngine::new(clips);
        let session = Session::new(cfg, engine.format(), t0);
        let mut h = Self {
            session,
            engine,
            t0,
            now: t0,
            sent: vec![],
            telemetry: vec![],
            engine_cmds: vec![],
            cancels: vec![],
            ended: None,
        };
        h.input(Input::Carrier(CarrierEvent::Start(stream_info())));
        // As on a real line, the call opens with a moment of silence (the VAD's
        // warm-up), then the test's script begins.
        h.frames(&silence(), callbridge::audio::vad::WARMUP_FRAMES as usize);
        h.t0 = h.now;
        h
    }

    /// A reply clip of `ms` milliseconds of a constant non-zero value and no greeting.
    pub fn with_reply_ms(cfg: SessionConfig, ms: usize) -> Self {
        Self::new(cfg, LocalClips { greeting: None, reply: Arc::from(vec![1000i16; ms * 8]) })
    }

    pub fn input(&mut self, i: Input<'_>) {
        self.session.handle_input(self.now, i).unwrap();
        self.drain();
    }

    pub fn drain(&mut self) {
        let (now, sent, cmds, cancels, telemetry, ended) =
            (self.now, &mut self.sent, &mut self.engine_cmds, &mut self.cancels, &mut self.telemetry, &mut self.ended);
        self.engine.pump(&mut self.session, now, |o| match o {
            Output::ToCarrier(CarrierCommand::Audio(a)) => sent.push(Sent::Audio { at: now, first_sample: a[0] }),
            Output::ToCarrier(CarrierCommand::Mark(m)) => sent.push(Sent::Mark(m)),
            Output::ToCarrier(CarrierCommand::Clear) => sent.push(Sent::Clear { at: now }),
            Output::ToEngine(c) => {
                cmds.push((now, format!("{c:?}")));
                if let EngineCommand::Cancel { response, heard_ms } = c {
                    cancels.push((response, heard_ms));
                }
            }
            Output::Telemetry(t) => telemetry.push((now, t)),
            Output::End(r) => *ended = Some(r),
        });
    }

    /// Inject an engine event directly (e.g. late audio of a cancelled response).
    pub fn engine_event(&mut self, ev: EngineEvent) {
        self.input(Input::Engine(ev));
    }

    /// Advance virtual time to `t`, firing session timers on the way.
    pub fn advance_to(&mut self, t: Instant) {
        while let Some(d) = self.session.poll_timeout() {
            if d > t {
                break;
            }
            self.now = self.now.max(d);
            self.session.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.now.max(t);
        self.session.handle_timeout(self.now);
        self.drain();
    }

    /// One caller frame arriving 20 ms after the previous one.
    pub fn frame(&mut self, pcm: &[i16]) {
        let t = self.now + FRAME;
        self.advance_to(t);
        self.input(Input::Carrier(CarrierEvent::Audio(AudioIn { pcm, encoded: &[], timestamp_ms: None })));
    }

    pub fn frames(&mut self, pcm: &[i16], n: usize) {
        for _ in 0..n {
            self.frame(pcm);
        }
    }

    pub fn control(&mut self, c: ControlCommand) {
        self.input(Input::Control(c));
    }

    pub fn clears(&self) -> Vec<Instant> {
        self.sent.iter().filter_map(|s| if let Sent::Clear { at } = s { Some(*at) } else { None }).collect()
    }

    pub fn audio_frames(&self) -> usize {
        self.sent.iter().filter(|s| matches!(s, Sent::Audio { .. })).count()
    }

    pub fn count_cmd(&self, prefix: &str) -> usize {
        self.engine_cmds.iter().filter(|(_, c)| c.starts_with(prefix)).count()
    }

    pub fn barge_ins(&self) -> Vec<(Duration, u32)> {
        self.telemetry
            .iter()
            .filter_map(|(_, t)| {
                if let Telemetry::BargeIn { latency, heard_ms, .. } = t { Some((*latency, *heard_ms)) } else { None }
            })
            .collect()
    }

    pub fn response_latencies(&self) -> Vec<Duration> {
        self.telemetry
            .iter()
            .filter_map(|(_, t)| if let Telemetry::ResponseLatency(d) = t { Some(*d) } else { None })
            .collect()
    }

    pub fn ms(&self) -> u128 {
        (self.now - self.t0).as_millis()
    }
}
