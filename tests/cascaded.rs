//! The cascaded engine end to end on 127.0.0.1: a signed Twilio call whose
//! plan says `"engine": "cascaded"`, the FAKE Deepgram and FAKE ElevenLabs
//! servers (`callbridge_testkit::fake_{deepgram,elevenlabs}`), and the fake
//! backend answering `turn.user` whole or streamed. Scenarios: a full turn;
//! barge-in with the heard words checked against the alignment; a streamed
//! reply cut off; an STT socket drop without losing the caller's words; TTS
//! slower than real time; a backend that never answers; a backend that
//! streams slowly.

mod common;

use std::time::Duration;

use callbridge::config::Secrets;
use callbridge::engine::cascaded::CascadedEnv;
use callbridge_testkit::fake_deepgram::{FakeDeepgram, FakeDeepgramConfig};
use callbridge_testkit::fake_elevenlabs::{FakeElevenLabs, FakeElevenLabsConfig};
use callbridge_testkit::twilio_peer::ServerMessage;
use common::backend::{FakeBackend, Mode, Received};
use common::calls::*;
use common::net::*;
use serde_json::{Value, json};
use tokio::time::{Instant, interval};

const SAID: &str = "My kitchen sink is leaking.";

struct Rig {
    dg: FakeDeepgram,
    el: FakeElevenLabs,
    backend: FakeBackend,
    srv: TestServer,
}

async fn rig(dg: FakeDeepgramConfig, el: FakeElevenLabsConfig, turn: Mode) -> Rig {
    rig_with(dg, el, turn, "").await
}

async fn rig_with(dg: FakeDeepgramConfig, el: FakeElevenLabsConfig, turn: Mode, toml: &str) -> Rig {
    let dg = FakeDeepgram::start(dg).await.unwrap();
    let el = FakeElevenLabs::start(el).await.unwrap();
    let backend = FakeBackend::start().await;
    backend.set("call.started", Mode::Json(json!({"engine": "cascaded", "tts": {"voice_id": "voice-xyz"}})));
    backend.set("turn.user", turn);
    let secrets = Secrets {
        cascaded: CascadedEnv {
            deepgram_key: Some("dg-key".into()),
            deepgram_url: Some(dg.url()),
            elevenlabs_key: Some("el-key".into()),
            elevenlabs_url: Some(el.url()),
        },
        ..secrets()
    };
    let srv = server_with(&backend, &format!("[engine.cascaded]\ngreeting = \"\"\n{toml}"), secrets).await;
    Rig { dg, el, backend, srv }
}

fn script() -> FakeDeepgramConfig {
    FakeDeepgramConfig { script: vec![SAID.into(), "Tomorrow morning works.".into()], drop_after_bytes: None }
}

fn media(rx: &[Rx]) -> Vec<(Instant, Vec<u8>)> {
    rx.iter()
        .filter_map(|e| match e {
            Rx::Msg(at, ServerMessage::Media(p)) => Some((*at, p.clone())),
            _ => None,
        })
        .collect()
}

/// Stream silence for `frames` frames, collecting what arrives.
async fn listen(tw: &mut FakeTwilio, frames: usize) -> Vec<Rx> {
    talk(tw, &[], frames).await
}

fn one<'a>(r: &'a [Received], kind: &str) -> &'a Value {
    &r.iter().find(|e| e.kind() == kind).unwrap_or_else(|| panic!("no {kind}")).body
}

/// The words of `text` whose every character started before `heard_ms`
/// when each character takes `ms_per_char` (how the fake voice speaks).
fn heard_words(text: &str, heard_ms: u32, ms_per_char: u32) -> String {
    let mut out = Vec::new();
    let mut at = 0u32;
    for w in text.split(' ') {
        let last = at + (w.chars().count() as u32 - 1) * ms_per_char;
        if last >= heard_ms {
            break;
        }
        out.push(w);
        at += (w.chars().count() as u32 + 1) * ms_per_char;
    }
    out.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_turn_goes_stt_then_backend_then_tts() {
    let reply = "Sure. I can send a plumber tomorrow morning.";
    let r = rig(script(), FakeElevenLabsConfig::default(), Mode::Json(json!({"reply": reply}))).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    let speech = ulaw_fixture("caller_short_8k.wav");
    let mut got = talk(&mut tw, &speech, 60).await;
    got.extend(listen(&mut tw, 150).await);
    let events = r.backend.wait_for("turn.agent", Duration::from_secs(10)).await;
    verify_all(&events, SECRET_A);
    let user = one(&events, "turn.user");
    assert_eq!(user["transcript"], SAID, "the fake's transcript reached the backend as the turn's text");
    let agent = one(&events, "turn.agent");
    assert_eq!(agent["text"], reply);
    assert_eq!(agent["heard_text"], reply);
    assert_eq!(agent["interrupted"], false);
    // The caller heard the voice: about 60 ms per character of it.
    let heard = media(&got);
    let frames: usize = heard.iter().map(|(_, p)| p.len()).sum::<usize>() / 160;
    let expected = (reply.len() + 1) * 60 / 20;
    assert!(frames + 10 >= expected && is_loud(&heard.iter().flat_map(|(_, p)| p.clone()).collect::<Vec<_>>()));
    // Deepgram: µ-law untouched, the documented query, `Token` auth.
    let (auth, q) = &r.dg.opened()[0];
    assert_eq!(auth, "Token dg-key");
    for (k, v) in [("encoding", "mulaw"), ("sample_rate", "8000"), ("channels", "1"), ("interim_results", "true")] {
        assert_eq!(q.get(k).map(String::as_str), Some(v), "{k}");
    }
    let audio = &r.dg.audio()[0];
    let at = speech.windows(160).position(|w| w == &audio[..160]).expect("Deepgram got the caller's own bytes");
    assert_eq!(&audio[..1600], &speech[at..at + 1600]);
    // ElevenLabs: the plan's voice, µ-law out, one context, flushed at the sentence end.
    let (voice, key, q) = &r.el.opened()[0];
    assert_eq!((voice.as_str(), key.as_str()), ("voice-xyz", "el-key"));
    assert_eq!(q.get("output_format").map(String::as_str), Some("ulaw_8000"));
    let sent = r.el.received();
    assert_eq!(sent[0]["text"], " ");
    assert_eq!(
        sent[1],
        json!({"text": format!("{reply} "), "context_id": "r1", "flush": true}),
        "a whole reply goes at once"
    );
    assert!(sent.contains(&json!({"context_id": "r1", "close_context": true})));
    // Every stage is measured.
    for stage in ["endpoint", "stt_final", "backend_first_text", "tts_first_audio", "overhead"] {
        let n = r.srv.metric("callbridge_stage_latency_seconds_count", &[("stage", stage)]);
        assert!(n >= 1.0, "stage {stage} measured ({n})");
    }
    r.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barge_in_reports_exactly_the_words_the_caller_heard() {
    let reply = "Sure. We have a technician free tomorrow between nine and eleven in the morning, \
                 and another slot on Friday afternoon if that suits you better.";
    let r = rig(script(), FakeElevenLabsConfig::default(), Mode::Json(json!({"reply": reply}))).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    // Let the bot talk for about two seconds, then talk over it.
    let mut tick = interval(Duration::from_millis(20));
    let silence = [0xFFu8; 160];
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut first = None;
    while first.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(2)) {
        assert!(Instant::now() < deadline, "the reply never started");
        tick.tick().await;
        tw.frame(&silence).await;
        while let Ok(ev) = tw.rx.try_recv() {
            if let Rx::Msg(at, ServerMessage::Media(_)) = ev {
                first.get_or_insert(at);
            }
        }
    }
    let got = talk(&mut tw, &ulaw_fixture("caller_leak_8k.wav")[..160 * 50], 0).await;
    assert!(got.iter().any(|e| matches!(e, Rx::Msg(_, ServerMessage::Clear))), "the carrier was cleared");
    let events = r.backend.wait_for("turn.agent", Duration::from_secs(5)).await;
    let agent = one(&events, "turn.agent");
    assert_eq!(agent["interrupted"], true);
    let heard_ms = agent["heard_ms"].as_u64().unwrap() as u32;
    assert!((1500..4000).contains(&heard_ms), "heard {heard_ms} ms");
    let expected = heard_words(reply, heard_ms, 60);
    assert!(!expected.is_empty() && expected.len() < reply.len());
    assert_eq!(agent["heard_text"], expected.as_str(), "heard text from the alignment, word-exact");
    assert_eq!(agent["text"], reply, "the whole reply is kept beside what was heard");
    let barge = one(&events, "barge_in");
    assert_eq!(barge["heard_ms"], agent["heard_ms"]);
    r.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barge_in_cancels_a_reply_still_streaming_and_its_action() {
    let lines = vec![
        (0, json!({"reply_delta": "Sure. "})),
        (0, json!({"reply_delta": "Let me look at the calendar and find you the earliest slot we have. "})),
        (4000, json!({"reply_delta": "We have nine."})),
        (100, json!({"action": {"type": "hangup"}})),
    ];
    let r = rig(script(), FakeElevenLabsConfig::default(), Mode::Ndjson(lines)).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    let mut got = listen(&mut tw, 100).await;
    assert!(!media(&got).is_empty(), "the first sentences are spoken while the backend writes");
    got = talk(&mut tw, &ulaw_fixture("caller_leak_8k.wav")[..160 * 50], 0).await;
    assert!(got.iter().any(|e| matches!(e, Rx::Msg(_, ServerMessage::Clear))));
    // The stream is dropped (the backend sees it when it writes its next line) …
    let deadline = Instant::now() + Duration::from_secs(6);
    while r.backend.streams_cancelled().is_empty() {
        assert!(Instant::now() < deadline, "the streamed reply was not cancelled");
        listen(&mut tw, 10).await;
    }
    // … the voice's context is closed, and the call goes on (no hangup).
    assert!(r.el.received().iter().any(|m| m["close_context"] == true && m["context_id"] == "r1"));
    let events = r.backend.received();
    assert!(!events.iter().any(|e| e.kind() == "call.ended"), "the cancelled reply's hangup did not run");
    assert!(events.iter().any(|e| e.kind() == "turn.agent" && e.body["interrupted"] == true));
    r.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stt_socket_drops_mid_sentence_and_no_words_are_lost() {
    let dg = FakeDeepgramConfig { drop_after_bytes: Some(4000), ..script() };
    let r = rig(dg, FakeElevenLabsConfig::default(), Mode::Json(json!({"reply": "Okay."}))).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    let events = r.backend.wait_for("turn.user", Duration::from_secs(8)).await;
    assert_eq!(one(&events, "turn.user")["transcript"], SAID);
    assert_eq!(r.dg.connections(), 2, "one reconnect");
    let audio = r.dg.audio();
    assert!(audio[0].len() >= 4000);
    assert_eq!(&audio[1][..4000], &audio[0][..4000], "what was not finalized was sent again");
    r.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_slower_than_real_time_is_counted_and_nothing_is_lost() {
    let reply = "Sure. I can send a plumber tomorrow morning.";
    // 600 ms of audio every 900 ms.
    let el = FakeElevenLabsConfig { ms_per_char: 60, chars_per_chunk: 10, chunk_delay_ms: 900, mute: false };
    let r = rig(script(), el, Mode::Json(json!({"reply": reply}))).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    let mut got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    got.extend(listen(&mut tw, 300).await);
    let events = r.backend.wait_for("turn.agent", Duration::from_secs(5)).await;
    assert_eq!(one(&events, "turn.agent")["interrupted"], false);
    let underruns = r.srv.metric("callbridge_playback_underruns_total", &[]);
    assert!(underruns >= 2.0, "gaps while the voice lagged were counted ({underruns})");
    // Every sample of the voice reached the caller, in whole frames.
    let frames: usize = media(&got).iter().map(|(_, p)| p.len()).sum::<usize>() / 160;
    let expected = (reply.len() + 1) * 60 / 20;
    assert!((expected..expected + 3).contains(&frames), "{frames} frames for {expected}");
    r.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gets_the_filler_then_the_fallback() {
    let r = rig(script(), FakeElevenLabsConfig::default(), Mode::Hang).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    let mut got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    // End of turn (0.8 s), filler at 0.7 s, fallback at 1.75 s (4.4 s long).
    got.extend(listen(&mut tw, 450).await);
    let events = r.backend.wait_for("error", Duration::from_secs(5)).await;
    let err = one(&events, "error");
    assert_eq!((err["source"].as_str(), err["code"].as_str()), (Some("callback"), Some("timeout")));
    let clip = |s: &str| callbridge::engine::local::load_clip(s).unwrap().len() / 160;
    let frames: usize = media(&got).iter().map(|(_, p)| p.len()).sum::<usize>() / 160;
    let (filler, fallback) = (clip("builtin:filler"), clip("builtin:fallback"));
    assert!(frames + 4 >= filler + fallback, "{frames} frames: filler {filler} + fallback {fallback}");
    r.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_gone_silent_is_given_up_and_the_caller_hears_the_fallback() {
    let el = FakeElevenLabsConfig { mute: true, ..FakeElevenLabsConfig::default() };
    let toml = "[engine.cascaded.elevenlabs]\nanswer_timeout_ms = 1000\n";
    let r = rig_with(script(), el, Mode::Json(json!({"reply": "Sure, Tuesday at nine."})), toml).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    let mut got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    // End of turn (0.8 s), the reply sent to a voice that never speaks, given up 1 s later.
    got.extend(listen(&mut tw, 400).await);
    let events = r.backend.wait_for("error", Duration::from_secs(5)).await;
    let err = one(&events, "error");
    assert_eq!((err["source"].as_str(), err["code"].as_str()), (Some("engine"), Some("engine_silent")), "{err}");
    let fallback = callbridge::engine::local::load_clip("builtin:fallback").unwrap().len() / 160;
    let frames: usize = media(&got).iter().map(|(_, p)| p.len()).sum::<usize>() / 160;
    assert!(frames + 4 >= fallback, "{frames} frames heard, the fallback is {fallback}");
    assert!(r.el.received().iter().any(|m| m["text"] == "Sure, Tuesday at nine. "), "the reply was sent to be spoken");
    r.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_streaming_backend_is_heard_from_its_first_sentence() {
    let lines = vec![
        (100, json!({"reply_delta": "Sure, let me check that. "})),
        (2500, json!({"reply_delta": "A plumber can come tomorrow at nine."})),
    ];
    let r = rig(script(), FakeElevenLabsConfig::default(), Mode::Ndjson(lines)).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    let mut got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    got.extend(listen(&mut tw, 350).await);
    let lines = r.backend.lines_sent();
    assert_eq!(lines.len(), 2);
    let first_audio = media(&got).first().expect("the bot spoke").0.into_std();
    assert!(first_audio < lines[1].0, "speech started before the backend's second sentence was written");
    let events = r.backend.wait_for("turn.agent", Duration::from_secs(5)).await;
    let agent = one(&events, "turn.agent");
    assert_eq!(agent["text"], "Sure, let me check that. A plumber can come tomorrow at nine.");
    r.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_can_hang_up_or_transfer_once_it_has_been_heard() {
    // Hang up after the goodbye was heard in full.
    let bye = json!({"reply": "Thanks for calling. Goodbye.", "action": {"type": "hangup"}});
    let r = rig(script(), FakeElevenLabsConfig::default(), Mode::Json(bye)).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    let mut got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    // The bot speaks, then closes the stream itself.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        match tokio::time::timeout_at(deadline, tw.rx.recv()).await {
            Ok(Some(Rx::Closed(_))) | Ok(None) => break,
            Ok(Some(ev)) => got.push(ev),
            Err(_) => panic!("the call was not hung up"),
        }
    }
    let events = r.backend.wait_for("call.ended", Duration::from_secs(5)).await;
    let ended = one(&events, "call.ended");
    assert_eq!(ended["reason"], "agent_hangup");
    assert_eq!(
        (ended["model"].as_str(), ended["voice"].as_str()),
        (Some("nova-3 + eleven_flash_v2_5"), Some("voice-xyz"))
    );
    assert_eq!(ended["usage"]["tts_characters"], "Thanks for calling. Goodbye. ".len());
    assert!(ended["usage"]["stt_seconds"].as_f64().unwrap() >= 0.5, "{}", ended["usage"]);
    let agent = one(&events, "turn.agent");
    assert_eq!(
        (agent["interrupted"].as_bool(), agent["heard_text"].as_str()),
        (Some(false), Some("Thanks for calling. Goodbye."))
    );
    let heard: usize = media(&got).iter().map(|(_, p)| p.len()).sum::<usize>() / 160;
    assert!(heard >= 28 * 60 / 20, "the goodbye was played before hanging up ({heard} frames)");
    r.srv.shutdown().await;

    // Transfer, within the number's transfer_allow, through Twilio's REST API.
    let to = json!({"reply": "Connecting you now.", "action": {"type": "transfer", "to": "+15557654321"}});
    let r = rig(script(), FakeElevenLabsConfig::default(), Mode::Json(to)).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    let deadline = Instant::now() + Duration::from_secs(6);
    while r.backend.twilio_updates().is_empty() {
        assert!(Instant::now() < deadline, "no transfer reached Twilio");
        listen(&mut tw, 10).await;
    }
    let (_, sid, form) = &r.backend.twilio_updates()[0];
    assert_eq!(sid, &tw.peer.call_sid);
    assert!(form["Twiml"].contains(">+15557654321</Dial>"), "{}", form["Twiml"]);
    let events = r.backend.received();
    assert!(events.iter().any(|e| e.kind() == "turn.agent" && e.body["interrupted"] == false), "heard first");
    r.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_outside_the_allowed_destinations_is_not_carried_out() {
    let to = json!({"reply": "Connecting you.", "action": {"type": "transfer", "to": "+447700900123"}});
    let r = rig(script(), FakeElevenLabsConfig::default(), Mode::Json(to)).await;
    let mut tw = call(&r.srv, 1, NUMBER_A).await;
    talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    r.backend.wait_for("turn.agent", Duration::from_secs(5)).await;
    // The action runs once the reply's tail has played; then it is refused.
    let deadline = Instant::now() + Duration::from_secs(6);
    while r.srv.metric("callbridge_call_errors_total", &[("source", "transfer_refused")]) < 1.0 {
        assert!(Instant::now() < deadline, "the transfer was neither refused nor carried out");
        listen(&mut tw, 5).await;
    }
    assert!(r.backend.twilio_updates().is_empty(), "nothing was dialled");
    r.srv.shutdown().await;
}
