//! Twilio Media Streams codec (bidirectional `<Connect><Stream>`), PROTOCOLS §1.
//!
//! Inbound: `connected`, `start`, `media`, `dtmf`, `mark`, `stop`. Numeric-looking
//! fields (`sequenceNumber`, `media.chunk`, `media.timestamp`) arrive as JSON
//! strings; we also accept numbers. `media.track` is `inbound`/`outbound` while
//! `dtmf.track` is `inbound_track`. Outbound: `media`, `mark`, `clear` only, always
//! with the stream's `streamSid`.
//!
//! Parsing is into one flat struct with borrowed fields (an internally tagged enum
//! costs 2× in serde, PERFORMANCE.md); audio is base64-decoded and µ-law-decoded
//! into scratch buffers owned by the codec, so a `media` frame allocates nothing.
//! Outbound messages are written by template into the [`WireOut`] arena:
//! base64 and validated SIDs never need JSON escaping.
//!
//! Twilio's far end buffers what we send, supports `clear` and echoes marks;
//! audio is µ-law 8 kHz both ways. Binary frames are not part of the protocol.

pub mod signature;

use std::borrow::Cow;

use serde::Deserialize;

use super::json::{Num, opt_cow};
use super::wire::put_base64;
use super::{
    AudioFormat, AudioIn, Capabilities, Carrier, CarrierCommand, CarrierError, CarrierEvent, PayloadError, Severity,
    StreamInfo, WireIn, WireOut, close, decode_payload,
};
use crate::audio::g711;
use crate::ids::MarkId;

/// The `<Parameter>` carrying the per-call stream token.
pub const TOKEN_PARAM: &str = "cb_token";
/// The `<Parameter>` carrying the caller's number.
pub const FROM_PARAM: &str = "from";
/// The `<Parameter>` carrying the called number.
pub const TO_PARAM: &str = "to";

/// Errors decoding or encoding Twilio messages.
#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// An `event` we do not know.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// `media`, `dtmf` or `mark` before `start`.
    #[error("{0} before start")]
    BeforeStart(&'static str),
    /// A second `start` on the same stream.
    #[error("duplicate start")]
    DuplicateStart,
    /// `start` announced a format other than µ-law 8 kHz mono.
    #[error("unsupported media format {encoding} {sample_rate} Hz {channels} ch (need audio/x-mulaw 8000 Hz mono)")]
    UnsupportedFormat {
        /// announced encoding
        encoding: String,
        /// announced rate
        sample_rate: u64,
        /// announced channel count
        channels: u64,
    },
    /// A SID with characters outside `[A-Za-z0-9]` or too long.
    #[error("invalid {0}")]
    InvalidSid(&'static str),
    /// `media.payload` is not base64.
    #[error("media payload is not valid base64")]
    BadBase64,
    /// `media.payload` is larger than the configured limit.
    #[error("media payload of {0} bytes exceeds the limit")]
    PayloadTooLarge(usize),
    /// `media.payload` is empty.
    #[error("empty media payload")]
    EmptyPayload,
    /// A `dtmf.digit` that is not one key.
    #[error("invalid dtmf digit {0:?}")]
    BadDigit(String),
    /// Media for a different stream than the one started.
    #[error("message for another streamSid")]
    WrongStream,
    /// We were asked to send before the stream started.
    #[error("cannot send before start")]
    NotStarted,
    /// A binary WebSocket message (Twilio only sends text).
    #[error("binary message (Twilio sends JSON text only)")]
    Binary,
}

impl TwilioError {
    /// Stable code for metrics labels and close reasons.
    pub fn code(&self) -> &'static str {
        match self {
            TwilioError::Malformed(_) => "malformed_json",
            TwilioError::UnknownEvent(_) => "unknown_event",
            TwilioError::Missing(_) => "missing_field",
            TwilioError::BeforeStart(_) => "before_start",
            TwilioError::DuplicateStart => "duplicate_start",
            TwilioError::UnsupportedFormat { .. } => "unsupported_format",
            TwilioError::InvalidSid(_) => "invalid_sid",
            TwilioError::BadBase64 => "bad_base64",
            TwilioError::PayloadTooLarge(_) => "payload_too_large",
            TwilioError::EmptyPayload => "empty_payload",
            TwilioError::BadDigit(_) => "bad_dtmf",
            TwilioError::WrongStream => "wrong_stream",
            TwilioError::NotStarted => "not_started",
            TwilioError::Binary => "binary_frame",
        }
    }

    /// Whether the call cannot go on after this error (the stream is unusable),
    /// as opposed to one bad message that is counted and skipped.
    pub fn is_fatal(&self) -> bool {
        self.severity() == Severity::Fatal
    }

    /// How much the error matters: an unknown event is Twilio adding one (never
    /// held against the call), a bad message is skipped, a broken stream is fatal.
    pub fn severity(&self) -> Severity {
        if matches!(self, TwilioError::UnknownEvent(_)) {
            return Severity::Ignorable;
        }
        let fatal = matches!(
            self,
            TwilioError::BeforeStart(_)
                | TwilioError::DuplicateStart
                | TwilioError::UnsupportedFormat { .. }
                | TwilioError::InvalidSid(_)
                | TwilioError::Missing("start")
                | TwilioError::NotStarted
        );
        if fatal { Severity::Fatal } else { Severity::Skip }
    }
}

impl From<TwilioError> for CarrierError {
    fn from(e: TwilioError) -> Self {
        let code = if matches!(e, TwilioError::UnsupportedFormat { .. }) { close::UNSUPPORTED } else { close::POLICY };
        CarrierError::new(e.code(), e.severity(), e.to_string()).with_close_code(code)
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "streamSid", borrow, default, deserialize_with = "opt_cow")]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    media: Option<RawMedia<'a>>,
    #[serde(borrow, default)]
    start: Option<RawStart<'a>>,
    #[serde(borrow, default)]
    dtmf: Option<RawDtmf<'a>>,
    #[serde(borrow, default)]
    mark: Option<RawMark<'a>>,
}

#[derive(Deserialize)]
struct RawMedia<'a> {
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    track: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: Num,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    payload: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawStart<'a> {
    #[serde(rename = "streamSid", borrow, default, deserialize_with = "opt_cow")]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(rename = "accountSid", default)]
    account_sid: Option<String>,
    #[serde(rename = "callSid", default)]
    call_sid: Option<String>,
    #[serde(rename = "customParameters", default)]
    custom_parameters: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "mediaFormat", default)]
    media_format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct RawFormat {
    #[serde(default)]
    encoding: Option<String>,
    #[serde(rename = "sampleRate", default)]
    sample_rate: Num,
    #[serde(default)]
    channels: Num,
}

#[derive(Deserialize)]
struct RawDtmf<'a> {
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    digit: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawMark<'a> {
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    name: Option<Cow<'a, str>>,
}

/// Limits the codec enforces on inbound messages.
#[derive(Debug, Clone, Copy)]
pub struct TwilioLimits {
    /// Largest decoded `media` payload accepted, in bytes (µ-law samples).
    pub max_payload_bytes: usize,
}

impl Default for TwilioLimits {
    fn default() -> Self {
        // 1 s of audio: Twilio sends 160 bytes (20 ms) per message.
        Self { max_payload_bytes: 8000 }
    }
}

/// Scratch samples allocated up front: one 20 ms frame (what Twilio sends).
const INITIAL_SCRATCH: usize = 160;

fn valid_sid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Codec state for one Twilio media stream.
#[derive(Debug)]
pub struct TwilioCodec {
    limits: TwilioLimits,
    stream_sid: Option<String>,
    ulaw: Vec<u8>,
    pcm: Vec<i16>,
    ulaw_out: Vec<u8>,
}

impl TwilioCodec {
    /// A codec with the given limits; scratch buffers are sized once here.
    pub fn new(limits: TwilioLimits) -> Self {
        Self {
            limits,
            stream_sid: None,
            // Sized for Twilio's 20 ms frames; grown (up to the limit) only if a
            // peer sends bigger payloads, so idle calls stay small.
            ulaw: vec![0; INITIAL_SCRATCH + 3],
            pcm: vec![0; INITIAL_SCRATCH],
            // One 40 ms outbound message (`playback.frames_per_message` = 2).
            ulaw_out: Vec::with_capacity(320),
        }
    }

    /// The stream id once `start` was seen.
    pub fn stream_sid(&self) -> Option<&str> {
        self.stream_sid.as_deref()
    }

    /// Decode one text message.
    pub fn decode_text(&mut self, text: &str) -> Result<CarrierEvent<'_>, TwilioError> {
        let raw: Raw<'_> = serde_json::from_str(text)?;
        match raw.event.as_ref() {
            "media" => {
                let Some(sid) = self.stream_sid.as_deref() else {
                    return Err(TwilioError::BeforeStart("media"));
                };
                if raw.stream_sid.as_deref().is_some_and(|s| s != sid) {
                    return Err(TwilioError::WrongStream);
                }
                let media = raw.media.ok_or(TwilioError::Missing("media"))?;
                if media.track.as_deref().is_some_and(|t| t != "inbound" && t != "inbound_track") {
                    return Ok(CarrierEvent::Ignored);
                }
                let payload = media.payload.ok_or(TwilioError::Missing("media.payload"))?;
                let n = decode_payload(&payload, self.limits.max_payload_bytes, &mut self.ulaw, &mut self.pcm)
                    .map_err(|e| match e {
                        PayloadError::Empty => TwilioError::EmptyPayload,
                        PayloadError::TooLarge(n) => TwilioError::PayloadTooLarge(n),
                        PayloadError::BadBase64 => TwilioError::BadBase64,
                    })?;
                g711::ulaw_decode(&self.ulaw[..n], &mut self.pcm);
                Ok(CarrierEvent::Audio(AudioIn {
                    pcm: &self.pcm[..n],
                    encoded: &self.ulaw[..n],
                    timestamp_ms: media.timestamp.0,
                }))
            }
            "mark" => {
                if self.stream_sid.is_none() {
                    return Err(TwilioError::BeforeStart("mark"));
                }
                let name = raw.mark.and_then(|m| m.name).ok_or(TwilioError::Missing("mark.name"))?;
                Ok(CarrierEvent::Mark(name.parse::<u64>().ok().map(MarkId)))
            }
            "dtmf" => {
                if self.stream_sid.is_none() {
                    return Err(TwilioError::BeforeStart("dtmf"));
                }
                let digit = raw.dtmf.and_then(|d| d.digit).ok_or(TwilioError::Missing("dtmf.digit"))?;
                let mut chars = digit.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D') => {
                        Ok(CarrierEvent::Dtmf(c))
                    }
                    _ => Err(TwilioError::BadDigit(digit.into_owned())),
                }
            }
            "start" => {
                if self.stream_sid.is_some() {
                    return Err(TwilioError::DuplicateStart);
                }
                let start = raw.start.ok_or(TwilioError::Missing("start"))?;
                let sid =
                    start.stream_sid.or(raw.stream_sid).ok_or(TwilioError::Missing("start.streamSid"))?.into_owned();
                if !valid_sid(&sid) {
                    return Err(TwilioError::InvalidSid("streamSid"));
                }
                let call_sid = start.call_sid.ok_or(TwilioError::Missing("start.callSid"))?;
                if !valid_sid(&call_sid) {
                    return Err(TwilioError::InvalidSid("callSid"));
                }
                let fmt = start.media_format.ok_or(TwilioError::Missing("start.mediaFormat"))?;
                let encoding = fmt.encoding.unwrap_or_default();
                let (rate, ch) = (fmt.sample_rate.0.unwrap_or(0), fmt.channels.0.unwrap_or(1));
                if encoding != "audio/x-mulaw" || rate != 8000 || ch != 1 {
                    return Err(TwilioError::UnsupportedFormat { encoding, sample_rate: rate, channels: ch });
                }
                let mut info = StreamInfo {
                    carrier: "twilio",
                    call_id: call_sid,
                    stream_id: sid.clone(),
                    from: String::new(),
                    to: String::new(),
                    token: None,
                    parameters: Vec::new(),
                    carrier_ids: Vec::new(),
                    format: AudioFormat::PCMU_8K,
                };
                for (k, v) in start.custom_parameters.unwrap_or_default() {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    match k.as_str() {
                        TOKEN_PARAM => info.token = Some(v),
                        FROM_PARAM => info.from = v,
                        TO_PARAM => info.to = v,
                        _ => info.parameters.push((k, v)),
                    }
                }
                if let Some(account) = start.account_sid.filter(|a| valid_sid(a)) {
                    info.carrier_ids.push(("account_sid", account));
                }
                self.stream_sid = Some(sid);
                Ok(CarrierEvent::Start(info))
            }
            "connected" => Ok(CarrierEvent::Connected),
            "stop" => Ok(CarrierEvent::Stop),
            other => Err(TwilioError::UnknownEvent(other.chars().take(32).collect())),
        }
    }

    /// Append the wire message for `cmd` to `out` (one JSON text message).
    pub fn encode_into(&mut self, cmd: &CarrierCommand<'_>, out: &mut WireOut) -> Result<(), TwilioError> {
        let sid = self.stream_sid.as_deref().ok_or(TwilioError::NotStarted)?;
        match cmd {
            CarrierCommand::Audio(pcm) => {
                self.ulaw_out.resize(pcm.len(), 0);
                g711::ulaw_encode(pcm, &mut self.ulaw_out);
                let ulaw = &self.ulaw_out;
                out.text(|b| {
                    b.extend_from_slice(br#"{"event":"media","streamSid":""#);
                    b.extend_from_slice(sid.as_bytes());
                    b.extend_from_slice(br#"","media":{"payload":""#);
                    put_base64(b, ulaw);
                    b.extend_from_slice(br#""}}"#);
                });
            }
            CarrierCommand::Mark(id) => out.text(|b| {
                use std::fmt::Write;
                b.extend_from_slice(br#"{"event":"mark","streamSid":""#);
                b.extend_from_slice(sid.as_bytes());
                let _ = write!(b, r#"","mark":{{"name":"{}"}}}}"#, id.0);
            }),
            CarrierCommand::Clear => out.text(|b| {
                b.extend_from_slice(br#"{"event":"clear","streamSid":""#);
                b.extend_from_slice(sid.as_bytes());
                b.extend_from_slice(br#""}"#);
            }),
        }
        Ok(())
    }
}

impl Carrier for TwilioCodec {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn capabilities(&self) -> Capabilities {
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

    fn decode(&mut self, _now: std::time::Instant, msg: WireIn<'_>) -> Result<CarrierEvent<'_>, CarrierError> {
        match msg {
            WireIn::Text(t) => self.decode_text(t).map_err(CarrierError::from),
            WireIn::Binary(_) => Err(TwilioError::Binary.into()),
        }
    }

    fn encode(&mut self, cmd: &CarrierCommand<'_>, out: &mut WireOut) -> Result<(), CarrierError> {
        self.encode_into(cmd, out).map_err(CarrierError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    fn started() -> TwilioCodec {
        let mut c = TwilioCodec::new(TwilioLimits::default());
        let start = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":{"a":"b"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
        match c.decode_text(start).unwrap() {
            CarrierEvent::Start(info) => {
                assert_eq!((info.call_id.as_str(), info.stream_id.as_str()), ("CA1", "MZ1"));
                assert_eq!(info.parameters, vec![("a".to_string(), "b".to_string())]);
                assert_eq!(info.carrier_id("account_sid"), Some("AC1"));
            }
            other => panic!("{other:?}"),
        }
        c
    }

    #[test]
    fn media_frame_decodes_to_pcm() {
        let mut c = started();
        let payload = B64.encode([0xFFu8, 0x00, 0x80, 0x7E]);
        let msg = format!(
            r#"{{"event":"media","sequenceNumber":"2","streamSid":"MZ1","media":{{"track":"inbound","chunk":"1","timestamp":"20","payload":"{payload}"}}}}"#
        );
        match c.decode_text(&msg).unwrap() {
            CarrierEvent::Audio(a) => {
                assert_eq!(a.pcm, &[0, -32124, 32124, -8]);
                assert_eq!(a.timestamp_ms, Some(20));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escaped_json_strings_still_decode() {
        let mut c = started();
        // "\/" is a legal JSON escape of "/" that a sender may use inside base64.
        let msg = r#"{"event":"media","streamSid":"M\u005a1","media":{"track":"inbound","payload":"\/w=="}}"#;
        match c.decode_text(msg).unwrap() {
            CarrierEvent::Audio(a) => assert_eq!(a.pcm, &[0]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_as_numbers_are_accepted_too() {
        let mut c = started();
        let msg = r#"{"event":"media","sequenceNumber":2,"streamSid":"MZ1","media":{"track":"inbound","chunk":1,"timestamp":40,"payload":"/w=="}}"#;
        assert!(matches!(c.decode_text(msg).unwrap(), CarrierEvent::Audio(AudioIn { timestamp_ms: Some(40), .. })));
    }

    #[test]
    fn outbound_messages_are_exact() {
        let mut c = started();
        let mut out = WireOut::new(16, 1024);
        let mut one = |c: &mut TwilioCodec, cmd: CarrierCommand<'_>| {
            c.encode_into(&cmd, &mut out).unwrap();
            String::from_utf8(out.pop().unwrap().data.to_vec()).unwrap()
        };
        assert_eq!(one(&mut c, CarrierCommand::Clear), r#"{"event":"clear","streamSid":"MZ1"}"#);
        assert_eq!(
            one(&mut c, CarrierCommand::Mark(MarkId(42))),
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"42"}}"#
        );
        let s = one(&mut c, CarrierCommand::Audio(&[0, 0]));
        assert_eq!(s, r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}"#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["media"]["payload"], "//8=");
        // Custom parameters we set ourselves are lifted into the stream identity.
        let mut c = TwilioCodec::new(TwilioLimits::default());
        let start = r#"{"event":"start","streamSid":"MZ2","start":{"streamSid":"MZ2","callSid":"CA2","customParameters":{"cb_token":"t0k","from":"+15550001111","to":"+15550002222"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
        let CarrierEvent::Start(info) = c.decode_text(start).unwrap() else { panic!() };
        assert_eq!(info.token.as_deref(), Some("t0k"));
        assert_eq!((info.from.as_str(), info.to.as_str()), ("+15550001111", "+15550002222"));
        assert!(info.parameters.is_empty(), "the token is not kept among the parameters");
    }

    #[test]
    fn errors_are_classified() {
        let mut c = TwilioCodec::new(TwilioLimits::default());
        assert_eq!(c.decode_text("{nope").unwrap_err().code(), "malformed_json");
        let e = c.decode_text(r#"{"event":"media","media":{"payload":"/w=="}}"#).unwrap_err();
        assert_eq!(e.code(), "before_start");
        assert!(e.is_fatal());
        let mut c = started();
        let e = c.decode_text(r#"{"event":"bogus"}"#).unwrap_err();
        assert_eq!(e.code(), "unknown_event");
        assert_eq!(e.severity(), Severity::Ignorable, "a new event type is not held against the call");
        let e = c.decode(std::time::Instant::now(), WireIn::Binary(&[1, 2])).unwrap_err();
        assert_eq!((e.code(), e.severity()), ("binary_frame", Severity::Skip));
        assert_eq!(
            c.decode_text(r#"{"event":"media","streamSid":"MZ1","media":{"payload":"!!!"}}"#).unwrap_err().code(),
            "bad_base64"
        );
        assert_eq!(
            c.decode_text(r#"{"event":"media","streamSid":"MZ2","media":{"payload":"/w=="}}"#).unwrap_err().code(),
            "wrong_stream"
        );
        let big = "A".repeat(20_000);
        let msg = format!(r#"{{"event":"media","streamSid":"MZ1","media":{{"payload":"{big}"}}}}"#);
        assert_eq!(c.decode_text(&msg).unwrap_err().code(), "payload_too_large");
    }

    #[test]
    fn start_with_wrong_format_is_fatal() {
        let mut c = TwilioCodec::new(TwilioLimits::default());
        let start = r#"{"event":"start","streamSid":"MZ1","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"encoding":"audio/x-l16","sampleRate":16000,"channels":1}}}"#;
        let e = c.decode_text(start).unwrap_err();
        assert_eq!(e.code(), "unsupported_format");
        assert!(e.is_fatal());
        assert_eq!(CarrierError::from(e).close_code(), close::UNSUPPORTED);
        let injected = r#"{"event":"start","streamSid":"MZ\"1","start":{"streamSid":"MZ\"1","callSid":"CA1","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
        assert_eq!(c.decode_text(injected).unwrap_err().code(), "invalid_sid");
    }
}
