//! The callback contract: what callbridge tells a backend about a call and what
//! the backend answers, as plain types (no I/O: delivery lives in
//! [`crate::callback`]). Documented in `docs/callbacks.md`; the JSON schema
//! served at `/schema/callbacks.json` describes exactly these types.
//!
//! Every request is one [`Envelope`]: `type`, `call_id`, `seq` (per call,
//! increasing from 1), `idempotency_key` (`<call_id>:<seq>`, stable across
//! retries), `timestamp` (RFC 3339, when the event happened) and the event's
//! fields, flattened. Two events block the call and expect a reply:
//! `call.started` → [`CallPlan`], `tool.call` → [`ToolResult`]. The rest are
//! delivered in order per call, off the audio path, with retries.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One callback request body.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    /// Our call id.
    pub call_id: String,
    /// Per-call sequence number, from 1.
    pub seq: u64,
    /// `<call_id>:<seq>`: the same on every retry of this event.
    pub idempotency_key: String,
    /// When the event happened (RFC 3339, UTC, milliseconds).
    pub timestamp: String,
    /// The event (`type` and its fields).
    #[serde(flatten)]
    pub event: Event,
}

/// RFC 3339 (UTC, milliseconds) for a report field.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The conversation as plain text: one line per turn with words in it.
pub fn plain_transcript(conversation: &[serde_json::Value]) -> String {
    let mut out = String::new();
    for ev in conversation {
        let (who, text) = match ev["type"].as_str() {
            Some("turn.user") => ("caller", ev["transcript"].as_str()),
            // What the caller heard of it, or all of it if it was not cut short.
            Some("turn.agent") => ("agent", ev["heard_text"].as_str().or(ev["text"].as_str())),
            _ => continue,
        };
        if let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(who);
            out.push_str(": ");
            out.push_str(t);
        }
    }
    out
}

impl Envelope {
    /// Wrap `event` as number `seq` of `call_id`, stamped `at`.
    pub fn new(call_id: &str, seq: u64, at: SystemTime, event: Event) -> Self {
        Self {
            call_id: call_id.to_string(),
            seq,
            idempotency_key: format!("{call_id}:{seq}"),
            timestamp: humantime::format_rfc3339_millis(at).to_string(),
            event,
        }
    }
}

/// Events, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
// `call.ended` is the big one; events are built a few times per turn, off the
// audio path, and the session boxes what it queues: no gain from boxing here.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// The call arrived; the reply is the call plan.
    #[serde(rename = "call.started")]
    CallStarted {
        /// Caller number.
        from: String,
        /// Called number (the tenant's).
        to: String,
        /// Carrier name.
        carrier: String,
        /// The carrier's id of the call.
        carrier_call_id: String,
        /// The carrier account, if known.
        #[serde(skip_serializing_if = "String::is_empty")]
        account_id: String,
        /// What else the carrier said about the caller.
        #[serde(flatten)]
        caller: CallerInfo,
    },
    /// The caller finished a turn.
    #[serde(rename = "turn.user")]
    TurnUser(UserTurn),
    /// The bot finished (or was cut off in) a turn.
    #[serde(rename = "turn.agent")]
    TurnAgent(AgentTurn),
    /// The caller interrupted the bot.
    #[serde(rename = "barge_in")]
    BargeIn {
        /// When the caller started speaking, ms since the call started.
        at_ms: u64,
        /// The interrupted response.
        response_id: u32,
        /// How much of it the caller heard.
        heard_ms: u32,
        /// Speech onset → carrier told to stop.
        latency_ms: u32,
    },
    /// The caller pressed a key.
    #[serde(rename = "dtmf")]
    Dtmf {
        /// `0-9`, `*`, `#`, `A-D`.
        digit: String,
        /// ms since the call started.
        at_ms: u64,
    },
    /// The engine wants a tool run; the reply is a [`ToolResult`].
    #[serde(rename = "tool.call")]
    ToolCall {
        /// The engine's id for this call of the tool.
        tool_call_id: String,
        /// Tool name (as declared in the plan).
        name: String,
        /// Arguments (JSON object, as the engine produced them).
        arguments: serde_json::Value,
    },
    /// A transfer was answered and has ended (the bridged call is over).
    #[serde(rename = "transfer.completed")]
    TransferCompleted {
        /// Where the call was transferred.
        to: String,
        /// The carrier's outcome (`completed`, `answered`).
        status: String,
    },
    /// A transfer did not connect; the caller is back with the bot.
    #[serde(rename = "transfer.failed")]
    TransferFailed {
        /// Where the call was to go.
        to: String,
        /// The carrier's outcome (`busy`, `no-answer`, `failed`, `canceled`).
        status: String,
    },
    /// Something failed during the call: the engine, a tool, a transfer.
    #[serde(rename = "error")]
    Error {
        /// `engine`, `tool` or `transfer`.
        source: String,
        /// Stable code (the engine's or ours).
        code: String,
        /// Detail.
        message: String,
    },
    /// The call is over.
    #[serde(rename = "call.ended")]
    CallEnded(CallSummary),
    /// Where the call is (opt-in: the plan's `events` lists `call.status`):
    /// `ringing` (the carrier's webhook, or an outbound call placed),
    /// `answered` (the media stream started), `engine_connected`,
    /// `transferring`, `ended` (just before `call.ended`).
    #[serde(rename = "call.status")]
    CallStatus {
        /// `ringing`, `answered`, `engine_connected`, `transferring`, `ended`.
        status: String,
        /// ms since the call started.
        at_ms: u64,
    },
    /// Someone started speaking (opt-in: `speech`): `caller` (speech onset)
    /// or `agent` (the bot's audio started playing).
    #[serde(rename = "speech.started")]
    SpeechStarted {
        /// `caller` or `agent`.
        who: String,
        /// ms since the call started.
        at_ms: u64,
    },
    /// Someone stopped speaking (opt-in: `speech`).
    #[serde(rename = "speech.stopped")]
    SpeechStopped {
        /// `caller` or `agent`.
        who: String,
        /// ms since the call started.
        at_ms: u64,
    },
    /// What the caller is saying so far, when the engine transcribes as they
    /// speak (opt-in: `transcript.partial`); the final text is in `turn.user`.
    #[serde(rename = "transcript.partial")]
    TranscriptPartial {
        /// The text so far.
        text: String,
        /// ms since the call started.
        at_ms: u64,
    },
    /// The carrier saved its own recording of the call (Telnyx
    /// `call.recording.saved`). It comes after `call.ended`, so it is sent on
    /// its own, outside the call's sequence: `seq` 0.
    #[serde(rename = "carrier.recording")]
    CarrierRecording {
        /// The carrier (`telnyx`).
        carrier: String,
        /// The carrier's id of the call.
        carrier_call_id: String,
        /// Download URLs by format (`wav`, `mp3`); the carrier's, often short-lived.
        urls: std::collections::BTreeMap<String, String>,
        /// Public URLs by format, if the carrier account publishes them.
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        public_urls: std::collections::BTreeMap<String, String>,
        /// `single` or `dual` channel.
        #[serde(skip_serializing_if = "String::is_empty")]
        channels: String,
        /// When the recording started and ended (the carrier's timestamps).
        #[serde(skip_serializing_if = "String::is_empty")]
        started_at: String,
        /// See `started_at`.
        #[serde(skip_serializing_if = "String::is_empty")]
        ended_at: String,
    },
}

impl Event {
    /// The `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CallStarted { .. } => "call.started",
            Event::TurnUser(_) => "turn.user",
            Event::TurnAgent(_) => "turn.agent",
            Event::BargeIn { .. } => "barge_in",
            Event::Dtmf { .. } => "dtmf",
            Event::ToolCall { .. } => "tool.call",
            Event::Error { .. } => "error",
            Event::TransferCompleted { .. } => "transfer.completed",
            Event::TransferFailed { .. } => "transfer.failed",
            Event::CallEnded(_) => "call.ended",
            Event::CarrierRecording { .. } => "carrier.recording",
            Event::CallStatus { .. } => "call.status",
            Event::SpeechStarted { .. } => "speech.started",
            Event::SpeechStopped { .. } => "speech.stopped",
            Event::TranscriptPartial { .. } => "transcript.partial",
        }
    }
}

/// What the carrier's webhook said about the caller and the call, when it did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallerInfo {
    /// Caller ID name (CNAM), e.g. Twilio `CallerName`, Telnyx `caller_id_name`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub caller_name: String,
    /// The number the call was forwarded from (Twilio `ForwardedFrom`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub forwarded_from: String,
    /// `inbound` (or the carrier's word for it).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub direction: String,
    /// The carrier's id of the parent call, for a call that is a leg of another (Twilio `ParentCallSid`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent_call_id: String,
}

/// A caller turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserTurn {
    /// Turn number within the call (user and agent turns share the counter).
    pub turn: u32,
    /// Speech start, ms since the call started.
    pub start_ms: u64,
    /// Speech end, ms since the call started.
    pub end_ms: u64,
    /// What the caller said, when the engine transcribes.
    pub transcript: Option<String>,
}

/// A bot turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentTurn {
    /// Turn number within the call.
    pub turn: u32,
    /// Our response id.
    pub response_id: u32,
    /// First audio sent, ms since the call started.
    pub start_ms: u64,
    /// Last audio sent or the interruption, ms since the call started.
    pub end_ms: u64,
    /// What the bot meant to say, when the engine gives text.
    pub text: Option<String>,
    /// Audio sent to the carrier.
    pub sent_ms: u32,
    /// Audio the caller actually heard (less than `sent_ms` after a barge-in).
    pub heard_ms: u32,
    /// The prefix of `text` the caller heard (proportional to `heard_ms`), when there is text.
    pub heard_text: Option<String>,
    /// Whether the caller (or the control API) cut it off.
    pub interrupted: bool,
}

/// Latencies of one exchange.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TurnLatency {
    /// The user turn this answers.
    pub turn: u32,
    /// End of caller speech → first bot audio sent.
    pub response_latency_ms: Option<u32>,
    /// Engine asked → its first audio.
    pub engine_first_audio_ms: Option<u32>,
    /// Caller speech onset → bot stopped, when the caller interrupted the answer.
    pub barge_in_latency_ms: Option<u32>,
}

/// The `call.ended` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallSummary {
    /// Why it ended: `caller_hangup`, `hangup`, `transferred`, `shutdown`,
    /// `interrupted` (reported at the next start after the process died),
    /// `engine_error`, `protocol_error`, `slow_consumer`, `idle_timeout`, `transport_error`, `unauthorized`,
    /// `stream_lost` (the media connection broke without a closing handshake);
    /// for an outbound call that never connected: `busy`, `no_answer`, `failed`, `canceled`, `machine`.
    pub reason: String,
    /// The carrier the call came through (`twilio`, `telnyx`, `vonage`), if known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub carrier: String,
    /// The carrier's id of the call, if known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub carrier_call_id: String,
    /// Caller number.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// Called number.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// `outbound` for a call placed through `POST /v1/calls` (absent: inbound).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub direction: String,
    /// Who answered an outbound call placed with machine detection, as the
    /// carrier classified it: `human`, `machine`, `fax`, `unknown`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub answered_by: String,
    /// When the call reached us (the carrier's webhook; RFC 3339, UTC).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub started_at: String,
    /// When its media stream started (absent if it never did).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub answered_at: String,
    /// When it ended.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ended_at: String,
    /// The engine that answered (`local`, `openai_realtime`, …).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub engine: String,
    /// The engine's model(s).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// The voice that spoke.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub voice: String,
    /// What the call used: OpenAI tokens (`input_tokens`, `output_tokens`,
    /// `total_tokens`), or `stt_seconds` and `tts_characters`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
    /// The conversation as plain text, one line per turn (`caller: …`,
    /// `agent: …` — what the caller heard of it), for CRMs and notes.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub transcript: String,
    /// Call length in ms.
    pub duration_ms: u64,
    /// Caller turns.
    pub user_turns: u32,
    /// Bot turns.
    pub agent_turns: u32,
    /// Times the caller interrupted.
    pub barge_ins: u32,
    /// Per-exchange latencies.
    pub latencies: Vec<TurnLatency>,
    /// Events of this call that were dropped before `call.ended` (queue full or retries exhausted).
    pub events_dropped: u64,
    /// Recording location, when the call was recorded.
    pub recording_url: Option<String>,
    /// Length of the recording, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_duration_ms: Option<u64>,
    /// What the recording lost (writer behind, disk error), if anything.
    pub recording_loss: Option<String>,
    /// The whole conversation: every event of the call in order (turns with
    /// text and `heard_ms`, barge-ins, DTMF, tool calls and their results),
    /// each as sent, without envelope fields.
    pub conversation: Vec<serde_json::Value>,
}

/// The reply to `call.started`. Every field is optional; unknown fields are
/// ignored (so backends can be newer than us), wrong types are an error (the
/// call then runs on the defaults and hears the fallback line).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct CallPlan {
    /// `local` or `openai_realtime`; default: `engine.kind` from config.
    pub engine: Option<String>,
    /// System instructions for engines that take them.
    pub instructions: Option<String>,
    /// First thing the bot says (engines that speak text).
    pub greeting: Option<String>,
    /// Voice name (engine-specific).
    pub voice: Option<String>,
    /// Tools the engine may call (`tool.call` events).
    pub tools: Vec<ToolSpec>,
    /// Record this call.
    pub record: Option<bool>,
    /// Turn-taking overrides.
    pub turn: TurnOverrides,
    /// Opaque data echoed in no event; for the backend's own bookkeeping in the plan log.
    pub metadata: Option<serde_json::Value>,
    /// Refuse the call instead of answering it (`call.ended` reason `rejected`).
    pub reject: Option<RejectPlan>,
    /// Live events to receive beside the default ones: `call.status`,
    /// `speech` (`speech.started`/`speech.stopped`), `transcript.partial`.
    /// Unknown names are ignored.
    pub events: Vec<String>,
    /// Hang up (after a goodbye line) this many seconds after the call was answered.
    pub max_duration_s: Option<u32>,
    /// Hang up (after a goodbye line) when nobody spoke for this many seconds.
    pub silence_timeout_s: Option<u32>,
    /// Connect the caller straight to this number or SIP URI, with no engine
    /// (`call.ended` reason `forwarded`); it must be within the number's
    /// `transfer_allow`, or the call is answered as usual.
    pub forward: Option<String>,
    /// Transcription settings for `"engine": "cascaded"`.
    pub stt: Option<SttPlan>,
    /// Voice settings for `"engine": "cascaded"`.
    pub tts: Option<TtsPlan>,
    /// Built-in tools the engine may call, run by callbridge: `end_call`,
    /// `transfer_call` (to `transfer_destinations` only), `send_dtmf`.
    pub builtin_tools: Vec<String>,
    /// Where `transfer_call` may send the caller, by name.
    pub transfer_destinations: Vec<TransferDestination>,
    /// `false`: the caller cannot talk over the greeting (a barge-in waits for its end).
    pub greeting_interruptible: Option<bool>,
}

/// A named place `transfer_call` may send the caller.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct TransferDestination {
    /// What the model calls it (`on_call_plumber`).
    pub name: String,
    /// Number or SIP URI (within the number's `transfer_allow`).
    pub to: String,
    /// When to use it (for the model).
    pub description: String,
}

/// A plan's `stt` (cascaded engine); unset fields take `[engine.cascaded.deepgram]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct SttPlan {
    /// `deepgram` (the only one so far).
    pub provider: Option<String>,
    /// Model (`nova-3`).
    pub model: Option<String>,
    /// Language code.
    pub language: Option<String>,
    /// Deepgram `endpointing`, ms.
    pub endpointing_ms: Option<u32>,
    /// Deepgram `utterance_end_ms` (≥ 1000).
    pub utterance_end_ms: Option<u32>,
}

/// A plan's `tts` (cascaded engine); unset fields take `[engine.cascaded.elevenlabs]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct TtsPlan {
    /// `elevenlabs` (the only one so far).
    pub provider: Option<String>,
    /// Voice id (else the plan's `voice`, else config).
    pub voice_id: Option<String>,
    /// Model id.
    pub model_id: Option<String>,
    /// ElevenLabs `voice_settings` (stability, similarity_boost, style, speed, …).
    pub voice_settings: Option<serde_json::Value>,
}

/// The reply to `turn.user` when the backend is the brain (cascaded engine):
/// what the agent says, and optionally what it does after. A streamed reply
/// (`application/x-ndjson`) is lines of `{"reply_delta": "…"}`, the last of
/// which may carry `action`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct TurnReply {
    /// The whole reply.
    pub reply: Option<String>,
    /// A part of a streamed reply.
    pub reply_delta: Option<String>,
    /// After speaking it: hang up, or transfer.
    pub action: Option<ReplyAction>,
}

/// What the agent does after its reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyAction {
    /// End the call once the reply has been heard (`call.ended` reason `agent_hangup`).
    Hangup,
    /// Transfer the call (to a destination the number allows) once the reply has been heard.
    Transfer {
        /// Number or SIP URI.
        to: String,
    },
}

/// How a plan refuses a call.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct RejectPlan {
    /// `busy` (the caller hears busy) or `rejected` (default).
    pub reason: RejectReason,
    /// Say this first, where the carrier can before answering (Twilio, Vonage); then hang up.
    pub say: Option<String>,
}

/// Why a plan refuses a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The line is busy.
    Busy,
    /// Refused.
    #[default]
    Rejected,
}

/// A tool the engine may call.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ToolSpec {
    /// Name.
    pub name: String,
    /// What it does (for the model).
    #[serde(default)]
    pub description: String,
    /// JSON Schema of its arguments.
    #[serde(default = "empty_object")]
    pub parameters: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// Optional turn settings from a plan (each overrides `[turn]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct TurnOverrides {
    /// Caller silence that ends a turn (100..=5000).
    pub endpoint_silence_ms: Option<u32>,
    /// Speech that starts a turn.
    pub min_speech_ms: Option<u32>,
    /// Speech that interrupts the bot.
    pub barge_in_min_speech_ms: Option<u32>,
    /// Start of each response that cannot be interrupted.
    pub barge_in_protect_ms: Option<u32>,
    /// Whether the caller may interrupt at all.
    pub allow_barge_in: Option<bool>,
    /// `silence` or `smart` (smart needs the server's `[turn_model]`; without
    /// it the call keeps the silence rule).
    pub detector: Option<crate::session::turn::Detector>,
    /// Smart detector: the first pause candidate (60..=2000).
    pub min_wait_ms: Option<u32>,
    /// Smart detector: the longest wait when the model says "not done" (min_wait..=5000).
    pub max_wait_ms: Option<u32>,
}

impl TurnOverrides {
    /// `base` with these overrides applied (out-of-range values are clamped).
    pub fn apply(&self, base: &crate::session::turn::TurnConfig) -> crate::session::turn::TurnConfig {
        let mut t = base.clone();
        if let Some(v) = self.endpoint_silence_ms {
            t.endpoint_silence_ms = v.clamp(100, 5000);
        }
        if let Some(v) = self.min_speech_ms {
            t.min_speech_ms = v.clamp(20, 2000);
        }
        if let Some(v) = self.barge_in_min_speech_ms {
            t.barge_in_min_speech_ms = v.clamp(20, 2000);
        }
        if let Some(v) = self.barge_in_protect_ms {
            t.barge_in_protect_ms = v.min(10_000);
        }
        if self.allow_barge_in == Some(false) {
            t.barge_in_min_speech_ms = u32::MAX;
        }
        if let Some(d) = self.detector {
            t.detector = d;
        }
        if let Some(v) = self.min_wait_ms {
            t.smart.candidate_ms = v.clamp(60, 2000);
        }
        if let Some(v) = self.max_wait_ms {
            t.smart.max_wait_ms = v.clamp(t.smart.candidate_ms, 5000);
        }
        t.smart.max_wait_ms = t.smart.max_wait_ms.max(t.smart.candidate_ms);
        t
    }
}

/// The reply to `tool.call`: `{"result": <any JSON>}`; a bare JSON value is taken as the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolResult {
    /// Handed to the engine as the function output.
    pub result: serde_json::Value,
}

impl ToolResult {
    /// Read a reply body.
    pub fn from_reply(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Object(mut m) if m.contains_key("result") => {
                Self { result: m.remove("result").unwrap_or_default() }
            }
            other => Self { result: other },
        }
    }
}

#[cfg(test)]
mod plain_transcript_tests {
    use super::*;

    #[test]
    fn the_plain_transcript_has_a_line_per_turn_with_what_the_caller_heard() {
        let conv = vec![
            serde_json::json!({"type": "turn.user", "transcript": "My sink is leaking."}),
            serde_json::json!({"type": "turn.agent", "text": "I can book a plumber tomorrow morning.", "heard_text": "I can book"}),
            serde_json::json!({"type": "barge_in", "at_ms": 10}),
            serde_json::json!({"type": "turn.user", "transcript": "  "}),
            serde_json::json!({"type": "turn.agent", "text": "What is the address?"}),
        ];
        assert_eq!(
            plain_transcript(&conv),
            "caller: My sink is leaking.\nagent: I can book\nagent: What is the address?"
        );
        assert_eq!(plain_transcript(&[]), "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_flat_with_type_and_stable_key() {
        let e = Envelope::new(
            "call_1",
            3,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            Event::Dtmf { digit: "5".into(), at_ms: 900 },
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"dtmf","call_id":"call_1","seq":3,"idempotency_key":"call_1:3",
                "timestamp":"2023-11-14T22:13:20.123Z","digit":"5","at_ms":900})
        );
    }

    #[test]
    fn plan_parses_partial_ignores_unknown_and_rejects_wrong_types() {
        let p: CallPlan =
            serde_json::from_str(r#"{"greeting":"Hi","future_field":1,"turn":{"endpoint_silence_ms":800}}"#).unwrap();
        assert_eq!(p.greeting.as_deref(), Some("Hi"));
        assert_eq!(p.turn.endpoint_silence_ms, Some(800));
        assert!(p.tools.is_empty());
        assert!(serde_json::from_str::<CallPlan>(r#"{"record":"yes"}"#).is_err());
        assert!(serde_json::from_str::<CallPlan>(r#"{"tools":[{"description":"no name"}]}"#).is_err());
        let base = crate::session::turn::TurnConfig::default();
        let t = TurnOverrides { endpoint_silence_ms: Some(10), allow_barge_in: Some(false), ..Default::default() }
            .apply(&base);
        assert_eq!(t.endpoint_silence_ms, 100);
        assert_eq!(t.barge_in_min_speech_ms, u32::MAX);
        assert_eq!(t.min_speech_ms, base.min_speech_ms);
    }

    #[test]
    fn tool_result_takes_result_field_or_whole_reply() {
        assert_eq!(
            ToolResult::from_reply(serde_json::json!({"result": {"ok": true}})).result,
            serde_json::json!({"ok": true})
        );
        assert_eq!(
            ToolResult::from_reply(serde_json::json!({"slot": "9am"})).result,
            serde_json::json!({"slot": "9am"})
        );
    }
}
