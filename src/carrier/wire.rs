//! The outbound side of a carrier connection: a bounded queue of encoded wire
//! messages with a priority lane, written into one reusable arena.
//!
//! Invariants:
//! - Messages are written into a [`BytesMut`] arena and split off as frozen
//!   [`Bytes`]; once the transport has written and dropped them all it calls
//!   [`WireOut::reclaim`], which takes the whole arena back without
//!   allocating, so each wake-up starts with the full arena and steady-state
//!   encoding allocates nothing. (Reclaiming only when a message needs room
//!   fails whenever an earlier message of the same wake-up is still queued:
//!   that allocated a fresh arena every few messages.)
//! - The queue is bounded: audio beyond `cap` messages is dropped (and counted);
//!   control messages are always queued.
//! - A priority message (`clear`) jumps the queue and discards the audio still
//!   queued before it (that audio belongs to what is being cleared).

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

/// Text or binary WebSocket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgKind {
    /// UTF-8 text (JSON).
    Text,
    /// Binary.
    Binary,
}

/// One encoded outbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMsg {
    /// Text or binary.
    pub kind: MsgKind,
    /// The message bytes (valid UTF-8 for text).
    pub data: Bytes,
    /// Carries audio (may be dropped under back-pressure).
    pub audio: bool,
}

/// How the messages being encoded are treated by the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgClass {
    /// Audio: dropped when the queue is full.
    Audio,
    /// Control (marks): always queued, in order.
    Control,
    /// Ahead of everything, and queued audio before it is discarded (clear).
    Priority,
}

/// Arena size of a call's outbound queue: a wake-up's messages (one or two
/// 40 ms audio messages and a mark, ≈ 0.6 KiB each; a response's first burst
/// of `playback.lead_ms` = 120 ms) fit in ¾ of it.
pub const ARENA_BYTES: usize = 3072;

/// Bounded outbound message queue plus its arena.
#[derive(Debug)]
pub struct WireOut {
    arena: BytesMut,
    arena_size: usize,
    queue: VecDeque<OutMsg>,
    cap: usize,
    class: MsgClass,
    dropped: u64,
}

impl WireOut {
    /// A queue holding at most `cap` audio messages, with an arena of `arena_size` bytes.
    pub fn new(cap: usize, arena_size: usize) -> Self {
        Self {
            arena: BytesMut::with_capacity(arena_size),
            arena_size,
            queue: VecDeque::with_capacity(cap.min(16)),
            cap: cap.max(1),
            class: MsgClass::Control,
            dropped: 0,
        }
    }

    /// Treat the messages written next as `class` (set by the driver around
    /// each [`crate::carrier::Carrier::encode`]).
    pub fn set_class(&mut self, class: MsgClass) {
        self.class = class;
    }

    /// Write one text message with `write` (which must append valid UTF-8).
    pub fn text(&mut self, write: impl FnOnce(&mut BytesMut)) {
        self.push(MsgKind::Text, write);
    }

    /// Write one binary message with `write`.
    pub fn binary(&mut self, write: impl FnOnce(&mut BytesMut)) {
        self.push(MsgKind::Binary, write);
    }

    fn push(&mut self, kind: MsgKind, write: impl FnOnce(&mut BytesMut)) {
        if self.class == MsgClass::Audio && self.queue.len() >= self.cap {
            self.dropped += 1;
            return;
        }
        // Room for one message (a quarter of the arena): a wake-up's burst of
        // up to ¾ of the arena fits in the space `reclaim` gave back; beyond
        // that this allocates a fresh arena.
        self.arena.reserve(self.arena_size / 4);
        write(&mut self.arena);
        let data = self.arena.split().freeze();
        let msg = OutMsg { kind, data, audio: self.class == MsgClass::Audio };
        if self.class == MsgClass::Priority {
            self.queue.retain(|m| !m.audio);
            self.queue.push_front(msg);
        } else {
            self.queue.push_back(msg);
        }
    }

    /// Next message to write.
    pub fn pop(&mut self) -> Option<OutMsg> {
        self.queue.pop_front()
    }

    /// Take the arena's space back for the next wake-up, once the queue is
    /// empty and the transport has dropped every message it wrote. Never
    /// allocates; a message still alive somewhere just leaves it as it is.
    pub fn reclaim(&mut self) {
        if self.queue.is_empty() {
            let _ = self.arena.try_reclaim(self.arena_size);
        }
    }

    /// Arena bytes free for the next messages without allocating.
    #[cfg(test)]
    fn arena_room(&self) -> usize {
        self.arena.capacity() - self.arena.len()
    }

    /// Put a message back at the head (the transport could not take it yet).
    pub fn unpop(&mut self, msg: OutMsg) {
        self.queue.push_front(msg);
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Audio messages dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Drop everything queued (the connection is gone).
    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

/// Why a base64 media payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadError {
    /// Nothing in it.
    Empty,
    /// Over the limit (decoded bytes, estimated from the base64 length if refused before decoding).
    TooLarge(usize),
    /// Not base64.
    BadBase64,
}

/// Decode a carrier's base64 media `payload` into `raw`, refusing more than
/// `max` decoded bytes before decoding anything. `raw` and `pcm` grow (never
/// beyond the limit) only if a payload is bigger than any before, so a
/// steady stream allocates nothing. Returns the decoded length.
pub(crate) fn decode_payload(
    payload: &str,
    max: usize,
    raw: &mut Vec<u8>,
    pcm: &mut Vec<i16>,
) -> Result<usize, PayloadError> {
    use base64::Engine as _;
    if payload.is_empty() {
        return Err(PayloadError::Empty);
    }
    if payload.len() > max.div_ceil(3) * 4 {
        return Err(PayloadError::TooLarge(payload.len() / 4 * 3));
    }
    let need = payload.len() / 4 * 3 + 3;
    if need > raw.len() {
        raw.resize(need, 0);
        pcm.resize(need, 0);
    }
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(payload.as_bytes(), raw)
        .map_err(|_| PayloadError::BadBase64)?;
    if n > max {
        return Err(PayloadError::TooLarge(n));
    }
    Ok(n)
}

/// Append `bytes` as standard base64 (with padding) to `buf`.
pub fn put_base64(buf: &mut BytesMut, bytes: &[u8]) {
    use base64::Engine as _;
    let n = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    let start = buf.len();
    buf.put_bytes(0, n);
    let written = base64::engine::general_purpose::STANDARD.encode_slice(bytes, &mut buf[start..]).unwrap_or(0);
    buf.truncate(start + written);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &mut WireOut, s: &str) {
        out.text(|b| b.extend_from_slice(s.as_bytes()));
    }

    #[test]
    fn audio_is_bounded_control_is_not_and_priority_jumps_and_discards_audio() {
        let mut out = WireOut::new(2, 1024);
        out.set_class(MsgClass::Audio);
        for s in ["a1", "a2", "a3"] {
            text(&mut out, s);
        }
        assert_eq!(out.dropped(), 1);
        out.set_class(MsgClass::Control);
        text(&mut out, "m1");
        text(&mut out, "m2");
        assert_eq!(out.len(), 4, "control is queued past the audio bound");
        out.set_class(MsgClass::Priority);
        text(&mut out, "clear");
        let order: Vec<_> = std::iter::from_fn(|| out.pop()).map(|m| m.data).collect();
        assert_eq!(order, ["clear", "m1", "m2"].map(|s| Bytes::from_static(s.as_bytes())));
    }

    #[test]
    fn the_arena_is_reused_once_messages_are_dropped() {
        let mut out = WireOut::new(8, 256);
        text(&mut out, "x");
        let base = out.pop().unwrap().data.as_ptr() as usize;
        // Messages written out and dropped leave their space to the next ones:
        // a thousand of them never leave the first 256-byte allocation.
        for i in 0..1000 {
            text(&mut out, &format!("message {i:04}"));
            let p = out.pop().unwrap().data.as_ptr() as usize;
            assert!(p >= base && p < base + 256, "message {i} was written outside the arena");
        }
    }

    #[test]
    fn several_messages_per_wake_up_stay_in_one_arena_when_reclaimed_after_each_flush() {
        let mut out = WireOut::new(8, 1024);
        text(&mut out, "x");
        let base = out.pop().unwrap().data.as_ptr() as usize;
        out.reclaim();
        // Two messages queued per wake-up (audio and a mark), written, dropped,
        // reclaimed: without the reclaim, the second message of a wake-up keeps
        // the arena shared whenever the first one ran it low, and a new arena
        // is allocated every few wake-ups.
        for i in 0..1000 {
            text(&mut out, &format!("audio {i:04} {}", "a".repeat(200)));
            text(&mut out, &format!("mark {i:04}"));
            for _ in 0..2 {
                let p = out.pop().unwrap().data.as_ptr() as usize;
                assert!(p >= base && p < base + 1024, "wake-up {i}: message written outside the arena");
            }
            out.reclaim();
        }
        assert!(out.arena_room() >= 1024, "the whole arena is free after a reclaim");
    }

    #[test]
    fn base64_matches_the_standard_engine() {
        use base64::Engine as _;
        for n in [0usize, 1, 2, 3, 160, 161] {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut b = BytesMut::new();
            put_base64(&mut b, &data);
            assert_eq!(&b[..], base64::engine::general_purpose::STANDARD.encode(&data).as_bytes());
        }
    }
}
