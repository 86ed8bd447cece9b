//! Telnyx's side of media streaming (PROTOCOLS §4.1): the frames Telnyx sends
//! — snake_case, ids at the top level, numbers as strings, `client_state`
//! returned in `start` — and how Telnyx reads ours (`media` with a base64
//! payload, `mark`, `clear`, no `stream_id` needed). Used by the tests and the
//! loadtest to play the carrier; the server never uses it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::twilio_peer::{MediaKeys, media_json};
pub use crate::twilio_peer::{PeerError, ServerMessage};

/// A simulated Telnyx stream's ids and counters.
#[derive(Debug, Clone)]
pub struct TelnyxPeer {
    /// `stream_id`.
    pub stream_id: String,
    /// `call_control_id` (what Call Control commands name).
    pub call_control_id: String,
    seq: u64,
    chunk: u64,
}

#[derive(Deserialize)]
struct RawServer {
    event: String,
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

impl TelnyxPeer {
    /// Stream number `n`'s ids.
    pub fn new(n: u64) -> Self {
        Self {
            stream_id: format!("0f1e2d3c-0000-4000-8000-{n:012x}"),
            call_control_id: format!("v3:fakeTelnyxCall{n:08}"),
            seq: 0,
            chunk: 0,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// `connected`.
    pub fn connected(&self) -> String {
        r#"{"event":"connected","version":"1.0.0"}"#.to_string()
    }

    /// `start`, returning `client_state` as the answer set it, PCMU 8 kHz.
    pub fn start(&mut self, from: &str, to: &str, client_state: &str) -> String {
        let seq = self.next_seq();
        serde_json::json!({"event": "start", "sequence_number": seq.to_string(), "stream_id": self.stream_id,
            "start": {"user_id": "fake-user", "call_control_id": self.call_control_id,
                "call_session_id": format!("session-{}", self.stream_id), "from": from, "to": to,
                "client_state": client_state,
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}})
        .to_string()
    }

    /// The next `media` frame carrying `ulaw`, and its chunk number (frames
    /// may then be sent in any order).
    pub fn media(&mut self, ulaw: &[u8], timestamp_ms: u64) -> (u64, String) {
        let mut out = Vec::with_capacity(200 + ulaw.len() * 4 / 3);
        self.media_b64_into(&B64.encode(ulaw), timestamp_ms, &mut out);
        (self.chunk, String::from_utf8(out).unwrap_or_default())
    }

    /// The next `media` frame whose payload is already base64, appended to
    /// `out` without allocating (the load generator's per-frame path).
    pub fn media_b64_into(&mut self, b64: &str, timestamp_ms: u64, out: &mut Vec<u8>) {
        let seq = self.next_seq();
        self.chunk += 1;
        let keys = MediaKeys { seq: "sequence_number", stream: "stream_id" };
        media_json(out, keys, seq, &self.stream_id, self.chunk, timestamp_ms, b64);
    }

    /// `dtmf`.
    pub fn dtmf(&mut self, digit: char) -> String {
        let seq = self.next_seq();
        serde_json::json!({"event": "dtmf", "sequence_number": seq.to_string(), "stream_id": self.stream_id,
            "dtmf": {"digit": digit.to_string()}})
        .to_string()
    }

    /// A `mark` echo.
    pub fn mark(&mut self, name: &str) -> String {
        let seq = self.next_seq();
        serde_json::json!({"event": "mark", "sequence_number": seq.to_string(), "stream_id": self.stream_id,
            "mark": {"name": name}})
        .to_string()
    }

    /// `stop`.
    pub fn stop(&mut self) -> String {
        let seq = self.next_seq();
        serde_json::json!({"event": "stop", "sequence_number": seq.to_string(), "stream_id": self.stream_id,
            "stop": {"user_id": "fake-user", "call_control_id": self.call_control_id}})
        .to_string()
    }

    /// Read a message from the server as Telnyx would.
    pub fn parse(&self, text: &str) -> Result<ServerMessage, PeerError> {
        let raw: RawServer = serde_json::from_str(text).map_err(|e| PeerError::Invalid(e.to_string()))?;
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
