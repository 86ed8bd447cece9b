//! Carrier wire codecs: translate a carrier's media-stream messages into typed
//! [`CarrierEvent`]s and our [`CarrierCommand`]s into wire messages.
//!
//! Codecs are sans-IO: no sockets, no timers, no clock, no REST calls. Audio
//! events borrow the codec's scratch buffers, so decoding a frame allocates
//! nothing. Every carrier (Twilio now; Telnyx, Vonage, WebRTC later) maps onto
//! the same vocabulary, so the session never knows which carrier it talks to.

pub mod twilio;
pub mod twilio_peer;
pub mod twilio_rest;

use crate::ids::MarkId;

/// Audio encodings a carrier can stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioEncoding {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// 16-bit signed little-endian linear PCM.
    L16,
}

/// What a carrier tells us when a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Carrier label for metrics and logs (`twilio`, …).
    pub carrier: &'static str,
    /// Carrier's call id (Twilio CallSid).
    pub call_sid: String,
    /// Carrier's stream id (Twilio StreamSid).
    pub stream_sid: String,
    /// Carrier account (Twilio AccountSid).
    pub account_sid: String,
    /// Custom parameters passed when the stream was started (`<Parameter>`).
    pub custom_parameters: Vec<(String, String)>,
    /// Wire encoding of the audio.
    pub encoding: AudioEncoding,
    /// Sample rate of the audio.
    pub sample_rate: u32,
}

/// Caller audio decoded to linear PCM at the stream's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioIn<'a> {
    /// Decoded samples (any length; the session re-frames into 20 ms).
    pub pcm: &'a [i16],
    /// The raw encoded payload (for engines that take the carrier codec as is).
    pub encoded: &'a [u8],
    /// Carrier media timestamp in ms since the stream began, if given.
    pub timestamp_ms: Option<u64>,
}

/// A decoded inbound carrier message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierEvent<'a> {
    /// Transport-level hello (Twilio `connected`).
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
    /// A well-formed message with nothing for us (e.g. an outbound-track echo).
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
