//! The generator's WebSocket client framing, sans-IO (RFC 6455).
//!
//! The load generator must be cheaper per call than the server it measures,
//! so its client side is written for that: the opening handshake is one
//! request and one status check; frames are encoded into a caller's reusable
//! buffer (masked, as RFC 6455 §5.3 requires of clients, with a key from a
//! per-connection xorshift rather than the OS generator); and received bytes
//! are parsed in place from a buffer that is filled by `try_read_buf`, which
//! writes into spare capacity without zeroing it. No call allocates once the
//! buffers have grown to a connection's largest message.
//!
//! Invariants: `FrameReader::next` yields each complete frame exactly once,
//! in order; a frame larger than `MAX_FRAME` is an error, never a buffer that
//! grows without bound; fragmented messages are reassembled.

use std::ops::Range;

/// Largest frame accepted from the server (the server's own limit is 64 KiB).
pub const MAX_FRAME: usize = 1 << 20;

/// Text, binary, close, ping or pong (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// A continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }
    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }
}

/// A framing error: the connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The server did not switch protocols.
    #[error("handshake refused: {0}")]
    Refused(String),
    /// A frame we cannot read.
    #[error("bad frame: {0}")]
    BadFrame(&'static str),
    /// A frame over `MAX_FRAME`.
    #[error("frame of {0} bytes is too large")]
    TooLarge(u64),
}

/// The opening handshake request for `ws://host/path` (fixed key: the server
/// only echoes its hash, and the generator checks the status line).
pub fn handshake_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Split `ws://host:port/path?query` into the address and the request target.
pub fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("ws://")?;
    let at = rest.find('/').unwrap_or(rest.len());
    let (host, path) = rest.split_at(at);
    Some((host, if path.is_empty() { "/" } else { path }))
}

/// Whether `buf` holds the whole handshake response: `Ok(Some(len))` of the
/// header once it is complete and says `101`, an error if it says anything else.
pub fn handshake_response(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 16 * 1024 { Err(WireError::Refused("header too long".into())) } else { Ok(None) };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(WireError::Refused(status.to_string()));
    }
    Ok(Some(end + 4))
}

/// Encodes client frames into a buffer, masking each with a fresh key.
#[derive(Debug, Clone)]
pub struct FrameWriter {
    rng: u32,
}

impl FrameWriter {
    /// A writer whose masking keys are seeded by `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self { rng: (seed as u32 ^ (seed >> 32) as u32) | 1 }
    }

    fn next_key(&mut self) -> [u8; 4] {
        // xorshift32: a new key per frame; RFC 6455 asks for unpredictability
        // against proxies' caches, which loopback has none of.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x.to_be_bytes()
    }

    /// Append one whole (FIN) frame carrying `payload` to `out`.
    pub fn frame(&mut self, op: Opcode, payload: &[u8], out: &mut Vec<u8>) {
        out.push(0x80 | op.bits());
        let n = payload.len();
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if n <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let key = self.next_key();
        out.extend_from_slice(&key);
        let start = out.len();
        out.extend_from_slice(payload);
        for (i, b) in out[start..].iter_mut().enumerate() {
            *b ^= key[i & 3];
        }
    }
}

/// One frame or reassembled message read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is (`Text`/`Binary` for a reassembled message).
    pub op: Opcode,
    /// Where its payload sits in `FrameReader::payload`.
    range: Range<usize>,
}

/// Reads server frames out of bytes as they arrive.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Bytes received and not yet consumed (fill it with `try_read_buf`).
    pub buf: Vec<u8>,
    /// Where unconsumed bytes begin.
    pos: usize,
    /// A fragmented message being reassembled.
    partial: Option<(Opcode, Vec<u8>)>,
    /// The last reassembled message.
    joined: Vec<u8>,
    /// The last frame came from `joined`.
    from_joined: bool,
}

impl FrameReader {
    /// A reader with room for `cap` bytes before it grows.
    pub fn with_capacity(cap: usize) -> Self {
        Self { buf: Vec::with_capacity(cap), ..Self::default() }
    }

    /// Drop consumed bytes and make room for at least `want` more (call before reading).
    pub fn make_room(&mut self, want: usize) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(want);
    }

    /// The payload of `f` (valid until the next call to `next` or `make_room`).
    pub fn payload(&self, f: &Frame) -> &[u8] {
        if self.from_joined { &self.joined[f.range.clone()] } else { &self.buf[f.range.clone()] }
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            let avail = &self.buf[self.pos..];
            if avail.len() < 2 {
                return Ok(None);
            }
            let fin = avail[0] & 0x80 != 0;
            let op = Opcode::from_bits(avail[0] & 0x0F).ok_or(WireError::BadFrame("unknown opcode"))?;
            if avail[1] & 0x80 != 0 {
                return Err(WireError::BadFrame("masked server frame"));
            }
            let (len, head) = match avail[1] & 0x7F {
                126 if avail.len() >= 4 => (u16::from_be_bytes([avail[2], avail[3]]) as u64, 4),
                127 if avail.len() >= 10 => {
                    (u64::from_be_bytes(avail[2..10].try_into().map_err(|_| WireError::BadFrame("length"))?), 10)
                }
                126 | 127 => return Ok(None),
                n => (n as u64, 2),
            };
            if len > MAX_FRAME as u64 {
                return Err(WireError::TooLarge(len));
            }
            let total = head + len as usize;
            if avail.len() < total {
                return Ok(None);
            }
            let range = self.pos + head..self.pos + total;
            self.pos += total;
            let control = matches!(op, Opcode::Close | Opcode::Ping | Opcode::Pong);
            if control || (fin && op != Opcode::Continuation && self.partial.is_none()) {
                self.from_joined = false;
                return Ok(Some(Frame { op, range }));
            }
            // A fragment: start, continue or finish a message.
            match (&mut self.partial, op) {
                (None, Opcode::Text | Opcode::Binary) => self.partial = Some((op, self.buf[range].to_vec())),
                (Some((_, data)), Opcode::Continuation) => {
                    if data.len() + range.len() > MAX_FRAME {
                        return Err(WireError::TooLarge((data.len() + range.len()) as u64));
                    }
                    data.extend_from_slice(&self.buf[range]);
                }
                _ => return Err(WireError::BadFrame("fragment out of order")),
            }
            if fin && let Some((op, data)) = self.partial.take() {
                self.joined = data;
                self.from_joined = true;
                let n = self.joined.len();
                return Ok(Some(Frame { op, range: 0..n }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        let (len, mut i) = match frame[1] & 0x7F {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        assert!(frame[1] & 0x80 != 0, "client frames are masked");
        let key = [frame[i], frame[i + 1], frame[i + 2], frame[i + 3]];
        i += 4;
        let data = frame[i..i + len].iter().enumerate().map(|(k, b)| b ^ key[k & 3]).collect();
        (frame[0], data)
    }

    #[test]
    fn client_frames_are_masked_and_carry_their_payload_at_every_length_form() {
        let mut w = FrameWriter::new(7);
        for n in [0usize, 5, 125, 126, 300, 65535, 65536] {
            let payload: Vec<u8> = (0..n).map(|i| (i * 31) as u8).collect();
            let mut out = Vec::new();
            w.frame(Opcode::Text, &payload, &mut out);
            let (b0, data) = unmask(&out);
            assert_eq!(b0, 0x81);
            assert_eq!(data, payload, "length {n}");
        }
        // Each frame gets a different key.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        w.frame(Opcode::Binary, b"abcd", &mut a);
        w.frame(Opcode::Binary, b"abcd", &mut b);
        assert_ne!(a, b);
    }

    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![b0];
        if payload.len() < 126 {
            v.push(payload.len() as u8);
        } else {
            v.push(126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn frames_are_read_whole_however_the_bytes_arrive() {
        let long = vec![b'x'; 400];
        let mut bytes = server_frame(0x81, b"hello");
        bytes.extend(server_frame(0x82, &long));
        bytes.extend(server_frame(0x89, b"p"));
        // Byte by byte: nothing until a frame is complete, then exactly it.
        let mut r = FrameReader::with_capacity(16);
        let mut got = Vec::new();
        for b in bytes {
            r.make_room(1);
            r.buf.push(b);
            while let Some(f) = r.next_frame().unwrap() {
                got.push((f.op, r.payload(&f).to_vec()));
            }
        }
        assert_eq!(got, vec![(Opcode::Text, b"hello".to_vec()), (Opcode::Binary, long), (Opcode::Ping, b"p".to_vec())]);
    }

    #[test]
    fn fragments_are_reassembled_around_control_frames() {
        let mut r = FrameReader::default();
        r.buf.extend(server_frame(0x01, b"hel"));
        r.buf.extend(server_frame(0x89, b"!"));
        r.buf.extend(server_frame(0x80, b"lo"));
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.op, r.payload(&f)), (Opcode::Ping, &b"!"[..]));
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.op, r.payload(&f)), (Opcode::Text, &b"hello"[..]));
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut r = FrameReader::default();
        r.buf.extend([0x83, 0x00]);
        assert!(r.next_frame().is_err(), "unknown opcode");
        let mut r = FrameReader::default();
        r.buf.extend([0x81, 0x81, 1, 2, 3, 4, 0]);
        assert!(r.next_frame().is_err(), "masked server frame");
        let mut r = FrameReader::default();
        r.buf.extend([0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(r.next_frame(), Err(WireError::TooLarge(1 << 32)));
        let mut r = FrameReader::default();
        r.buf.extend(server_frame(0x80, b"x"));
        assert!(r.next_frame().is_err(), "continuation without a start");
    }

    #[test]
    fn handshake_needs_101_and_a_whole_header() {
        assert_eq!(handshake_response(b"HTTP/1.1 101 Switching"), Ok(None));
        assert_eq!(
            handshake_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nXY"),
            Ok(Some(56))
        );
        assert!(handshake_response(b"HTTP/1.1 403 Forbidden\r\n\r\n").is_err());
        assert_eq!(split_url("ws://127.0.0.1:80/twilio/stream?x=1"), Some(("127.0.0.1:80", "/twilio/stream?x=1")));
        assert_eq!(split_url("ws://127.0.0.1:80"), Some(("127.0.0.1:80", "/")));
        let req = String::from_utf8(handshake_request("h:1", "/p")).unwrap();
        assert!(req.starts_with("GET /p HTTP/1.1\r\nHost: h:1\r\n") && req.ends_with("\r\n\r\n"));
    }
}
