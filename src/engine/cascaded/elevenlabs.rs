//! ElevenLabs streaming speech over the multi-context WebSocket
//! (`/v1/text-to-speech/{voice_id}/multi-stream-input`) as a sans-IO codec
//! (PROTOCOLS.md §6.1).
//!
//! One context per response (`context_id` = `r<response id>`): opened with a
//! single space plus the voice and generation settings, text streamed in as
//! whole words, `flush` at each sentence end (audio starts after the first
//! sentence instead of after 120 buffered characters) and when the reply is
//! complete; `close_context` on barge-in (the socket stays up). Audio comes
//! back as base64 µ-law or PCM with per-character `alignment`, whose times
//! are relative to each chunk: they are shifted by the audio already received
//! for the context, so the session knows when each character is spoken.
//!
//! Invariants: at most three contexts are open (ElevenLabs allows five per
//! socket): the one speaking, briefly the one before it, and the idle one
//! kept alive between turns; a response's context is closed once its text is
//! complete (it still speaks what it has, then says `isFinal`); audio of a
//! context that was cancelled keeps its response id, so the session drops it
//! as stale; a reconnect re-opens the speaking context with the text not yet
//! voiced.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

use crate::engine::{LinkMsg, LinkSpec};
use crate::ids::ResponseId;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What audio the socket is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtsAudio {
    /// `ulaw_8000` (µ-law carriers).
    Ulaw8k,
    /// `pcm_<rate>` (16-bit LE).
    Pcm(u32),
}

impl TtsAudio {
    /// The `output_format` value.
    pub fn name(self) -> String {
        match self {
            TtsAudio::Ulaw8k => "ulaw_8000".into(),
            TtsAudio::Pcm(r) => format!("pcm_{r}"),
        }
    }

    /// Output sample rate.
    pub fn rate(self) -> u32 {
        match self {
            TtsAudio::Ulaw8k => 8000,
            TtsAudio::Pcm(r) => r,
        }
    }
}

/// One call's ElevenLabs settings.
#[derive(Clone)]
pub struct ElevenLabsConfig {
    /// API base (`wss://api.elevenlabs.io`; env `ELEVENLABS_URL`).
    pub base_url: String,
    /// `ELEVENLABS_API_KEY` (never logged).
    pub api_key: String,
    /// Voice id.
    pub voice_id: String,
    /// `model_id` (`eleven_flash_v2_5`).
    pub model_id: String,
    /// Output audio.
    pub audio: TtsAudio,
    /// `voice_settings` sent with each context (null: the voice's own).
    pub voice_settings: serde_json::Value,
    /// `generation_config.chunk_length_schedule`.
    pub chunk_length_schedule: Vec<u32>,
    /// Keep the open context alive this often between turns (server closes at 180 s here).
    pub keepalive: Duration,
    /// Text waiting to be voiced with no audio this long: the response is given up.
    pub answer_timeout: Duration,
    /// Reconnects allowed per call.
    pub reconnects: u32,
    /// Connect deadline.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ElevenLabsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsConfig")
            .field("base_url", &self.base_url)
            .field("voice_id", &self.voice_id)
            .field("model_id", &self.model_id)
            .finish_non_exhaustive()
    }
}

/// Seconds of inactivity before ElevenLabs closes a context (the maximum).
const INACTIVITY_TIMEOUT_S: u32 = 180;
/// Send words once this much text is waiting, sentence end or not.
const SEND_AT_CHARS: usize = 80;

impl ElevenLabsConfig {
    /// The socket: URL with model, format and inactivity timeout, `xi-api-key`.
    pub fn link(&self) -> LinkSpec {
        let base = self.base_url.trim_end_matches('/');
        let url = format!(
            "{base}/v1/text-to-speech/{}/multi-stream-input?model_id={}&output_format={}&inactivity_timeout={}",
            super::deepgram::enc(&self.voice_id),
            super::deepgram::enc(&self.model_id),
            self.audio.name(),
            INACTIVITY_TIMEOUT_S
        );
        LinkSpec {
            name: "elevenlabs",
            url,
            headers: vec![("xi-api-key".into(), self.api_key.clone())],
            hello: Vec::new(),
            reconnects: self.reconnects,
            connect_timeout: self.connect_timeout,
            max_queued: 128,
            time_text: true,
        }
    }
}

/// What speech tells the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum TtsEvent {
    /// Decoded audio for a response.
    Audio(ResponseId, Vec<i16>),
    /// Characters of a response and when each starts in its audio (ms).
    Alignment(ResponseId, String, Vec<u32>),
    /// Text of a response as sent to be spoken.
    Text(ResponseId, String),
    /// A response's first audio arrived this long after its first text was sent.
    FirstAudio(Duration),
    /// All of a response's audio has arrived.
    Done(ResponseId),
    /// ElevenLabs left a response's text unvoiced for the answer timeout: it
    /// is given up (follows its `Done`).
    Silent(ResponseId, String),
    /// ElevenLabs cannot be reached any more.
    Down(String),
}

#[derive(Debug)]
struct Context {
    response: ResponseId,
    /// Current id on the socket (changes when re-opened after a reconnect).
    id: String,
    opened: bool,
    /// Text not sent yet (an unfinished word waits for its end).
    pending: String,
    /// Text sent and not yet aligned (resent after a reconnect).
    unvoiced: String,
    /// Bytes at the front of `pending` that were said before (a resend).
    resent: usize,
    complete: bool,
    first_text_at: Option<Instant>,
    got_audio: bool,
    audio_ms: f64,
    cancelled: bool,
    /// `close_context` was sent (after the last text, or on cancel).
    close_sent: bool,
    done: bool,
    reopened: u32,
    /// Flushed text is waiting for its audio (or a closed context for its
    /// `isFinal`) since then; the watchdog's clock.
    waiting_since: Option<Instant>,
    /// The watchdog gave it up: nothing more of it is passed on.
    given_up: bool,
}

/// One call's speech.
#[derive(Debug)]
pub struct Tts {
    cfg: ElevenLabsConfig,
    out: VecDeque<LinkMsg>,
    events: VecDeque<TtsEvent>,
    /// Newest last; at most two.
    contexts: VecDeque<Context>,
    lost: bool,
    /// Last message sent (none yet: no keep-alive is due).
    last_sent: Option<Instant>,
    closed: bool,
    keepalive_open: bool,
    chars_sent: u64,
}

/// The context kept alive between turns.
const KEEPALIVE_CONTEXT: &str = "keepalive";

fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | ';' | ':' | '…')
}

impl Tts {
    /// Speech for one call (the socket is opened by the runtime).
    pub fn new(cfg: ElevenLabsConfig) -> Self {
        Self {
            cfg,
            out: VecDeque::with_capacity(8),
            events: VecDeque::with_capacity(8),
            contexts: VecDeque::with_capacity(2),
            lost: false,
            last_sent: None,
            closed: false,
            keepalive_open: false,
            chars_sent: 0,
        }
    }

    fn send(&mut self, now: Instant, v: serde_json::Value) {
        if !self.lost && !self.closed {
            self.out.push_back(LinkMsg::Text(v.to_string()));
            self.last_sent = Some(now);
        }
    }

    /// The response being spoken (text may still be arriving).
    pub fn speaking(&self) -> Option<ResponseId> {
        self.contexts.back().filter(|c| !c.cancelled && !c.done).map(|c| c.response)
    }

    /// Start speaking a new response.
    pub fn begin(&mut self, now: Instant, response: ResponseId) {
        // Keep at most the previous context besides the new one.
        while self.contexts.len() >= 2 {
            let old = self.contexts.pop_front().expect("two contexts");
            if !old.close_sent {
                self.send(now, json!({"context_id": old.id, "close_context": true}));
            }
            if !old.done && !old.cancelled {
                // Its tail can no longer arrive: end it, or playback waits for it forever.
                self.events.push_back(TtsEvent::Done(old.response));
            }
        }
        self.contexts.push_back(Context {
            response,
            id: format!("r{}", response.0),
            opened: false,
            pending: String::new(),
            unvoiced: String::new(),
            resent: 0,
            complete: false,
            first_text_at: None,
            got_audio: false,
            audio_ms: 0.0,
            cancelled: false,
            close_sent: false,
            done: false,
            reopened: 0,
            waiting_since: None,
            given_up: false,
        });
    }

    /// Append text to the current response; `complete` when it is all there.
    pub fn text(&mut self, now: Instant, text: &str, complete: bool) {
        let Some(c) = self.contexts.back_mut().filter(|c| !c.cancelled && !c.complete) else { return };
        c.pending.push_str(text);
        c.complete = complete;
        self.pump_text(now);
    }

    fn pump_text(&mut self, now: Instant) {
        if self.lost {
            return;
        }
        let Some(c) = self.contexts.back_mut().filter(|c| !c.cancelled) else { return };
        let mut msgs = Vec::new();
        if !c.opened {
            c.opened = true;
            let mut init = json!({
                "text": " ",
                "context_id": c.id,
                "generation_config": {"chunk_length_schedule": self.cfg.chunk_length_schedule},
            });
            if !self.cfg.voice_settings.is_null() {
                init["voice_settings"] = self.cfg.voice_settings.clone();
            }
            msgs.push(init);
        }
        // What may go now: through the last sentence end, else whole words
        // once enough is waiting, else everything when the reply is complete.
        let cut = if c.complete {
            c.pending.len()
        } else {
            let sentence = c
                .pending
                .char_indices()
                .rev()
                .find(|&(i, ch)| is_sentence_end(ch) && c.pending[i + ch.len_utf8()..].starts_with(char::is_whitespace))
                .map(|(i, ch)| i + ch.len_utf8());
            match sentence {
                Some(i) => i,
                None if c.pending.len() >= SEND_AT_CHARS => c.pending.rfind(char::is_whitespace).unwrap_or(0),
                None => 0,
            }
        };
        let chunk: String = c.pending.drain(..cut).collect();
        let flush = c.complete || chunk.trim_end().ends_with(is_sentence_end);
        let mut text = chunk.trim().to_string();
        if !text.is_empty() {
            // The record of what is said: words joined by single spaces
            // (text resent after a reconnect is already in it).
            let skip = std::mem::take(&mut c.resent).min(text.len());
            let skip = if text.is_char_boundary(skip) { skip } else { 0 };
            let fresh = text[skip..].trim_start();
            if !fresh.is_empty() {
                let said = if c.first_text_at.is_some() { format!(" {fresh}") } else { fresh.to_string() };
                self.events.push_back(TtsEvent::Text(c.response, said));
            }
            text.push(' ');
            self.chars_sent += text.chars().count() as u64;
            c.unvoiced.push_str(&text);
            c.first_text_at.get_or_insert(now);
        }
        if !text.is_empty() || (c.complete && cut == 0) {
            let mut m = json!({"text": text, "context_id": c.id});
            if flush {
                m["flush"] = json!(true);
                c.waiting_since.get_or_insert(now);
            }
            msgs.push(m);
        }
        if c.complete && !c.close_sent {
            // A flushed context closed now still speaks all it has, then ends
            // with `isFinal`: that is how we know the response is complete.
            c.close_sent = true;
            msgs.push(json!({"context_id": c.id, "close_context": true}));
        }
        for m in msgs {
            self.send(now, m);
        }
    }

    /// Stop generating `response` (barge-in); its late audio stays stale.
    pub fn cancel(&mut self, now: Instant, response: ResponseId) {
        let Some(c) = self.contexts.iter_mut().find(|c| c.response == response && !c.cancelled) else { return };
        c.cancelled = true;
        let close = c.opened && !c.close_sent;
        c.close_sent = true;
        let id = c.id.clone();
        if close {
            self.send(now, json!({"context_id": id, "close_context": true}));
        }
    }

    /// A text message from ElevenLabs.
    pub fn on_text(&mut self, now: Instant, text: &str) -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("elevenlabs message: {e}"))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let msg = v["message"].as_str().map(str::to_string).unwrap_or_else(|| err.to_string());
            return Err(format!("elevenlabs: {}", msg.chars().take(200).collect::<String>()));
        }
        let ctx_id = v["contextId"].as_str().or(v["context_id"].as_str());
        let Some(c) = self.contexts.iter_mut().find(|c| ctx_id.is_none_or(|id| id == c.id)) else {
            return Ok(()); // a context we no longer track: nothing of it can play
        };
        let response = c.response;
        if c.given_up {
            return Ok(()); // late audio of a response already replaced by the fallback
        }
        if let Some(b64) = v["audio"].as_str().filter(|a| !a.is_empty()) {
            let bytes = B64.decode(b64).map_err(|_| "elevenlabs audio is not valid base64".to_string())?;
            let pcm: Vec<i16> = match self.cfg.audio {
                TtsAudio::Ulaw8k => bytes.iter().map(|&b| crate::audio::g711::ulaw_decode_sample(b)).collect(),
                TtsAudio::Pcm(_) => bytes.chunks_exact(2).map(|p| i16::from_le_bytes([p[0], p[1]])).collect(),
            };
            let offset = c.audio_ms;
            c.audio_ms += pcm.len() as f64 * 1000.0 / self.cfg.audio.rate() as f64;
            if !c.got_audio {
                c.got_audio = true;
                if let Some(t) = c.first_text_at {
                    self.events.push_back(TtsEvent::FirstAudio(now.saturating_duration_since(t)));
                }
            }
            let aligned = v.get("alignment").is_some_and(|a| a.is_object());
            if let Some(al) = v.get("alignment").filter(|a| a.is_object()) {
                let chars: String = al["chars"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
                let starts: Vec<u32> = al["charStartTimesMs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| (offset + t.as_f64().unwrap_or(0.0)).round() as u32)
                    .collect();
                // What is aligned is voiced: drop it from the resend text,
                // counting letters only (spaces differ between the two).
                let mut left = chars.chars().filter(|ch| !ch.is_whitespace()).count();
                let mut cut = 0;
                for (i, ch) in c.unvoiced.char_indices() {
                    if left == 0 && !ch.is_whitespace() {
                        break;
                    }
                    if !ch.is_whitespace() {
                        left -= 1;
                    }
                    cut = i + ch.len_utf8();
                }
                c.unvoiced.drain(..cut);
                if chars.chars().count() == starts.len() && !chars.is_empty() {
                    self.events.push_back(TtsEvent::Alignment(response, chars, starts));
                }
            }
            // The watchdog restarts with each chunk; it rests once everything
            // sent is voiced (known from alignment), except that a closed
            // context still owes its `isFinal`.
            c.waiting_since = if c.close_sent && c.complete {
                Some(now)
            } else if !aligned || c.unvoiced.trim().is_empty() {
                None
            } else {
                Some(now)
            };
            self.events.push_back(TtsEvent::Audio(response, pcm));
        }
        if v["isFinal"].as_bool() == Some(true) || v["is_final"].as_bool() == Some(true) {
            let c = self.contexts.iter_mut().find(|c| c.response == response).expect("found above");
            if !c.done {
                c.done = true;
                if !c.cancelled {
                    self.events.push_back(TtsEvent::Done(response));
                }
            }
        }
        Ok(())
    }

    /// The socket dropped; it is being reconnected.
    pub fn lost(&mut self) {
        self.lost = true;
        self.out.clear();
    }

    /// The socket is up; after a drop, re-open the speaking context with what
    /// was not voiced yet.
    pub fn up(&mut self, now: Instant, reconnected: bool) {
        if !reconnected {
            self.last_sent.get_or_insert(now);
            return;
        }
        self.lost = false;
        self.keepalive_open = false;
        // Contexts on the old socket are gone; only the newest is re-opened,
        // older ones still producing are ended (their tail is lost).
        self.contexts.retain(|c| !c.cancelled && !c.done);
        while self.contexts.len() > 1 {
            let old = self.contexts.pop_front().expect("two contexts");
            self.events.push_back(TtsEvent::Done(old.response));
        }
        if let Some(c) = self.contexts.back_mut() {
            c.reopened += 1;
            c.waiting_since = None;
            c.id = format!("r{}.{}", c.response.0, c.reopened);
            c.opened = false;
            c.close_sent = false;
            let unvoiced = std::mem::take(&mut c.unvoiced);
            c.resent = unvoiced.trim_end().len();
            c.pending.insert_str(0, &unvoiced);
            self.pump_text(now);
        }
    }

    /// The socket is gone for good.
    pub fn down(&mut self, why: &str) {
        self.closed = true;
        self.events.push_back(TtsEvent::Down(why.to_string()));
    }

    /// The call is over.
    pub fn stop(&mut self, now: Instant) {
        self.send(now, json!({"close_socket": true}));
        self.closed = true;
    }

    /// Next keep-alive, or the watchdog of a response waiting for audio.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed || self.lost {
            return None;
        }
        let keepalive = self.last_sent.map(|t| t + self.cfg.keepalive);
        let watchdog = self.watched().filter_map(|c| c.waiting_since).min().map(|t| t + self.cfg.answer_timeout);
        keepalive.into_iter().chain(watchdog).min()
    }

    fn watched(&self) -> impl Iterator<Item = &Context> {
        self.contexts.iter().filter(|c| !c.cancelled && !c.done)
    }

    /// Give up responses whose text has waited the answer timeout for audio.
    fn watchdog(&mut self, now: Instant) {
        let timeout = self.cfg.answer_timeout;
        let mut closes = Vec::new();
        for c in self.contexts.iter_mut().filter(|c| !c.cancelled && !c.done) {
            let Some(since) = c.waiting_since.filter(|&t| now >= t + timeout) else { continue };
            c.cancelled = true;
            c.given_up = true;
            c.waiting_since = None;
            if c.opened && !c.close_sent {
                closes.push(c.id.clone());
            }
            c.close_sent = true;
            let what = if c.got_audio { "the rest of its audio" } else { "any audio" };
            let ms = now.saturating_duration_since(since).as_millis();
            self.events.push_back(TtsEvent::Done(c.response));
            self.events.push_back(TtsEvent::Silent(
                c.response,
                format!("elevenlabs sent no audio for {ms} ms ({what} missing)"),
            ));
        }
        for id in closes {
            self.send(now, json!({"context_id": id, "close_context": true}));
        }
    }

    /// A deadline passed: keep the socket alive between turns. Responses'
    /// contexts are closed once complete, so a context of its own
    /// (`keepalive`, opened with a single space, never given words) is kept
    /// alive with an empty text.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed || self.lost {
            return;
        }
        self.watchdog(now);
        if self.last_sent.is_none_or(|t| now < t + self.cfg.keepalive) {
            return;
        }
        if !self.keepalive_open {
            self.keepalive_open = true;
            self.send(now, json!({"text": " ", "context_id": KEEPALIVE_CONTEXT}));
        } else {
            self.send(now, json!({"text": "", "context_id": KEEPALIVE_CONTEXT}));
        }
    }

    /// The socket to open.
    pub fn link(&self) -> LinkSpec {
        self.cfg.link()
    }

    /// The model speaking.
    pub fn model(&self) -> &str {
        &self.cfg.model_id
    }

    /// The voice.
    pub fn voice(&self) -> &str {
        &self.cfg.voice_id
    }

    /// Characters sent to be spoken (what ElevenLabs bills).
    pub fn characters_sent(&self) -> u64 {
        self.chars_sent
    }

    /// Next message for the socket.
    pub fn poll_transmit(&mut self) -> Option<LinkMsg> {
        self.out.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<TtsEvent> {
        self.events.pop_front()
    }
}
