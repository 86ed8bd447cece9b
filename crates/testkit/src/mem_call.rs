//! One Twilio call driven through the real call loop ([`Call`]) over an
//! in-memory WebSocket (tungstenite, server side, 8 KiB read buffer): masked
//! client frames in, the call's messages framed back out. The allocation test
//! and the per-frame benchmarks both run exactly this.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::call::{Call, CallIo};
use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
use callbridge::carrier::{Carrier, CarrierEvent, MsgKind, WireIn, WireOut};
use callbridge::engine::Engine;
use callbridge::engine::LinkMsg;
use callbridge::engine::local::{LocalClips, LocalEngine};
use callbridge::session::{Output, Say, Session, SessionConfig, Telemetry};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// An in-memory duplex for tungstenite: reads from `input` (replayed
/// endlessly), writes to `output`.
#[derive(Default)]
pub struct Mem {
    /// What the peer sends (framed).
    pub input: Vec<u8>,
    pos: usize,
    /// What we wrote.
    pub output: Vec<u8>,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.input.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        if self.pos >= self.input.len() {
            self.pos = 0;
        }
        let n = buf.len().min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Masked client→server frames for `msgs`, as Twilio would send them.
pub fn client_frames(msgs: &[String]) -> Vec<u8> {
    let mut ws = WebSocket::from_raw_socket(Mem::default(), Role::Client, None);
    for m in msgs {
        ws.send(Message::text(m.clone())).unwrap();
    }
    std::mem::take(&mut ws.get_mut().output)
}

/// The call's outputs, counted.
#[derive(Debug)]
pub struct CountingIo {
    /// The carrier queue.
    pub wire: WireOut,
    /// Messages written to the socket.
    pub sent: usize,
    /// Barge-ins seen.
    pub barge_ins: usize,
}

impl CallIo for CountingIo {
    fn wire(&mut self) -> &mut WireOut {
        &mut self.wire
    }
    fn link(&mut self, _link: usize, _msg: LinkMsg) {}
    fn output(&mut self, out: Output<'_>) {
        if let Output::Telemetry(Telemetry::BargeIn { .. }) = out {
            self.barge_ins += 1;
        }
    }
}

/// One call's server-side state: socket framing and the call.
pub struct MemCall {
    /// The server side of the socket.
    pub ws: WebSocket<Mem>,
    /// The call.
    pub call: Call,
    /// Its outputs.
    pub io: CountingIo,
    /// Virtual now.
    pub now: Instant,
    /// Said again whenever the bot falls quiet ([`MemCall::talking`]).
    talk: Option<Arc<[i16]>>,
}

impl MemCall {
    /// A call reading `inbound_frames` (framed Twilio messages, starting after
    /// `start`) with `cfg`, answered by the local engine with `clips`.
    pub fn new(inbound_frames: Vec<u8>, start: &str, cfg: SessionConfig, clips: LocalClips) -> Self {
        let ws_cfg = WebSocketConfig::default().read_buffer_size(8 * 1024);
        let ws =
            WebSocket::from_raw_socket(Mem { input: inbound_frames, ..Mem::default() }, Role::Server, Some(ws_cfg));
        let mut codec = TwilioCodec::new(TwilioLimits::default());
        let CarrierEvent::Start(info) = codec.decode_text(start).expect("start decodes") else { panic!("not a start") };
        let engine = LocalEngine::new(clips);
        let now = Instant::now();
        let session = Session::new(cfg, codec.capabilities(), engine.format(), now).expect("session builds");
        let mut call = Call::new(session, Box::new(codec), Box::new(engine), 20);
        let mut io = CountingIo { wire: WireOut::new(512, callbridge::carrier::ARENA_BYTES), sent: 0, barge_ins: 0 };
        call.start(now, info, &mut io);
        let mut s = Self { ws, call, io, now, talk: None };
        s.flush();
        s
    }

    /// A call whose bot talks without end and cannot be interrupted: every
    /// cycle reads one frame and writes one message (the per-frame
    /// benchmark). The bot speaks a 100 s clip (the playback queue holds at
    /// most `max_queued_ms`, 120 s: a longer clip would be refused whole) and
    /// [`MemCall::cycle`] says it again whenever it ends.
    pub fn talking(inbound_frames: Vec<u8>, start: &str) -> Self {
        let clip: Arc<[i16]> = Arc::from(vec![1000i16; 8000 * 100]);
        let clips = LocalClips { greeting: Some(clip.clone()), reply: Arc::from(vec![1i16; 160]) };
        let mut cfg = SessionConfig::default();
        cfg.turn.barge_in_min_speech_ms = u32::MAX;
        let mut s = Self::new(inbound_frames, start, cfg, clips);
        s.talk = Some(clip);
        s
    }

    fn flush(&mut self) {
        while let Some(m) = self.io.wire.pop() {
            let msg = match m.kind {
                MsgKind::Text => Message::Text(tungstenite::Utf8Bytes::try_from(m.data).expect("text is UTF-8")),
                MsgKind::Binary => Message::Binary(m.data),
            };
            self.ws.write(msg).expect("in-memory write");
            self.io.sent += 1;
        }
        self.io.wire.reclaim();
        self.ws.flush().expect("in-memory flush");
    }

    /// 20 ms later: one inbound message read off the socket and through the
    /// call, the call's deadlines, and everything it queued framed and written.
    pub fn cycle(&mut self) {
        self.now += Duration::from_millis(20);
        self.ws.get_mut().output.clear();
        let msg = self.ws.read().expect("a frame");
        let now = self.now;
        if let Message::Text(t) = &msg {
            self.call.on_wire(now, WireIn::Text(t.as_str()), &mut self.io).expect("valid frames");
        }
        if self.call.poll_timeout().is_some_and(|t| t <= now) {
            self.call.on_timeout(now, &mut self.io);
        }
        if let Some(clip) = &self.talk
            && !self.call.session().bot_playing(now)
        {
            let _ = self.call.say(now, Say::Clip(clip.clone()), false, false, &mut self.io);
        }
        self.flush();
    }
}
