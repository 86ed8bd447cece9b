//! Session scenarios in virtual time: no sockets, no sleeps. Every threshold is
//! exercised on both sides.

mod common;

use std::sync::Arc;
use std::time::Duration;

use callbridge::engine::local::LocalClips;
use callbridge::engine::{AudioChunk, EngineEvent};
use callbridge::ids::ResponseId;
use callbridge::session::turn::TurnConfig;
use callbridge::session::{ControlCommand, HangupReason, SessionConfig, Telemetry};
use common::*;

const LOUD: f32 = -20.0;

/// Caller talks for `speech_frames`, then is silent until the turn ends.
fn caller_turn(h: &mut Harness, speech_frames: usize) {
    h.frames(&tone(LOUD), speech_frames);
}

#[test]
fn endpointing_fires_exactly_after_the_configured_silence() {
    for endpoint in [300u32, 500] {
        let cfg = SessionConfig {
            turn: TurnConfig { endpoint_silence_ms: endpoint, ..TurnConfig::default() },
            ..energy_config()
        };
        let mut h = Harness::with_reply_ms(cfg, 1000);
        caller_turn(&mut h, 25);
        let frames = endpoint as usize / 20;
        h.frames(&silence(), frames - 1);
        assert_eq!(h.turns_answered(), 0, "endpoint {endpoint}: one frame early");
        assert_eq!(h.audio_frames(), 0);
        h.frame(&silence());
        assert_eq!(h.turns_answered(), 1, "endpoint {endpoint}: at the threshold");
        // The reply starts in the same instant: lead of 60 ms = 3 frames.
        assert_eq!(h.audio_frames(), 3);
        assert_eq!(h.response_latencies(), vec![Duration::from_millis(endpoint as u64)]);
    }
}

#[test]
fn short_noise_does_not_start_a_turn_but_min_speech_does() {
    let cfg = energy_config(); // min_speech_ms 60 = 3 frames
    let mut h = Harness::with_reply_ms(cfg.clone(), 1000);
    h.frames(&tone(LOUD), 2);
    h.frames(&silence(), 40);
    assert_eq!(h.turns_answered(), 0);
    let mut h = Harness::with_reply_ms(cfg, 1000);
    h.frames(&tone(LOUD), 3);
    h.frames(&silence(), 40);
    assert_eq!(h.turns_answered(), 1);
}

#[test]
fn outbound_audio_is_paced_at_real_time_plus_lead() {
    let mut h = Harness::with_reply_ms(energy_config(), 2000);
    caller_turn(&mut h, 10);
    h.frames(&silence(), 25);
    let start = h.now;
    assert_eq!(h.audio_frames(), 3);
    h.advance_to(start + Duration::from_millis(1000));
    // 3 frames of lead + one per 20 ms.
    assert_eq!(h.audio_frames(), 3 + 50);
    h.advance_to(start + Duration::from_millis(5000));
    assert_eq!(h.audio_frames(), 100, "a 2 s reply is 100 frames and no more");
    assert!(!h.session().bot_playing(h.now));
}

/// Start a reply and let it play for `ms`.
fn reply_playing_for(cfg: SessionConfig, ms: u64) -> Harness {
    let mut h = Harness::with_reply_ms(cfg, 5000);
    caller_turn(&mut h, 10);
    h.frames(&silence(), 25);
    assert_eq!(h.audio_frames(), 3, "reply started");
    // The carrier streams the caller's line without a break (silence too),
    // as Twilio, Telnyx and Vonage do.
    h.frames(&silence(), (ms / 20) as usize);
    h
}

#[test]
fn barge_in_needs_min_speech_and_then_clears_cancels_and_reports_heard() {
    let cfg = energy_config(); // barge_in_min_speech_ms = 60
    let mut h = reply_playing_for(cfg.clone(), 1000);
    let reply_start = h.now - Duration::from_millis(1000);
    h.frames(&tone(LOUD), 2);
    assert!(h.clears().is_empty(), "40 ms of speech is not a barge-in");
    h.frames(&silence(), 1);
    h.frames(&tone(LOUD), 2);
    assert!(h.clears().is_empty(), "the run restarted after a silent frame");
    h.frame(&tone(LOUD));
    let clears = h.clears();
    assert_eq!(clears.len(), 1, "60 ms of continuous speech barges in");
    let onset = h.now - Duration::from_millis(40);
    let (latency, heard) = h.barge_ins()[0];
    assert_eq!(latency, h.now - onset);
    assert_eq!(latency, Duration::from_millis(40), "clear is sent on the frame that completes 60 ms");
    // The caller heard exactly the time the reply had been playing.
    let played = (h.now - reply_start).as_millis() as u32;
    assert_eq!(heard, played);
    assert_eq!(h.cancels(), vec![(ResponseId(1), played)]);
    // Nothing more of the interrupted reply is sent, even as time passes.
    let frames_at_clear = h.audio_frames();
    let t = h.now + Duration::from_millis(200);
    h.advance_to(t);
    assert_eq!(h.audio_frames(), frames_at_clear);
    assert!(!h.session().bot_playing(h.now));
}

#[test]
fn stale_audio_of_an_interrupted_response_is_dropped_on_arrival() {
    let mut h = reply_playing_for(energy_config(), 500);
    h.frames(&tone(LOUD), 3);
    assert_eq!(h.clears().len(), 1);
    let before = h.audio_frames();
    h.engine_event(EngineEvent::Audio(AudioChunk::whole(ResponseId(1), Arc::from(vec![5i16; 1600]))));
    let t = h.now + Duration::from_millis(200);
    h.advance_to(t);
    assert_eq!(h.audio_frames(), before);
    assert!(h.io.telemetry.iter().any(|(_, t)| *t == Telemetry::StaleAudioDropped(1600)));
    // A newer response plays normally.
    h.engine_event(EngineEvent::ResponseStarted(ResponseId(7)));
    h.engine_event(EngineEvent::Audio(AudioChunk::whole(ResponseId(7), Arc::from(vec![9i16; 1600]))));
    assert!(h.audio_frames() > before);
}

#[test]
fn no_clear_when_nothing_is_playing() {
    let mut h = Harness::with_reply_ms(energy_config(), 200);
    caller_turn(&mut h, 10);
    h.frames(&silence(), 25);
    let t = h.now + Duration::from_millis(400);
    h.advance_to(t); // the 200 ms reply has finished
    assert!(!h.session().bot_playing(h.now));
    caller_turn(&mut h, 20);
    assert!(h.clears().is_empty());
    assert!(h.barge_ins().is_empty());
    assert_eq!(h.cancels().len(), 0);
}

#[test]
fn protection_window_both_sides() {
    // barge_in_protect_ms = 150: speech in the first 150 ms of a reply cannot
    // interrupt it. (No resume grace here: speech right after the end of a turn
    // would otherwise count as the caller going on, which the turn scenarios test.)
    let mut cfg = energy_config();
    cfg.turn.resume_grace_ms = 0;
    let mut h = reply_playing_for(cfg.clone(), 0);
    h.frames(&tone(LOUD), 6); // 120 ms into the reply, 120 ms of speech
    assert!(h.clears().is_empty(), "inside the protection window");
    h.frames(&tone(LOUD), 2); // now 160 ms into the reply
    assert_eq!(h.clears().len(), 1, "past the window the continuing speech barges in");
    let (latency, _) = h.barge_ins()[0];
    assert_eq!(latency, Duration::from_millis(140), "measured from the true onset");

    let cfg = SessionConfig { turn: TurnConfig { barge_in_protect_ms: 0, ..energy_config().turn }, ..energy_config() };
    let mut h = reply_playing_for(cfg, 0);
    h.frames(&tone(LOUD), 3);
    assert_eq!(h.clears().len(), 1, "no window: 60 ms of speech suffices");
}

#[test]
fn echo_guard_both_sides() {
    // echo_guard_dbfs = -40: while the bot plays, quieter speech does not count.
    let cfg = energy_config();
    let mut h = reply_playing_for(cfg.clone(), 500);
    h.frames(&tone(-43.0), 10);
    assert!(h.clears().is_empty(), "below the echo guard");
    let mut h = reply_playing_for(cfg.clone(), 500);
    h.frames(&tone(-37.0), 3);
    assert_eq!(h.clears().len(), 1, "above the echo guard");
    // The same quiet speech does start a turn when the bot is silent.
    let mut h = Harness::with_reply_ms(cfg, 200);
    h.frames(&tone(-43.0), 5);
    h.frames(&silence(), 25);
    assert_eq!(h.turns_answered(), 1);
}

#[test]
fn marks_floor_the_heard_position_and_cleared_marks_are_ignored() {
    let mut h = reply_playing_for(energy_config(), 600);
    let marks = h.marks();
    assert!(marks.len() >= 3, "a mark every 200 ms: {marks:?}");
    assert!(h.session().pending_marks() >= 3);
    h.mark(marks[0]);
    assert_eq!(h.session().pending_marks(), marks.len() - 1);
    h.frames(&tone(LOUD), 3);
    assert_eq!(h.clears().len(), 1);
    assert_eq!(h.session().pending_marks(), 0, "marks pending at the clear are forgotten");
    // Twilio echoes them right after the clear; they must not count as played.
    for m in &marks[1..] {
        h.mark(*m);
    }
    assert_eq!(h.session().heard_ms(h.now), 0);
}

#[test]
fn caller_speaking_again_before_any_audio_cancels_without_clear() {
    // A response exists but has not been released (pacer not yet asked): simulate a
    // slow engine by injecting a started response with no audio.
    let mut h = Harness::new(energy_config(), LocalClips { greeting: None, reply: Arc::from(vec![0i16; 0]) });
    h.engine_event(EngineEvent::ResponseStarted(ResponseId(3)));
    h.frames(&tone(LOUD), 3);
    assert!(h.clears().is_empty());
    assert_eq!(h.cancels(), vec![(ResponseId(3), 0)]);
}

#[test]
fn greeting_plays_when_the_call_starts_and_stop_ends_the_call() {
    let clips = LocalClips { greeting: Some(Arc::from(vec![3i16; 1600])), reply: Arc::from(vec![1i16; 800]) };
    let mut h = Harness::new(energy_config(), clips);
    // 60 ms of lead at the start, then one frame per 20 ms of the 100 ms warm-up.
    assert_eq!(h.audio_frames(), 3 + 5);
    assert!(matches!(h.sent[0], Sent::Audio { first_sample: 3, .. }));
    h.carrier_text("stop");
    assert_eq!(h.ended(), Some(HangupReason::CarrierStop));
    assert_eq!(h.count(|c| *c == Cmd::Stop), 1);
}

#[test]
fn control_interrupt_and_hangup() {
    let mut h = reply_playing_for(energy_config(), 300);
    h.control(ControlCommand::Interrupt);
    assert_eq!(h.clears().len(), 1);
    assert_eq!(h.cancels().len(), 1);
    assert!(h.barge_ins().is_empty(), "an API interrupt is not a caller barge-in");
    h.control(ControlCommand::Hangup);
    assert_eq!(h.ended(), Some(HangupReason::Control));
}

#[test]
fn real_speech_fixture_drives_a_turn_with_the_webrtc_vad() {
    let (_, pcm) =
        callbridge::audio::wav::read_wav_mono_i16(&std::fs::read("fixtures/audio/caller_leak_8k.wav").unwrap())
            .unwrap();
    let mut h = Harness::with_reply_ms(SessionConfig::default(), 1000);
    for f in pcm.chunks_exact(160) {
        h.frame(f);
    }
    // One turn despite the 360 ms pause between the two sentences.
    assert_eq!(h.turns_answered(), 1);
    assert_eq!(h.io.telemetry.iter().filter(|(_, t)| *t == Telemetry::TurnStarted).count(), 1);
    let lat = h.response_latencies();
    assert_eq!(lat.len(), 1);
    let endpoint = Duration::from_millis(callbridge::session::turn::TurnConfig::default().endpoint_silence_ms as u64);
    assert_eq!(lat[0], endpoint, "response latency = endpoint silence with the local engine");
}

fn limited(max_s: Option<u64>, silence_s: Option<u64>) -> Harness {
    let mut cfg = energy_config();
    cfg.agent.max_duration = max_s.map(Duration::from_secs);
    cfg.agent.silence_timeout = silence_s.map(Duration::from_secs);
    Harness::new(cfg, LocalClips { greeting: None, reply: Arc::from(vec![1i16; 8000]) })
}

fn goodbyes(h: &Harness, len: usize) -> usize {
    h.count(|c| *c == Cmd::Play(len))
}

#[test]
fn max_duration_says_goodbye_then_hangs_up_even_mid_conversation() {
    let prompts = callbridge::session::agent::Prompts::builtin();
    let (bye, bye_ms) = (prompts.goodbye_time.len(), prompts.goodbye_time.len() as u64 / 8);
    let mut h = limited(Some(3), None);
    // The caller talks and the bot answers; at 3 s the goodbye starts, cutting the reply.
    caller_turn(&mut h, 40);
    let mut at = None;
    for _ in 0..200 {
        if goodbyes(&h, bye) > 0 {
            at = Some(h.ms());
            break;
        }
        h.frame(&silence());
    }
    // 3 s after the stream started (the harness's clock starts after its 100 ms warm-up).
    let at = at.expect("a goodbye line");
    assert!((2_880..=3_000).contains(&at), "the goodbye at 3 s ({at} ms)");
    assert!(h.ended().is_none(), "the goodbye plays first");
    // It ends once the goodbye had its time (its length + 700 ms).
    let frames_left = (bye_ms + 700) / 20;
    h.frames(&tone(LOUD), frames_left as usize - 3);
    assert!(h.ended().is_none(), "a caller talking over the goodbye does not change when it ends");
    h.frames(&silence(), 4);
    assert_eq!(h.ended(), Some(HangupReason::MaxDuration));
    assert_eq!(HangupReason::MaxDuration.code(), "max_duration");
}

#[test]
fn silence_timeout_counts_from_the_last_sound_and_speech_resets_it() {
    let prompts = callbridge::session::agent::Prompts::builtin();
    let bye = prompts.goodbye_silence.len();
    let mut h = limited(None, Some(4));
    // The caller speaks every 3 s for 12 s: never 4 s of silence (the reply is 1 s).
    for _ in 0..4 {
        caller_turn(&mut h, 20);
        h.frames(&silence(), 130);
    }
    assert_eq!(goodbyes(&h, bye), 0, "speech keeps the call open ({} ms)", h.ms());
    assert!(h.turns_answered() >= 4);
    // Then nothing: 4 s after the last reply finished playing, the goodbye; then the end.
    h.frames(&silence(), 250);
    assert_eq!(goodbyes(&h, bye), 1);
    h.frames(&silence(), bye / 160 + 40);
    assert_eq!(h.ended(), Some(HangupReason::SilenceTimeout));
    // Without limits, a silent call just goes on.
    let mut h = limited(None, None);
    h.frames(&silence(), 2_000);
    assert!(h.ended().is_none());
}
