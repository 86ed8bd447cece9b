//! A virtual-time harness around the real call loop ([`callbridge::call::Call`]):
//! a FAKE carrier with a trivial wire protocol (raw PCM in, tagged commands
//! out), the embedded local engine behind a spy that records every command,
//! and a [`CallIo`] that keeps everything the call produced. No sockets, no
//! sleeps: time only moves when a test says so.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callbridge::audio::vad::{VadConfig, VadKind};
use callbridge::call::{Call, CallIo};
use callbridge::carrier::{
    AudioFormat, AudioIn, Capabilities, Carrier, CarrierCommand, CarrierError, CarrierEvent, Severity, StreamInfo,
    WireIn, WireOut,
};
use callbridge::contract::Event;
use callbridge::engine::local::{LocalClips, LocalEngine};
use callbridge::engine::{Engine, EngineCommand, EngineEvent, EngineFormat, LinkEvent, LinkMsg};
use callbridge::ids::{MarkId, ResponseId};
use callbridge::session::{
    ControlCommand, HangupReason, Output, Reply, Request, Session, SessionConfig, Telemetry, TurnQuery,
};

/// One 20 ms frame.
pub const FRAME: Duration = Duration::from_millis(20);

/// A 20 ms 8 kHz frame of a 440 Hz tone at `dbfs` (mean-square level).
pub fn tone(dbfs: f32) -> Vec<i16> {
    let rms = 10f32.powf(dbfs / 20.0) * 32768.0;
    let amp = rms * std::f32::consts::SQRT_2;
    (0..160).map(|i| (amp * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8000.0).sin()) as i16).collect()
}

/// A 20 ms 8 kHz frame of digital silence.
pub fn silence() -> Vec<i16> {
    vec![0; 160]
}

/// The stream the fake carrier announces.
pub fn stream_info() -> StreamInfo {
    StreamInfo {
        carrier: "fake",
        call_id: "CA1".into(),
        stream_id: "MZ1".into(),
        from: "+15557770000".into(),
        to: "+15550001111".into(),
        token: None,
        parameters: vec![],
        carrier_ids: vec![],
        format: AudioFormat::PCMU_8K,
    }
}

/// Energy VAD so tone frames are "speech" exactly when loud enough; a 60 ms
/// playback lead (3 frames) and a 500 ms silence endpoint (25 frames) that
/// the scenarios count with (the shipped default is 800 ms; the turn
/// scenarios test that one).
pub fn energy_config() -> SessionConfig {
    SessionConfig {
        turn: callbridge::session::turn::TurnConfig {
            endpoint_silence_ms: 500,
            ..callbridge::session::turn::TurnConfig::default()
        },
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

/// Capabilities of a phone carrier (far-end buffer, clear, marks, DTMF).
pub fn phone_caps() -> Capabilities {
    Capabilities {
        format: AudioFormat::PCMU_8K,
        far_end_buffer: true,
        clear: true,
        marks: true,
        dtmf: true,
        frames_per_message: None,
        stream_ends_on_transfer: true,
    }
}

/// A FAKE carrier: binary messages are little-endian PCM at 8 kHz; text
/// messages are `start`, `stop`, `mark:N` or `dtmf:D`. Commands go out as
/// binary messages tagged `A` (audio: i16 samples), `M` (mark: u64) or `C`.
#[derive(Debug)]
pub struct FakeCarrier {
    caps: Capabilities,
    pcm: Vec<i16>,
}

impl FakeCarrier {
    /// A fake declaring `caps`.
    pub fn new(caps: Capabilities) -> Self {
        Self { caps, pcm: Vec::with_capacity(640) }
    }
}

impl Carrier for FakeCarrier {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn decode(&mut self, _now: Instant, msg: WireIn<'_>) -> Result<CarrierEvent<'_>, CarrierError> {
        match msg {
            WireIn::Binary(b) => {
                // [timestamp ms, u64 LE][PCM, i16 LE]
                let (ts, pcm) = b.split_at_checked(8).ok_or_else(|| {
                    CarrierError::new("fake_short", Severity::Skip, "a frame shorter than its timestamp".to_string())
                })?;
                self.pcm.clear();
                self.pcm.extend(pcm.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
                let timestamp_ms = Some(u64::from_le_bytes(ts.try_into().expect("8 bytes")));
                Ok(CarrierEvent::Audio(AudioIn { pcm: &self.pcm, encoded: &[], timestamp_ms }))
            }
            WireIn::Text("start") => Ok(CarrierEvent::Start(stream_info())),
            WireIn::Text("stop") => Ok(CarrierEvent::Stop),
            WireIn::Text(t) => {
                if let Some(n) = t.strip_prefix("mark:") {
                    return Ok(CarrierEvent::Mark(n.parse().ok().map(MarkId)));
                }
                if let Some(d) = t.strip_prefix("dtmf:").and_then(|d| d.chars().next()) {
                    return Ok(CarrierEvent::Dtmf(d));
                }
                Err(CarrierError::new("fake_unknown", Severity::Skip, format!("unknown {t:?}")))
            }
        }
    }

    fn encode(&mut self, cmd: &CarrierCommand<'_>, out: &mut WireOut) -> Result<(), CarrierError> {
        match cmd {
            CarrierCommand::Audio(pcm) => out.binary(|b| {
                b.extend_from_slice(b"A");
                for s in pcm.iter() {
                    b.extend_from_slice(&s.to_le_bytes());
                }
            }),
            CarrierCommand::Mark(m) => out.binary(|b| {
                b.extend_from_slice(b"M");
                b.extend_from_slice(&m.0.to_le_bytes());
            }),
            CarrierCommand::Clear => out.binary(|b| b.extend_from_slice(b"C")),
        }
        Ok(())
    }
}

/// An engine command as the spy saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    /// `Start`
    Start,
    /// `Audio` (samples or bytes)
    Audio(usize),
    /// `EndOfTurn`
    EndOfTurn,
    /// `Cancel`
    Cancel(ResponseId, u32),
    /// `Say`
    Say(String),
    /// `Reply`
    Reply {
        /// text
        text: String,
        /// done
        done: bool,
    },
    /// `Play` (samples)
    Play(usize),
    /// `ToolResult`
    ToolResult {
        /// id
        call_id: String,
        /// output
        output: serde_json::Value,
        /// respond
        respond: bool,
    },
    /// `Stop`
    Stop,
}

/// What a spy shares with its test.
#[derive(Debug, Default)]
pub struct SpyLog {
    /// Commands, with the instant they were given.
    pub cmds: Vec<(Instant, Cmd)>,
    /// Events to hand out before the inner engine's.
    pub inject: VecDeque<EngineEvent>,
}

/// An engine that records every command and forwards it to `inner`.
#[derive(Debug)]
pub struct SpyEngine {
    inner: Box<dyn Engine>,
    log: Arc<Mutex<SpyLog>>,
}

impl SpyEngine {
    /// Spy on `inner`.
    pub fn new(inner: Box<dyn Engine>) -> (Self, Arc<Mutex<SpyLog>>) {
        let log = Arc::new(Mutex::new(SpyLog::default()));
        (Self { inner, log: log.clone() }, log)
    }
}

impl Engine for SpyEngine {
    fn label(&self) -> &'static str {
        self.inner.label()
    }
    fn format(&self) -> EngineFormat {
        self.inner.format()
    }
    fn speaks_text(&self) -> bool {
        self.inner.speaks_text()
    }
    fn transcribes_caller(&self) -> bool {
        self.inner.transcribes_caller()
    }
    fn needs_brain(&self) -> bool {
        self.inner.needs_brain()
    }
    fn handle_command(&mut self, now: Instant, cmd: EngineCommand<'_>) {
        let c = match &cmd {
            EngineCommand::Start => Cmd::Start,
            EngineCommand::Audio(callbridge::engine::AudioRef::Pcm(p)) => Cmd::Audio(p.len()),
            EngineCommand::Audio(callbridge::engine::AudioRef::Encoded(b)) => Cmd::Audio(b.len()),
            EngineCommand::EndOfTurn => Cmd::EndOfTurn,
            EngineCommand::Cancel { response, heard_ms } => Cmd::Cancel(*response, *heard_ms),
            EngineCommand::Say(t) => Cmd::Say(t.clone()),
            EngineCommand::Reply { text, done } => Cmd::Reply { text: text.clone(), done: *done },
            EngineCommand::Play(c) => Cmd::Play(c.len()),
            EngineCommand::ToolResult { call_id, output, respond } => {
                Cmd::ToolResult { call_id: call_id.clone(), output: output.clone(), respond: *respond }
            }
            EngineCommand::Stop => Cmd::Stop,
        };
        self.log.lock().expect("spy lock").cmds.push((now, c));
        self.inner.handle_command(now, cmd);
    }
    fn handle_link(&mut self, now: Instant, link: usize, ev: LinkEvent<'_>) {
        self.inner.handle_link(now, link, ev);
    }
    fn poll_event(&mut self) -> Option<EngineEvent> {
        let injected = self.log.lock().expect("spy lock").inject.pop_front();
        injected.or_else(|| self.inner.poll_event())
    }
    fn poll_transmit(&mut self) -> Option<(usize, LinkMsg)> {
        self.inner.poll_transmit()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
    }
}

/// What the carrier was told, decoded from the fake's wire format.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// Audio (first sample, for identifying the clip).
    Audio {
        /// when
        at: Instant,
        /// first sample
        first_sample: i16,
        /// samples
        len: usize,
    },
    /// A mark.
    Mark(MarkId),
    /// A clear.
    Clear {
        /// when
        at: Instant,
    },
}

/// Everything the call produced besides carrier messages.
#[derive(Debug)]
pub struct VecIo {
    /// The carrier's queue (drained into `sent` by the harness).
    pub wire: WireOut,
    /// Telemetry with the instant it came out.
    pub telemetry: Vec<(Instant, Telemetry)>,
    /// Callback events.
    pub events: Vec<Event>,
    /// Blocking requests.
    pub requests: Vec<Request>,
    /// Transcript notes.
    pub notes: Vec<(&'static str, serde_json::Value)>,
    /// Incidents.
    pub incidents: Vec<callbridge::session::Incident>,
    /// Caller samples recorded, bot (pos, samples) recorded, clears recorded.
    pub recorded: (usize, Vec<(u64, usize)>, Vec<u64>),
    /// Engine link messages.
    pub links: Vec<(usize, LinkMsg)>,
    /// Frames counted in and out.
    pub frames: (u64, u64),
    /// Protocol errors by code.
    pub protocol_errors: Vec<&'static str>,
    /// Questions for the end-of-turn model, with when they were asked.
    pub turn_queries: Vec<(Instant, TurnQuery)>,
    /// Requests abandoned.
    pub cancelled: Vec<callbridge::session::RequestId>,
    /// Transfers asked for.
    pub transfers: Vec<String>,
    now: Instant,
}

impl VecIo {
    /// An empty record; telemetry is stamped with `now` until [`VecIo::set_now`].
    pub fn new(now: Instant) -> Self {
        Self {
            wire: WireOut::new(1 << 16, 4096),
            telemetry: vec![],
            events: vec![],
            requests: vec![],
            notes: vec![],
            incidents: vec![],
            recorded: (0, vec![], vec![]),
            links: vec![],
            frames: (0, 0),
            protocol_errors: vec![],
            turn_queries: vec![],
            cancelled: vec![],
            transfers: vec![],
            now,
        }
    }
}

impl VecIo {
    /// The instant to stamp telemetry with.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }
}

impl CallIo for VecIo {
    fn wire(&mut self) -> &mut WireOut {
        &mut self.wire
    }
    fn link(&mut self, link: usize, msg: LinkMsg) {
        self.links.push((link, msg));
    }
    fn output(&mut self, out: Output<'_>) {
        match out {
            Output::Telemetry(t) => self.telemetry.push((self.now, t)),
            Output::Event(e) => self.events.push(e),
            Output::Request(r) => self.requests.push(r),
            Output::CancelRequest(id) => self.cancelled.push(id),
            Output::Transfer(to) => self.transfers.push(to),
            Output::TurnQuery(q) => self.turn_queries.push((self.now, q)),
            Output::Note(k, v) => self.notes.push((k, v)),
            Output::Incident(i) => self.incidents.push(i),
            Output::Record(op) => match op {
                callbridge::session::RecordOp::Caller { pcm } => self.recorded.0 += pcm.len(),
                callbridge::session::RecordOp::Bot { pcm, pos } => self.recorded.1.push((pos, pcm.len())),
                callbridge::session::RecordOp::Clear { pos } => self.recorded.2.push(pos),
            },
            Output::ToCarrier(_) | Output::ToEngine(_) | Output::End(_) => {}
        }
    }
    fn frames_in(&mut self, n: u64) {
        self.frames.0 += n;
    }
    fn frames_out(&mut self, n: u64) {
        self.frames.1 += n;
    }
    fn protocol_error(&mut self, code: &'static str, _e: &CarrierError) {
        self.protocol_errors.push(code);
    }
}

/// Answers end-of-turn questions in a harness: P(complete) or `None`.
pub type Classifier = Box<dyn FnMut(&TurnQuery) -> Option<f32>>;

/// Drives one call (fake carrier, spied local engine) in virtual time.
pub struct Harness {
    /// The call under test.
    pub call: Call,
    /// What it produced.
    pub io: VecIo,
    /// The engine spy's log.
    pub spy: Arc<Mutex<SpyLog>>,
    /// The script's origin (after the warm-up).
    pub t0: Instant,
    /// Virtual now.
    pub now: Instant,
    /// Carrier commands, in order.
    pub sent: Vec<Sent>,
    /// Answers end-of-turn questions after a virtual latency (None: questions
    /// stay unanswered in `io.turn_queries`).
    pub classifier: Option<(Classifier, Duration)>,
    verdicts: VecDeque<(Instant, u32, Option<f32>)>,
    answered: usize,
    /// The far end: bot audio waiting to play, and what it played, aligned
    /// with the caller frames (20 ms of bot audio played per caller frame).
    far_queue: VecDeque<i16>,
    far_played: Vec<i16>,
    /// Network jitter on caller frames: (largest delay, xorshift state), and
    /// the delay the last frame had.
    jitter: Option<(Duration, u64)>,
    last_jitter: Duration,
    /// Caller frames the network holds back.
    held: Vec<Vec<u8>>,
    /// Caller frames the far end captured.
    captured: u64,
    /// What the carrier's stamp advances by per 20 ms frame (20: ms).
    stamp_step: u64,
}

impl Harness {
    /// A call with the local engine playing `clips`.
    pub fn new(cfg: SessionConfig, clips: LocalClips) -> Self {
        Self::with_engine(cfg, phone_caps(), Box::new(LocalEngine::new(clips)))
    }

    /// A call over a carrier with `caps`, answered by `engine`.
    pub fn with_engine(cfg: SessionConfig, caps: Capabilities, engine: Box<dyn Engine>) -> Self {
        let t0 = Instant::now();
        let (spy, log) = SpyEngine::new(engine);
        let session = Session::new(cfg, caps, spy.format(), t0).expect("session builds");
        let call = Call::new(session, Box::new(FakeCarrier::new(caps)), Box::new(spy), 20);
        let mut h = Self {
            call,
            io: VecIo::new(t0),
            spy: log,
            t0,
            now: t0,
            sent: vec![],
            classifier: None,
            verdicts: VecDeque::new(),
            answered: 0,
            far_queue: VecDeque::new(),
            far_played: Vec::new(),
            jitter: None,
            last_jitter: Duration::ZERO,
            held: Vec::new(),
            captured: 0,
            stamp_step: 20,
        };
        let now = h.now;
        h.call.start(now, stream_info(), &mut h.io);
        h.drain();
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

    /// Answer end-of-turn questions with `f` after `latency` of virtual time.
    pub fn set_classifier(&mut self, f: Classifier, latency: Duration) {
        self.classifier = Some((f, latency));
    }

    /// Decode what the call queued for the carrier; schedule verdicts for new
    /// end-of-turn questions.
    pub fn drain(&mut self) {
        if let Some((f, latency)) = &mut self.classifier {
            while self.answered < self.io.turn_queries.len() {
                let (at, q) = &self.io.turn_queries[self.answered];
                self.verdicts.push_back((*at + *latency, q.id, f(q)));
                self.answered += 1;
            }
        }
        let now = self.now;
        while let Some(m) = self.io.wire.pop() {
            let d = &m.data[..];
            match d.first() {
                Some(b'A') => {
                    self.far_queue.extend(d[1..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
                    let first = i16::from_le_bytes([d[1], d[2]]);
                    self.sent.push(Sent::Audio { at: now, first_sample: first, len: (d.len() - 1) / 2 });
                }
                Some(b'M') => self.sent.push(Sent::Mark(MarkId(u64::from_le_bytes(d[1..9].try_into().unwrap())))),
                Some(b'C') => {
                    self.far_queue.clear();
                    self.sent.push(Sent::Clear { at: now });
                }
                _ => panic!("unexpected carrier message"),
            }
        }
    }

    fn set_now(&mut self, t: Instant) {
        self.now = t;
        self.io.now = t;
    }

    /// Advance virtual time to `t`, firing the call's timers and delivering
    /// due verdicts on the way, in time order.
    pub fn advance_to(&mut self, t: Instant) {
        loop {
            let timer = self.call.poll_timeout().filter(|d| *d <= t);
            let verdict = self.verdicts.front().map(|v| v.0).filter(|d| *d <= t);
            match (timer, verdict) {
                (None, None) => break,
                (Some(d), v) if v.is_none_or(|v| d < v) => {
                    let at = self.now.max(d);
                    self.set_now(at);
                    self.call.on_timeout(at, &mut self.io);
                }
                _ => {
                    let (d, id, p) = self.verdicts.pop_front().expect("a due verdict");
                    let at = self.now.max(d);
                    self.set_now(at);
                    self.call.on_turn_verdict(at, id, p, &mut self.io);
                }
            }
            self.drain();
        }
        let at = self.now.max(t);
        self.set_now(at);
        self.call.on_timeout(at, &mut self.io);
        self.drain();
    }

    /// One caller frame arriving 20 ms after the previous one. (Meanwhile the
    /// far end played 20 ms of bot audio.)
    pub fn frame(&mut self, pcm: &[i16]) {
        self.frame_with_echo(pcm, 0, f32::NEG_INFINITY);
    }

    /// The carrier stamps frames in other units than ms: `step` per frame
    /// (160 for an 8 kHz RTP clock).
    pub fn set_stamp_step(&mut self, step: u64) {
        self.stamp_step = step;
    }

    /// From now on each caller frame arrives up to `max` (< 20 ms) late, a
    /// pseudo-random amount per frame from `seed`, as over a network; the far
    /// end still plays and captures on its own steady clock.
    pub fn set_arrival_jitter(&mut self, max: Duration, seed: u64) {
        assert!(max < FRAME, "jitter must stay below a frame to keep frames in order");
        self.jitter = Some((max, seed | 1));
    }

    /// A caller frame with the far end's played audio leaking back into it:
    /// delayed by `delay_ms` (from when it played) and `echo_db` quieter
    /// (`NEG_INFINITY`: no echo).
    pub fn frame_with_echo(&mut self, pcm: &[i16], delay_ms: u32, echo_db: f32) {
        let bytes = self.capture(pcm, delay_ms, echo_db);
        self.deliver(&bytes);
    }

    /// As [`Harness::frame_with_echo`], but the network holds the frame back:
    /// it arrives with [`Harness::deliver_held`] or is lost with
    /// [`Harness::lose_held`]. The far end goes on playing and capturing.
    pub fn hold_frame_with_echo(&mut self, pcm: &[i16], delay_ms: u32, echo_db: f32) {
        let bytes = self.capture(pcm, delay_ms, echo_db);
        self.held.push(bytes);
    }

    /// The held frames arrive now, back to back.
    pub fn deliver_held(&mut self) {
        for bytes in std::mem::take(&mut self.held) {
            self.deliver(&bytes);
        }
    }

    /// The held frames never arrive.
    pub fn lose_held(&mut self) {
        self.held.clear();
    }

    /// The far end's next 20 ms: virtual time advances a frame (plus this
    /// frame's jitter), the far end plays 20 ms of bot audio and captures
    /// `pcm` with the echo of what it played; returns the frame's bytes.
    fn capture(&mut self, pcm: &[i16], delay_ms: u32, echo_db: f32) -> Vec<u8> {
        let mut t = self.now + FRAME;
        if let Some((max, state)) = &mut self.jitter {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            let j = max.mul_f64((*state % 1_000_000) as f64 / 1_000_000.0);
            t = t - self.last_jitter + j;
            self.last_jitter = j;
        }
        self.advance_to(t);
        let start = self.far_played.len();
        for _ in 0..pcm.len() {
            let s = self.far_queue.pop_front().unwrap_or(0);
            self.far_played.push(s);
        }
        let g = if echo_db.is_finite() { 10f32.powf(echo_db / 20.0) } else { 0.0 };
        let d = (delay_ms * 8) as usize;
        // Stamped by the far end's clock, as Twilio and Telnyx stamp frames.
        let ts = self.captured * self.stamp_step;
        self.captured += 1;
        ts.to_le_bytes()
            .into_iter()
            .chain(
                (0..pcm.len())
                    .map(|i| {
                        let e = (start + i).checked_sub(d).and_then(|j| self.far_played.get(j)).copied().unwrap_or(0);
                        (pcm[i] as f32 + g * e as f32).clamp(-32768.0, 32767.0) as i16
                    })
                    .flat_map(|s| s.to_le_bytes()),
            )
            .collect()
    }

    fn deliver(&mut self, bytes: &[u8]) {
        let now = self.now;
        self.call.on_wire(now, WireIn::Binary(bytes), &mut self.io).expect("fake frames are valid");
        self.drain();
    }

    /// What the far end played so far (8 kHz, one sample per caller sample).
    pub fn far_played(&self) -> &[i16] {
        &self.far_played
    }

    /// `n` frames of `pcm`.
    pub fn frames(&mut self, pcm: &[i16], n: usize) {
        for _ in 0..n {
            self.frame(pcm);
        }
    }

    /// A carrier text message (`stop`, `mark:N`, `dtmf:D`).
    pub fn carrier_text(&mut self, text: &str) {
        let now = self.now;
        let _ = self.call.on_wire(now, WireIn::Text(text), &mut self.io);
        self.drain();
    }

    /// A mark echo.
    pub fn mark(&mut self, m: MarkId) {
        self.carrier_text(&format!("mark:{}", m.0));
    }

    /// A control command.
    pub fn control(&mut self, c: ControlCommand) {
        let now = self.now;
        self.call.on_control(now, c, &mut self.io);
        self.drain();
    }

    /// The backend's answer to a request.
    pub fn reply(&mut self, r: Reply) {
        let now = self.now;
        self.call.on_reply(now, r, &mut self.io);
        self.drain();
    }

    /// Part of a streamed reply to request `id`.
    pub fn reply_delta(&mut self, id: callbridge::session::RequestId, text: &str) {
        let now = self.now;
        self.call.on_reply_delta(now, id, text.to_string(), &mut self.io);
        self.drain();
    }

    /// Hand the session an engine event (e.g. late audio of a cancelled response).
    pub fn engine_event(&mut self, ev: EngineEvent) {
        self.spy.lock().expect("spy lock").inject.push_back(ev);
        let now = self.now;
        self.call.pump(now, &mut self.io);
        self.drain();
    }

    /// How the call ended, if it did.
    pub fn ended(&self) -> Option<HangupReason> {
        self.call.ended()
    }

    /// The session.
    pub fn session(&self) -> &Session {
        self.call.session()
    }

    /// Every engine command so far.
    pub fn cmds(&self) -> Vec<Cmd> {
        self.spy.lock().expect("spy lock").cmds.iter().map(|(_, c)| c.clone()).collect()
    }

    /// How many engine commands matched `f`.
    pub fn count(&self, f: impl Fn(&Cmd) -> bool) -> usize {
        self.cmds().iter().filter(|c| f(c)).count()
    }

    /// `EndOfTurn`s given to the engine.
    pub fn turns_answered(&self) -> usize {
        self.count(|c| *c == Cmd::EndOfTurn)
    }

    /// Cancels given to the engine.
    pub fn cancels(&self) -> Vec<(ResponseId, u32)> {
        self.cmds().iter().filter_map(|c| if let Cmd::Cancel(r, h) = c { Some((*r, *h)) } else { None }).collect()
    }

    /// When clears were sent.
    pub fn clears(&self) -> Vec<Instant> {
        self.sent.iter().filter_map(|s| if let Sent::Clear { at } = s { Some(*at) } else { None }).collect()
    }

    /// Audio messages sent.
    pub fn audio_frames(&self) -> usize {
        self.sent.iter().filter(|s| matches!(s, Sent::Audio { .. })).count()
    }

    /// Marks sent.
    pub fn marks(&self) -> Vec<MarkId> {
        self.sent.iter().filter_map(|s| if let Sent::Mark(m) = s { Some(*m) } else { None }).collect()
    }

    /// Barge-ins: (latency, heard).
    pub fn barge_ins(&self) -> Vec<(Duration, u32)> {
        self.io
            .telemetry
            .iter()
            .filter_map(|(_, t)| {
                if let Telemetry::BargeIn { latency, heard_ms, .. } = t { Some((*latency, *heard_ms)) } else { None }
            })
            .collect()
    }

    /// Response latencies.
    pub fn response_latencies(&self) -> Vec<Duration> {
        self.io
            .telemetry
            .iter()
            .filter_map(|(_, t)| if let Telemetry::ResponseLatency(d) = t { Some(*d) } else { None })
            .collect()
    }

    /// Virtual ms since `t0`.
    pub fn ms(&self) -> u128 {
        (self.now - self.t0).as_millis()
    }
}
