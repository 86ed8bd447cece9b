//! The fuzz targets on the stable toolchain: every file of each target's
//! corpus (`fuzz/corpus/<target>/`: seeds from `scripts/fuzz-seeds.py` and
//! what libFuzzer kept from its runs) and of `fuzz/regressions/<target>/`
//! (inputs that once crashed) goes through the same body as
//! `cargo +nightly fuzz run <target>` — then a bounded run of byte-level
//! mutations of it from a fixed-seed generator. A body returns for every
//! input; a panic fails the test with the input that caused it.

use std::path::Path;

use callbridge_testkit::fuzz::TARGETS;
use callbridge_testkit::mutate::{Rng, mutate};

/// Mutations per target on top of the corpus (bounded: the whole test takes seconds).
const MUTATIONS: usize = 3000;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<_> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    out.sort();
    out
}

fn run(target: &str, body: fn(&[u8]), name: &str, input: &[u8]) {
    if std::panic::catch_unwind(|| body(input)).is_err() {
        let keep = std::env::temp_dir().join(format!("fuzz-{target}-{name}"));
        let _ = std::fs::write(&keep, input);
        panic!("{target}: input {name} panics (saved to {})", keep.display());
    }
}

#[test]
fn every_corpus_input_and_its_mutations_pass_every_target() {
    let mut seen = 0;
    for (target, body) in TARGETS {
        let corpus = files(&Path::new("fuzz/corpus").join(target));
        assert!(!corpus.is_empty(), "{target} has a corpus (scripts/fuzz-seeds.py)");
        let regressions = files(&Path::new("fuzz/regressions").join(target));
        for (name, input) in corpus.iter().chain(&regressions) {
            run(target, *body, name, input);
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
        for i in 0..MUTATIONS {
            let (_, base) = &corpus[rng.below(corpus.len())];
            let input = mutate(&mut rng, base);
            run(target, *body, &format!("mutation-{i}"), &input);
        }
        seen += 1;
    }
    assert_eq!(seen, 12, "every target ran");
}

#[test]
fn each_fuzz_target_has_its_libfuzzer_entry() {
    for (target, _) in TARGETS {
        let src = std::fs::read_to_string(format!("fuzz/fuzz_targets/{target}.rs"))
            .unwrap_or_else(|_| panic!("fuzz/fuzz_targets/{target}.rs"));
        assert!(src.contains(&format!("callbridge_testkit::fuzz::{target}(data)")), "{target} calls its body");
    }
}

#[test]
fn every_webhook_route_the_harness_picks_reaches_its_handler() {
    // The harness is only worth its run time if its inputs get past routing:
    // whatever route the first byte picks must not meet the router's own
    // empty 404 or a 405 (a handler's 404 says what it did not find), and a
    // plain Twilio voice webhook for the tenant's number (unsigned, as the
    // harness allows) is answered with a stream.
    for route in 0..=255u8 {
        let input = [route, b'c', b'a', b'l', b'l', b'=', b'c', b'_', b'1', b'\n', b'{', b'}'];
        let (status, body) = callbridge_testkit::fuzz::webhook_status(&input).expect("a request");
        assert!(!(status == 404 && body.is_empty()) && status != 405, "route {route}: {status}");
    }
    let voice = b"\x00\nCallSid=CA1&AccountSid=AC1&From=%2B15557770000&To=%2B15550001111&CallStatus=ringing";
    let (status, body) = callbridge_testkit::fuzz::webhook_status(voice).unwrap();
    let twiml = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Stream"), "{twiml}");
}

#[test]
fn the_webrtc_seeds_reach_the_opus_decoder_and_the_sdp_parser() {
    // A browser call's seed session decodes to audio (five packets, three
    // concealed frames; the late packet and the DTX marker add nothing) and
    // two key presses (the repeated end packet is the same press).
    let session = std::fs::read("fuzz/corpus/webrtc_media/seed-session").unwrap();
    let got = callbridge_testkit::fuzz::webrtc_media_decoded(&session);
    let rate = [16_000, 8_000, 12_000, 24_000, 48_000][session.len() % 5];
    assert_eq!(got.samples, 8 * rate / 50, "{got:?} at {rate} Hz");
    assert_eq!(got.keys, "5#");
    // Media without the start message first is refused, not decoded.
    let media_only: Vec<u8> = session.splitn(2, |&b| b == b'\n').nth(1).unwrap().to_vec();
    assert_eq!(callbridge_testkit::fuzz::webrtc_media_decoded(&media_only).samples, 0);
    // The offer seed is an SDP the stack parses and the server accepts.
    let offer = std::fs::read_to_string("fuzz/corpus/webrtc_offer/seed-00").unwrap();
    assert!(webrtc::peer_connection::RTCSessionDescription::offer(offer.clone()).is_ok());
    assert!(callbridge::api::webrtc::looks_like_offer(&offer).is_ok());
    let neg = callbridge::runtime::webrtc::negotiated(&offer).expect("opus in the offer");
    assert_eq!((neg.opus, neg.dtmf), (111, Some(110)));
}
