//! Deepgram live transcription (`/v1/listen`) as a sans-IO codec: caller
//! audio out as binary frames, `Results` / `SpeechStarted` / `UtteranceEnd`
//! in, `KeepAlive` while no audio flows, `Finalize` at our own end of turn,
//! `CloseStream` at the end of the call (PROTOCOLS.md §6.2).
//!
//! A turn's text is every `is_final` transcript since the last turn. At our
//! end of turn it is handed over at once when Deepgram has already
//! finalized everything (`speech_final` or `UtteranceEnd`, nothing interim
//! pending), else after `Finalize` is answered, or at a deadline with what
//! there is.
//!
//! Invariants: no caller audio is lost across a socket drop — every byte sent
//! since the last finalized point is kept (bounded) and sent again on the
//! new connection; frames are cut from one reusable arena, so steady-state
//! audio allocates nothing; silence longer than `gate_hangover` is not sent
//! (Deepgram bills streamed seconds), a short pre-roll is sent with the next
//! speech so onsets are never clipped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::engine::{LinkMsg, LinkSpec};

/// Audio the socket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SttAudio {
    /// µ-law 8 kHz, the carrier's bytes untouched.
    Mulaw8k,
    /// Linear 16-bit little-endian PCM at this rate.
    Linear16(u32),
}

impl SttAudio {
    fn bytes_per_second(self) -> u32 {
        match self {
            SttAudio::Mulaw8k => 8000,
            SttAudio::Linear16(r) => r * 2,
        }
    }
}

/// One call's Deepgram settings.
#[derive(Clone)]
pub struct DeepgramConfig {
    /// Listen endpoint (`wss://api.deepgram.com/v1/listen`; env `DEEPGRAM_URL`).
    pub url: String,
    /// `DEEPGRAM_API_KEY` (never logged).
    pub api_key: String,
    /// `model` (`nova-3`).
    pub model: String,
    /// `language` (empty: Deepgram's default).
    pub language: String,
    /// `endpointing` in ms.
    pub endpointing_ms: u32,
    /// `utterance_end_ms` (≥ 1000).
    pub utterance_end_ms: u32,
    /// `smart_format`.
    pub smart_format: bool,
    /// Wire audio.
    pub audio: SttAudio,
    /// Send `KeepAlive` after this long without audio (Deepgram closes at 10 s).
    pub keepalive: Duration,
    /// Stop sending after this much silence (`None`: send everything).
    pub gate_hangover: Option<Duration>,
    /// How long to wait for `Finalize` to be answered at our end of turn.
    pub finalize_timeout: Duration,
    /// Reconnects allowed per call.
    pub reconnects: u32,
    /// Connect deadline.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for DeepgramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepgramConfig").field("url", &self.url).field("model", &self.model).finish_non_exhaustive()
    }
}

impl DeepgramConfig {
    /// The socket: URL with every query parameter, `Authorization: Token …`.
    pub fn link(&self) -> LinkSpec {
        let (encoding, rate) = match self.audio {
            SttAudio::Mulaw8k => ("mulaw", 8000),
            SttAudio::Linear16(r) => ("linear16", r),
        };
        let mut url = self.url.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!(
            "model={}&encoding={encoding}&sample_rate={rate}&channels=1&interim_results=true&endpointing={}\
             &utterance_end_ms={}&vad_events=true&smart_format={}",
            enc(&self.model),
            self.endpointing_ms,
            self.utterance_end_ms.max(1000),
            self.smart_format
        ));
        if !self.language.is_empty() {
            url.push_str("&language=");
            url.push_str(&enc(&self.language));
        }
        LinkSpec {
            name: "deepgram",
            url,
            headers: vec![("Authorization".into(), format!("Token {}", self.api_key))],
            hello: Vec::new(),
            reconnects: self.reconnects,
            connect_timeout: self.connect_timeout,
            max_queued: 256,
            time_text: true,
        }
    }
}

/// Percent-encode a query value (model and language names are plain; be safe).
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What transcription tells the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// The caller's words so far in this turn (finals plus the latest interim).
    Partial(String),
    /// The caller's turn, final; `latency` from our end of turn.
    Final {
        /// the text (may be empty: nothing was recognised)
        text: String,
        /// end of turn → final text
        latency: Duration,
    },
    /// Deepgram heard speech begin.
    SpeechStarted,
    /// Deepgram cannot be reached any more.
    Down(String),
}

/// Most unfinalized audio kept for a resend after a drop.
const MAX_REPLAY_SECONDS: u32 = 30;
/// Pre-roll sent before the first frame of speech after a gated silence.
const PRE_ROLL: Duration = Duration::from_millis(400);
/// Mean absolute amplitude above which a frame is "sound" for the gate (≈ −48 dBFS).
const GATE_LEVEL: u32 = 130;
/// Smallest resend message (a resend goes in about one second per message).
const RESEND_CHUNK: usize = 3200;

/// One call's transcription.
#[derive(Debug)]
pub struct Stt {
    cfg: DeepgramConfig,
    out: VecDeque<LinkMsg>,
    events: VecDeque<SttEvent>,
    arena: BytesMut,
    /// The socket is reconnecting: keep audio, send nothing.
    lost: bool,
    /// Bytes sent on this connection, and how many of them Deepgram finalized.
    conn_sent: u64,
    conn_final: u64,
    /// The bytes in `conn_final..conn_sent` (resent after a drop).
    replay: VecDeque<u8>,
    /// Recent gated-out audio, sent ahead of the next speech.
    pre_roll: VecDeque<u8>,
    pre_roll_max: usize,
    /// Bytes streamed over the call (usage).
    total_sent: u64,
    last_sound: Option<Instant>,
    /// Last message sent (none yet: no keep-alive is due).
    last_sent: Option<Instant>,
    finals: String,
    interim: String,
    /// Deepgram ended the utterance itself (nothing is pending there).
    endpointed: bool,
    /// Our end of turn, awaiting its text.
    awaiting: Option<Instant>,
    closed: bool,
}

impl Stt {
    /// A transcriber for one call (the socket is opened by the runtime).
    pub fn new(cfg: DeepgramConfig) -> Self {
        let bps = cfg.audio.bytes_per_second() as usize;
        Self {
            out: VecDeque::with_capacity(8),
            events: VecDeque::with_capacity(4),
            arena: BytesMut::with_capacity(4096),
            lost: false,
            conn_sent: 0,
            conn_final: 0,
            replay: VecDeque::with_capacity(bps * 2),
            pre_roll: VecDeque::with_capacity(bps * PRE_ROLL.as_millis() as usize / 1000),
            pre_roll_max: bps * PRE_ROLL.as_millis() as usize / 1000,
            total_sent: 0,
            last_sound: None,
            last_sent: None,
            finals: String::new(),
            interim: String::new(),
            endpointed: false,
            awaiting: None,
            closed: false,
            cfg,
        }
    }

    /// Caller audio (µ-law bytes or PCM, per the configured wire audio).
    pub fn audio_ulaw(&mut self, now: Instant, ulaw: &[u8]) {
        let level = ulaw.iter().map(|&b| crate::audio::g711::ulaw_decode_sample(b).unsigned_abs() as u32).sum::<u32>()
            / ulaw.len().max(1) as u32;
        self.audio_bytes(now, level, ulaw);
    }

    /// Caller audio as PCM (sent as `linear16`).
    pub fn audio_pcm(&mut self, now: Instant, pcm: &[i16]) {
        let level = pcm.iter().map(|s| s.unsigned_abs() as u32).sum::<u32>() / pcm.len().max(1) as u32;
        let mut bytes = [0u8; 1920];
        for chunk in pcm.chunks(bytes.len() / 2) {
            for (i, s) in chunk.iter().enumerate() {
                bytes[2 * i..2 * i + 2].copy_from_slice(&s.to_le_bytes());
            }
            self.audio_bytes(now, level, &bytes[..chunk.len() * 2]);
        }
    }

    fn audio_bytes(&mut self, now: Instant, level: u32, bytes: &[u8]) {
        if self.closed || bytes.is_empty() {
            return;
        }
        if level >= GATE_LEVEL {
            self.last_sound = Some(now);
        }
        let gated = match (self.cfg.gate_hangover, self.last_sound) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(h), Some(t)) => now.saturating_duration_since(t) > h,
        };
        if gated {
            let max = self.pre_roll_max;
            while self.pre_roll.len() + bytes.len() > max && !self.pre_roll.is_empty() {
                self.pre_roll.pop_front();
            }
            self.pre_roll.extend(bytes.iter().take(max));
            return;
        }
        if !self.pre_roll.is_empty() {
            let mut pre = std::mem::take(&mut self.pre_roll);
            let (a, b) = pre.as_slices();
            for part in [a, b] {
                for c in part.chunks(1024) {
                    self.send_audio(now, c);
                }
            }
            pre.clear();
            self.pre_roll = pre;
        }
        self.send_audio(now, bytes);
    }

    fn send_audio(&mut self, now: Instant, bytes: &[u8]) {
        let max = (self.cfg.audio.bytes_per_second() * MAX_REPLAY_SECONDS) as usize;
        if self.replay.len() + bytes.len() > max {
            let drop = (self.replay.len() + bytes.len() - max).min(self.replay.len());
            self.replay.drain(..drop);
            self.conn_final += drop as u64;
        }
        self.replay.extend(bytes);
        self.conn_sent += bytes.len() as u64;
        self.total_sent += bytes.len() as u64;
        if self.lost {
            return;
        }
        if self.arena.capacity() < bytes.len() {
            // Reclaims the arena once the link has written the frames cut from it.
            self.arena.reserve(4096.max(bytes.len()));
        }
        self.arena.extend_from_slice(bytes);
        self.out.push_back(LinkMsg::Binary(self.arena.split().freeze()));
        self.last_sent = Some(now);
    }

    /// Our endpointing ended the caller's turn.
    pub fn end_of_turn(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.awaiting = Some(now);
        if self.endpointed && self.interim.is_empty() && !self.finals.is_empty() {
            self.hand_over(now);
            return;
        }
        self.control(now, r#"{"type":"Finalize"}"#);
    }

    fn control(&mut self, now: Instant, msg: &str) {
        if !self.lost {
            self.out.push_back(LinkMsg::Text(msg.to_string()));
            self.last_sent = Some(now);
        }
    }

    fn hand_over(&mut self, now: Instant) {
        let Some(asked) = self.awaiting.take() else { return };
        let mut text = std::mem::take(&mut self.finals);
        if !self.interim.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&std::mem::take(&mut self.interim));
        }
        self.endpointed = false;
        self.events.push_back(SttEvent::Final { text, latency: now.saturating_duration_since(asked) });
    }

    /// A text message from Deepgram.
    pub fn on_text(&mut self, now: Instant, text: &str) -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("deepgram message: {e}"))?;
        match v["type"].as_str() {
            Some("Results") => self.on_results(now, &v),
            Some("SpeechStarted") => {
                self.endpointed = false;
                self.events.push_back(SttEvent::SpeechStarted);
            }
            Some("UtteranceEnd") => {
                self.endpointed = true;
                if self.awaiting.is_some() && self.interim.is_empty() {
                    self.hand_over(now);
                }
            }
            Some("Error") | Some("error") => {
                let why = v["description"].as_str().or(v["message"].as_str()).unwrap_or("error");
                return Err(format!("deepgram: {}", why.chars().take(200).collect::<String>()));
            }
            _ => {} // Metadata, and anything newer
        }
        Ok(())
    }

    fn on_results(&mut self, now: Instant, v: &serde_json::Value) {
        let transcript = v["channel"]["alternatives"][0]["transcript"].as_str().unwrap_or("").trim();
        let is_final = v["is_final"].as_bool().unwrap_or(false);
        if is_final {
            let end = v["start"].as_f64().unwrap_or(0.0) + v["duration"].as_f64().unwrap_or(0.0);
            self.finalized_to((end * self.cfg.audio.bytes_per_second() as f64) as u64);
            if !transcript.is_empty() {
                if !self.finals.is_empty() {
                    self.finals.push(' ');
                }
                self.finals.push_str(transcript);
            }
            self.interim.clear();
            let ends = v["speech_final"].as_bool().unwrap_or(false) || v["from_finalize"].as_bool().unwrap_or(false);
            // Only the latest final says whether Deepgram is at an utterance's end.
            self.endpointed = ends;
            if self.awaiting.is_some() && ends {
                self.hand_over(now);
                return;
            }
        } else {
            self.interim.clear();
            self.interim.push_str(transcript);
            if !transcript.is_empty() {
                self.endpointed = false;
            }
        }
        if !transcript.is_empty() {
            let mut partial = self.finals.clone();
            if !self.interim.is_empty() {
                if !partial.is_empty() {
                    partial.push(' ');
                }
                partial.push_str(&self.interim);
            }
            self.events.push_back(SttEvent::Partial(partial));
        }
    }

    /// Deepgram finalized the audio up to `byte` of this connection.
    fn finalized_to(&mut self, byte: u64) {
        // Whole samples only: a resend must not start inside a 16-bit sample.
        let width = match self.cfg.audio {
            SttAudio::Mulaw8k => 1,
            SttAudio::Linear16(_) => 2,
        };
        let byte = byte.min(self.conn_sent);
        let byte = byte - byte % width;
        if byte > self.conn_final {
            let n = ((byte - self.conn_final) as usize).min(self.replay.len());
            self.replay.drain(..n);
            self.conn_final = byte;
        }
    }

    /// The socket dropped; it is being reconnected.
    pub fn lost(&mut self) {
        self.lost = true;
        self.out.clear();
    }

    /// The socket is up; after a drop, resend what was not finalized.
    pub fn up(&mut self, now: Instant, reconnected: bool) {
        if !reconnected {
            // Keep-alives count from here (the caller may be silent from the start).
            self.last_sent.get_or_insert(now);
            return;
        }
        self.lost = false;
        self.interim.clear();
        // The resent audio is not finalized on the new connection.
        self.endpointed = false;
        self.conn_final = 0;
        self.conn_sent = self.replay.len() as u64;
        self.total_sent += self.replay.len() as u64;
        // About a second per message: 30 s of backlog stays well inside the lane.
        let chunk = (self.cfg.audio.bytes_per_second() as usize).max(RESEND_CHUNK);
        let (a, b) = self.replay.as_slices();
        for part in [a, b] {
            for c in part.chunks(chunk) {
                self.out.push_back(LinkMsg::Binary(bytes::Bytes::copy_from_slice(c)));
            }
        }
        self.last_sent = Some(now);
        if self.awaiting.is_some() {
            self.control(now, r#"{"type":"Finalize"}"#);
        }
    }

    /// The socket is gone for good.
    pub fn down(&mut self, why: &str) {
        self.closed = true;
        self.events.push_back(SttEvent::Down(why.to_string()));
    }

    /// The call is over: flush and close.
    pub fn stop(&mut self, now: Instant) {
        if !self.closed {
            self.control(now, r#"{"type":"CloseStream"}"#);
            self.closed = true;
        }
    }

    /// Next deadline: a keep-alive, or the wait for a final transcript.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let keepalive = self.last_sent.filter(|_| !self.lost).map(|t| t + self.cfg.keepalive);
        let finalize = self.awaiting.map(|t| t + self.cfg.finalize_timeout);
        keepalive.into_iter().chain(finalize).min()
    }

    /// A deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if self.awaiting.is_some_and(|t| now >= t + self.cfg.finalize_timeout) {
            self.hand_over(now);
        }
        if !self.lost && self.last_sent.is_some_and(|t| now >= t + self.cfg.keepalive) {
            self.control(now, r#"{"type":"KeepAlive"}"#);
        }
    }

    /// Next message for the socket.
    pub fn poll_transmit(&mut self) -> Option<LinkMsg> {
        self.out.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<SttEvent> {
        self.events.pop_front()
    }

    /// The socket to open.
    pub fn link(&self) -> LinkSpec {
        self.cfg.link()
    }

    /// The model transcribing.
    pub fn model(&self) -> &str {
        &self.cfg.model
    }

    /// Seconds of audio streamed (what Deepgram bills), resends included.
    pub fn seconds_sent(&self) -> f64 {
        self.total_sent as f64 / self.cfg.audio.bytes_per_second() as f64
    }

    /// Unfinalized bytes kept for a resend (tests, memory accounting).
    pub fn replay_len(&self) -> usize {
        self.replay.len()
    }
}
