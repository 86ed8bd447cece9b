//! The per-frame path allocates nothing in steady state: Twilio JSON in →
//! base64 → µ-law → VAD → turn-taking → barge-in → pacing → µ-law → base64 →
//! JSON out, through the real codec, session and local engine.
//!
//! (The WebSocket transport below it, tungstenite, allocates one buffer per
//! message; that is outside this path and measured in benches/.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::audio::g711;
use callbridge::carrier::CarrierEvent;
use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
use callbridge::carrier::twilio_peer::TwilioPeer;
use callbridge::engine::local::{LocalClips, LocalEngine};
use callbridge::session::{Input, Output, Session, SessionConfig, Telemetry};

struct Call {
    codec: TwilioCodec,
    session: Session,
    engine: LocalEngine,
    out: String,
    sent: usize,
    barge_ins: usize,
    now: Instant,
}

impl Call {
    fn pump(&mut self) {
        let (codec, out, sent, barge_ins) = (&mut self.codec, &mut self.out, &mut self.sent, &mut self.barge_ins);
        self.engine.pump(&mut self.session, self.now, |o| match o {
            Output::ToCarrier(cmd) => {
                out.clear();
                codec.encode(&cmd, out).unwrap();
                *sent += 1;
            }
            Output::Telemetry(Telemetry::BargeIn { .. }) => *barge_ins += 1,
            _ => {}
        });
    }

    fn frame(&mut self, msg: &str) {
        self.now += Duration::from_millis(20);
        let ev = self.codec.decode(msg).unwrap();
        self.session.handle_input(self.now, Input::Carrier(ev)).unwrap();
        self.pump();
        if let Some(t) = self.session.poll_timeout()
            && t <= self.now
        {
            self.session.handle_timeout(self.now);
            self.pump();
        }
    }
}

#[test]
fn steady_state_frames_allocate_nothing() {
    let (_, pcm) =
        callbridge::audio::wav::read_wav_mono_i16(&std::fs::read("fixtures/audio/caller_leak_8k.wav").unwrap())
            .unwrap();
    let mut peer = TwilioPeer::new(1);
    let start = peer.start(&[]);
    let msgs: Vec<String> = pcm
        .chunks_exact(160)
        .enumerate()
        .map(|(i, f)| {
            let mut u = [0u8; 160];
            g711::ulaw_encode(f, &mut u);
            peer.media(&u, i as u64 * 20)
        })
        .collect();
    let mut codec = TwilioCodec::new(TwilioLimits::default());
    let CarrierEvent::Start(info) = codec.decode(&start).unwrap() else { panic!() };
    // A long greeting so the bot is talking when the caller speaks: barge-ins happen.
    let clips =
        LocalClips { greeting: Some(Arc::from(vec![2000i16; 8000 * 60])), reply: Arc::from(vec![2000i16; 8000 * 60]) };
    let engine = LocalEngine::new(clips);
    let now = Instant::now();
    let session = Session::new(SessionConfig::default(), engine.format(), now);
    let mut call = Call { codec, session, engine, out: String::with_capacity(1024), sent: 0, barge_ins: 0, now };
    call.session.handle_input(now, Input::Carrier(CarrierEvent::Start(info))).unwrap();
    call.pump();
    // Warm up: one pass over the clip (a barge-in, a turn, a reply).
    for m in &msgs {
        call.frame(m);
    }
    let (sent0, barge0) = (call.sent, call.barge_ins);
    let info = allocation_counter::measure(|| {
        for _ in 0..3 {
            for m in &msgs {
                call.frame(m);
            }
        }
    });
    assert!(call.sent > sent0 + 30, "bot audio flowed between turns ({} messages)", call.sent - sent0);
    assert!(call.barge_ins > barge0, "the measured stretch includes barge-ins");
    assert_eq!(info.count_total, 0, "allocations in steady state: {info:?}");
}
