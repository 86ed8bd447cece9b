//! OpenAI Realtime (speech-to-speech over a WebSocket) as a sans-IO codec.
//!
//! It turns the session's [`EngineCommand`]s into client events and the
//! server's events into [`RealtimeOutput`]s; the socket lives in
//! [`crate::runtime::engine_link`]. Both the GA and the beta event names are
//! understood on input; the session shape and output names follow the
//! configured [`ApiFlavor`] (PROTOCOLS §5).
//!
//! Invariants:
//! - Our [`ResponseId`]s are allocated here, monotonic per call, for the
//!   engine's responses and for clips callbridge injects itself (filler,
//!   fallback, apology, `say`), so the session's "stale" test is one comparison.
//! - A cancelled response's late deltas are dropped here by response id.
//! - `conversation.item.truncate` never asks for more than the audio received
//!   for that item (the server rejects that), and is sent at most once per item.
//! - With a µ-law carrier the session format is `audio/pcmu` both ways: caller
//!   bytes are forwarded as they came; bot audio is decoded to PCM once for the
//!   pacer and re-encoded bit-exactly by the carrier codec.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AudioChunk, EngineCommand, EngineEvent, EngineFormat};
use crate::audio::g711;
use crate::callback::ToolSpec;
use crate::ids::ResponseId;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Which generation of the API to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFlavor {
    /// The GA API (`session.type = "realtime"`, `response.output_audio.delta`).
    Ga,
    /// The beta API (`OpenAI-Beta: realtime=v1`, `response.audio.delta`).
    Beta,
}

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
    /// G.711 µ-law, 8 kHz (Twilio passthrough).
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
}

/// Everything one call's session is built from (config + call plan).
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeConfig {
    /// API generation.
    pub flavor: ApiFlavor,
    /// Model name (goes in the URL).
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
}

/// What the codec tells the call task.
#[derive(Debug, Clone, PartialEq)]
pub enum RealtimeOutput {
    /// For the session.
    Engine(EngineEvent),
    /// The engine's VAD heard the caller start (server VAD barge-in signal).
    SpeechStarted,
    /// Transcript of the caller's last turn.
    UserTranscript(String),
    /// Text of what a response says (transcript delta).
    AgentText(ResponseId, String),
    /// The first audio of a response arrived.
    FirstAudio(ResponseId),
    /// The model wants a tool run.
    ToolCall {
        /// engine's call id
        call_id: String,
        /// tool name
        name: String,
        /// parsed arguments (an object; `{}` if they were not JSON)
        arguments: Value,
    },
    /// An `error` event. `fatal` ones (auth, quota, bad session) end the call.
    Error {
        /// unrecoverable
        fatal: bool,
        /// engine's code or type
        code: String,
        /// engine's message
        message: String,
    },
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

/// The per-call codec.
#[derive(Debug)]
pub struct RealtimeCodec {
    cfg: RealtimeConfig,
    next_id: u32,
    responses: VecDeque<Resp>,
    out: VecDeque<String>,
    events: VecDeque<RealtimeOutput>,
    b64: String,
    pcm_bytes: Vec<u8>,
    /// Audio appended since the last commit (local turn mode).
    uncommitted: bool,
}

/// Errors that mean the session cannot go on (auth, quota, bad config).
fn is_fatal(kind: &str, code: &str) -> bool {
    kind == "authentication_error"
        || matches!(
            code,
            "invalid_api_key" | "insufficient_quota" | "model_not_found" | "session_expired" | "unauthorized"
        )
}

impl RealtimeCodec {
    /// A codec for one call.
    pub fn new(cfg: RealtimeConfig) -> Self {
        Self {
            cfg,
            next_id: 0,
            responses: VecDeque::with_capacity(8),
            out: VecDeque::with_capacity(8),
            events: VecDeque::with_capacity(8),
            b64: String::with_capacity(512),
            pcm_bytes: Vec::with_capacity(1024),
            uncommitted: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RealtimeConfig {
        &self.cfg
    }

    /// Audio formats for the session: input `None` in µ-law passthrough (the
    /// call task forwards the carrier's bytes), else 24 kHz PCM from the session.
    pub fn format(&self) -> EngineFormat {
        match self.cfg.audio {
            WireAudio::Pcmu => EngineFormat { input_rate: None, output_rate: 8000 },
            WireAudio::Pcm24k => EngineFormat { input_rate: Some(24000), output_rate: 24000 },
        }
    }

    fn format_json(&self) -> Value {
        match (self.cfg.flavor, self.cfg.audio) {
            (ApiFlavor::Ga, WireAudio::Pcmu) => json!({"type": "audio/pcmu"}),
            (ApiFlavor::Ga, WireAudio::Pcm24k) => json!({"type": "audio/pcm", "rate": 24000}),
            (ApiFlavor::Beta, WireAudio::Pcmu) => json!("g711_ulaw"),
            (ApiFlavor::Beta, WireAudio::Pcm24k) => json!("pcm16"),
        }
    }

    /// The `session.update` that configures the session (sent first, and again
    /// after a reconnect).
    pub fn session_update(&self) -> String {
        let c = &self.cfg;
        let turn = match c.turn {
            TurnMode::Local => Value::Null,
            TurnMode::ServerVad => json!({
                "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                "silence_duration_ms": c.silence_duration_ms,
                "create_response": true, "interrupt_response": true,
            }),
        };
        let tools: Vec<Value> = c
            .tools
            .iter()
            .map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        let transcription =
            if c.transcription_model.is_empty() { Value::Null } else { json!({"model": c.transcription_model}) };
        let session = match c.flavor {
            ApiFlavor::Ga => {
                let mut input = json!({"format": self.format_json(), "turn_detection": turn});
                if !transcription.is_null() {
                    input["transcription"] = transcription;
                }
                json!({
                    "type": "realtime",
                    "model": c.model,
                    "instructions": c.instructions,
                    "output_modalities": ["audio"],
                    "audio": {"input": input, "output": {"format": self.format_json(), "voice": c.voice}},
                    "tools": tools,
                    "tool_choice": "auto",
                })
            }
            ApiFlavor::Beta => {
                let mut s = json!({
                    "modalities": ["audio", "text"],
                    "instructions": c.instructions,
                    "voice": c.voice,
                    "input_audio_format": self.format_json(),
                    "output_audio_format": self.format_json(),
                    "turn_detection": turn,
                    "tools": tools,
                    "tool_choice": "auto",
                });
                if !transcription.is_null() {
                    s["input_audio_transcription"] = transcription;
                }
                s
            }
        };
        json!({"type": "session.update", "session": session}).to_string()
    }

    fn send(&mut self, v: Value) {
        self.out.push_back(v.to_string());
    }

    fn alloc(&mut self) -> ResponseId {
        self.next_id += 1;
        ResponseId(self.next_id)
    }

    /// Forward caller µ-law bytes (passthrough). Writes one `append` message.
    pub fn append_ulaw(&mut self, ulaw: &[u8], out: &mut String) {
        self.b64.clear();
        B64.encode_string(ulaw, &mut self.b64);
        self.write_append(out);
    }

    fn append_pcm(&mut self, pcm: &[i16], out: &mut String) {
        self.pcm_bytes.clear();
        for s in pcm {
            self.pcm_bytes.extend_from_slice(&s.to_le_bytes());
        }
        self.b64.clear();
        B64.encode_string(&self.pcm_bytes, &mut self.b64);
        self.write_append(out);
    }

    fn write_append(&mut self, out: &mut String) {
        out.clear();
        out.push_str(r#"{"type":"input_audio_buffer.append","audio":""#);
        out.push_str(&self.b64);
        out.push_str("\"}");
        self.uncommitted = true;
    }

    /// The session's command. Audio goes to `audio_out` (the caller sends it
    /// when non-empty); other messages queue for [`Self::poll_message`].
    pub fn handle_command(&mut self, cmd: EngineCommand<'_>, audio_out: &mut String) {
        match cmd {
            EngineCommand::Start => {
                if let Some(g) = self.cfg.greeting.clone().filter(|g| !g.trim().is_empty()) {
                    self.say_text(&g);
                } else if self.cfg.turn == TurnMode::Local {
                    // Nothing to say first: wait for the caller.
                }
            }
            EngineCommand::Audio(pcm) => self.append_pcm(pcm, audio_out),
            EngineCommand::CreateResponse => {
                if self.cfg.turn == TurnMode::Local {
                    if self.uncommitted {
                        self.send(json!({"type": "input_audio_buffer.commit"}));
                        self.uncommitted = false;
                    }
                    self.send(json!({"type": "response.create"}));
                }
            }
            EngineCommand::Cancel { response, heard_ms } => self.cancel(response, heard_ms),
            EngineCommand::Stop => {}
        }
    }

    /// Speak `text` as the assistant, verbatim.
    pub fn say_text(&mut self, text: &str) {
        let instructions = format!("Say exactly this to the caller, and nothing else: {text}");
        self.send(json!({"type": "response.create", "response": {"instructions": instructions}}));
    }

    fn cancel(&mut self, response: ResponseId, heard_ms: u32) {
        let rate = self.cfg.audio.rate() as u64;
        let Some(r) = self.responses.iter_mut().find(|r| r.ours == response) else {
            return; // an injected clip, or already forgotten: nothing on the engine side
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

    /// Hand a tool's result back and ask for the follow-up answer.
    pub fn tool_result(&mut self, call_id: &str, output: &Value, respond: bool) {
        let output = match output {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        self.send(json!({"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}));
        if respond {
            self.send(json!({"type": "response.create"}));
        }
    }

    /// Play a clip of our own (already at the output rate) as a response.
    pub fn inject_clip(&mut self, clip: Arc<[i16]>) {
        let id = self.alloc();
        self.events.push_back(RealtimeOutput::Engine(EngineEvent::ResponseStarted(id)));
        self.events.push_back(RealtimeOutput::Engine(EngineEvent::Audio(AudioChunk::whole(id, clip))));
        self.events.push_back(RealtimeOutput::Engine(EngineEvent::ResponseDone(id)));
    }

    /// The socket was replaced (the link re-sent the session config first):
    /// responses in flight will never finish, so end them for the session, and
    /// drop messages meant for the old session.
    pub fn on_reconnect(&mut self) {
        for r in self.responses.iter_mut().filter(|r| !r.done) {
            r.done = true;
            self.events.push_back(RealtimeOutput::Engine(EngineEvent::ResponseDone(r.ours)));
        }
        self.responses.clear();
        self.uncommitted = false;
        self.out.clear();
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
        self.events.push_back(RealtimeOutput::Engine(EngineEvent::ResponseStarted(ours)));
        self.responses.back_mut().expect("just pushed")
    }

    /// Feed one server message.
    pub fn on_message(&mut self, text: &str) -> Result<(), RealtimeError> {
        let m: Incoming<'_> = serde_json::from_str(text).map_err(|e| RealtimeError::Malformed(e.to_string()))?;
        match m.kind {
            "response.created" => {
                let id = m.response.as_ref().and_then(|r| r["id"].as_str()).unwrap_or_default().to_string();
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
                let first = r.samples == 0;
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
                if first && !pcm.is_empty() {
                    self.events.push_back(RealtimeOutput::FirstAudio(ours));
                }
                if !pcm.is_empty() {
                    self.events.push_back(RealtimeOutput::Engine(EngineEvent::Audio(AudioChunk::whole(ours, pcm))));
                }
            }
            "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
                let rid = m.response_id.unwrap_or_default();
                let delta = m.delta.unwrap_or_default().into_owned();
                let r = self.resp_for(&rid);
                if !r.cancelled {
                    let ours = r.ours;
                    self.events.push_back(RealtimeOutput::AgentText(ours, delta));
                }
            }
            "conversation.item.input_audio_transcription.completed" => {
                if let Some(t) = m.transcript {
                    self.events.push_back(RealtimeOutput::UserTranscript(t));
                }
            }
            "input_audio_buffer.speech_started" => self.events.push_back(RealtimeOutput::SpeechStarted),
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
                    self.events.push_back(RealtimeOutput::ToolCall {
                        call_id: m.call_id.unwrap_or_default(),
                        name: m.name.unwrap_or_default(),
                        arguments,
                    });
                }
            }
            "response.done" => {
                let id = m.response.as_ref().and_then(|r| r["id"].as_str()).unwrap_or_default().to_string();
                let r = self.resp_for(&id);
                if !r.done {
                    r.done = true;
                    let ours = r.ours;
                    self.events.push_back(RealtimeOutput::Engine(EngineEvent::ResponseDone(ours)));
                }
            }
            "error" => {
                let e = m.error.unwrap_or_default();
                let kind = e["type"].as_str().unwrap_or("");
                let code = e["code"].as_str().unwrap_or(kind).to_string();
                let message = e["message"].as_str().unwrap_or("").chars().take(300).collect();
                self.events.push_back(RealtimeOutput::Error { fatal: is_fatal(kind, &code), code, message });
            }
            _ => {}
        }
        Ok(())
    }

    /// Next message to send.
    pub fn poll_message(&mut self) -> Option<String> {
        self.out.pop_front()
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<RealtimeOutput> {
        self.events.pop_front()
    }

    /// Audio received so far for our response `id`, in ms (tests, diagnostics).
    pub fn received_ms(&self, id: ResponseId) -> Option<u32> {
        let rate = self.cfg.audio.rate() as u64;
        self.responses.iter().find(|r| r.ours == id).map(|r| (r.samples * 1000 / rate) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(flavor: ApiFlavor, turn: TurnMode) -> RealtimeConfig {
        RealtimeConfig {
            flavor,
            model: "gpt-realtime".into(),
            instructions: "Be brief.".into(),
            voice: "alloy".into(),
            tools: vec![ToolSpec {
                name: "book".into(),
                description: "Book".into(),
                parameters: json!({"type": "object"}),
            }],
            greeting: Some("Hello!".into()),
            turn,
            audio: WireAudio::Pcmu,
            transcription_model: "gpt-4o-mini-transcribe".into(),
            silence_duration_ms: 500,
        }
    }

    fn drain(c: &mut RealtimeCodec) -> Vec<Value> {
        std::iter::from_fn(|| c.poll_message()).map(|m| serde_json::from_str(&m).unwrap()).collect()
    }

    fn outputs(c: &mut RealtimeCodec) -> Vec<RealtimeOutput> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    #[test]
    fn session_update_ga_and_beta_shapes() {
        let ga: Value =
            serde_json::from_str(&RealtimeCodec::new(cfg(ApiFlavor::Ga, TurnMode::Local)).session_update()).unwrap();
        assert_eq!(ga["type"], "session.update");
        let s = &ga["session"];
        assert_eq!(s["type"], "realtime");
        assert_eq!(s["audio"]["input"]["format"], json!({"type": "audio/pcmu"}));
        assert_eq!(s["audio"]["output"]["format"], json!({"type": "audio/pcmu"}));
        assert_eq!(s["audio"]["output"]["voice"], "alloy");
        assert_eq!(s["audio"]["input"]["turn_detection"], Value::Null, "local turns: manual");
        assert_eq!(s["audio"]["input"]["transcription"]["model"], "gpt-4o-mini-transcribe");
        assert_eq!(
            s["tools"][0],
            json!({"type": "function", "name": "book", "description": "Book", "parameters": {"type": "object"}})
        );
        let beta: Value =
            serde_json::from_str(&RealtimeCodec::new(cfg(ApiFlavor::Beta, TurnMode::ServerVad)).session_update())
                .unwrap();
        let s = &beta["session"];
        assert_eq!(s["input_audio_format"], "g711_ulaw");
        assert_eq!(s["output_audio_format"], "g711_ulaw");
        assert_eq!(s["turn_detection"]["type"], "server_vad");
        assert_eq!(s["input_audio_transcription"]["model"], "gpt-4o-mini-transcribe");
        assert!(s.get("type").is_none() && s.get("audio").is_none());
    }

    #[test]
    fn a_turn_in_local_mode_commits_creates_and_maps_deltas() {
        let mut c = RealtimeCodec::new(cfg(ApiFlavor::Ga, TurnMode::Local));
        let mut audio = String::new();
        c.handle_command(EngineCommand::Start, &mut audio);
        assert_eq!(
            drain(&mut c)[0]["response"]["instructions"],
            "Say exactly this to the caller, and nothing else: Hello!"
        );
        c.append_ulaw(&[0xFF; 160], &mut audio);
        let a: Value = serde_json::from_str(&audio).unwrap();
        assert_eq!(a["type"], "input_audio_buffer.append");
        assert_eq!(B64.decode(a["audio"].as_str().unwrap()).unwrap(), vec![0xFF; 160]);
        c.handle_command(EngineCommand::CreateResponse, &mut audio);
        let sent: Vec<_> = drain(&mut c).into_iter().map(|v| v["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(sent, ["input_audio_buffer.commit", "response.create"]);

        let delta = B64.encode([0x80u8; 800]); // 100 ms of loud µ-law
        c.on_message(r#"{"type":"response.created","response":{"id":"resp_A"}}"#).unwrap();
        c.on_message(
            r#"{"type":"response.output_item.added","response_id":"resp_A","item":{"id":"item_A","type":"message"}}"#,
        )
        .unwrap();
        c.on_message(&format!(
            r#"{{"type":"response.output_audio.delta","response_id":"resp_A","item_id":"item_A","delta":"{delta}"}}"#
        ))
        .unwrap();
        c.on_message(r#"{"type":"response.output_audio_transcript.delta","response_id":"resp_A","delta":"Hi there"}"#)
            .unwrap();
        c.on_message(r#"{"type":"response.done","response":{"id":"resp_A","status":"completed"}}"#).unwrap();
        let out = outputs(&mut c);
        assert_eq!(out[0], RealtimeOutput::Engine(EngineEvent::ResponseStarted(ResponseId(1))));
        assert_eq!(out[1], RealtimeOutput::FirstAudio(ResponseId(1)));
        match &out[2] {
            RealtimeOutput::Engine(EngineEvent::Audio(a)) => {
                assert_eq!(a.len(), 800);
                assert_eq!(a.as_slice()[0], g711::ulaw_decode_sample(0x80));
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(out[3], RealtimeOutput::AgentText(ResponseId(1), "Hi there".into()));
        assert_eq!(out[4], RealtimeOutput::Engine(EngineEvent::ResponseDone(ResponseId(1))));
        assert_eq!(c.received_ms(ResponseId(1)), Some(100));
        // Server VAD mode: our turn end does not create responses.
        let mut s = RealtimeCodec::new(cfg(ApiFlavor::Ga, TurnMode::ServerVad));
        s.handle_command(EngineCommand::CreateResponse, &mut audio);
        assert!(s.poll_message().is_none());
    }

    #[test]
    fn barge_in_cancels_truncates_clamped_and_drops_late_deltas_beta_names_too() {
        let mut c = RealtimeCodec::new(cfg(ApiFlavor::Beta, TurnMode::Local));
        let delta = B64.encode([0x80u8; 4000]); // 500 ms
        c.on_message(r#"{"type":"response.created","response":{"id":"r1"}}"#).unwrap();
        c.on_message(&format!(
            r#"{{"type":"response.audio.delta","response_id":"r1","item_id":"i1","delta":"{delta}"}}"#
        ))
        .unwrap();
        let _ = outputs(&mut c);
        let mut audio = String::new();
        // The caller heard 900 ms — more than the 500 ms received: clamped.
        c.handle_command(EngineCommand::Cancel { response: ResponseId(1), heard_ms: 900 }, &mut audio);
        let sent = drain(&mut c);
        assert_eq!(sent[0], json!({"type": "response.cancel", "response_id": "r1"}));
        assert_eq!(
            sent[1],
            json!({"type": "conversation.item.truncate", "item_id": "i1", "content_index": 0, "audio_end_ms": 500})
        );
        c.on_message(&format!(
            r#"{{"type":"response.audio.delta","response_id":"r1","item_id":"i1","delta":"{delta}"}}"#
        ))
        .unwrap();
        assert!(outputs(&mut c).is_empty(), "late delta dropped");
        // A second cancel does not truncate again; a done response is not cancelled again.
        c.on_message(r#"{"type":"response.done","response":{"id":"r1","status":"cancelled"}}"#).unwrap();
        c.handle_command(EngineCommand::Cancel { response: ResponseId(1), heard_ms: 100 }, &mut audio);
        assert!(drain(&mut c).is_empty());
        // Function call of a cancelled response is not run; of a live one it is.
        c.on_message(r#"{"type":"response.function_call_arguments.done","response_id":"r1","call_id":"c0","name":"book","arguments":"{}"}"#).unwrap();
        c.on_message(r#"{"type":"response.created","response":{"id":"r2"}}"#).unwrap();
        c.on_message(r#"{"type":"response.function_call_arguments.done","response_id":"r2","call_id":"c1","name":"book","arguments":"{\"when\":\"9am\"}"}"#).unwrap();
        let out = outputs(&mut c);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            out[2],
            RealtimeOutput::ToolCall { call_id: "c1".into(), name: "book".into(), arguments: json!({"when": "9am"}) }
        );
        c.tool_result("c1", &json!({"ok": true}), true);
        let sent = drain(&mut c);
        assert_eq!(
            sent[0]["item"],
            json!({"type": "function_call_output", "call_id": "c1", "output": "{\"ok\":true}"})
        );
        assert_eq!(sent[1]["type"], "response.create");
    }

    #[test]
    fn errors_reconnects_and_injected_clips() {
        let mut c = RealtimeCodec::new(cfg(ApiFlavor::Ga, TurnMode::Local));
        c.on_message(r#"{"type":"error","error":{"type":"invalid_request_error","code":"response_cancel_not_active","message":"no"}}"#).unwrap();
        c.on_message(
            r#"{"type":"error","error":{"type":"invalid_request_error","code":"invalid_api_key","message":"bad key"}}"#,
        )
        .unwrap();
        let out = outputs(&mut c);
        assert!(matches!(&out[0], RealtimeOutput::Error { fatal: false, .. }));
        assert!(matches!(&out[1], RealtimeOutput::Error { fatal: true, code, .. } if code == "invalid_api_key"));
        assert!(c.on_message("not json").is_err());
        assert!(c.on_message(r#"{"type":"response.output_audio.delta","response_id":"x","delta":"%%%"}"#).is_err());
        let _ = outputs(&mut c);
        c.on_message(r#"{"type":"response.created","response":{"id":"r9"}}"#).unwrap();
        let _ = outputs(&mut c);
        c.on_reconnect();
        assert!(outputs(&mut c).iter().any(|o| matches!(o, RealtimeOutput::Engine(EngineEvent::ResponseDone(_)))));
        assert!(drain(&mut c).is_empty(), "the link re-sends the session config, not the codec");
        c.inject_clip(vec![1i16; 80].into());
        let out = outputs(&mut c);
        let RealtimeOutput::Engine(EngineEvent::ResponseStarted(id)) = out[0] else { panic!() };
        assert!(id > ResponseId(2), "injected ids continue the sequence");
    }
}
