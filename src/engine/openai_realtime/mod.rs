//! OpenAI Realtime (speech-to-speech over one WebSocket) as a sans-IO
//! [`Engine`] (PROTOCOLS §5, GA interface; the beta interface is retired).
//!
//! It turns the session's [`EngineCommand`]s into client events and the
//! server's events into [`EngineEvent`]s; the socket is a link the runtime
//! opens from [`RealtimeEngine::links`] (URL, bearer header, and the
//! `session.update` sent first on every connection).
//!
//! Invariants:
//! - Our [`ResponseId`]s are allocated here, monotonic per call, for the
//!   engine's responses and for clips played on the session's behalf (filler,
//!   fallback, apology, `say`), so the session's "stale" test is one comparison.
//! - One active response at a time: `response.create` waits while a response
//!   is being created or generated (the service rejects a second one), and is
//!   sent at the previous one's `response.done`.
//! - A cancelled response's late deltas are dropped here by response id; a
//!   tool call of a cancelled response is not passed on.
//! - `conversation.item.truncate` never asks for more than the audio received
//!   for that item (the server rejects that), and is sent at most once per item.
//! - With a µ-law carrier the session format is `audio/pcmu` both ways: caller
//!   bytes are forwarded as they came; bot audio is decoded to PCM once for the
//!   pacer and re-encoded bit-exactly by the carrier codec.

mod session;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    AudioChunk, AudioRef, Engine, EngineCommand, EngineEvent, EngineFormat, InputAudio, LinkEvent, LinkMsg, LinkSpec,
};
use crate::audio::g711;
use crate::audio::resample::resample_clip;
use crate::carrier::AudioFormat;
use crate::contract::ToolSpec;
use crate::ids::ResponseId;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Rate of callbridge's own clips handed to [`EngineCommand::Play`].
const CLIP_RATE: u32 = crate::engine::local::LOCAL_RATE;

/// Who decides turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnMode {
    /// Our VAD: we commit the buffer and create responses (faster barge-in, same
    /// behaviour across engines).
    Local,
    /// The engine's server VAD creates responses; we still barge in locally.
    ServerVad,
}

/// Audio format on the engine socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireAudio {
    /// G.711 µ-law, 8 kHz (passthrough for µ-law carriers).
    Pcmu,
    /// 16-bit little-endian PCM at 24 kHz.
    Pcm24k,
}

impl WireAudio {
    /// Sample rate on the wire.
    pub fn rate(self) -> u32 {
        match self {
            WireAudio::Pcmu => 8000,
            WireAudio::Pcm24k => 24000,
        }
    }

    /// The wire format for a stream of `format`: µ-law passes through, anything
    /// else goes as 24 kHz PCM.
    pub fn for_stream(format: AudioFormat) -> Self {
        if format == AudioFormat::PCMU_8K { WireAudio::Pcmu } else { WireAudio::Pcm24k }
    }
}

/// Everything one call's engine is built from (config + call plan + key).
#[derive(Clone, PartialEq)]
pub struct RealtimeConfig {
    /// Full WebSocket URL (with `?model=`).
    pub url: String,
    /// Bearer token (`OPENAI_API_KEY`); never logged.
    pub api_key: String,
    /// Model name.
    pub model: String,
    /// System instructions.
    pub instructions: String,
    /// Voice.
    pub voice: String,
    /// Tools.
    pub tools: Vec<ToolSpec>,
    /// Said first, if any.
    pub greeting: Option<String>,
    /// Turn detection.
    pub turn: TurnMode,
    /// Wire audio format.
    pub audio: WireAudio,
    /// Input transcription model ("" = none).
    pub transcription_model: String,
    /// Server VAD silence (when `turn` is `ServerVad`).
    pub silence_duration_ms: u32,
    /// Connect deadline.
    pub connect_timeout: Duration,
    /// Messages queued towards the socket before audio is dropped.
    pub max_queued: usize,
    /// A response asked for (or under way) with nothing from the engine for
    /// this long is given up: the caller hears the fallback, the call goes on.
    pub answer_timeout: Duration,
    /// Caller audio gathered into one `input_audio_buffer.append` in local
    /// turn mode, in ms (the engine needs it only by our commit, which sends
    /// what is gathered first); 0 = every frame. Server VAD gets every frame.
    pub append_ms: u32,
}

impl std::fmt::Debug for RealtimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeConfig")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("voice", &self.voice)
            .field("turn", &self.turn)
            .field("audio", &self.audio)
            .finish_non_exhaustive()
    }
}

/// A server message we could not use.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    /// Not JSON, or not the shape of any event.
    #[error("malformed engine event: {0}")]
    Malformed(String),
    /// Audio payload was not valid base64.
    #[error("engine audio is not valid base64")]
    BadAudio,
}

#[derive(Debug, Clone)]
struct Resp {
    ours: ResponseId,
    theirs: String,
    item: Option<String>,
    /// Samples of audio received (at the wire rate).
    samples: u64,
    cancelled: bool,
    done: bool,
    truncated: bool,
}

#[derive(Debug, Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    item_id: Option<String>,
    #[serde(default, borrow)]
    delta: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    response: Option<Value>,
    #[serde(default)]
    item: Option<Value>,
    #[serde(default)]
    transcript: Option<String>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

/// A `response.create` sent and not yet answered by `response.created`.
#[derive(Debug, Clone)]
struct Creating {
    event_id: String,
    body: Option<Value>,
}

/// One call's OpenAI Realtime engine.
#[derive(Debug)]
pub struct RealtimeEngine {
    cfg: RealtimeConfig,
    next_id: u32,
    responses: VecDeque<Resp>,
    out: VecDeque<String>,
    events: VecDeque<EngineEvent>,
    b64: String,
    /// Caller audio not yet appended (wire bytes: µ-law, or 16-bit LE PCM).
    pending: Vec<u8>,
    /// Wire bytes that make one append ([`RealtimeConfig::append_ms`]).
    append_bytes: usize,
    /// Audio appended since the last commit (local turn mode).
    uncommitted: bool,
    /// The `response.create` in flight, if any.
    creating: Option<Creating>,
    /// A response is being generated (until its `response.done`).
    active: bool,
    /// `response.create` bodies waiting for the active response to finish.
    waiting: VecDeque<Option<Value>>,
    creates_sent: u64,
    /// Sum of every `response.done.usage` (input, output, total tokens).
    usage: [u64; 3],
    /// The latest `now` we were driven with.
    now: Option<Instant>,
    /// When the engine last sent anything (the answer watchdog counts from here
    /// while a response is asked for or active).
    last_heard: Option<Instant>,
    /// Responses given up on before their `response.created`: when one still
    /// arrives it is cancelled, never played.
    abandoned_creates: u32,
}

/// Errors that mean the session cannot go on (auth, quota, bad config).
fn is_fatal(kind: &str, code: &str) -> bool {
    kind == "authentication_error"
        || matches!(
            code,
            "invalid_api_key"
                | "insufficient_quota"
                | "model_not_found"
                | "session_expired"
                | "unauthorized"
                | "beta_api_shape_disabled"
        )
}

impl RealtimeEngine {
    /// An engine for one call.
    pub fn new(cfg: RealtimeConfig) -> Self {
        let bytes_per_ms = match cfg.audio {
            WireAudio::Pcmu => 8,
            WireAudio::Pcm24k => 48,
        };
        let append_bytes = cfg.append_ms as usize * bytes_per_ms;
        Self {
            cfg,
            next_id: 0,
            responses: VecDeque::with_capacity(8),
            out: VecDeque::with_capacity(8),
            events: VecDeque::with_capacity(8),
            b64: String::with_capacity(512),
            pending: Vec::with_capacity(append_bytes + 1024),
            append_bytes,
            uncommitted: false,
            creating: None,
            active: false,
            waiting: VecDeque::new(),
            creates_sent: 0,
            usage: [0; 3],
            now: None,
            last_heard: None,
            abandoned_creates: 0,
        }
    }

    /// When the answer watchdog fires, if a response is awaited.
    fn answer_deadline(&self) -> Option<Instant> {
        if self.creating.is_none() && !self.active {
            return None;
        }
        Some(self.last_heard? + self.cfg.answer_timeout)
    }

    /// The engine said nothing for `answer_timeout` while a response was asked
    /// for or under way: give it up (cancel it on the engine's side, finish it
    /// here so nothing later plays), fail it to the session (which plays the
    /// fallback) unless the caller had already cut it off, and let the next
    /// request go out.
    fn give_up_answer(&mut self, now: Instant) {
        let waited = now.saturating_duration_since(self.last_heard.unwrap_or(now));
        self.send(json!({"type": "response.cancel"}));
        let mut failed = None;
        for r in self.responses.iter_mut().filter(|r| !r.done) {
            if !r.cancelled {
                failed = Some(r.ours);
            }
            (r.done, r.cancelled) = (true, true);
            self.events.push_back(EngineEvent::ResponseDone(r.ours));
        }
        let was_creating = self.creating.take().is_some();
        if was_creating {
            self.abandoned_creates += 1;
        }
        self.active = false;
        self.waiting.clear();
        if failed.is_some() || was_creating {
            let response = failed.unwrap_or_else(|| self.alloc());
            self.events.push_back(EngineEvent::ResponseFailed {
                response,
                code: "engine_silent".into(),
                message: format!("the engine sent nothing for {} ms while answering", waited.as_millis()),
            });
        }
        self.last_heard = Some(now);
    }

    /// The configuration.
    pub fn config(&self) -> &RealtimeConfig {
        &self.cfg
    }

    /// The `session.update` that configures the session (sent first on every
    /// connection).
    pub fn session_update(&self) -> String {
        session::session_update(&self.cfg)
    }

    fn send(&mut self, v: Value) {
        self.out.push_back(v.to_string());
    }

    fn alloc(&mut self) -> ResponseId {
        self.next_id += 1;
        ResponseId(self.next_id)
    }

    /// Ask for a response (with `body` overrides), now or once the active one is done.
    fn create_response(&mut self, body: Option<Value>) {
        if self.creating.is_some() || self.active {
            // A plain "answer the caller" already waiting covers another one.
            if body.is_some() || !self.waiting.iter().any(Option::is_none) {
                self.waiting.push_back(body);
            }
            return;
        }
        self.creates_sent += 1;
        let event_id = format!("cb_create_{}", self.creates_sent);
        let mut msg = json!({"type": "response.create", "event_id": event_id});
        if let Some(b) = &body {
            msg["response"] = b.clone();
        }
        self.send(msg);
        self.creating = Some(Creating { event_id, body });
        self.last_heard = self.now;
    }

    /// The active response is over: send the next one waiting.
    fn response_finished(&mut self) {
        self.active = false;
        if self.creating.is_none()
            && let Some(next) = self.waiting.pop_front()
        {
            self.create_response(next);
        }
    }

    /// Gather caller audio; append it once there is [`RealtimeConfig::append_ms`] of it.
    fn append(&mut self, audio: AudioRef<'_>) {
        match audio {
            AudioRef::Encoded(ulaw) => self.pending.extend_from_slice(ulaw),
            AudioRef::Pcm(pcm) => {
                for s in pcm {
                    self.pending.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
        if self.pending.len() >= self.append_bytes || self.cfg.turn == TurnMode::ServerVad {
            self.flush_audio();
        }
    }

    /// Send the gathered caller audio as one `input_audio_buffer.append`.
    fn flush_audio(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.b64.clear();
        B64.encode_string(&self.pending, &mut self.b64);
        self.pending.clear();
        let mut m = String::with_capacity(self.b64.len() + 48);
        m.push_str(r#"{"type":"input_audio_buffer.append","audio":""#);
        m.push_str(&self.b64);
        m.push_str("\"}");
        self.out.push_back(m);
        self.uncommitted = true;
    }

    /// Speak `text` as the assistant, verbatim.
    fn say_text(&mut self, text: &str) {
        let instructions = format!("Say exactly this to the caller, and nothing else: {text}");
        self.create_response(Some(json!({"instructions": instructions})));
    }

    fn cancel(&mut self, response: ResponseId, heard_ms: u32) {
        let rate = self.cfg.audio.rate() as u64;
        let Some(r) = self.responses.iter_mut().find(|r| r.ours == response) else {
            return; // a played clip, or already forgotten: nothing on the engine side
        };
        let was_active = !r.done && !r.cancelled;
        r.cancelled = true;
        let received_ms = (r.samples * 1000 / rate) as u32;
        let truncate = match (&r.item, r.truncated) {
            (Some(item), false) => {
                r.truncated = true;
                Some((item.clone(), heard_ms.min(received_ms)))
            }
            _ => None,
        };
        let theirs = r.theirs.clone();
        if was_active {
            self.send(json!({"type": "response.cancel", "response_id": theirs}));
        }
        if let Some((item, end)) = truncate {
            self.send(
                json!({"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": end}),
            );
        }
    }

    /// Hand a tool's result back and, if `respond`, ask for the follow-up answer.
    fn tool_result(&mut self, call_id: &str, output: &Value, respond: bool) {
        let output = match output {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        self.send(json!({"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}));
        if respond {
            self.create_response(None);
        }
    }

    /// Play a clip of our own (8 kHz) as a response.
    fn play(&mut self, clip: &Arc<[i16]>) {
        let clip = resample_clip(clip, CLIP_RATE, self.cfg.audio.rate());
        let id = self.alloc();
        self.events.push_back(EngineEvent::ResponseStarted(id));
        self.events.push_back(EngineEvent::Audio(AudioChunk::whole(id, clip)));
        self.events.push_back(EngineEvent::ResponseDone(id));
    }

    /// The socket was replaced (the link re-sent the session config first):
    /// responses in flight will never finish, so end them for the session, and
    /// drop messages meant for the old session.
    fn on_reconnect(&mut self) {
        for r in self.responses.iter_mut().filter(|r| !r.done) {
            r.done = true;
            self.events.push_back(EngineEvent::ResponseDone(r.ours));
        }
        self.responses.clear();
        self.uncommitted = false;
        self.pending.clear();
        self.out.clear();
        self.creating = None;
        self.active = false;
        self.waiting.clear();
        self.events.push_back(EngineEvent::Reconnected);
    }

    fn resp_for(&mut self, theirs: &str) -> &mut Resp {
        if let Some(i) = self.responses.iter().position(|r| r.theirs == theirs) {
            return &mut self.responses[i];
        }
        let ours = self.alloc();
        if self.responses.len() >= 16 {
            self.responses.pop_front();
        }
        self.responses.push_back(Resp {
            ours,
            theirs: theirs.to_string(),
            item: None,
            samples: 0,
            cancelled: false,
            done: false,
            truncated: false,
        });
        self.events.push_back(EngineEvent::ResponseStarted(ours));
        self.responses.back_mut().expect("just pushed")
    }

    /// Feed one server message.
    pub fn on_message(&mut self, text: &str) -> Result<(), RealtimeError> {
        let m: Incoming<'_> = serde_json::from_str(text).map_err(|e| RealtimeError::Malformed(e.to_string()))?;
        match m.kind {
            "response.created" => {
                let id = m.response.as_ref().and_then(|r| r["id"].as_str()).unwrap_or_default().to_string();
                if self.creating.is_none() && self.abandoned_creates > 0 {
                    // The answer to a request we gave up on: never play it.
                    self.abandoned_creates -= 1;
                    self.send(json!({"type": "response.cancel", "response_id": id}));
                    // Known (so its later events find it) but never started: the session never hears of it.
                    let ours = self.alloc();
                    if self.responses.len() >= 16 {
                        self.responses.pop_front();
                    }
                    self.responses.push_back(Resp {
                        ours,
                        theirs: id,
                        item: None,
                        samples: 0,
                        cancelled: true,
                        done: true,
                        truncated: true,
                    });
                    return Ok(());
                }
                self.creating = None;
                self.active = true;
                self.resp_for(&id);
            }
            "response.output_item.added" => {
                let item = m.item.unwrap_or_default();
                if item["type"] == "message"
                    && let (Some(rid), Some(iid)) = (m.response_id, item["id"].as_str())
                {
                    let r = self.resp_for(&rid);
                    r.item.get_or_insert_with(|| iid.to_string());
                }
            }
            "response.output_audio.delta" | "response.audio.delta" => {
                let rid = m.response_id.unwrap_or_default();
                let delta = m.delta.unwrap_or_default();
                let audio = self.cfg.audio;
                let r = self.resp_for(&rid);
                if r.item.is_none() {
                    r.item = m.item_id;
                }
                if r.cancelled {
                    return Ok(()); // late delta of an interrupted response
                }
                let ours = r.ours;
                let bytes = B64.decode(delta.as_bytes()).map_err(|_| RealtimeError::BadAudio)?;
                let pcm: Arc<[i16]> = match audio {
                    WireAudio::Pcmu => {
                        let mut v = vec![0i16; bytes.len()];
                        g711::ulaw_decode(&bytes, &mut v);
                        v.into()
                    }
                    WireAudio::Pcm24k => bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect(),
                };
                let r = self.responses.iter_mut().find(|r| r.ours == ours).expect("exists");
                r.samples += pcm.len() as u64;
                if !pcm.is_empty() {
                    self.events.push_back(EngineEvent::Audio(AudioChunk::whole(ours, pcm)));
                }
            }
            "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
                let rid = m.response_id.unwrap_or_default();
                let delta = m.delta.unwrap_or_default().into_owned();
                let r = self.resp_for(&rid);
                if !r.cancelled {
                    let ours = r.ours;
                    self.events.push_back(EngineEvent::AgentText(ours, delta));
                }
            }
            "conversation.item.input_audio_transcription.delta" => {
                if let Some(d) = m.delta {
                    self.events.push_back(EngineEvent::CallerTranscript { text: d.into_owned(), is_final: false });
                }
            }
            "conversation.item.input_audio_transcription.completed" => {
                if let Some(t) = m.transcript {
                    self.events.push_back(EngineEvent::CallerTranscript { text: t, is_final: true });
                }
            }
            "input_audio_buffer.speech_started" => self.events.push_back(EngineEvent::SpeechStarted),
            "input_audio_buffer.committed" => self.uncommitted = false,
            "response.function_call_arguments.done" => {
                let cancelled = m
                    .response_id
                    .as_deref()
                    .and_then(|rid| self.responses.iter().find(|r| r.theirs == rid))
                    .is_some_and(|r| r.cancelled);
                if !cancelled {
                    let arguments = m
                        .arguments
                        .as_deref()
                        .and_then(|a| serde_json::from_str::<Value>(a).ok())
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    self.events.push_back(EngineEvent::ToolCall {
                        call_id: m.call_id.unwrap_or_default(),
                        name: m.name.unwrap_or_default(),
                        arguments,
                    });
                }
            }
            "response.done" => {
                let resp = m.response.unwrap_or_default();
                for (i, k) in ["input_tokens", "output_tokens", "total_tokens"].iter().enumerate() {
                    self.usage[i] += resp["usage"][k].as_u64().unwrap_or(0);
                }
                let id = resp["id"].as_str().unwrap_or_default().to_string();
                let status = resp["status"].as_str().unwrap_or("completed").to_string();
                let r = self.resp_for(&id);
                let ours = r.ours;
                let (was_done, cancelled) = (r.done, r.cancelled);
                r.done = true;
                if !was_done {
                    self.events.push_back(EngineEvent::ResponseDone(ours));
                }
                if matches!(status.as_str(), "failed" | "incomplete") && !cancelled {
                    let why = &resp["status_details"];
                    let reason = why["reason"]
                        .as_str()
                        .or_else(|| why["error"]["code"].as_str())
                        .or_else(|| why["type"].as_str())
                        .unwrap_or("unknown");
                    let message = why["error"]["message"].as_str().unwrap_or(reason).chars().take(300).collect();
                    self.events.push_back(EngineEvent::ResponseFailed {
                        response: ours,
                        code: format!("response_{status}"),
                        message,
                    });
                }
                // One we gave up on (finished here already) frees nothing: another may be active now.
                if !(was_done && cancelled) {
                    self.response_finished();
                }
            }
            "error" => {
                let e = m.error.unwrap_or_default();
                let kind = e["type"].as_str().unwrap_or("");
                let code = e["code"].as_str().unwrap_or(kind).to_string();
                // A create the service refused because a response is still active:
                // it goes first once that one is done.
                let refused_create =
                    self.creating.as_ref().is_some_and(|c| e["event_id"].as_str() == Some(c.event_id.as_str()));
                if refused_create && let Some(c) = self.creating.take() {
                    self.active = true;
                    self.waiting.push_front(c.body);
                }
                let message = e["message"].as_str().unwrap_or("").chars().take(300).collect();
                self.events.push_back(EngineEvent::Error { fatal: is_fatal(kind, &code), code, message });
            }
            _ => {}
        }
        Ok(())
    }

    /// Next message for the socket (tests, benches).
    pub fn poll_message(&mut self) -> Option<String> {
        self.out.pop_front()
    }

    /// Audio received so far for our response `id`, in ms (tests, diagnostics).
    pub fn received_ms(&self, id: ResponseId) -> Option<u32> {
        let rate = self.cfg.audio.rate() as u64;
        self.responses.iter().find(|r| r.ours == id).map(|r| (r.samples * 1000 / rate) as u32)
    }
}

/// Builds OpenAI Realtime engines from `[engine.openai_realtime]`, the call
/// plan and `OPENAI_API_KEY`.
pub struct RealtimeFactory {
    cfg: crate::config::OpenAiRealtimeConfig,
    url: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for RealtimeFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeFactory").field("url", &self.url).field("key", &self.api_key.is_some()).finish()
    }
}

impl RealtimeFactory {
    /// From config, an endpoint override (`OPENAI_REALTIME_URL`) and the key.
    pub fn new(
        cfg: crate::config::OpenAiRealtimeConfig,
        url_override: Option<String>,
        api_key: Option<String>,
    ) -> Self {
        let base = url_override.unwrap_or_else(|| cfg.url.clone());
        let url = if base.contains("model=") {
            base
        } else {
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}model={}", cfg.model)
        };
        Self { cfg, url, api_key }
    }
}

impl super::registry::EngineFactory for RealtimeFactory {
    fn name(&self) -> &'static str {
        "openai_realtime"
    }

    fn available(&self) -> Result<(), super::registry::BuildError> {
        match self.api_key {
            Some(_) => Ok(()),
            None => Err(super::registry::BuildError::NotConfigured {
                engine: "openai_realtime",
                why: "OPENAI_API_KEY is not set".into(),
            }),
        }
    }

    fn build(&self, req: &super::registry::EngineRequest<'_>) -> Result<Box<dyn Engine>, super::registry::BuildError> {
        self.available()?;
        let rc = &self.cfg;
        let plan = req.plan;
        Ok(Box::new(RealtimeEngine::new(RealtimeConfig {
            url: self.url.clone(),
            api_key: self.api_key.clone().unwrap_or_default(),
            model: rc.model.clone(),
            instructions: plan.instructions.clone().unwrap_or_else(|| rc.instructions.clone()),
            voice: plan.voice.clone().unwrap_or_else(|| rc.voice.clone()),
            tools: plan.tools.iter().cloned().chain(crate::session::builtin::specs(plan)).collect(),
            greeting: if req.greet {
                plan.greeting.clone().or_else(|| Some(rc.greeting.clone()).filter(|g| !g.is_empty()))
            } else {
                None
            },
            turn: rc.turn_detection,
            audio: WireAudio::for_stream(req.stream),
            transcription_model: rc.transcription_model.clone(),
            silence_duration_ms: rc.silence_duration_ms,
            connect_timeout: Duration::from_millis(rc.connect_timeout_ms),
            max_queued: rc.max_queued_messages,
            answer_timeout: Duration::from_millis(rc.answer_timeout_ms),
            append_ms: rc.append_ms,
        })))
    }
}

impl Engine for RealtimeEngine {
    fn label(&self) -> &'static str {
        "openai_realtime"
    }

    /// µ-law passthrough both ways with a µ-law carrier, else 24 kHz PCM.
    fn format(&self) -> EngineFormat {
        match self.cfg.audio {
            WireAudio::Pcmu => EngineFormat { input: InputAudio::Passthrough(AudioFormat::PCMU_8K), output_rate: 8000 },
            WireAudio::Pcm24k => EngineFormat { input: InputAudio::Pcm { rate: 24000 }, output_rate: 24000 },
        }
    }

    fn speaks_text(&self) -> bool {
        true
    }

    fn transcribes_caller(&self) -> bool {
        !self.cfg.transcription_model.is_empty()
    }

    fn report(&self) -> super::EngineReport {
        let [input, output, total] = self.usage;
        super::EngineReport {
            model: self.cfg.model.clone(),
            voice: self.cfg.voice.clone(),
            usage: Some(json!({"input_tokens": input, "output_tokens": output, "total_tokens": total})),
        }
    }

    fn links(&self) -> Vec<LinkSpec> {
        vec![LinkSpec {
            name: "openai_realtime",
            url: self.cfg.url.clone(),
            headers: vec![("Authorization".into(), format!("Bearer {}", self.cfg.api_key))],
            hello: vec![LinkMsg::Text(self.session_update())],
            reconnects: 1,
            connect_timeout: self.cfg.connect_timeout,
            max_queued: self.cfg.max_queued,
            time_text: false,
        }]
    }

    fn handle_command(&mut self, now: Instant, cmd: EngineCommand<'_>) {
        self.now = Some(now);
        match cmd {
            EngineCommand::Start => {
                if let Some(g) = self.cfg.greeting.clone().filter(|g| !g.trim().is_empty()) {
                    self.say_text(&g);
                }
            }
            EngineCommand::Audio(a) => self.append(a),
            EngineCommand::EndOfTurn => {
                if self.cfg.turn == TurnMode::Local {
                    self.flush_audio();
                    if self.uncommitted {
                        self.send(json!({"type": "input_audio_buffer.commit"}));
                        self.uncommitted = false;
                    }
                    self.create_response(None);
                }
            }
            EngineCommand::Cancel { response, heard_ms } => self.cancel(response, heard_ms),
            EngineCommand::Say(text) => self.say_text(&text),
            EngineCommand::Play(clip) => self.play(&clip),
            EngineCommand::ToolResult { call_id, output, respond } => self.tool_result(&call_id, &output, respond),
            // Its words are its own (`needs_brain` is false): the session never sends replies.
            EngineCommand::Reply { .. } | EngineCommand::Stop => {}
        }
    }

    fn handle_link(&mut self, now: Instant, _link: usize, ev: LinkEvent<'_>) {
        self.now = Some(now);
        if matches!(ev, LinkEvent::Text(_) | LinkEvent::Up { .. }) {
            self.last_heard = Some(now);
        }
        match ev {
            LinkEvent::Up { reconnected: true } => self.on_reconnect(),
            LinkEvent::Up { reconnected: false } => self.events.push_back(EngineEvent::Connected),
            LinkEvent::Text(t) => {
                if let Err(e) = self.on_message(t) {
                    self.events.push_back(EngineEvent::Error {
                        fatal: false,
                        code: "bad_message".into(),
                        message: e.to_string(),
                    });
                }
            }
            LinkEvent::Binary(_) | LinkEvent::Lost => {}
            LinkEvent::Down(why) => self.events.push_back(EngineEvent::Error {
                fatal: true,
                code: "engine_unavailable".into(),
                message: why.to_string(),
            }),
        }
    }

    fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    fn poll_transmit(&mut self) -> Option<(usize, LinkMsg)> {
        self.out.pop_front().map(|m| (0, LinkMsg::Text(m)))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.answer_deadline()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.answer_deadline().is_some_and(|d| now >= d) {
            self.give_up_answer(now);
        }
    }
}
