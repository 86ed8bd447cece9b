//! The browser's WebRTC call as a carrier codec: Opus at 48 kHz and RFC 4733
//! telephone-events, sans-IO.
//!
//! The WebRTC shell (`runtime::webrtc`) owns the peer connection (ICE, DTLS,
//! SRTP, RTP); it hands this codec what arrived in a small framing of its own,
//! so the codec is tested without a socket:
//! - one text message first, [`StartMessage`] as JSON: the session's ids, who
//!   calls whom, the single-use token the signalling request was given, and
//!   whether telephone-events were negotiated;
//! - then binary messages `[kind][RTP timestamp, u32 BE][payload]`, `kind`
//!   [`KIND_OPUS`] (an Opus packet) or [`KIND_DTMF`] (a telephone-event).
//!
//! Outbound, `Audio` is cut into 20 ms frames and each becomes one Opus
//! packet, one binary message `[KIND_OPUS][packet]`; the shell puts it in an
//! RTP packet. A tail shorter than 20 ms waits for the next `Audio`.
//!
//! The call's audio rate is chosen at construction (`webrtc.audio_rate`,
//! 16 kHz by default): libopus decodes to it and encodes from it directly,
//! so no 48 kHz leg is resampled. RTP timestamps stay on Opus's 48 kHz
//! clock whatever the rate ([`RTP_FRAME`] per 20 ms). The default is
//! measured (BENCHMARKS.md §9): a frame in and out of a call costs ≈ 1.6×
//! as much at 48 kHz, and the engines take 8–24 kHz anyway.
//!
//! The browser has no buffer of ours to clear: the capabilities say
//! `far_end_buffer: false`, so the session keeps one frame of lead and a
//! barge-in simply stops sending ("heard" is "sent minus the lead"). `Clear`
//! drops the held tail; marks are never asked for.
//!
//! Invariants: no allocation per frame (scratch buffers sized at
//! construction); a lost packet (an RTP timestamp gap of up to
//! [`MAX_CONCEALED_FRAMES`] frames) is concealed by Opus's PLC so the
//! caller's timeline stays whole; a packet older than the last is dropped; a
//! key press is reported once however many times RFC 4733 repeats it.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};
use serde::{Deserialize, Serialize};

use super::{
    AudioEncoding, AudioFormat, AudioIn, Capabilities, Carrier, CarrierCommand, CarrierError, CarrierEvent, Severity,
    StreamInfo, WireIn, WireOut, close,
};

/// Carrier label.
pub const NAME: &str = "webrtc";
/// Opus's RTP clock.
pub const RTP_RATE: u32 = 48_000;
/// RTP timestamp units per 20 ms packet.
pub const RTP_FRAME: u32 = 960;
/// The call's audio rate unless configured (`webrtc.audio_rate`).
pub const DEFAULT_RATE: u32 = 16_000;
/// Binary message kind: an Opus packet.
pub const KIND_OPUS: u8 = 1;
/// Binary message kind: an RFC 4733 telephone-event payload.
pub const KIND_DTMF: u8 = 2;
/// Largest gap (in 20 ms frames) filled with packet-loss concealment.
pub const MAX_CONCEALED_FRAMES: u32 = 5;
/// Longest Opus packet duration (120 ms) in samples: the decode buffer.
const MAX_PACKET_SAMPLES: usize = 5760;
/// Room for one encoded 20 ms packet (RFC 6716 caps a frame at 1275 bytes).
const MAX_PACKET_BYTES: usize = 1275;

/// The shell's first message: what signalling learnt about the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartMessage {
    /// Always `"start"`.
    pub event: String,
    /// Our WebRTC session id (the carrier's call id).
    pub session: String,
    /// Who calls (the page's label, e.g. `browser`).
    pub from: String,
    /// The number called (empty: the embedded default).
    pub to: String,
    /// The single-use token signalling issued.
    pub token: Option<String>,
    /// Telephone-events were negotiated.
    pub dtmf: bool,
}

impl StartMessage {
    /// A start for `session`.
    pub fn new(session: &str, from: &str, to: &str, token: Option<String>, dtmf: bool) -> Self {
        Self { event: "start".into(), session: session.into(), from: from.into(), to: to.into(), token, dtmf }
    }
}

/// Errors decoding the shell's messages.
#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    /// The start message is not what the shell sends.
    #[error("malformed start message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Media before the start message.
    #[error("media before start")]
    BeforeStart,
    /// A second start.
    #[error("duplicate start")]
    DuplicateStart,
    /// A binary message too short for its header, or of an unknown kind.
    #[error("bad media message ({0})")]
    BadMessage(&'static str),
    /// libopus refused a packet or a frame.
    #[error("opus: {0}")]
    Opus(#[from] audiopus::Error),
}

impl From<WebRtcError> for CarrierError {
    fn from(e: WebRtcError) -> Self {
        let (code, severity) = match &e {
            WebRtcError::Malformed(_) => ("malformed_start", Severity::Fatal),
            WebRtcError::BeforeStart => ("media_before_start", Severity::Fatal),
            WebRtcError::DuplicateStart => ("duplicate_start", Severity::Skip),
            WebRtcError::BadMessage(_) => ("bad_media", Severity::Skip),
            WebRtcError::Opus(_) => ("bad_opus", Severity::Skip),
        };
        let err = CarrierError::new(code, severity, e.to_string());
        if severity == Severity::Fatal { err.with_close_code(close::UNSUPPORTED) } else { err }
    }
}

/// The codec of one browser call.
pub struct WebRtcCodec {
    /// PCM rate in and out (8, 12, 16, 24 or 48 kHz).
    rate: u32,
    /// Samples per 20 ms at `rate`.
    frame: usize,
    started: bool,
    dtmf: bool,
    decoder: Decoder,
    encoder: Encoder,
    /// Decoded caller audio (concealed frames first, then the packet).
    pcm: Box<[i16]>,
    /// The last packet's bytes (for engines that take Opus as is).
    raw: Vec<u8>,
    /// Outbound samples not yet a whole 20 ms frame.
    tail: Vec<i16>,
    /// RTP timestamp expected next (None before the first packet).
    next_ts: Option<u32>,
    /// RTP timestamp of the last telephone-event reported.
    last_dtmf: Option<u32>,
}

impl std::fmt::Debug for WebRtcCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcCodec").field("started", &self.started).field("next_ts", &self.next_ts).finish()
    }
}

impl WebRtcCodec {
    /// A codec with its Opus decoder and encoder at `rate` (mono, VoIP
    /// tuning, in-band FEC on). `rate` must be one Opus takes: 8, 12, 16, 24
    /// or 48 kHz.
    pub fn new(rate: u32) -> Result<Self, audiopus::Error> {
        let sr = SampleRate::try_from(rate as i32)?;
        let decoder = Decoder::new(sr, Channels::Mono)?;
        let mut encoder = Encoder::new(sr, Channels::Mono, Application::Voip)?;
        encoder.set_inband_fec(true)?;
        encoder.set_packet_loss_perc(5)?;
        Ok(Self {
            rate,
            frame: rate as usize / 50,
            started: false,
            dtmf: false,
            decoder,
            encoder,
            pcm: vec![0; RTP_FRAME as usize * MAX_CONCEALED_FRAMES as usize + MAX_PACKET_SAMPLES].into_boxed_slice(),
            raw: Vec::with_capacity(MAX_PACKET_BYTES * 2),
            tail: Vec::with_capacity(rate as usize / 50),
            next_ts: None,
            last_dtmf: None,
        })
    }

    /// Set the encoder's complexity (0–10: CPU for quality; see
    /// `webrtc.opus_complexity`).
    pub fn with_complexity(mut self, complexity: u8) -> Result<Self, audiopus::Error> {
        self.encoder.set_complexity(complexity)?;
        Ok(self)
    }

    /// Set the agent voice's bitrate (bit/s).
    pub fn with_bitrate(mut self, bps: i32) -> Result<Self, audiopus::Error> {
        self.encoder.set_bitrate(audiopus::Bitrate::BitsPerSecond(bps))?;
        Ok(self)
    }

    fn start(&mut self, text: &str) -> Result<CarrierEvent<'static>, WebRtcError> {
        let m: StartMessage = serde_json::from_str(text)?;
        if m.event != "start" {
            return Err(WebRtcError::BadMessage("text other than start"));
        }
        if self.started {
            return Err(WebRtcError::DuplicateStart);
        }
        self.started = true;
        self.dtmf = m.dtmf;
        Ok(CarrierEvent::Start(StreamInfo {
            carrier: NAME,
            call_id: m.session.clone(),
            stream_id: m.session,
            from: m.from,
            to: m.to,
            token: m.token,
            parameters: Vec::new(),
            carrier_ids: Vec::new(),
            format: AudioFormat { encoding: AudioEncoding::Opus, rate: self.rate },
        }))
    }

    fn media(&mut self, data: &[u8]) -> Result<CarrierEvent<'_>, WebRtcError> {
        if !self.started {
            return Err(WebRtcError::BeforeStart);
        }
        let [kind, a, b, c, d, payload @ ..] = data else { return Err(WebRtcError::BadMessage("short")) };
        let ts = u32::from_be_bytes([*a, *b, *c, *d]);
        match *kind {
            KIND_OPUS => self.opus(ts, payload),
            KIND_DTMF => Ok(self.telephone_event(ts, payload)),
            _ => Err(WebRtcError::BadMessage("unknown kind")),
        }
    }

    fn opus(&mut self, ts: u32, payload: &[u8]) -> Result<CarrierEvent<'_>, WebRtcError> {
        let mut filled = 0usize;
        if let Some(expected) = self.next_ts {
            let ahead = ts.wrapping_sub(expected);
            if ahead > u32::MAX / 2 {
                // Older than what we already played out: too late to use.
                return Ok(CarrierEvent::Ignored);
            }
            let lost = ahead / RTP_FRAME;
            if lost > 0 && lost <= MAX_CONCEALED_FRAMES {
                for _ in 0..lost {
                    let out = &mut self.pcm[filled..filled + self.frame];
                    filled += self.decoder.decode(None, out.try_into()?, false)?;
                }
            }
        }
        if payload.is_empty() {
            // An empty payload is a DTX gap marker: nothing to play.
            return Ok(CarrierEvent::Ignored);
        }
        let packet: audiopus::packet::Packet<'_> = payload.try_into()?;
        let out = &mut self.pcm[filled..filled + MAX_PACKET_SAMPLES];
        let n = self.decoder.decode(Some(packet), out.try_into()?, false)?;
        filled += n;
        self.next_ts = Some(ts.wrapping_add(n as u32 * (RTP_RATE / self.rate)));
        self.raw.clear();
        self.raw.extend_from_slice(payload);
        Ok(CarrierEvent::Audio(AudioIn { pcm: &self.pcm[..filled], encoded: &self.raw, timestamp_ms: None }))
    }

    /// RFC 4733 §2.3: `event(8) E|R|volume(8) duration(16)`; all packets of
    /// one key press share the RTP timestamp.
    fn telephone_event(&mut self, ts: u32, payload: &[u8]) -> CarrierEvent<'static> {
        let Some(&event) = payload.first() else { return CarrierEvent::Ignored };
        if self.last_dtmf == Some(ts) {
            return CarrierEvent::Ignored;
        }
        let key = match event {
            0..=9 => (b'0' + event) as char,
            10 => '*',
            11 => '#',
            12..=15 => (b'A' + event - 12) as char,
            _ => return CarrierEvent::Ignored,
        };
        self.last_dtmf = Some(ts);
        CarrierEvent::Dtmf(key)
    }

    fn encode_audio(&mut self, mut pcm: &[i16], out: &mut WireOut) -> Result<(), WebRtcError> {
        if !self.tail.is_empty() {
            let need = self.frame - self.tail.len();
            let take = need.min(pcm.len());
            self.tail.extend_from_slice(&pcm[..take]);
            pcm = &pcm[take..];
            if self.tail.len() < self.frame {
                return Ok(());
            }
            let frame = std::mem::take(&mut self.tail);
            let r = self.encode_frame(&frame, out);
            self.tail = frame;
            self.tail.clear();
            r?;
        }
        let mut frames = pcm.chunks_exact(self.frame);
        for frame in &mut frames {
            self.encode_frame(frame, out)?;
        }
        self.tail.extend_from_slice(frames.remainder());
        Ok(())
    }

    fn encode_frame(&mut self, frame: &[i16], out: &mut WireOut) -> Result<(), WebRtcError> {
        let mut result = Ok(());
        let encoder = &self.encoder;
        out.binary(|b| {
            b.extend_from_slice(&[KIND_OPUS]);
            let at = b.len();
            b.resize(at + MAX_PACKET_BYTES, 0);
            match encoder.encode(frame, &mut b[at..]) {
                Ok(n) => b.truncate(at + n),
                Err(e) => {
                    b.truncate(at);
                    result = Err(e);
                }
            }
        });
        result.map_err(WebRtcError::from)
    }
}

impl Carrier for WebRtcCodec {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            format: AudioFormat { encoding: AudioEncoding::Opus, rate: self.rate },
            far_end_buffer: false,
            clear: false,
            marks: false,
            dtmf: self.dtmf,
            frames_per_message: Some(1),
            stream_ends_on_transfer: false,
        }
    }

    fn decode(&mut self, _now: std::time::Instant, msg: WireIn<'_>) -> Result<CarrierEvent<'_>, CarrierError> {
        match msg {
            WireIn::Text(t) => self.start(t).map_err(CarrierError::from),
            WireIn::Binary(b) => self.media(b).map_err(CarrierError::from),
        }
    }

    fn encode(&mut self, cmd: &CarrierCommand<'_>, out: &mut WireOut) -> Result<(), CarrierError> {
        match cmd {
            CarrierCommand::Audio(pcm) => self.encode_audio(pcm, out).map_err(CarrierError::from),
            CarrierCommand::Clear => {
                self.tail.clear();
                Ok(())
            }
            CarrierCommand::Mark(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
