//! One simulated call over a real TCP connection: connect, WebSocket
//! handshake, the carrier's hello, then audio every 20 ms (sent by the
//! thread's ticker) and the server's messages (read by this call's task),
//! then the carrier's goodbye.
//!
//! The call's state sits behind an uncontended mutex shared by the ticker
//! and the reader, never held across an await. Writes are non-blocking
//! (`try_write`) of everything queued in one buffer, so a tick costs one
//! syscall however many messages it carries; bytes the socket does not take
//! stay queued, in order, for the next tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::peer::Peer;
use crate::run::Live;
use crate::script::{CallBook, Script};
use crate::ticker::{self, Ticked, TickerHandle};
use crate::wire::{self, FrameReader, FrameWriter, Opcode};

/// A server that has not read this much of what we queued is stalled.
const STALLED: usize = 256 * 1024;

/// What the call task needs.
pub struct CallSpec {
    /// Stream URL (`ws://127.0.0.1:PORT/path`).
    pub url: String,
    /// The carrier side.
    pub peer: Peer,
    /// The behaviour.
    pub script: Script,
    /// Its ticker slot (frame phase, 0..20 ms).
    pub slot: usize,
    /// Token and number from a voice webhook (Twilio).
    pub routed: Option<(String, String)>,
    /// The call began (the script's clock starts here).
    pub started: Instant,
    /// Run end: the call hangs up then.
    pub t_end: Instant,
}

/// What the call measured.
pub struct CallResult {
    /// TCP + WebSocket handshake, ms.
    pub connect_ms: Option<f64>,
    /// The script's books.
    pub book: CallBook,
    /// Unparseable server messages.
    pub protocol_errors: u32,
}

struct State {
    peer: Peer,
    script: Script,
    writer: FrameWriter,
    /// Scratch for one message before framing.
    msg: Vec<u8>,
    /// Framed bytes not yet taken by the socket.
    out: Vec<u8>,
    ts: u64,
    turns_seen: u32,
    protocol_errors: u32,
}

struct Call {
    stream: TcpStream,
    slot: usize,
    started: Instant,
    t_end: Instant,
    live: Arc<Live>,
    state: Mutex<State>,
    over: AtomicBool,
    ended: Notify,
}

impl State {
    fn ms(started: Instant, now: Instant) -> f64 {
        (now - started).as_secs_f64() * 1000.0
    }

    fn queue_text(&mut self, text: &str) {
        self.writer.frame(Opcode::Text, text.as_bytes(), &mut self.out);
    }

    /// Write what is queued; `Err` when the connection is broken or stalled.
    fn flush(&mut self, stream: &TcpStream) -> Result<(), &'static str> {
        while !self.out.is_empty() {
            match stream.try_write(&self.out) {
                Ok(0) => return Err("send"),
                Ok(n) if n == self.out.len() => self.out.clear(),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return Err("send"),
            }
        }
        if self.out.len() > STALLED { Err("send_stalled") } else { Ok(()) }
    }
}

impl Call {
    fn fail(&self, st: &mut State, kind: &'static str) {
        st.script.book.failures.push(kind);
        self.live.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Hang up like the carrier: its goodbye, then a close frame.
    fn hang_up(&self, st: &mut State) {
        if self.over.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(stop) = st.peer.stop() {
            st.queue_text(&stop);
        }
        st.writer.frame(Opcode::Close, &1000u16.to_be_bytes(), &mut st.out);
        let _ = st.flush(&self.stream);
        self.ended.notify_one();
    }
}

impl Ticked for Call {
    fn slot(&self) -> usize {
        self.slot
    }

    fn tick(&self, _due: Instant, now: Instant) -> bool {
        if self.over.load(Ordering::Relaxed) {
            return false;
        }
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *guard;
        if now >= self.t_end {
            self.hang_up(st);
            return false;
        }
        let tk = st.script.on_tick(State::ms(self.started, now));
        st.msg.clear();
        let binary = st.peer.media_into(tk.frame, tk.b64, st.ts, &mut st.msg);
        st.ts += 20;
        st.writer.frame(if binary { Opcode::Binary } else { Opcode::Text }, &st.msg, &mut st.out);
        let (dtmf, hangup) = (tk.dtmf, tk.hangup);
        for m in &tk.marks {
            let m = st.peer.mark(m);
            st.writer.frame(Opcode::Text, m.as_bytes(), &mut st.out);
        }
        if let Some(d) = dtmf {
            let m = st.peer.dtmf(d);
            st.queue_text(&m);
        }
        if let Err(kind) = st.flush(&self.stream) {
            self.fail(st, kind);
            self.hang_up(st);
            return false;
        }
        if st.script.book.turns > st.turns_seen {
            self.live.turns.fetch_add((st.script.book.turns - st.turns_seen) as u64, Ordering::Relaxed);
            st.turns_seen = st.script.book.turns;
        }
        if hangup {
            self.hang_up(st);
            return false;
        }
        true
    }
}

/// Connect and open the WebSocket; the stream and any bytes read past the header.
async fn open(url: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let (host, path) = wire::split_url(url).ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let mut s = TcpStream::connect(host).await.map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(&wire::handshake_request(host, path)).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed during the handshake".into());
        }
        if let Some(n) = wire::handshake_response(&buf).map_err(|e| e.to_string())? {
            buf.drain(..n);
            return Ok((s, buf));
        }
    }
}

/// Run one call to its end; the ticker sends its audio.
pub async fn run_call(spec: CallSpec, ticker: &TickerHandle, live: Arc<Live>, seed: u64) -> CallResult {
    let CallSpec { url, mut peer, mut script, slot, routed, started, t_end } = spec;
    let opened = tokio::time::timeout(Duration::from_secs(10), open(&url)).await;
    let Ok(Ok((stream, early))) = opened else {
        script.book.failures.push("connect");
        live.failures.fetch_add(1, Ordering::Relaxed);
        return CallResult { connect_ms: None, book: script.book, protocol_errors: 0 };
    };
    let connect_ms = Some(State::ms(started, Instant::now()));
    live.active.fetch_add(1, Ordering::Relaxed);
    let mut writer = FrameWriter::new(seed);
    let mut out = Vec::with_capacity(4096);
    for m in peer.hello(routed.as_ref().map(|(t, n)| (t.as_str(), n.as_str()))) {
        writer.frame(Opcode::Text, m.as_bytes(), &mut out);
    }
    let mut stream = stream;
    let hello_sent = stream.write_all(&out).await.is_ok();
    out.clear();
    let call = Arc::new(Call {
        stream,
        slot,
        started,
        t_end,
        live: live.clone(),
        state: Mutex::new(State {
            peer,
            script,
            writer,
            msg: Vec::with_capacity(512),
            out,
            ts: 0,
            turns_seen: 0,
            protocol_errors: 0,
        }),
        over: AtomicBool::new(false),
        ended: Notify::new(),
    });
    if hello_sent {
        ticker.register(call.clone());
        read_until_closed(&call, early).await;
    } else {
        let mut st = call.state.lock().unwrap_or_else(|p| p.into_inner());
        call.fail(&mut st, "send");
    }
    live.active.fetch_sub(1, Ordering::Relaxed);
    call.over.store(true, Ordering::Relaxed);
    let mut st = call.state.lock().unwrap_or_else(|p| p.into_inner());
    CallResult { connect_ms, book: std::mem::take(&mut st.script.book), protocol_errors: st.protocol_errors }
}

/// Read the server's messages until the server closes, or until we hung up
/// and the server has answered (at most 2 s later).
async fn read_until_closed(call: &Call, early: Vec<u8>) {
    let mut reader = FrameReader::with_capacity(8192);
    reader.buf.extend_from_slice(&early);
    let mut closing: Option<Instant> = None;
    loop {
        if !handle_frames(call, &mut reader) {
            return;
        }
        if closing.is_none() && call.over.load(Ordering::Relaxed) {
            closing = Some(Instant::now() + Duration::from_secs(2));
        }
        tokio::select! {
            r = call.stream.readable() => if r.is_err() { return },
            _ = call.ended.notified(), if closing.is_none() => continue,
            _ = tokio::time::sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => return,
        }
        reader.make_room(4096);
        match call.stream.try_read_buf(&mut reader.buf) {
            Ok(0) => {
                if !call.over.load(Ordering::Relaxed) {
                    let mut st = call.state.lock().unwrap_or_else(|p| p.into_inner());
                    call.fail(&mut st, "closed_by_server");
                    call.over.store(true, Ordering::Relaxed);
                }
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                if !call.over.load(Ordering::Relaxed) {
                    let mut st = call.state.lock().unwrap_or_else(|p| p.into_inner());
                    call.fail(&mut st, "closed_by_server");
                    call.over.store(true, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}

/// Play every complete frame to the script; false once the connection is done.
fn handle_frames(call: &Call, reader: &mut FrameReader) -> bool {
    loop {
        let frame = match reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return true,
            Err(_) => {
                let mut st = call.state.lock().unwrap_or_else(|p| p.into_inner());
                st.protocol_errors += 1;
                call.fail(&mut st, "closed_by_server");
                call.hang_up(&mut st);
                return false;
            }
        };
        let now = Instant::now();
        let mut guard = call.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *guard;
        let payload = reader.payload(&frame);
        let parsed = match frame.op {
            Opcode::Text => match std::str::from_utf8(payload) {
                Ok(text) => st.peer.parse(text),
                Err(_) => Err(callbridge_testkit::twilio_peer::PeerError::Invalid("not UTF-8".into())),
            },
            Opcode::Binary => st.peer.parse_binary(payload),
            Opcode::Ping => {
                st.writer.frame(Opcode::Pong, payload, &mut st.out);
                let _ = st.flush(&call.stream);
                continue;
            }
            Opcode::Close => {
                if !call.over.load(Ordering::Relaxed) {
                    call.fail(st, "closed_by_server");
                    call.over.store(true, Ordering::Relaxed);
                }
                return false;
            }
            Opcode::Pong | Opcode::Continuation => continue,
        };
        if call.over.load(Ordering::Relaxed) {
            continue;
        }
        match parsed {
            Ok(m) => {
                let echoes = st.script.on_server(State::ms(call.started, now), m);
                for e in echoes {
                    let m = st.peer.mark(&e);
                    st.queue_text(&m);
                }
                if let Err(kind) = st.flush(&call.stream) {
                    call.fail(st, kind);
                    call.hang_up(st);
                }
            }
            Err(_) => st.protocol_errors += 1,
        }
    }
}

/// The ticker slot for a call with frame phase `phase` (within 20 ms).
pub fn slot_of(phase: Duration) -> usize {
    (phase.as_millis() as usize) % ticker::SLOTS
}
