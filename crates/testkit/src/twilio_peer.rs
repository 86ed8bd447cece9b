//! Twilio's side of the Media Streams protocol: the messages Twilio sends and
//! how Twilio reads ours. Used by the loadtest, the end-to-end tests and the
//! fuzzers to play the carrier; the server never uses it.
//!
//! Messages are written exactly in Twilio's documented shapes (PROTOCOLS §1.2),
//! including its quirks: numbers as strings, `media.track = "inbound"`,
//! `dtmf.track = "inbound_track"`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

/// A simulated Twilio stream's ids and counters.
#[derive(Debug, Clone)]
pub struct TwilioPeer {
    /// Stream id (`MZ…`).
    pub stream_sid: String,
    /// Call id (`CA…`).
    pub call_sid: String,
    /// Account id (`AC…`).
    pub account_sid: String,
    seq: u64,
    chunk: u64,
}

/// What Twilio receives from us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// Audio to play: decoded µ-law bytes.
    Media(Vec<u8>),
    /// A mark to echo once the audio before it has played.
    Mark(String),
    /// Drop all queued audio and echo all pending marks.
    Clear,
}

/// Why a server message was rejected (what Twilio would report as 31951/31950).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    /// Not JSON or wrong shape.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// Wrong or missing streamSid.
    #[error("wrong streamSid {0:?}")]
    WrongStream(String),
    /// An event Twilio does not accept from us.
    #[error("unsupported event {0:?}")]
    Unsupported(String),
}

#[derive(Deserialize)]
struct RawServer {
    event: String,
    #[serde(rename = "streamSid")]
    stream_sid: Option<String>,
    media: Option<RawMedia>,
    mark: Option<RawMark>,
}

#[derive(Deserialize)]
struct RawMedia {
    payload: String,
}

#[derive(Deserialize)]
struct RawMark {
    name: String,
}

impl TwilioPeer {
    /// A peer with ids derived from `n` (unique per simulated call).
    pub fn new(n: u64) -> Self {
        Self {
            stream_sid: format!("MZ{n:032x}"),
            call_sid: format!("CA{n:032x}"),
            account_sid: "AC00000000000000000000000000000000".into(),
            seq: 0,
            chunk: 0,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// `connected` (first message).
    pub fn connected(&self) -> String {
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_string()
    }

    /// `start` with custom parameters.
    pub fn start(&mut self, params: &[(&str, &str)]) -> String {
        let seq = self.next_seq();
        let params: serde_json::Map<String, serde_json::Value> =
            params.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect();
        serde_json::json!({
            "event": "start",
            "sequenceNumber": seq.to_string(),
            "streamSid": self.stream_sid,
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
            }
        })
        .to_string()
    }

    /// `media` carrying µ-law bytes, at `timestamp_ms` since the stream began.
    pub fn media(&mut self, ulaw: &[u8], timestamp_ms: u64) -> String {
        let mut b64 = String::with_capacity(ulaw.len() * 4 / 3 + 4);
        B64.encode_string(ulaw, &mut b64);
        let mut out = Vec::with_capacity(200 + b64.len());
        self.media_b64_into(&b64, timestamp_ms, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// `media` whose payload is already base64 (`b64`), appended to `out`
    /// without allocating: the load generator's per-frame path.
    pub fn media_b64_into(&mut self, b64: &str, timestamp_ms: u64, out: &mut Vec<u8>) {
        let seq = self.next_seq();
        self.chunk += 1;
        let keys = MediaKeys { seq: "sequenceNumber", stream: "streamSid" };
        media_json(out, keys, seq, &self.stream_sid, self.chunk, timestamp_ms, b64);
    }

    /// `dtmf` for one key.
    pub fn dtmf(&mut self, digit: char) -> String {
        let seq = self.next_seq();
        format!(
            r#"{{"event":"dtmf","streamSid":"{}","sequenceNumber":"{}","dtmf":{{"track":"inbound_track","digit":"{}"}}}}"#,
            self.stream_sid, seq, digit
        )
    }

    /// `mark` echo.
    pub fn mark(&mut self, name: &str) -> String {
        let seq = self.next_seq();
        serde_json::json!({"event": "mark", "sequenceNumber": seq.to_string(), "streamSid": self.stream_sid, "mark": {"name": name}})
            .to_string()
    }

    /// `stop`.
    pub fn stop(&mut self) -> String {
        let seq = self.next_seq();
        serde_json::json!({"event": "stop", "sequenceNumber": seq.to_string(), "streamSid": self.stream_sid,
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
        .to_string()
    }

    /// Read a message from the server as Twilio would.
    pub fn parse(&self, text: &str) -> Result<ServerMessage, PeerError> {
        let raw: RawServer = serde_json::from_str(text).map_err(|e| PeerError::Invalid(e.to_string()))?;
        if raw.stream_sid.as_deref() != Some(self.stream_sid.as_str()) {
            return Err(PeerError::WrongStream(raw.stream_sid.unwrap_or_default()));
        }
        match raw.event.as_str() {
            "media" => {
                let m = raw.media.ok_or_else(|| PeerError::Invalid("media without media".into()))?;
                B64.decode(m.payload).map(ServerMessage::Media).map_err(|e| PeerError::Invalid(e.to_string()))
            }
            "mark" => raw
                .mark
                .map(|m| ServerMessage::Mark(m.name))
                .ok_or_else(|| PeerError::Invalid("mark without name".into())),
            "clear" => Ok(ServerMessage::Clear),
            other => Err(PeerError::Unsupported(other.to_string())),
        }
    }
}

/// The top-level key names of a carrier's `media` message.
#[derive(Clone, Copy)]
pub(crate) struct MediaKeys {
    /// The sequence number's key.
    pub seq: &'static str,
    /// The stream id's key.
    pub stream: &'static str,
}

/// A `media` message in the shape Twilio and Telnyx share (numbers as
/// strings, `media.track/chunk/timestamp/payload`), appended to `out`.
pub(crate) fn media_json(out: &mut Vec<u8>, keys: MediaKeys, seq: u64, stream: &str, chunk: u64, ts: u64, b64: &str) {
    let mut n = itoa::Buffer::new();
    let mut put = |parts: &[&[u8]]| parts.iter().for_each(|p| out.extend_from_slice(p));
    put(&[br#"{"event":"media",""#, keys.seq.as_bytes(), br#"":""#, n.format(seq).as_bytes()]);
    put(&[br#"",""#, keys.stream.as_bytes(), br#"":""#, stream.as_bytes()]);
    put(&[br#"","media":{"track":"inbound","chunk":""#, n.format(chunk).as_bytes()]);
    put(&[br#"","timestamp":""#, n.format(ts).as_bytes(), br#"","payload":""#, b64.as_bytes(), br#""}}"#]);
}

/// Twilio's playback of what we send: audio plays at real time, a mark is
/// echoed when the audio queued before it has finished, and `clear` drops the
/// queue and echoes every pending mark at once (PROTOCOLS §1.5).
#[derive(Debug, Default, Clone)]
pub struct PlayoutModel {
    /// Milliseconds at which the queue runs dry, on the peer's clock.
    drain_at_ms: f64,
    /// Pending marks with the playout time at which they fall due.
    marks: std::collections::VecDeque<(String, f64)>,
}

impl PlayoutModel {
    /// Audio arrived at `now_ms`: queue it. Returns by how many ms the queue
    /// had run dry before it (an underrun), 0 if it was still playing.
    pub fn audio(&mut self, now_ms: f64, samples: usize) -> f64 {
        let dur = samples as f64 / 8.0;
        let gap = if self.drain_at_ms < now_ms { now_ms - self.drain_at_ms } else { 0.0 };
        let start = self.drain_at_ms.max(now_ms);
        self.drain_at_ms = start + dur;
        gap
    }

    /// A mark arrived: it falls due when the audio now queued has played.
    pub fn mark(&mut self, now_ms: f64, name: String) {
        let due = self.drain_at_ms.max(now_ms);
        self.marks.push_back((name, due));
    }

    /// Marks due by `now_ms` (to echo now), in order.
    pub fn due_marks(&mut self, now_ms: f64) -> Vec<String> {
        let mut out = Vec::new();
        while self.marks.front().is_some_and(|(_, due)| *due <= now_ms) {
            out.push(self.marks.pop_front().expect("front").0);
        }
        out
    }

    /// When the next pending mark falls due.
    pub fn next_mark_due(&self) -> Option<f64> {
        self.marks.front().map(|(_, d)| *d)
    }

    /// `clear` at `now_ms`: drop queued audio, return every pending mark.
    pub fn clear(&mut self, now_ms: f64) -> Vec<String> {
        self.drain_at_ms = self.drain_at_ms.min(now_ms);
        self.marks.drain(..).map(|(n, _)| n).collect()
    }

    /// Whether audio is playing at `now_ms`.
    pub fn playing(&self, now_ms: f64) -> bool {
        self.drain_at_ms > now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
    use callbridge::carrier::{CarrierCommand, CarrierEvent, WireOut};

    #[test]
    fn peer_messages_decode_in_the_server_codec_and_back() {
        let mut peer = TwilioPeer::new(7);
        let mut codec = TwilioCodec::new(TwilioLimits::default());
        assert_eq!(codec.decode_text(&peer.connected()).unwrap(), CarrierEvent::Connected);
        match codec.decode_text(&peer.start(&[("k", "v")])).unwrap() {
            CarrierEvent::Start(i) => {
                assert_eq!(i.call_id, peer.call_sid);
                assert_eq!(i.parameters, vec![("k".to_string(), "v".to_string())]);
            }
            e => panic!("{e:?}"),
        }
        assert!(
            matches!(codec.decode_text(&peer.media(&[0xFF; 160], 20)).unwrap(), CarrierEvent::Audio(a) if a.pcm.len() == 160)
        );
        assert_eq!(codec.decode_text(&peer.dtmf('5')).unwrap(), CarrierEvent::Dtmf('5'));
        assert_eq!(codec.decode_text(&peer.stop()).unwrap(), CarrierEvent::Stop);
        let mut out = WireOut::new(8, 1024);
        let mut text = |codec: &mut TwilioCodec, cmd: CarrierCommand<'_>| {
            codec.encode_into(&cmd, &mut out).unwrap();
            String::from_utf8(out.pop().unwrap().data.to_vec()).unwrap()
        };
        let m = text(&mut codec, CarrierCommand::Audio(&[0; 160]));
        assert_eq!(peer.parse(&m).unwrap(), ServerMessage::Media(vec![0xFF; 160]));
        let c = text(&mut codec, CarrierCommand::Clear);
        assert_eq!(peer.parse(&c).unwrap(), ServerMessage::Clear);
        assert!(matches!(TwilioPeer::new(8).parse(&c), Err(PeerError::WrongStream(_))));
    }

    #[test]
    fn playout_echoes_marks_after_audio_and_all_on_clear() {
        let mut p = PlayoutModel::default();
        assert_eq!(p.audio(0.0, 160), 0.0);
        assert_eq!(p.audio(0.0, 160), 0.0);
        p.mark(0.0, "a".into());
        p.audio(0.0, 160);
        p.mark(0.0, "b".into());
        assert!(p.due_marks(39.0).is_empty());
        assert_eq!(p.due_marks(40.0), vec!["a".to_string()]);
        assert_eq!(p.clear(45.0), vec!["b".to_string()]);
        assert!(!p.playing(45.0));
        // Audio arriving after the queue ran dry is an underrun of that gap.
        assert_eq!(p.audio(100.0, 160), 55.0);
    }
}
