//! Carriers: the media-stream protocols of phone carriers (and the browser),
//! as sans-IO codecs behind one trait, [`Carrier`].
//!
//! A carrier turns wire messages ([`WireIn`]: text or binary) into typed
//! [`CarrierEvent`]s and our [`CarrierCommand`]s into wire messages written to
//! a [`WireOut`]. It declares what the far end can do ([`Capabilities`]): its
//! native audio format, whether it buffers what we send (and so needs `clear`
//! on barge-in), whether it echoes playback markers, whether it reports DTMF.
//! The session adapts to those declarations; nothing above this module asks
//! which carrier it is talking to.
//!
//! Invariants: codecs never do I/O, never read the clock (time comes in as an
//! argument where a codec keeps time) and never panic on network input.
//! Decoded audio borrows the codec's scratch buffers, so a frame allocates
//! nothing; drain an event before the next call.

mod json;
pub mod telnyx;
pub mod twilio;
pub mod vonage;
pub mod webrtc;
mod wire;

use std::time::Instant;

pub use wire::{ARENA_BYTES, MsgClass, MsgKind, OutMsg, WireOut, put_base64};
pub(crate) use wire::{PayloadError, decode_payload};

use crate::ids::MarkId;

/// Audio encodings a carrier can stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioEncoding {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// 16-bit signed little-endian linear PCM.
    L16,
    /// Opus (WebRTC).
    Opus,
}

impl AudioEncoding {
    /// Stable lower-case name (logs, reports).
    pub fn name(self) -> &'static str {
        match self {
            AudioEncoding::Pcmu => "pcmu",
            AudioEncoding::Pcma => "pcma",
            AudioEncoding::L16 => "l16",
            AudioEncoding::Opus => "opus",
        }
    }
}

/// An encoding at a sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Encoding on the wire.
    pub encoding: AudioEncoding,
    /// Sample rate of the decoded audio, Hz.
    pub rate: u32,
}

impl AudioFormat {
    /// G.711 µ-law at 8 kHz, the phone network's own format.
    pub const PCMU_8K: AudioFormat = AudioFormat { encoding: AudioEncoding::Pcmu, rate: 8000 };
}

/// What a carrier's far end can do, declared by the codec once the stream has
/// started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Native audio format of the stream (both directions).
    pub format: AudioFormat,
    /// The far end buffers what we send and plays it in real time (phone
    /// carriers). Without one (WebRTC) our pacer is the only buffer: a barge-in
    /// just stops sending, and "heard" is "sent minus the lead".
    pub far_end_buffer: bool,
    /// The far end can drop what it buffered (`clear`).
    pub clear: bool,
    /// The far end echoes playback markers when playback reaches them.
    pub marks: bool,
    /// The caller's key presses are reported.
    pub dtmf: bool,
    /// Outbound audio must go in messages of exactly this many 20 ms frames
    /// (`None`: any whole number of frames).
    pub frames_per_message: Option<u32>,
    /// A transfer ends the media stream at the carrier (Twilio replaces the
    /// call's TwiML). Otherwise the stream may go on carrying the bridged call,
    /// so the session ends it itself once the transfer is under way.
    pub stream_ends_on_transfer: bool,
}

/// What a carrier tells us when a stream starts. Carrier-neutral names; the
/// carrier's own ids (account, leg, connection…) are in `carrier_ids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Carrier label for metrics and logs.
    pub carrier: &'static str,
    /// The carrier's id of the call.
    pub call_id: String,
    /// The carrier's id of this media stream.
    pub stream_id: String,
    /// Caller number, if the stream says.
    pub from: String,
    /// Called number, if the stream says.
    pub to: String,
    /// The single-use token the stream presented (issued by our webhook).
    pub token: Option<String>,
    /// Other custom parameters the stream carried.
    pub parameters: Vec<(String, String)>,
    /// The carrier's other ids, by the carrier's own names (`account_sid`, …).
    pub carrier_ids: Vec<(&'static str, String)>,
    /// Audio format of the stream.
    pub format: AudioFormat,
}

impl StreamInfo {
    /// A custom parameter by name.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A carrier id by name.
    pub fn carrier_id(&self, name: &str) -> Option<&str> {
        self.carrier_ids.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// Caller audio decoded to linear PCM at the stream's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioIn<'a> {
    /// Decoded samples (any length; the session re-frames into 20 ms).
    pub pcm: &'a [i16],
    /// The payload in the stream's native encoding (for engines that take it as is).
    pub encoded: &'a [u8],
    /// Carrier media timestamp in ms since the stream began, if given.
    pub timestamp_ms: Option<u64>,
}

/// A decoded inbound carrier message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierEvent<'a> {
    /// Transport-level hello (before the stream starts).
    Connected,
    /// The stream started; audio follows.
    Start(StreamInfo),
    /// Caller audio.
    Audio(AudioIn<'a>),
    /// A DTMF key press.
    Dtmf(char),
    /// A playback marker came back: the audio before it was played or cleared.
    /// `None` for a marker name we did not issue.
    Mark(Option<MarkId>),
    /// The stream ended (caller hung up or the stream was stopped).
    Stop,
    /// A well-formed message with nothing for us (an outbound-track echo, an
    /// acknowledgement, an event type we do not know).
    Ignored,
}

/// What we ask a carrier to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierCommand<'a> {
    /// Play this linear PCM (at the stream's rate) after what is queued.
    Audio(&'a [i16]),
    /// Echo this marker when the audio queued before it has played.
    Mark(MarkId),
    /// Drop all audio queued at the carrier (barge-in).
    Clear,
}

impl CarrierCommand<'_> {
    /// Audio may be dropped under back-pressure; control never is.
    pub fn is_audio(&self) -> bool {
        matches!(self, CarrierCommand::Audio(_))
    }
}

/// A message from the carrier's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireIn<'a> {
    /// A text (JSON) message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// WebSocket close codes the call uses (RFC 6455 §7.4.1).
pub mod close {
    /// Normal end of call.
    pub const NORMAL: u16 = 1000;
    /// Server going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Data we cannot accept (wrong format).
    pub const UNSUPPORTED: u16 = 1003;
    /// Protocol or policy violation.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL: u16 = 1011;
    /// Try again later (at capacity).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// How much a decoding error matters to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Nothing wrong with the stream: a message we do not understand (an event
    /// type a carrier added). Counted, never held against the call.
    Ignorable,
    /// One bad message: counted and skipped; too many close the call.
    Skip,
    /// The stream cannot go on (wrong format, media before start, …).
    Fatal,
}

/// A carrier protocol error: a stable code (metrics labels, close reasons),
/// how much it matters, and the close code to use when it is fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CarrierError {
    code: &'static str,
    severity: Severity,
    close_code: u16,
    message: String,
}

impl CarrierError {
    /// An error with `code`, `severity` and a human-readable `message`; fatal
    /// errors close with 1008 unless [`CarrierError::with_close_code`] says otherwise.
    pub fn new(code: &'static str, severity: Severity, message: impl Into<String>) -> Self {
        Self { code, severity, close_code: close::POLICY, message: message.into() }
    }

    /// The close code to use when this error ends the call.
    pub fn with_close_code(mut self, code: u16) -> Self {
        self.close_code = code;
        self
    }

    /// Stable code for metrics and close reasons.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Whether the stream cannot go on.
    pub fn is_fatal(&self) -> bool {
        self.severity == Severity::Fatal
    }

    /// How much it matters.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// WebSocket close code for a fatal error.
    pub fn close_code(&self) -> u16 {
        self.close_code
    }
}

/// A carrier's media-stream protocol, sans-IO (in the manner of `str0m::Rtc`
/// and `quinn_proto::Connection`): the driver feeds it wire messages with the
/// current time and drains events; it encodes commands into wire messages.
pub trait Carrier: Send + std::fmt::Debug {
    /// Label for metrics and logs.
    fn name(&self) -> &'static str;

    /// What the far end can do. Meaningful once the stream started (a carrier
    /// may learn its format from the start message).
    fn capabilities(&self) -> Capabilities;

    /// Decode one inbound message. A message may carry nothing for us
    /// ([`CarrierEvent::Ignored`]), or release more events than one; the rest
    /// come from [`Carrier::poll_event`].
    fn decode(&mut self, now: Instant, msg: WireIn<'_>) -> Result<CarrierEvent<'_>, CarrierError>;

    /// Further events released by the last [`Carrier::decode`] (a reorder
    /// buffer letting held frames go). Drain until `None` after every decode.
    fn poll_event(&mut self) -> Option<CarrierEvent<'_>> {
        None
    }

    /// Encode `cmd` into zero or more wire messages appended to `out`.
    fn encode(&mut self, cmd: &CarrierCommand<'_>, out: &mut WireOut) -> Result<(), CarrierError>;
}
