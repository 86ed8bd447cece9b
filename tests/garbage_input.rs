//! Network input never panics: the real call loop (Twilio codec, session,
//! local engine) is fed tens of thousands of mutated and truncated versions of
//! real messages (a deterministic xorshift generator; the fuzz targets go
//! further). Every outcome must be a decoded event, a skipped error or a
//! fault that ends that call — and a call that survives its garbage still
//! answers a real caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::call::Call;
use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
use callbridge::carrier::{Carrier, CarrierEvent, WireIn};
use callbridge::engine::Engine;
use callbridge::engine::local::{LocalClips, LocalEngine};
use callbridge::session::{Session, SessionConfig};
use callbridge_testkit::harness::{Cmd, SpyEngine, VecIo};
use callbridge_testkit::twilio_peer::TwilioPeer;

use callbridge_testkit::mutate::{Rng, mutate_text};

#[test]
fn mutated_messages_never_panic_and_surviving_calls_still_answer() {
    let fixtures = std::fs::read_to_string("fixtures/twilio/inbound.jsonl").unwrap();
    let bases: Vec<String> = fixtures
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["raw"].as_str().unwrap().to_string())
        .collect();
    let (_, speech) =
        callbridge::audio::wav::read_wav_mono_i16(&std::fs::read("fixtures/audio/caller_short_8k.wav").unwrap())
            .unwrap();
    // Garbage that cannot legitimately end a started call (no start, no stop).
    let mid_call: Vec<String> = bases
        .iter()
        .filter(|b| !b.contains(r#""event":"start""#) && !b.contains(r#""event":"stop""#))
        .cloned()
        .collect();
    let clips = LocalClips { greeting: None, reply: Arc::from(vec![500i16; 800]) };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut faults, mut survivors) = (0u32, 0u32, 0u32);
    let mut codes = std::collections::BTreeSet::new();
    for round in 0..300u64 {
        let mut peer = TwilioPeer::new(round);
        let mut codec = TwilioCodec::new(TwilioLimits::default());
        let mut now = Instant::now();
        let (spy, log) = SpyEngine::new(Box::new(LocalEngine::new(clips.clone())));
        let session = Session::new(SessionConfig::default(), codec.capabilities(), spy.format(), now).unwrap();
        // Half the rounds start properly so media paths are reached.
        let info = if round % 2 == 0 {
            match codec.decode_text(&peer.start(&[])) {
                Ok(CarrierEvent::Start(i)) => Some(i),
                _ => None,
            }
        } else {
            None
        };
        let started = info.is_some();
        let mut call = Call::new(session, Box::new(codec), Box::new(spy), 1_000);
        let mut io = VecIo::new(now);
        if let Some(i) = info {
            call.start(now, i, &mut io);
        }
        let mut alive = true;
        for _ in 0..100 {
            now += Duration::from_millis(20);
            let pool = if round % 4 == 0 { &mid_call } else { &bases };
            let base = &pool[rng.below(pool.len())];
            let msg = mutate_text(&mut rng, base);
            match call.on_wire(now, WireIn::Text(&msg), &mut io) {
                Ok(()) => ok += 1,
                Err(f) => {
                    faults += 1;
                    codes.insert(f.code);
                    alive = false;
                    break;
                }
            }
            call.on_timeout(now, &mut io);
            while io.wire.pop().is_some() {}
        }
        codes.extend(io.protocol_errors.iter().copied());
        // A started call that survived its garbage still hears a real caller.
        if started && alive && call.ended().is_none() {
            survivors += 1;
            let before = log.lock().unwrap().cmds.iter().filter(|(_, c)| *c == Cmd::EndOfTurn).count();
            let mut u = [0u8; 160];
            for f in speech.chunks_exact(160).chain(std::iter::repeat_n(&[0i16; 160][..], 40)) {
                now += Duration::from_millis(20);
                callbridge::audio::g711::ulaw_encode(f, &mut u);
                let m = peer.media(&u, 0);
                call.on_wire(now, WireIn::Text(&m), &mut io).expect("a valid frame is accepted");
                call.on_timeout(now, &mut io);
            }
            let after = log.lock().unwrap().cmds.iter().filter(|(_, c)| *c == Cmd::EndOfTurn).count();
            assert!(after > before, "round {round}: the call no longer takes turns after its garbage");
        }
    }
    assert!(ok > 1_500, "most mutated messages decode or are skipped (ok {ok})");
    assert!(faults > 50, "fatal mutations end their call ({faults})");
    assert!(survivors > 20, "enough calls survived to check they still work ({survivors})");
    for code in ["malformed_json", "before_start", "bad_base64"] {
        assert!(codes.contains(code), "{code} was exercised: {codes:?}");
    }
}
