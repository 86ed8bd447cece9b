//! Speech engines behind one trait, [`Engine`], and one vocabulary.
//!
//! The session asks an engine for things with [`EngineCommand`]s (caller audio,
//! "the caller's turn ended", cancel at the heard position, say this, here is a
//! tool's result) and the engine answers with [`EngineEvent`]s (response audio
//! tagged with its [`ResponseId`], transcripts, agent text, tool calls, its own
//! speech detection, errors). Network engines are sans-IO codecs over
//! [`links`](Engine::links): sockets the runtime opens for them (URL and headers
//! supplied by the engine) and then only moves text and binary messages over,
//! knowing no engine by name. The embedded [`local::LocalEngine`] has no link.
//!
//! Invariants: response ids are allocated by the engine, monotonic per call,
//! for its own responses and for clips played on the session's behalf, so
//! "stale" is one comparison; an engine never does I/O or reads the clock.

pub mod cascaded;
pub mod local;
pub mod openai_realtime;
pub mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::carrier::AudioFormat;
use crate::ids::ResponseId;

/// A slice of shared response audio (linear PCM at the engine's output rate).
///
/// Sharing matters: the local engine hands every call the same clip without a
/// copy; network engines wrap each received delta once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChunk {
    /// The response this audio belongs to.
    pub response: ResponseId,
    /// Backing samples.
    pub samples: Arc<[i16]>,
    /// Start of the live range in `samples`.
    pub start: usize,
    /// End (exclusive) of the live range.
    pub end: usize,
}

impl AudioChunk {
    /// A chunk covering all of `samples`.
    pub fn whole(response: ResponseId, samples: Arc<[i16]>) -> Self {
        let end = samples.len();
        Self { response, samples, start: 0, end }
    }

    /// The live samples.
    pub fn as_slice(&self) -> &[i16] {
        &self.samples[self.start..self.end]
    }

    /// Number of live samples.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether no samples are left.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// What caller audio an engine takes, declared when it is built for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputAudio {
    /// None (the local engine only answers turns).
    None,
    /// Linear PCM at this rate, resampled by the session from the carrier's.
    Pcm {
        /// Hz
        rate: u32,
    },
    /// The carrier's own encoded bytes, passed through untouched (µ-law to
    /// OpenAI or Deepgram). Must equal the stream's format.
    Passthrough(AudioFormat),
}

/// The audio an engine takes and gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineFormat {
    /// Caller audio in.
    pub input: InputAudio,
    /// Rate of the PCM it produces.
    pub output_rate: u32,
}

/// Caller audio handed to an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioRef<'a> {
    /// PCM at the declared input rate.
    Pcm(&'a [i16]),
    /// The carrier's encoded bytes.
    Encoded(&'a [u8]),
}

/// What the session asks of an engine. The per-frame command (`Audio`)
/// borrows; the rare ones own their data.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineCommand<'a> {
    /// The call is up; the engine may speak first (greeting).
    Start,
    /// Caller audio.
    Audio(AudioRef<'a>),
    /// The caller's turn ended (our endpointing): commit what was heard and answer.
    EndOfTurn,
    /// Stop producing `response`; the caller heard its first `heard_ms`.
    Cancel {
        /// the interrupted response
        response: ResponseId,
        /// how much of it the caller heard
        heard_ms: u32,
    },
    /// Speak this text as a response of its own (engines that speak text).
    Say(String),
    /// Part of the backend's reply to the caller's last turn (engines whose
    /// words come from the backend, [`Engine::needs_brain`]): appended to the
    /// current reply, which `done` closes. The first part starts a response.
    Reply {
        /// text to append (may be empty when only closing)
        text: String,
        /// the reply is complete
        done: bool,
    },
    /// Play this clip of ours (8 kHz PCM: filler, fallback, apology, `say`
    /// audio) as a response of its own, after anything queued.
    Play(Arc<[i16]>),
    /// The result of a tool the engine asked for; `respond` asks it to go on.
    ToolResult {
        /// the engine's id of the tool call
        call_id: String,
        /// the result (or an error object)
        output: serde_json::Value,
        /// answer the caller now
        respond: bool,
    },
    /// The call is over.
    Stop,
}

/// What an engine tells the session.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A response began; audio with this id follows.
    ResponseStarted(ResponseId),
    /// Response audio.
    Audio(AudioChunk),
    /// The engine finished producing the response (all its audio was emitted).
    ResponseDone(ResponseId),
    /// A response ended without being produced (the engine failed it, or cut
    /// it short); the caller may have heard nothing.
    ResponseFailed {
        /// the response
        response: ResponseId,
        /// stable code (`response_failed`, `response_incomplete`)
        code: String,
        /// the engine's reason
        message: String,
    },
    /// Text of what a response says (a delta, appended in order).
    AgentText(ResponseId, String),
    /// What the caller said: a final transcript of their last turn, or a
    /// partial one while they speak.
    CallerTranscript {
        /// the text
        text: String,
        /// final for the turn (partials are replaced by later ones)
        is_final: bool,
    },
    /// The engine wants a tool run.
    ToolCall {
        /// the engine's id of this call
        call_id: String,
        /// tool name
        name: String,
        /// parsed arguments (an object)
        arguments: serde_json::Value,
    },
    /// The engine's own speech detection heard the caller start.
    SpeechStarted,
    /// The engine is ready: every socket it needs is up (at once for engines
    /// without sockets). Once per call.
    Connected,
    /// When each character of a response is spoken, from its start (ms):
    /// appended in order, so "what the caller heard" is exact, not estimated.
    Alignment {
        /// the response
        response: ResponseId,
        /// characters, in order
        chars: String,
        /// start of each character in the response's audio, ms
        starts_ms: Vec<u32>,
    },
    /// How long one stage of answering took (cascaded engines: `stt_final`,
    /// `tts_first_audio`).
    Stage {
        /// stage name
        stage: &'static str,
        /// its latency
        latency: Duration,
    },
    /// The engine's connection dropped and came back: responses in flight were
    /// lost (they were ended with `ResponseDone`).
    Reconnected,
    /// An error. `fatal` ones (no engine any more, bad key, quota) end the call.
    Error {
        /// the call cannot go on
        fatal: bool,
        /// stable or engine-given code
        code: String,
        /// detail
        message: String,
    },
}

/// A socket an engine needs the runtime to open.
#[derive(Clone)]
pub struct LinkSpec {
    /// Label for logs and metrics (`openai_realtime`, `deepgram`, …).
    pub name: &'static str,
    /// WebSocket URL.
    pub url: String,
    /// Request headers (may hold secrets: never logged).
    pub headers: Vec<(String, String)>,
    /// Sent first on every connection, before anything queued.
    pub hello: Vec<LinkMsg>,
    /// Reconnects allowed after the first connection drops.
    pub reconnects: u32,
    /// Deadline for connecting (TCP + TLS + upgrade).
    pub connect_timeout: Duration,
    /// Messages queued towards the socket before audio is dropped.
    pub max_queued: usize,
    /// Time each text message from queueing to the socket
    /// (`callbridge_engine_link_send_delay_seconds`); off for links whose
    /// every audio frame is text (OpenAI), to keep the clock off the frame path.
    pub time_text: bool,
}

impl std::fmt::Debug for LinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("LinkSpec")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("headers", &names)
            .field("reconnects", &self.reconnects)
            .finish()
    }
}

/// A message to or from an engine link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMsg {
    /// Text (JSON).
    Text(String),
    /// Binary (audio).
    Binary(bytes::Bytes),
}

/// What happened on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent<'a> {
    /// The socket dropped and is reconnecting: messages sent until the next
    /// `Up` are discarded (an engine that must not lose them keeps its own copy).
    Lost,
    /// Connected (again, if `reconnected`); the hello was sent first.
    Up {
        /// a reconnect after a drop (state on the far side was lost)
        reconnected: bool,
    },
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// The link is gone for good (could not connect, or dropped with no
    /// reconnect left).
    Down(&'a str),
}

/// What an engine says about itself for the end-of-call report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineReport {
    /// Model(s) that answered (`gpt-realtime`, `nova-3 + eleven_flash_v2_5`).
    pub model: String,
    /// Voice.
    pub voice: String,
    /// What the call used: tokens, seconds transcribed, characters spoken (a JSON object).
    pub usage: Option<serde_json::Value>,
}

/// A speech engine for one call (sans-IO).
pub trait Engine: Send + std::fmt::Debug {
    /// Label for metrics and logs.
    fn label(&self) -> &'static str;

    /// Audio formats.
    fn format(&self) -> EngineFormat;

    /// Whether [`EngineCommand::Say`] works.
    fn speaks_text(&self) -> bool {
        false
    }

    /// Whether it produces final caller transcripts (a `turn.user` then waits
    /// for its transcript, briefly, so it is sent with the text).
    fn transcribes_caller(&self) -> bool {
        false
    }

    /// Whether its words come from the backend: each caller turn is a
    /// blocking `turn.user` whose reply it speaks ([`EngineCommand::Reply`]).
    fn needs_brain(&self) -> bool {
        false
    }

    /// Model, voice and usage so far (for `call.ended`).
    fn report(&self) -> EngineReport {
        EngineReport::default()
    }

    /// Sockets to open for this engine (index = link id in the other calls).
    fn links(&self) -> Vec<LinkSpec> {
        Vec::new()
    }

    /// A command from the session.
    fn handle_command(&mut self, now: Instant, cmd: EngineCommand<'_>);

    /// Something happened on link `link`.
    fn handle_link(&mut self, _now: Instant, _link: usize, _ev: LinkEvent<'_>) {}

    /// Next event for the session.
    fn poll_event(&mut self) -> Option<EngineEvent>;

    /// Next message to send on a link.
    fn poll_transmit(&mut self) -> Option<(usize, LinkMsg)> {
        None
    }

    /// When [`Engine::handle_timeout`] is next due (keep-alives).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The deadline from [`Engine::poll_timeout`] passed.
    fn handle_timeout(&mut self, _now: Instant) {}
}
