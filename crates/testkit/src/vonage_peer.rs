//! Vonage's side of the Voice API WebSocket (PROTOCOLS §4.2): the text
//! `websocket:connected` with the NCCO's headers, caller audio as binary
//! 20 ms frames of 16-bit little-endian PCM, `websocket:notify` when playback
//! reaches a `notify`, `websocket:cleared` after a `clear`, `websocket:dtmf`;
//! and how Vonage reads ours. For the loadtest's µ-law scripts, caller µ-law at
//! 8 kHz is widened to the stream's rate and the server's PCM narrowed back to
//! µ-law at 8 kHz ([`ServerMessage::Media`] carries µ-law either way). Used by
//! the tests and the loadtest to play the carrier; the server never uses it.

use callbridge::audio::g711;
use serde::Deserialize;

pub use crate::twilio_peer::{PeerError, ServerMessage};

/// A simulated Vonage WebSocket's ids.
#[derive(Debug, Clone)]
pub struct VonagePeer {
    /// Vonage's call uuid (what `PUT /v1/calls/{uuid}` names).
    pub uuid: String,
    /// Sample rate of the stream (8000 or 16000).
    pub rate: u32,
}

#[derive(Deserialize)]
struct RawServer {
    action: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

impl VonagePeer {
    /// Stream number `n` at `rate`.
    pub fn new(n: u64, rate: u32) -> Self {
        Self { uuid: format!("aaaaaaaa-0000-4000-8000-{n:012x}"), rate }
    }

    /// `websocket:connected` with the NCCO's `headers` at the top level, as Vonage sends them.
    pub fn connected(&self, headers: &[(&str, &str)]) -> String {
        let mut m = serde_json::Map::new();
        m.insert("event".into(), "websocket:connected".into());
        m.insert("content-type".into(), format!("audio/l16;rate={}", self.rate).into());
        for (k, v) in headers {
            m.insert((*k).into(), (*v).into());
        }
        serde_json::Value::Object(m).to_string()
    }

    /// One binary audio message: 20 ms of µ-law at 8 kHz as the stream's PCM.
    pub fn media(&self, ulaw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ulaw.len() * (self.rate / 8000) as usize * 2);
        for frame in ulaw.chunks(160) {
            self.media_into(frame, &mut out);
        }
        out
    }

    /// The same message appended to `out`, without allocating (µ-law frames
    /// of at most 160 bytes: the load generator's per-frame path).
    pub fn media_into(&self, ulaw: &[u8], out: &mut Vec<u8>) {
        let mut pcm = [0i16; 160];
        let n = ulaw.len().min(160);
        g711::ulaw_decode(&ulaw[..n], &mut pcm[..n]);
        let pcm = &pcm[..n];
        let widen = (self.rate / 8000) as usize;
        for (i, &s) in pcm.iter().enumerate() {
            let next = pcm.get(i + 1).copied().unwrap_or(s);
            for k in 0..widen {
                let v = s as i32 + (next as i32 - s as i32) * k as i32 / widen as i32;
                out.extend_from_slice(&(v as i16).to_le_bytes());
            }
        }
    }

    /// `websocket:dtmf`.
    pub fn dtmf(&self, digit: char) -> String {
        serde_json::json!({"event": "websocket:dtmf", "digit": digit.to_string(), "duration": 250}).to_string()
    }

    /// `websocket:notify` for a mark we were sent.
    pub fn mark(&self, name: &str) -> String {
        serde_json::json!({"event": "websocket:notify", "payload": {"mark": name}}).to_string()
    }

    /// Read a binary message from the server: PCM at the stream's rate, back to µ-law at 8 kHz.
    pub fn parse_binary(&self, data: &[u8]) -> Result<ServerMessage, PeerError> {
        let want = (self.rate / 50) as usize * 2;
        if data.len() != want {
            return Err(PeerError::Invalid(format!("binary message of {} bytes, not {want}", data.len())));
        }
        let step = (self.rate / 8000) as usize;
        let pcm: Vec<i16> = data.chunks_exact(2).step_by(step).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        let mut ulaw = vec![0u8; pcm.len()];
        g711::ulaw_encode(&pcm, &mut ulaw);
        Ok(ServerMessage::Media(ulaw))
    }

    /// Read a text message from the server as Vonage would.
    pub fn parse(&self, text: &str) -> Result<ServerMessage, PeerError> {
        let raw: RawServer = serde_json::from_str(text).map_err(|e| PeerError::Invalid(e.to_string()))?;
        match raw.action.as_str() {
            "clear" => Ok(ServerMessage::Clear),
            "notify" => {
                let mark = raw.payload.as_ref().and_then(|p| p.get("mark")).and_then(|m| m.as_str());
                mark.map(|m| ServerMessage::Mark(m.to_string()))
                    .ok_or_else(|| PeerError::Invalid("notify without payload.mark".into()))
            }
            other => Err(PeerError::Unsupported(other.to_string())),
        }
    }
}
