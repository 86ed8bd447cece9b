//! Network input never panics, for the Telnyx and Vonage codecs too: the real
//! call loop (codec, session, local engine) fed thousands of mutated and
//! truncated versions of their golden messages (Telnyx JSON text; Vonage text
//! and binary frames of every size), from a deterministic xorshift generator.
//! Every outcome is a decoded event, a skipped error or a fault that ends
//! that call — and a call that survives its garbage still answers a real
//! caller. (A corrupt Telnyx chunk number far ahead is the codec's own test,
//! `a_jump_in_the_numbering_is_followed_and_never_mutes_the_caller`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::call::Call;
use callbridge::carrier::telnyx::{TelnyxCodec, TelnyxLimits};
use callbridge::carrier::vonage::VonageCodec;
use callbridge::carrier::{Carrier, CarrierEvent, WireIn};
use callbridge::engine::Engine;
use callbridge::engine::local::{LocalClips, LocalEngine};
use callbridge::session::{Session, SessionConfig};
use callbridge_testkit::harness::{Cmd, SpyEngine, VecIo};
use callbridge_testkit::telnyx_peer::TelnyxPeer;
use callbridge_testkit::vonage_peer::VonagePeer;

use callbridge_testkit::mutate::{Rng, mutate};

fn golden(path: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn speech() -> Vec<i16> {
    callbridge::audio::wav::read_wav_mono_i16(&std::fs::read("fixtures/audio/caller_short_8k.wav").unwrap()).unwrap().1
}

fn clips() -> LocalClips {
    LocalClips { greeting: None, reply: Arc::from(vec![500i16; 800]) }
}

fn end_of_turns(log: &std::sync::Mutex<callbridge_testkit::harness::SpyLog>) -> usize {
    log.lock().unwrap().cmds.iter().filter(|(_, c)| *c == Cmd::EndOfTurn).count()
}

#[test]
fn mutated_telnyx_frames_never_panic_and_surviving_calls_still_answer() {
    let bases: Vec<String> = golden("fixtures/telnyx/inbound.jsonl")
        .iter()
        .map(|c| c["raw"].as_str().unwrap().to_string())
        .filter(|r| !r.contains(r#""event":"start""#) && !r.contains(r#""event":"stop""#))
        .collect();
    let speech = speech();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let (mut ok, mut faults, mut survivors) = (0u32, 0u32, 0u32);
    let mut codes = std::collections::BTreeSet::new();
    for round in 0..200u64 {
        let mut peer = TelnyxPeer::new(round);
        let mut codec = TelnyxCodec::new(TelnyxLimits::default());
        let mut now = Instant::now();
        let (spy, log) = SpyEngine::new(Box::new(LocalEngine::new(clips())));
        let session = Session::new(SessionConfig::default(), codec.capabilities(), spy.format(), now).unwrap();
        let start = peer.start("+15557770000", "+15550001111", "");
        let info = match codec.decode_text(now, &start) {
            Ok(CarrierEvent::Start(i)) => i,
            other => panic!("{other:?}"),
        };
        let mut call = Call::new(session, Box::new(codec), Box::new(spy), 1_000);
        let mut io = VecIo::new(now);
        call.start(now, info, &mut io);
        let mut alive = true;
        for _ in 0..100 {
            now += Duration::from_millis(20);
            let pick = rng.below(bases.len());
            let msg = mutate(&mut rng, bases[pick].as_bytes());
            let msg = String::from_utf8_lossy(&msg);
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
        if alive && call.ended().is_none() {
            survivors += 1;
            let before = end_of_turns(&log);
            let mut u = [0u8; 160];
            for f in speech.chunks_exact(160).chain(std::iter::repeat_n(&[0i16; 160][..], 60)) {
                now += Duration::from_millis(20);
                callbridge::audio::g711::ulaw_encode(f, &mut u);
                let (_, m) = peer.media(&u, 0);
                call.on_wire(now, WireIn::Text(&m), &mut io).expect("a valid frame is accepted");
                call.on_timeout(now, &mut io);
            }
            assert!(end_of_turns(&log) > before, "round {round}: the call no longer takes turns after its garbage");
        }
    }
    assert!(ok > 1_000, "most mutated frames decode or are skipped (ok {ok})");
    assert!(survivors > 50, "enough calls survived to check they still work ({survivors})");
    for code in ["malformed_json", "bad_base64"] {
        assert!(codes.contains(code), "{code} was exercised: {codes:?}");
    }
    assert!(faults < 200, "not every round is fatal ({faults})");
}

#[test]
fn mutated_vonage_messages_never_panic_and_surviving_calls_still_answer() {
    let cases = golden("fixtures/vonage/inbound.jsonl");
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    };
    // (binary?, bytes) of every mid-call message.
    let bases: Vec<(bool, Vec<u8>)> = cases
        .iter()
        .filter(|c| !c["raw"].as_str().unwrap().contains("websocket:connected"))
        .map(|c| {
            let raw = c["raw"].as_str().unwrap();
            if c["kind"] == "binary" { (true, hex(raw)) } else { (false, raw.as_bytes().to_vec()) }
        })
        .collect();
    let speech = speech();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut survivors) = (0u32, 0u32);
    let mut codes = std::collections::BTreeSet::new();
    for round in 0..200u64 {
        let peer = VonagePeer::new(round, if round % 2 == 0 { 16000 } else { 8000 });
        let mut codec = VonageCodec::new();
        let mut now = Instant::now();
        let connected = peer.connected(&[("call_uuid", peer.uuid.as_str())]);
        let info = match codec.decode_text(&connected) {
            Ok(CarrierEvent::Start(i)) => i,
            other => panic!("{other:?}"),
        };
        let (spy, log) = SpyEngine::new(Box::new(LocalEngine::new(clips())));
        let session = Session::new(SessionConfig::default(), codec.capabilities(), spy.format(), now).unwrap();
        let mut call = Call::new(session, Box::new(codec), Box::new(spy), 1_000);
        let mut io = VecIo::new(now);
        call.start(now, info, &mut io);
        let mut alive = true;
        for _ in 0..100 {
            now += Duration::from_millis(20);
            let pick = rng.below(bases.len());
            let (binary, base) = &bases[pick];
            let msg = mutate(&mut rng, base);
            let r = if *binary {
                call.on_wire(now, WireIn::Binary(&msg), &mut io)
            } else {
                let t = String::from_utf8_lossy(&msg);
                call.on_wire(now, WireIn::Text(&t), &mut io)
            };
            match r {
                Ok(()) => ok += 1,
                Err(f) => {
                    codes.insert(f.code);
                    alive = false;
                    break;
                }
            }
            call.on_timeout(now, &mut io);
            while io.wire.pop().is_some() {}
        }
        codes.extend(io.protocol_errors.iter().copied());
        if alive && call.ended().is_none() {
            survivors += 1;
            let before = end_of_turns(&log);
            let mut u = [0u8; 160];
            for f in speech.chunks_exact(160).chain(std::iter::repeat_n(&[0i16; 160][..], 60)) {
                now += Duration::from_millis(20);
                callbridge::audio::g711::ulaw_encode(f, &mut u);
                call.on_wire(now, WireIn::Binary(&peer.media(&u)), &mut io).expect("a valid frame is accepted");
                call.on_timeout(now, &mut io);
            }
            assert!(end_of_turns(&log) > before, "round {round}: the call no longer takes turns after its garbage");
        }
    }
    assert!(ok > 1_000, "most mutated messages decode or are skipped (ok {ok})");
    assert!(survivors > 50, "enough calls survived to check they still work ({survivors})");
    for code in ["malformed_json", "bad_frame_size"] {
        assert!(codes.contains(code), "{code} was exercised: {codes:?}");
    }
}
