//! Telnyx media streaming codec (Call Control `stream_url` with
//! `stream_bidirectional_mode: "rtp"`), PROTOCOLS §4.1.
//!
//! Inbound JSON text frames, snake_case: `connected`, `start` (ids at the top
//! level: `stream_id`, `sequence_number` as a string; `start.call_control_id`,
//! `from`, `to`, `client_state`, `media_format {encoding, sample_rate,
//! channels}`), `media` (`track`, `chunk`, `timestamp`, base64 codec bytes
//! without an RTP header), `dtmf`, `mark`, `error`, `stop`. Outbound: `media`
//! (`{"event":"media","media":{"payload":…}}`, 20 ms or more), `mark`, `clear`.
//!
//! Telnyx does not promise media in order. A small reorder buffer keyed by
//! `media.chunk` (falling back to `sequence_number`) holds up to
//! [`REORDER_SLOTS`] frames that arrived early, for at most [`MAX_HOLD`]; a gap
//! that is not filled by then is skipped. A frame older than what was already
//! played is late: counted (`late_frame`, ignorable) and dropped, never played
//! twice. A number more than [`RESYNC`] away from the expected one is a jump,
//! not a reordering: the stream follows it (held frames are dropped), so one
//! corrupt number cannot make every later frame "late". Held frames live in
//! slots allocated once, so a frame allocates nothing in steady state.
//!
//! The stream proves it came from our webhook with the single-use token we
//! put (base64) in the answer's `client_state`, which Telnyx returns in
//! `start.client_state`. Audio is G.711 µ-law or A-law at 8 kHz (what the
//! answer asked for; `media_format.encoding` may say `PCMU` or
//! `audio/x-mulaw`). The far end buffers what we send, honours `clear` and
//! echoes marks when playback reaches them (or when cleared).

pub mod signature;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::json::{Num, opt_cow};
use super::wire::put_base64;
use super::{
    AudioEncoding, AudioFormat, AudioIn, Capabilities, Carrier, CarrierCommand, CarrierError, CarrierEvent,
    PayloadError, Severity, StreamInfo, WireIn, WireOut, close, decode_payload,
};
use crate::audio::g711;
use crate::ids::MarkId;

/// Frames held waiting for a gap to fill.
pub const REORDER_SLOTS: usize = 4;
/// Longest a frame is held for a missing one before it.
pub const MAX_HOLD: Duration = Duration::from_millis(60);
/// A chunk number this far (1 s) from the expected one is not a reordering
/// but a jump (a restarted or corrupt numbering): the stream follows it, so one
/// bad number never mutes the caller.
pub const RESYNC: u64 = 50;

/// Errors decoding or encoding Telnyx messages.
#[derive(Debug, thiserror::Error)]
pub enum TelnyxError {
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
    /// A second `start`.
    #[error("duplicate start")]
    DuplicateStart,
    /// `start` announced a format we did not ask for.
    #[error("unsupported media format {encoding} {sample_rate} Hz {channels} ch (need PCMU or PCMA, 8000 Hz mono)")]
    UnsupportedFormat {
        /// announced encoding
        encoding: String,
        /// announced rate
        sample_rate: u64,
        /// announced channels
        channels: u64,
    },
    /// An id with characters outside `[A-Za-z0-9:_-]` or too long.
    #[error("invalid {0}")]
    InvalidId(&'static str),
    /// `media.payload` is not base64.
    #[error("media payload is not valid base64")]
    BadBase64,
    /// `media.payload` is larger than the limit.
    #[error("media payload of {0} bytes exceeds the limit")]
    PayloadTooLarge(usize),
    /// `media.payload` is empty.
    #[error("empty media payload")]
    EmptyPayload,
    /// A `dtmf.digit` that is not one key.
    #[error("invalid dtmf digit {0:?}")]
    BadDigit(String),
    /// A message for another stream.
    #[error("message for another stream_id")]
    WrongStream,
    /// A media frame older than what was already played.
    #[error("media chunk {0} arrived after later audio was played")]
    LateFrame(u64),
    /// Telnyx reported an error on the stream.
    #[error("Telnyx stream error {code}: {detail}")]
    Reported {
        /// Telnyx's code
        code: String,
        /// title and detail
        detail: String,
    },
    /// We were asked to send before the stream started.
    #[error("cannot send before start")]
    NotStarted,
    /// A binary WebSocket message (Telnyx sends JSON text only).
    #[error("binary message (Telnyx sends JSON text only)")]
    Binary,
}

impl TelnyxError {
    /// Stable code for metrics labels and close reasons.
    pub fn code(&self) -> &'static str {
        match self {
            TelnyxError::Malformed(_) => "malformed_json",
            TelnyxError::UnknownEvent(_) => "unknown_event",
            TelnyxError::Missing(_) => "missing_field",
            TelnyxError::BeforeStart(_) => "before_start",
            TelnyxError::DuplicateStart => "duplicate_start",
            TelnyxError::UnsupportedFormat { .. } => "unsupported_format",
            TelnyxError::InvalidId(_) => "invalid_id",
            TelnyxError::BadBase64 => "bad_base64",
            TelnyxError::PayloadTooLarge(_) => "payload_too_large",
            TelnyxError::EmptyPayload => "empty_payload",
            TelnyxError::BadDigit(_) => "bad_dtmf",
            TelnyxError::WrongStream => "wrong_stream",
            TelnyxError::LateFrame(_) => "late_frame",
            TelnyxError::Reported { .. } => "carrier_reported_error",
            TelnyxError::NotStarted => "not_started",
            TelnyxError::Binary => "binary_frame",
        }
    }

    /// How much it matters: a new event type or a late frame is nothing held
    /// against the call; a bad message is skipped; a broken stream is fatal.
    pub fn severity(&self) -> Severity {
        match self {
            TelnyxError::UnknownEvent(_) | TelnyxError::LateFrame(_) => Severity::Ignorable,
            TelnyxError::BeforeStart(_)
            | TelnyxError::DuplicateStart
            | TelnyxError::UnsupportedFormat { .. }
            | TelnyxError::InvalidId(_)
            | TelnyxError::Missing("start" | "start.call_control_id" | "start.media_format" | "stream_id")
            | TelnyxError::NotStarted => Severity::Fatal,
            _ => Severity::Skip,
        }
    }
}

impl From<TelnyxError> for CarrierError {
    fn from(e: TelnyxError) -> Self {
        let code = if matches!(e, TelnyxError::UnsupportedFormat { .. }) { close::UNSUPPORTED } else { close::POLICY };
        CarrierError::new(e.code(), e.severity(), e.to_string()).with_close_code(code)
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    sequence_number: Num,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    stream_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    media: Option<RawMedia<'a>>,
    #[serde(default)]
    start: Option<RawStart>,
    #[serde(borrow, default)]
    dtmf: Option<RawName<'a>>,
    #[serde(borrow, default)]
    mark: Option<RawName<'a>>,
    #[serde(default)]
    error: Option<RawError>,
    #[serde(default)]
    payload: Option<RawError>,
}

#[derive(Deserialize)]
struct RawMedia<'a> {
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    track: Option<Cow<'a, str>>,
    #[serde(default)]
    chunk: Num,
    #[serde(default)]
    timestamp: Num,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    payload: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawStart {
    #[serde(default)]
    call_control_id: Option<String>,
    #[serde(default)]
    call_session_id: Option<String>,
    #[serde(default)]
    call_leg_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    custom_parameters: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    media_format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct RawFormat {
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    sample_rate: Num,
    #[serde(default)]
    channels: Num,
}

#[derive(Deserialize)]
struct RawName<'a> {
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    digit: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// Limits the codec enforces on inbound messages.
#[derive(Debug, Clone, Copy)]
pub struct TelnyxLimits {
    /// Largest decoded `media` payload accepted, in bytes.
    pub max_payload_bytes: usize,
}

impl Default for TelnyxLimits {
    fn default() -> Self {
        Self { max_payload_bytes: 8000 }
    }
}

/// The client-state prefix of our stream tokens (so a `client_state` someone
/// else set is not mistaken for one).
pub const CLIENT_STATE_PREFIX: &str = "cb1:";

/// The answer's `client_state` carrying `token` (Telnyx wants base64).
pub fn client_state(token: &str) -> String {
    B64.encode(format!("{CLIENT_STATE_PREFIX}{token}"))
}

/// The token in a `client_state` we set, if it is one.
pub fn token_from_client_state(state: &str) -> Option<String> {
    let raw = B64.decode(state.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    s.strip_prefix(CLIENT_STATE_PREFIX).map(str::to_string)
}

/// Whether `s` is a Telnyx id safe to put in a REST path.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// One held frame.
#[derive(Debug)]
struct Held {
    chunk: u64,
    at: Instant,
    len: usize,
    timestamp_ms: Option<u64>,
    bytes: Vec<u8>,
}

/// Codec state for one Telnyx media stream.
#[derive(Debug)]
pub struct TelnyxCodec {
    limits: TelnyxLimits,
    stream_id: Option<String>,
    encoding: AudioEncoding,
    /// The chunk expected next (`None` until the first media frame).
    next: Option<u64>,
    /// Frames that came early, by chunk.
    held: Vec<Held>,
    /// How many at the front of `held` are in order now, to be released
    /// through `poll_event`.
    ready: usize,
    /// Free slots.
    spare: Vec<Held>,
    /// A `stop` to report after the held frames.
    stop_after_release: bool,
    g711: Vec<u8>,
    pcm: Vec<i16>,
    g711_out: Vec<u8>,
    late: u64,
    skipped: u64,
    resyncs: u64,
}

impl TelnyxCodec {
    /// A codec with the given limits; scratch and reorder slots are sized here.
    pub fn new(limits: TelnyxLimits) -> Self {
        let now = Instant::now();
        Self {
            limits,
            stream_id: None,
            encoding: AudioEncoding::Pcmu,
            next: None,
            held: Vec::with_capacity(REORDER_SLOTS),
            ready: 0,
            spare: (0..REORDER_SLOTS)
                .map(|_| Held { chunk: 0, at: now, len: 0, timestamp_ms: None, bytes: vec![0; 640] })
                .collect(),
            stop_after_release: false,
            g711: vec![0; 643],
            pcm: vec![0; 640],
            g711_out: Vec::with_capacity(320),
            late: 0,
            skipped: 0,
            resyncs: 0,
        }
    }

    /// The stream id once `start` was seen.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// Late frames dropped so far.
    pub fn late_frames(&self) -> u64 {
        self.late
    }

    /// Gaps skipped (a frame that never came) so far.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped
    }

    /// Jumps in the numbering followed so far.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    fn decode_g711(&mut self, n: usize) {
        match self.encoding {
            AudioEncoding::Pcma => g711::alaw_decode(&self.g711[..n], &mut self.pcm),
            _ => g711::ulaw_decode(&self.g711[..n], &mut self.pcm),
        };
    }

    /// Decode one text message at `now`.
    pub fn decode_text(&mut self, now: Instant, text: &str) -> Result<CarrierEvent<'_>, TelnyxError> {
        let raw: Raw<'_> = serde_json::from_str(text)?;
        if raw.event != "start"
            && let (Some(mine), Some(theirs)) = (self.stream_id.as_deref(), raw.stream_id.as_deref())
            && mine != theirs
        {
            return Err(TelnyxError::WrongStream);
        }
        match raw.event.as_ref() {
            "media" => {
                if self.stream_id.is_none() {
                    return Err(TelnyxError::BeforeStart("media"));
                }
                let media = raw.media.ok_or(TelnyxError::Missing("media"))?;
                if media.track.as_deref().is_some_and(|t| t != "inbound" && t != "inbound_track") {
                    return Ok(CarrierEvent::Ignored);
                }
                let payload = media.payload.ok_or(TelnyxError::Missing("media.payload"))?;
                let n = decode_payload(&payload, self.limits.max_payload_bytes, &mut self.g711, &mut self.pcm)
                    .map_err(|e| match e {
                        PayloadError::Empty => TelnyxError::EmptyPayload,
                        PayloadError::TooLarge(n) => TelnyxError::PayloadTooLarge(n),
                        PayloadError::BadBase64 => TelnyxError::BadBase64,
                    })?;
                let timestamp_ms = media.timestamp.0;
                let Some(chunk) = media.chunk.0.or(raw.sequence_number.0) else {
                    // Nothing to order by: play as it comes.
                    self.decode_g711(n);
                    return Ok(self.audio(n, timestamp_ms));
                };
                self.order(now, chunk, n, timestamp_ms)
            }
            "mark" => {
                if self.stream_id.is_none() {
                    return Err(TelnyxError::BeforeStart("mark"));
                }
                let name = raw.mark.and_then(|m| m.name).ok_or(TelnyxError::Missing("mark.name"))?;
                Ok(CarrierEvent::Mark(name.parse::<u64>().ok().map(MarkId)))
            }
            "dtmf" => {
                if self.stream_id.is_none() {
                    return Err(TelnyxError::BeforeStart("dtmf"));
                }
                let digit = raw.dtmf.and_then(|d| d.digit).ok_or(TelnyxError::Missing("dtmf.digit"))?;
                let mut chars = digit.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D') => {
                        Ok(CarrierEvent::Dtmf(c))
                    }
                    _ => Err(TelnyxError::BadDigit(digit.chars().take(8).collect())),
                }
            }
            "start" => self.start(raw),
            "connected" => Ok(CarrierEvent::Connected),
            "stop" => {
                // Whatever is held plays before the end.
                if self.queue_all_held() {
                    self.stop_after_release = true;
                    return Ok(self.poll_event().unwrap_or(CarrierEvent::Stop));
                }
                Ok(CarrierEvent::Stop)
            }
            "error" => {
                let e = raw.error.or(raw.payload);
                let (code, detail) = match e {
                    Some(e) => (
                        match e.code {
                            Some(serde_json::Value::String(s)) => s,
                            Some(v) => v.to_string(),
                            None => String::new(),
                        },
                        format!("{} {}", e.title.unwrap_or_default(), e.detail.unwrap_or_default()),
                    ),
                    None => (String::new(), String::new()),
                };
                let detail: String = detail.trim().chars().take(200).collect();
                Err(TelnyxError::Reported { code: code.chars().take(16).collect(), detail })
            }
            other => Err(TelnyxError::UnknownEvent(other.chars().take(32).collect())),
        }
    }

    fn audio(&self, n: usize, timestamp_ms: Option<u64>) -> CarrierEvent<'_> {
        CarrierEvent::Audio(AudioIn { pcm: &self.pcm[..n], encoded: &self.g711[..n], timestamp_ms })
    }

    /// Put media chunk `chunk` (its bytes in `self.g711[..n]`) in order.
    fn order(
        &mut self,
        now: Instant,
        chunk: u64,
        n: usize,
        timestamp_ms: Option<u64>,
    ) -> Result<CarrierEvent<'_>, TelnyxError> {
        let next = *self.next.get_or_insert(chunk);
        if chunk.saturating_add(RESYNC) < next || chunk > next.saturating_add(RESYNC) {
            self.resyncs += 1;
            self.skipped += self.held.len() as u64;
            self.ready = 0;
            self.spare.append(&mut self.held);
            self.next = Some(chunk.saturating_add(1));
            self.decode_g711(n);
            return Ok(self.audio(n, timestamp_ms));
        }
        if chunk < next || self.held.iter().any(|h| h.chunk == chunk) {
            self.late += 1;
            return Err(TelnyxError::LateFrame(chunk));
        }
        if chunk == next {
            self.next = Some(chunk.saturating_add(1));
            self.queue_ready();
            self.decode_g711(n);
            return Ok(self.audio(n, timestamp_ms));
        }
        // Early: hold it (the oldest held goes when the slots are full or it waited too long).
        let mut slot = self.spare.pop().unwrap_or_else(|| Held {
            chunk: 0,
            at: now,
            len: 0,
            timestamp_ms: None,
            bytes: Vec::new(),
        });
        if slot.bytes.len() < n {
            slot.bytes.resize(n, 0);
        }
        slot.bytes[..n].copy_from_slice(&self.g711[..n]);
        slot.chunk = chunk;
        slot.at = now;
        slot.len = n;
        slot.timestamp_ms = timestamp_ms;
        let pos = self.held.partition_point(|h| h.chunk < chunk);
        self.held.insert(pos, slot);
        let overdue = self.held.first().is_some_and(|h| now.saturating_duration_since(h.at) >= MAX_HOLD);
        if self.held.len() >= REORDER_SLOTS || overdue {
            self.skip_gap();
        }
        Ok(self.poll_event().unwrap_or(CarrierEvent::Ignored))
    }

    /// Give up on the gap before the first held frame: release from there on.
    fn skip_gap(&mut self) {
        if let (Some(first), Some(next)) = (self.held.first().map(|h| h.chunk), self.next) {
            self.skipped += first.saturating_sub(next);
            self.next = Some(first);
            self.queue_ready();
        }
    }

    /// Queue held frames that are now in order.
    fn queue_ready(&mut self) {
        let Some(mut next) = self.next else { return };
        while self.ready < self.held.len() && self.held[self.ready].chunk == next {
            self.ready += 1;
            next += 1;
        }
        self.next = Some(next);
    }

    /// Queue every held frame (end of stream); whether there were any.
    fn queue_all_held(&mut self) -> bool {
        self.ready = self.held.len();
        if let Some(last) = self.held.last() {
            self.next = Some(last.chunk + 1);
        }
        !self.held.is_empty()
    }

    fn start(&mut self, raw: Raw<'_>) -> Result<CarrierEvent<'static>, TelnyxError> {
        if self.stream_id.is_some() {
            return Err(TelnyxError::DuplicateStart);
        }
        let start = raw.start.ok_or(TelnyxError::Missing("start"))?;
        let stream_id = raw.stream_id.ok_or(TelnyxError::Missing("stream_id"))?.into_owned();
        if !valid_id(&stream_id) {
            return Err(TelnyxError::InvalidId("stream_id"));
        }
        let call_id = start.call_control_id.ok_or(TelnyxError::Missing("start.call_control_id"))?;
        if !valid_id(&call_id) {
            return Err(TelnyxError::InvalidId("call_control_id"));
        }
        let fmt = start.media_format.ok_or(TelnyxError::Missing("start.media_format"))?;
        let encoding = fmt.encoding.unwrap_or_default();
        let (rate, ch) = (fmt.sample_rate.0.unwrap_or(8000), fmt.channels.0.unwrap_or(1));
        let enc = match encoding.to_ascii_lowercase().as_str() {
            "pcmu" | "audio/x-mulaw" | "mulaw" => Some(AudioEncoding::Pcmu),
            "pcma" | "audio/x-alaw" | "alaw" => Some(AudioEncoding::Pcma),
            _ => None,
        };
        let Some(enc) = enc.filter(|_| rate == 8000 && ch == 1) else {
            return Err(TelnyxError::UnsupportedFormat { encoding, sample_rate: rate, channels: ch });
        };
        self.encoding = enc;
        let mut info = StreamInfo {
            carrier: "telnyx",
            call_id,
            stream_id: stream_id.clone(),
            from: start.from.unwrap_or_default(),
            to: start.to.unwrap_or_default(),
            token: start.client_state.as_deref().and_then(token_from_client_state),
            parameters: Vec::new(),
            carrier_ids: Vec::new(),
            format: AudioFormat { encoding: enc, rate: 8000 },
        };
        for (k, v) in start.custom_parameters.unwrap_or_default() {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            info.parameters.push((k, v));
        }
        for (name, id) in
            [("call_session_id", start.call_session_id), ("call_leg_id", start.call_leg_id), ("user_id", start.user_id)]
        {
            if let Some(id) = id.filter(|i| valid_id(i)) {
                info.carrier_ids.push((name, id));
            }
        }
        self.stream_id = Some(stream_id);
        Ok(CarrierEvent::Start(info))
    }

    /// Append the wire message for `cmd` to `out` (one JSON text message).
    pub fn encode_into(&mut self, cmd: &CarrierCommand<'_>, out: &mut WireOut) -> Result<(), TelnyxError> {
        if self.stream_id.is_none() {
            return Err(TelnyxError::NotStarted);
        }
        match cmd {
            CarrierCommand::Audio(pcm) => {
                self.g711_out.resize(pcm.len(), 0);
                match self.encoding {
                    AudioEncoding::Pcma => g711::alaw_encode(pcm, &mut self.g711_out),
                    _ => g711::ulaw_encode(pcm, &mut self.g711_out),
                };
                let bytes = &self.g711_out;
                out.text(|b| {
                    b.extend_from_slice(br#"{"event":"media","media":{"payload":""#);
                    put_base64(b, bytes);
                    b.extend_from_slice(br#""}}"#);
                });
            }
            CarrierCommand::Mark(id) => out.text(|b| {
                use std::fmt::Write;
                let _ = write!(b, r#"{{"event":"mark","mark":{{"name":"{}"}}}}"#, id.0);
            }),
            CarrierCommand::Clear => out.text(|b| b.extend_from_slice(br#"{"event":"clear"}"#)),
        }
        Ok(())
    }
}

impl Carrier for TelnyxCodec {
    fn name(&self) -> &'static str {
        "telnyx"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            format: AudioFormat { encoding: self.encoding, rate: 8000 },
            far_end_buffer: true,
            clear: true,
            marks: true,
            dtmf: true,
            frames_per_message: None,
            stream_ends_on_transfer: false,
        }
    }

    fn decode(&mut self, now: Instant, msg: WireIn<'_>) -> Result<CarrierEvent<'_>, CarrierError> {
        match msg {
            WireIn::Text(t) => self.decode_text(now, t).map_err(CarrierError::from),
            WireIn::Binary(_) => Err(TelnyxError::Binary.into()),
        }
    }

    fn poll_event(&mut self) -> Option<CarrierEvent<'_>> {
        if self.ready == 0 {
            if self.stop_after_release {
                self.stop_after_release = false;
                return Some(CarrierEvent::Stop);
            }
            return None;
        }
        self.ready -= 1;
        let h = self.held.remove(0);
        let n = h.len;
        if self.g711.len() < n {
            self.g711.resize(n, 0);
            self.pcm.resize(n, 0);
        }
        self.g711[..n].copy_from_slice(&h.bytes[..n]);
        let ts = h.timestamp_ms;
        self.spare.push(h);
        self.decode_g711(n);
        Some(self.audio(n, ts))
    }

    fn encode(&mut self, cmd: &CarrierCommand<'_>, out: &mut WireOut) -> Result<(), CarrierError> {
        self.encode_into(cmd, out).map_err(CarrierError::from)
    }
}

#[cfg(test)]
mod tests;
