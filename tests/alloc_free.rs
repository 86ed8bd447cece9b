//! The per-frame path allocates nothing in steady state, measured on the loop
//! the server runs: masked WebSocket frames read by tungstenite, Twilio JSON →
//! base64 → µ-law → VAD → turn-taking → barge-in → pacing → µ-law → base64 →
//! JSON through [`callbridge::call::Call`] (codec, session, local engine), the
//! outbound queue's arena, and the frames written back by tungstenite.

use std::sync::Arc;

use callbridge::audio::g711;
use callbridge::engine::local::LocalClips;
use callbridge::session::SessionConfig;
use callbridge_testkit::mem_call::{MemCall, client_frames};
use callbridge_testkit::twilio_peer::TwilioPeer;

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
    let n = msgs.len();
    // A long greeting so the bot is talking when the caller speaks: barge-ins happen.
    let clips =
        LocalClips { greeting: Some(Arc::from(vec![2000i16; 8000 * 60])), reply: Arc::from(vec![2000i16; 8000 * 60]) };
    let mut call = MemCall::new(client_frames(&msgs), &start, SessionConfig::default(), clips);
    // Warm up: one pass over the clip (a barge-in, a turn, a reply).
    for _ in 0..n {
        call.cycle();
    }
    let (sent0, barge0) = (call.io.sent, call.io.barge_ins);
    let info = allocation_counter::measure(|| {
        for _ in 0..3 * n {
            call.cycle();
        }
    });
    assert!(call.io.sent > sent0 + 30, "bot audio flowed between turns ({} messages)", call.io.sent - sent0);
    assert!(call.io.barge_ins > barge0, "the measured stretch includes barge-ins");
    assert_eq!(info.count_total, 0, "allocations in steady state: {info:?}");
}
