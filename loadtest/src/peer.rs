//! One simulated caller's side of its carrier's protocol: Twilio, Telnyx or
//! Vonage, over callbridge-testkit's peer codecs.
//!
//! The per-frame message is written into the caller's reusable buffer from a
//! pre-encoded payload (Twilio and Telnyx send base64, encoded once per clip
//! frame), so a steady call allocates nothing to send audio. Everything else
//! (hello, DTMF, marks, stop) is rare and built as a string.

use callbridge_testkit::telnyx_peer::TelnyxPeer;
use callbridge_testkit::twilio_peer::{PeerError, ServerMessage, TwilioPeer};
use callbridge_testkit::vonage_peer::VonagePeer;

use crate::run::CarrierKind;

/// A caller's carrier.
pub enum Peer {
    /// Twilio Media Streams.
    Twilio(TwilioPeer),
    /// Telnyx media streaming.
    Telnyx(TelnyxPeer),
    /// Vonage WebSockets (binary 16 kHz PCM).
    Vonage(VonagePeer),
}

impl Peer {
    /// Simulated stream number `id` of `kind`.
    pub fn new(kind: CarrierKind, id: u64) -> Self {
        match kind {
            CarrierKind::Twilio => Peer::Twilio(TwilioPeer::new(id)),
            CarrierKind::Telnyx => Peer::Telnyx(TelnyxPeer::new(id)),
            CarrierKind::Vonage => Peer::Vonage(VonagePeer::new(id, 16000)),
        }
    }

    /// The messages that open the stream; `routed` is the token and number a
    /// voice webhook answered with (Twilio).
    pub fn hello(&mut self, routed: Option<(&str, &str)>) -> Vec<String> {
        match self {
            Peer::Twilio(p) => {
                let start = match routed {
                    Some((token, to)) => {
                        p.start(&[("loadtest", "1"), ("cb_token", token), ("to", to), ("from", "+15550100000")])
                    }
                    None => p.start(&[("loadtest", "1")]),
                };
                vec![p.connected(), start]
            }
            Peer::Telnyx(p) => vec![p.connected(), p.start("+15550100000", "+15550100001", "")],
            Peer::Vonage(p) => {
                let uuid = p.uuid.clone();
                vec![p.connected(&[("call_uuid", uuid.as_str()), ("loadtest", "1")])]
            }
        }
    }

    /// One frame of caller audio, appended to `out`; `b64` is the frame
    /// already in base64 when the caller has it. Returns whether the message is binary.
    pub fn media_into(&mut self, ulaw: &[u8; 160], b64: Option<&str>, ts: u64, out: &mut Vec<u8>) -> bool {
        let mut scratch = [0u8; 216];
        match self {
            Peer::Twilio(p) => {
                p.media_b64_into(b64.unwrap_or_else(|| encode(ulaw, &mut scratch)), ts, out);
                false
            }
            Peer::Telnyx(p) => {
                p.media_b64_into(b64.unwrap_or_else(|| encode(ulaw, &mut scratch)), ts, out);
                false
            }
            Peer::Vonage(p) => {
                p.media_into(ulaw, out);
                true
            }
        }
    }

    /// A DTMF key.
    pub fn dtmf(&mut self, d: char) -> String {
        match self {
            Peer::Twilio(p) => p.dtmf(d),
            Peer::Telnyx(p) => p.dtmf(d),
            Peer::Vonage(p) => p.dtmf(d),
        }
    }

    /// A mark echo.
    pub fn mark(&mut self, name: &str) -> String {
        match self {
            Peer::Twilio(p) => p.mark(name),
            Peer::Telnyx(p) => p.mark(name),
            Peer::Vonage(p) => p.mark(name),
        }
    }

    /// The carrier's goodbye before closing (Vonage just closes).
    pub fn stop(&mut self) -> Option<String> {
        match self {
            Peer::Twilio(p) => Some(p.stop()),
            Peer::Telnyx(p) => Some(p.stop()),
            Peer::Vonage(_) => None,
        }
    }

    /// A text message from the server.
    pub fn parse(&self, text: &str) -> Result<ServerMessage, PeerError> {
        match self {
            Peer::Twilio(p) => p.parse(text),
            Peer::Telnyx(p) => p.parse(text),
            Peer::Vonage(p) => p.parse(text),
        }
    }

    /// A binary message from the server (Vonage audio).
    pub fn parse_binary(&self, data: &[u8]) -> Result<ServerMessage, PeerError> {
        match self {
            Peer::Vonage(p) => p.parse_binary(data),
            _ => Err(PeerError::Invalid("binary message".into())),
        }
    }

    /// The Twilio peer, for placing the call through the voice webhook.
    pub fn twilio(&self) -> Option<&TwilioPeer> {
        match self {
            Peer::Twilio(p) => Some(p),
            _ => None,
        }
    }
}

/// A frame in base64, in `scratch` (216 bytes: 160 bytes encode to exactly that).
fn encode<'a>(ulaw: &[u8; 160], scratch: &'a mut [u8; 216]) -> &'a str {
    use base64::Engine as _;
    let n = base64::engine::general_purpose::STANDARD.encode_slice(ulaw, scratch).unwrap_or(0);
    std::str::from_utf8(&scratch[..n]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_encoded_and_encoded_frames_are_the_same_message() {
        use base64::Engine as _;
        let frame = [0x7Au8; 160];
        let b64 = base64::engine::general_purpose::STANDARD.encode(frame);
        for kind in [CarrierKind::Twilio, CarrierKind::Telnyx, CarrierKind::Vonage] {
            let (mut a, mut b) = (Peer::new(kind, 1), Peer::new(kind, 1));
            let (mut x, mut y) = (Vec::new(), Vec::new());
            let bin = a.media_into(&frame, Some(&b64), 40, &mut x);
            b.media_into(&frame, None, 40, &mut y);
            assert_eq!(x, y, "{kind:?}");
            assert_eq!(bin, kind == CarrierKind::Vonage);
        }
        // And a Twilio frame reads back as the frame it carries.
        let mut p = Peer::new(CarrierKind::Twilio, 2);
        let mut out = Vec::new();
        p.media_into(&frame, Some(&b64), 20, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["media"]["payload"], b64.as_str());
        assert_eq!(v["media"]["timestamp"], "20");
        assert_eq!(v["streamSid"], p.twilio().unwrap().stream_sid.as_str());
    }
}
