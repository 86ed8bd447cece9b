//! One call, sans-IO: the [`Session`] with its [`Carrier`] codec and its
//! [`Engine`], and the one loop that moves everything between them.
//!
//! The server's call task, the tests, the allocation test and the benches all
//! drive calls through [`Call`]; the only thing that differs is the
//! [`CallIo`] they hand it (sockets and delivery queues in the server, vectors
//! in tests). Every entry point takes `now` — the shell reads the clock once
//! per wake-up — feeds the session, then drains it and the engine until both
//! are quiet: carrier commands are encoded into [`CallIo::wire`], engine
//! commands go to the engine, engine messages to [`CallIo::link`], the rest to
//! [`CallIo::output`].
//!
//! Invariants: nothing here blocks, reads the clock or does I/O; in steady
//! state a frame in and out allocates nothing; a carrier's bad message is
//! counted and skipped, and only a fatal one or too many end the call (as a
//! [`Fault`] the shell turns into a close frame).

use std::time::Instant;

use crate::carrier::{Carrier, CarrierError, CarrierEvent, MsgClass, Severity, StreamInfo, WireIn, WireOut, close};
use crate::engine::{Engine, LinkEvent, LinkMsg};
use crate::session::{ControlCommand, HangupReason, Input, Output, Reply, Say, Session};

/// Where a call's outputs go.
pub trait CallIo {
    /// The carrier connection's outbound queue.
    fn wire(&mut self) -> &mut WireOut;
    /// A message for engine link `link`.
    fn link(&mut self, link: usize, msg: LinkMsg);
    /// Everything else the session produced: telemetry, callback events and
    /// requests, notes, incidents, recording audio.
    fn output(&mut self, out: Output<'_>);
    /// Caller frames (20 ms) processed.
    fn frames_in(&mut self, _n: u64) {}
    /// Bot frames (20 ms) queued for the carrier.
    fn frames_out(&mut self, _n: u64) {}
    /// Bot frames dropped because the carrier's queue was full.
    fn frames_dropped(&mut self, _n: u64) {}
    /// A carrier protocol error (stable code), counted whatever its severity.
    fn protocol_error(&mut self, _code: &'static str, _error: &CarrierError) {}
}

/// A carrier-side failure that ends the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Fault {
    /// Stable code (`protocol_error` reason in `call.ended`).
    pub code: &'static str,
    /// WebSocket close code.
    pub close_code: u16,
    /// Close reason.
    pub message: String,
}

/// Why `say` cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SayError {
    /// The stream is not (or no longer) live.
    #[error("the call's stream is not active")]
    NotActive,
    /// Text given to an engine that only plays audio.
    #[error("the {0} engine cannot speak text; send audio_url")]
    CannotSpeakText(&'static str),
}

/// One live call.
#[derive(Debug)]
pub struct Call {
    session: Session,
    carrier: Box<dyn Carrier>,
    engine: Box<dyn Engine>,
    ended: Option<HangupReason>,
    in_samples: u64,
    protocol_errors: u32,
    max_protocol_errors: u32,
}

impl Call {
    /// A call of `session` over `carrier`, answered by `engine`. Non-fatal
    /// protocol errors beyond `max_protocol_errors` end it.
    pub fn new(session: Session, carrier: Box<dyn Carrier>, engine: Box<dyn Engine>, max_protocol_errors: u32) -> Self {
        Self { session, carrier, engine, ended: None, in_samples: 0, protocol_errors: 0, max_protocol_errors }
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The engine.
    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// The carrier codec.
    pub fn carrier(&self) -> &dyn Carrier {
        self.carrier.as_ref()
    }

    /// Set once the session ended the call.
    pub fn ended(&self) -> Option<HangupReason> {
        self.ended
    }

    /// The stream started (admission passed): the call goes live.
    pub fn start(&mut self, now: Instant, info: StreamInfo, io: &mut impl CallIo) {
        self.session.handle_input(now, Input::Carrier(CarrierEvent::Start(info)));
        self.pump(now, io);
    }

    /// One message from the carrier's socket.
    pub fn on_wire(&mut self, now: Instant, msg: WireIn<'_>, io: &mut impl CallIo) -> Result<(), Fault> {
        let frame = self.session.frame_samples().max(1) as u64;
        let Call { session, carrier, in_samples, .. } = self;
        let before = *in_samples / frame;
        let mut partial = false;
        let mut feed = |ev: CarrierEvent<'_>| {
            if let CarrierEvent::Audio(a) = &ev {
                let n = a.pcm.len() as u64;
                *in_samples += n;
                partial |= !n.is_multiple_of(frame);
            }
            session.handle_input(now, Input::Carrier(ev));
        };
        match carrier.decode(now, msg) {
            Ok(ev) => feed(ev),
            Err(e) => {
                io.protocol_error(e.code(), &e);
                return self.carrier_error(e, now, io);
            }
        }
        while let Some(ev) = carrier.poll_event() {
            feed(ev);
        }
        let frames = *in_samples / frame - before;
        if frames > 0 {
            io.frames_in(frames);
        }
        if partial {
            let e = CarrierError::new("partial_frame", Severity::Ignorable, "payload is not whole 20 ms frames");
            io.protocol_error(e.code(), &e);
        }
        self.pump(now, io);
        Ok(())
    }

    fn carrier_error(&mut self, e: CarrierError, now: Instant, io: &mut impl CallIo) -> Result<(), Fault> {
        match e.severity() {
            Severity::Ignorable => Ok(()),
            Severity::Fatal => Err(Fault { code: e.code(), close_code: e.close_code(), message: e.to_string() }),
            Severity::Skip => {
                self.protocol_errors += 1;
                if self.protocol_errors > self.max_protocol_errors {
                    return Err(Fault {
                        code: "too_many_errors",
                        close_code: close::POLICY,
                        message: "too many protocol errors".into(),
                    });
                }
                self.pump(now, io);
                Ok(())
            }
        }
    }

    /// The peer went silent at `last_heard_from` and is given up at `now`:
    /// the call ends as [`Call::on_carrier_gone`], a reply cut off heard only
    /// up to `last_heard_from`.
    pub fn on_carrier_silent(&mut self, now: Instant, last_heard_from: Instant, io: &mut impl CallIo) {
        self.session.caller_unreachable_since(last_heard_from);
        self.on_carrier_gone(now, io);
    }

    /// The carrier's socket closed (or its stream ended without `stop`).
    pub fn on_carrier_gone(&mut self, now: Instant, io: &mut impl CallIo) {
        self.session.handle_input(now, Input::Carrier(CarrierEvent::Stop));
        self.pump(now, io);
    }

    /// Something happened on engine link `link`.
    pub fn on_link(&mut self, now: Instant, link: usize, ev: LinkEvent<'_>, io: &mut impl CallIo) {
        self.on_link_read_at(now, now, link, ev, io);
    }

    /// [`Call::on_link`] for a message read off its socket at `read_at`: the
    /// engine is told that instant (its provider timings end where the
    /// provider's answer arrived, not where the call task got to it).
    pub fn on_link_read_at(
        &mut self,
        now: Instant,
        read_at: Instant,
        link: usize,
        ev: LinkEvent<'_>,
        io: &mut impl CallIo,
    ) {
        self.engine.handle_link(read_at.min(now), link, ev);
        self.pump(now, io);
    }

    /// A command from outside the call.
    pub fn on_control(&mut self, now: Instant, cmd: ControlCommand, io: &mut impl CallIo) {
        self.session.handle_input(now, Input::Control(cmd));
        self.pump(now, io);
    }

    /// The backend answered a request.
    pub fn on_reply(&mut self, now: Instant, reply: Reply, io: &mut impl CallIo) {
        self.session.handle_input(now, Input::Reply(reply));
        self.pump(now, io);
    }

    /// How long the backend took to answer request `id` (HTTP, as the request task saw it).
    pub fn on_reply_timing(
        &mut self,
        now: Instant,
        id: crate::session::RequestId,
        backend: std::time::Duration,
        io: &mut impl CallIo,
    ) {
        self.session.handle_input(now, Input::ReplyTiming { id, backend });
        self.pump(now, io);
    }

    /// Part of a streamed reply to request `id`.
    pub fn on_reply_delta(&mut self, now: Instant, id: crate::session::RequestId, text: String, io: &mut impl CallIo) {
        self.session.handle_input(now, Input::ReplyDelta { id, text });
        self.pump(now, io);
    }

    /// The end-of-turn model answered question `id` (`None`: no answer in time).
    pub fn on_turn_verdict(&mut self, now: Instant, id: u32, p: Option<f32>, io: &mut impl CallIo) {
        self.session.handle_input(now, Input::TurnVerdict { id, p });
        self.pump(now, io);
    }

    /// Speak on the call's behalf (control API).
    pub fn say(
        &mut self,
        now: Instant,
        what: Say,
        interrupt: bool,
        interruptible: bool,
        io: &mut impl CallIo,
    ) -> Result<(), SayError> {
        if !self.session.is_active() {
            return Err(SayError::NotActive);
        }
        if matches!(what, Say::Text(_)) && !self.engine.speaks_text() {
            return Err(SayError::CannotSpeakText(self.engine.label()));
        }
        self.session.say(now, what, interrupt, interruptible);
        self.pump(now, io);
        Ok(())
    }

    /// When [`Call::on_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.session.poll_timeout(), self.engine.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A deadline passed (or the shell woke for another reason at `now`).
    pub fn on_timeout(&mut self, now: Instant, io: &mut impl CallIo) {
        self.session.handle_timeout(now);
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        self.pump(now, io);
    }

    /// Drain the session and the engine into each other and into `io` until
    /// both are quiet.
    pub fn pump(&mut self, now: Instant, io: &mut impl CallIo) {
        let Call { session, carrier, engine, ended, .. } = self;
        let frame = session.frame_samples().max(1);
        loop {
            let mut progressed = false;
            while let Some(out) = session.poll_output() {
                progressed = true;
                match out {
                    Output::ToCarrier(cmd) => {
                        let (class, frames) = match cmd {
                            crate::carrier::CarrierCommand::Audio(pcm) => {
                                (MsgClass::Audio, pcm.len().div_ceil(frame) as u64)
                            }
                            crate::carrier::CarrierCommand::Clear => (MsgClass::Priority, 0),
                            crate::carrier::CarrierCommand::Mark(_) => (MsgClass::Control, 0),
                        };
                        let wire = io.wire();
                        wire.set_class(class);
                        let before = wire.dropped();
                        // Encoding fails only before start; nothing is sent then.
                        let _ = carrier.encode(&cmd, wire);
                        let dropped = wire.dropped() > before;
                        if frames > 0 {
                            if dropped { io.frames_dropped(frames) } else { io.frames_out(frames) }
                        }
                    }
                    Output::ToEngine(cmd) => engine.handle_command(now, cmd),
                    Output::End(r) => *ended = Some(r),
                    other => io.output(other),
                }
            }
            while let Some(ev) = engine.poll_event() {
                progressed = true;
                session.handle_input(now, Input::Engine(ev));
            }
            if !progressed {
                break;
            }
        }
        while let Some((link, msg)) = engine.poll_transmit() {
            io.link(link, msg);
        }
    }
}
