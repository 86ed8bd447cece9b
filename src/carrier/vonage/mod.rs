//! Vonage Voice API WebSocket codec (NCCO `connect` to a `websocket`
//! endpoint), PROTOCOLS §4.2.
//!
//! Vonage is the WebSocket client. Its first message is text,
//! `{"event":"websocket:connected","content-type":"audio/l16;rate=16000",…}`
//! carrying the headers our NCCO set (call id, from, to, the single-use token);
//! after that audio flows both ways as **binary** messages of raw 16-bit
//! little-endian PCM, exactly 20 ms each (640 bytes at 16 kHz, 320 at 8 kHz).
//! A binary message of another size is an error (counted and skipped); audio
//! before `websocket:connected` is fatal. Control is text: we send
//! `{"action":"clear"}` (answered `websocket:cleared`) and
//! `{"action":"notify","payload":{"mark":"<id>"}}`, which Vonage returns as
//! `websocket:notify` when playback reaches it — our mark. DTMF arrives as
//! `websocket:dtmf`. Vonage buffers what we send and plays it in real time.
//! Closing the socket does not end the call: the call is hung up through the
//! Voice API (`src/api/vonage`).

pub mod jwt;

use serde::Deserialize;

use super::{
    AudioEncoding, AudioFormat, AudioIn, Capabilities, Carrier, CarrierCommand, CarrierError, CarrierEvent, Severity,
    StreamInfo, WireIn, WireOut, close,
};
use crate::ids::MarkId;

/// The NCCO header carrying the per-call stream token.
pub const TOKEN_HEADER: &str = "cb_token";
/// The NCCO header carrying Vonage's call uuid.
pub const CALL_HEADER: &str = "call_uuid";
/// The NCCO header carrying the caller's number.
pub const FROM_HEADER: &str = "from";
/// The NCCO header carrying the called number.
pub const TO_HEADER: &str = "to";

/// Errors decoding or encoding Vonage messages.
#[derive(Debug, thiserror::Error)]
pub enum VonageError {
    /// Text that is not JSON of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// An `event` we do not know.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// Audio or control before `websocket:connected`.
    #[error("{0} before websocket:connected")]
    BeforeStart(&'static str),
    /// A second `websocket:connected`.
    #[error("duplicate websocket:connected")]
    DuplicateStart,
    /// A content type other than 16-bit linear PCM at 8 or 16 kHz.
    #[error("unsupported content-type {0:?} (need audio/l16;rate=8000 or 16000)")]
    UnsupportedFormat(String),
    /// A header value we put in the NCCO that came back unusable.
    #[error("invalid {0}")]
    InvalidId(&'static str),
    /// A binary message that is not exactly one 20 ms frame.
    #[error("binary message of {got} bytes (a 20 ms frame is {want})")]
    FrameSize {
        /// received
        got: usize,
        /// expected
        want: usize,
    },
    /// A `websocket:dtmf` digit that is not one key.
    #[error("invalid dtmf digit {0:?}")]
    BadDigit(String),
    /// We were asked to send before the stream started.
    #[error("cannot send before websocket:connected")]
    NotStarted,
}

impl VonageError {
    /// Stable code for metrics labels and close reasons.
    pub fn code(&self) -> &'static str {
        match self {
            VonageError::Malformed(_) => "malformed_json",
            VonageError::UnknownEvent(_) => "unknown_event",
            VonageError::BeforeStart(_) => "before_start",
            VonageError::DuplicateStart => "duplicate_start",
            VonageError::UnsupportedFormat(_) => "unsupported_format",
            VonageError::InvalidId(_) => "invalid_id",
            VonageError::FrameSize { .. } => "bad_frame_size",
            VonageError::BadDigit(_) => "bad_dtmf",
            VonageError::NotStarted => "not_started",
        }
    }

    /// How much it matters.
    pub fn severity(&self) -> Severity {
        match self {
            VonageError::UnknownEvent(_) => Severity::Ignorable,
            VonageError::BeforeStart(_)
            | VonageError::DuplicateStart
            | VonageError::UnsupportedFormat(_)
            | VonageError::InvalidId(_)
            | VonageError::NotStarted => Severity::Fatal,
            _ => Severity::Skip,
        }
    }
}

impl From<VonageError> for CarrierError {
    fn from(e: VonageError) -> Self {
        let code = if matches!(e, VonageError::UnsupportedFormat(_)) { close::UNSUPPORTED } else { close::POLICY };
        CarrierError::new(e.code(), e.severity(), e.to_string()).with_close_code(code)
    }
}

#[derive(Deserialize)]
struct Raw {
    event: String,
    #[serde(rename = "content-type", default)]
    content_type: Option<String>,
    #[serde(default)]
    digit: Option<serde_json::Value>,
    #[serde(default)]
    dtmf: Option<RawDtmf>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    headers: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawDtmf {
    #[serde(default)]
    digits: Option<String>,
}

/// The content type the NCCO asks for at `rate`.
pub fn content_type(rate: u32) -> String {
    format!("audio/l16;rate={rate}")
}

/// The rate in an `audio/l16;rate=N` content type (8 or 16 kHz only).
pub fn parse_content_type(ct: &str) -> Option<u32> {
    let mut parts = ct.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("audio/l16") {
        return None;
    }
    let rate = parts.find_map(|p| p.strip_prefix("rate="))?.parse().ok()?;
    matches!(rate, 8000 | 16000).then_some(rate)
}

/// Whether `s` is a Vonage uuid safe to put in a REST path.
pub fn valid_uuid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Codec state for one Vonage WebSocket.
#[derive(Debug)]
pub struct VonageCodec {
    rate: Option<u32>,
    pcm: Vec<i16>,
    raw: Vec<u8>,
}

impl Default for VonageCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl VonageCodec {
    /// A codec; its scratch holds one 16 kHz frame.
    pub fn new() -> Self {
        Self { rate: None, pcm: vec![0; 320], raw: vec![0; 640] }
    }

    fn frame_bytes(&self) -> Option<usize> {
        self.rate.map(|r| (r / 50) as usize * 2)
    }

    /// Decode one binary message (a 20 ms PCM frame).
    pub fn decode_binary(&mut self, data: &[u8]) -> Result<CarrierEvent<'_>, VonageError> {
        let want = self.frame_bytes().ok_or(VonageError::BeforeStart("audio"))?;
        if data.len() != want {
            return Err(VonageError::FrameSize { got: data.len(), want });
        }
        let n = want / 2;
        for (d, b) in self.pcm[..n].iter_mut().zip(data.chunks_exact(2)) {
            *d = i16::from_le_bytes([b[0], b[1]]);
        }
        self.raw[..want].copy_from_slice(data);
        Ok(CarrierEvent::Audio(AudioIn { pcm: &self.pcm[..n], encoded: &self.raw[..want], timestamp_ms: None }))
    }

    /// Decode one text message.
    pub fn decode_text(&mut self, text: &str) -> Result<CarrierEvent<'static>, VonageError> {
        let raw: Raw = serde_json::from_str(text)?;
        match raw.event.as_str() {
            "websocket:connected" => self.start(raw),
            "websocket:cleared" => {
                self.started("websocket:cleared")?;
                Ok(CarrierEvent::Ignored)
            }
            "websocket:notify" => {
                self.started("websocket:notify")?;
                let mark = raw.payload.as_ref().and_then(|p| p.get("mark")).and_then(|m| match m {
                    serde_json::Value::String(s) => s.parse().ok(),
                    v => v.as_u64(),
                });
                Ok(CarrierEvent::Mark(mark.map(MarkId)))
            }
            "websocket:dtmf" => {
                self.started("websocket:dtmf")?;
                let digit = match (&raw.digit, &raw.dtmf) {
                    (Some(serde_json::Value::String(s)), _) => s.clone(),
                    (Some(v), _) => v.to_string(),
                    (None, Some(d)) => d.digits.clone().unwrap_or_default(),
                    (None, None) => String::new(),
                };
                let mut chars = digit.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_digit() || matches!(c, '*' | '#') => Ok(CarrierEvent::Dtmf(c)),
                    _ => Err(VonageError::BadDigit(digit.chars().take(8).collect())),
                }
            }
            other => Err(VonageError::UnknownEvent(other.chars().take(32).collect())),
        }
    }

    fn started(&self, what: &'static str) -> Result<(), VonageError> {
        if self.rate.is_none() { Err(VonageError::BeforeStart(what)) } else { Ok(()) }
    }

    fn start(&mut self, raw: Raw) -> Result<CarrierEvent<'static>, VonageError> {
        if self.rate.is_some() {
            return Err(VonageError::DuplicateStart);
        }
        let ct = raw.content_type.unwrap_or_default();
        let rate = parse_content_type(&ct).ok_or_else(|| VonageError::UnsupportedFormat(ct.clone()))?;
        // Our NCCO headers: at the top level of the message, or under `headers`.
        let mut fields = raw.rest;
        if let Some(h) = raw.headers {
            fields.extend(h);
        }
        let text = |v: serde_json::Value| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        let mut info = StreamInfo {
            carrier: "vonage",
            call_id: String::new(),
            stream_id: String::new(),
            from: String::new(),
            to: String::new(),
            token: None,
            parameters: Vec::new(),
            carrier_ids: Vec::new(),
            format: AudioFormat { encoding: AudioEncoding::L16, rate },
        };
        for (k, v) in fields {
            let v = text(v);
            match k.as_str() {
                TOKEN_HEADER => info.token = Some(v),
                CALL_HEADER => info.call_id = v,
                FROM_HEADER => info.from = v,
                TO_HEADER => info.to = v,
                _ => info.parameters.push((k, v)),
            }
        }
        if info.call_id.is_empty() {
            info.call_id = crate::ids::CallId::random().to_string();
        } else if !valid_uuid(&info.call_id) {
            return Err(VonageError::InvalidId("call_uuid"));
        }
        info.stream_id = format!("ws-{}", info.call_id);
        self.rate = Some(rate);
        let n = (rate / 50) as usize;
        if self.pcm.len() < n {
            self.pcm.resize(n, 0);
            self.raw.resize(2 * n, 0);
        }
        Ok(CarrierEvent::Start(info))
    }

    /// Append the wire messages for `cmd` to `out`.
    pub fn encode_into(&mut self, cmd: &CarrierCommand<'_>, out: &mut WireOut) -> Result<(), VonageError> {
        let rate = self.rate.ok_or(VonageError::NotStarted)?;
        match cmd {
            CarrierCommand::Audio(pcm) => {
                // Exactly 20 ms per message; a short tail is padded with silence.
                let n = (rate / 50) as usize;
                for frame in pcm.chunks(n) {
                    out.binary(|b| {
                        for s in frame {
                            b.extend_from_slice(&s.to_le_bytes());
                        }
                        for _ in frame.len()..n {
                            b.extend_from_slice(&[0, 0]);
                        }
                    });
                }
            }
            CarrierCommand::Mark(id) => out.text(|b| {
                use std::fmt::Write;
                let _ = write!(b, r#"{{"action":"notify","payload":{{"mark":"{}"}}}}"#, id.0);
            }),
            CarrierCommand::Clear => out.text(|b| b.extend_from_slice(br#"{"action":"clear"}"#)),
        }
        Ok(())
    }
}

impl Carrier for VonageCodec {
    fn name(&self) -> &'static str {
        "vonage"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            format: AudioFormat { encoding: AudioEncoding::L16, rate: self.rate.unwrap_or(16000) },
            far_end_buffer: true,
            clear: true,
            marks: true,
            dtmf: true,
            frames_per_message: Some(1),
            stream_ends_on_transfer: false,
        }
    }

    fn decode(&mut self, _now: std::time::Instant, msg: WireIn<'_>) -> Result<CarrierEvent<'_>, CarrierError> {
        match msg {
            WireIn::Text(t) => self.decode_text(t).map_err(CarrierError::from),
            WireIn::Binary(b) => self.decode_binary(b).map_err(CarrierError::from),
        }
    }

    fn encode(&mut self, cmd: &CarrierCommand<'_>, out: &mut WireOut) -> Result<(), CarrierError> {
        self.encode_into(cmd, out).map_err(CarrierError::from)
    }
}

#[cfg(test)]
mod tests;
