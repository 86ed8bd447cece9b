//! The cascaded engine without sockets: what it sends each provider, and
//! what it makes of their answers.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::deepgram::{DeepgramConfig, Stt, SttAudio, SttEvent};
use super::elevenlabs::{ElevenLabsConfig, TtsAudio};
use super::*;
use crate::engine::{AudioRef, Engine, EngineCommand, EngineEvent, LinkEvent, LinkMsg};

fn dg() -> DeepgramConfig {
    DeepgramConfig {
        url: "wss://dg.example/v1/listen".into(),
        api_key: "dg-secret".into(),
        model: "nova-3".into(),
        language: "en-US".into(),
        endpointing_ms: 300,
        utterance_end_ms: 1000,
        smart_format: true,
        audio: SttAudio::Mulaw8k,
        keepalive: Duration::from_secs(4),
        gate_hangover: Some(Duration::from_millis(1500)),
        finalize_timeout: Duration::from_millis(800),
        reconnects: 3,
        connect_timeout: Duration::from_secs(5),
    }
}

fn el() -> ElevenLabsConfig {
    ElevenLabsConfig {
        base_url: "wss://el.example/".into(),
        api_key: "el-secret".into(),
        voice_id: "voice1".into(),
        model_id: "eleven_flash_v2_5".into(),
        audio: TtsAudio::Ulaw8k,
        voice_settings: Value::Null,
        chunk_length_schedule: vec![50, 120, 160, 250],
        keepalive: Duration::from_secs(15),
        answer_timeout: Duration::from_secs(5),
        reconnects: 3,
        connect_timeout: Duration::from_secs(5),
    }
}

/// A loud µ-law frame (speech for the gate) and a silent one.
fn loud() -> Vec<u8> {
    (0..160).map(|i| crate::audio::g711::ulaw_encode_sample(if i % 2 == 0 { 8000 } else { -8000 })).collect()
}
fn quiet() -> Vec<u8> {
    vec![crate::audio::g711::ULAW_SILENCE; 160]
}

fn texts(out: &[(usize, LinkMsg)], link: usize) -> Vec<Value> {
    out.iter()
        .filter(|(l, _)| *l == link)
        .filter_map(|(_, m)| match m {
            LinkMsg::Text(t) => Some(serde_json::from_str(t).unwrap()),
            LinkMsg::Binary(_) => None,
        })
        .collect()
}

fn binary_bytes(out: &[(usize, LinkMsg)]) -> usize {
    out.iter()
        .map(|(_, m)| match m {
            LinkMsg::Binary(b) => b.len(),
            LinkMsg::Text(_) => 0,
        })
        .sum()
}

fn drain_tx(e: &mut CascadedEngine) -> Vec<(usize, LinkMsg)> {
    std::iter::from_fn(|| e.poll_transmit()).collect()
}

fn drain_ev(e: &mut CascadedEngine) -> Vec<EngineEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn results(text: &str, start: f64, dur: f64, is_final: bool, speech_final: bool, from_finalize: bool) -> String {
    json!({"type": "Results", "start": start, "duration": dur, "is_final": is_final, "speech_final": speech_final,
        "from_finalize": from_finalize, "channel": {"alternatives": [{"transcript": text, "confidence": 0.9, "words": []}]}})
    .to_string()
}

#[test]
fn links_carry_every_setting_and_the_keys_only_in_headers() {
    let e = CascadedEngine::new(dg(), el(), None);
    let links = e.links();
    assert_eq!(links[STT_LINK].name, "deepgram");
    let u = &links[STT_LINK].url;
    for q in [
        "model=nova-3",
        "encoding=mulaw",
        "sample_rate=8000",
        "channels=1",
        "interim_results=true",
        "endpointing=300",
        "utterance_end_ms=1000",
        "vad_events=true",
        "language=en-US",
    ] {
        assert!(u.contains(q), "{u} lacks {q}");
    }
    assert_eq!(links[STT_LINK].headers, vec![("Authorization".to_string(), "Token dg-secret".to_string())]);
    assert_eq!(
        links[TTS_LINK].url,
        "wss://el.example/v1/text-to-speech/voice1/multi-stream-input?model_id=eleven_flash_v2_5&output_format=ulaw_8000&inactivity_timeout=180"
    );
    assert_eq!(links[TTS_LINK].headers, vec![("xi-api-key".to_string(), "el-secret".to_string())]);
    assert!(!format!("{:?}{:?}", links, e).contains("secret"), "keys stay out of Debug");
    assert_eq!(e.format().input, InputAudio::Passthrough(AudioFormat::PCMU_8K));
    assert!(e.needs_brain() && e.transcribes_caller() && e.speaks_text());
}

#[test]
fn caller_audio_goes_untouched_and_a_turn_is_finalized_at_our_end_of_turn() {
    let t0 = Instant::now();
    let mut e = CascadedEngine::new(dg(), el(), None);
    e.handle_link(t0, STT_LINK, LinkEvent::Up { reconnected: false });
    let frame = loud();
    e.handle_command(t0, EngineCommand::Audio(AudioRef::Encoded(&frame)));
    let out = drain_tx(&mut e);
    assert!(matches!(&out[..], [(STT_LINK, LinkMsg::Binary(b))] if b[..] == frame[..]));
    e.handle_link(t0, STT_LINK, LinkEvent::Text(&results("my sink", 0.0, 0.5, false, false, false)));
    e.handle_link(t0, STT_LINK, LinkEvent::Text(&results("My sink is", 0.0, 0.8, true, false, false)));
    e.handle_link(t0, STT_LINK, LinkEvent::Text(&results("leaking", 0.8, 0.3, false, false, false)));
    let ev = drain_ev(&mut e);
    assert_eq!(
        ev,
        vec![
            EngineEvent::CallerTranscript { text: "my sink".into(), is_final: false },
            EngineEvent::CallerTranscript { text: "My sink is".into(), is_final: false },
            EngineEvent::CallerTranscript { text: "My sink is leaking".into(), is_final: false },
        ]
    );
    let t1 = t0 + Duration::from_millis(600);
    e.handle_command(t1, EngineCommand::EndOfTurn);
    assert_eq!(texts(&drain_tx(&mut e), STT_LINK), vec![json!({"type": "Finalize"})]);
    assert!(drain_ev(&mut e).is_empty(), "an interim is pending: wait for Deepgram");
    let t2 = t1 + Duration::from_millis(120);
    e.handle_link(t2, STT_LINK, LinkEvent::Text(&results("leaking.", 0.8, 0.4, true, false, true)));
    assert_eq!(
        drain_ev(&mut e),
        vec![
            EngineEvent::Stage { stage: "stt_final", latency: Duration::from_millis(120) },
            EngineEvent::CallerTranscript { text: "My sink is leaking.".into(), is_final: true },
        ]
    );
}

#[test]
fn a_turn_deepgram_already_ended_is_handed_over_at_once_and_a_silent_finalize_times_out() {
    let t0 = Instant::now();
    let mut e = CascadedEngine::new(dg(), el(), None);
    e.handle_link(t0, STT_LINK, LinkEvent::Text(&results("Hi there.", 0.0, 1.0, true, true, false)));
    drain_ev(&mut e);
    e.handle_command(t0, EngineCommand::EndOfTurn);
    assert!(texts(&drain_tx(&mut e), STT_LINK).is_empty(), "no Finalize needed");
    assert!(drain_ev(&mut e).contains(&EngineEvent::CallerTranscript { text: "Hi there.".into(), is_final: true }));
    // Nothing recognised and no answer to Finalize: an empty final at the deadline.
    e.handle_command(t0, EngineCommand::EndOfTurn);
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_millis(800)));
    e.handle_timeout(t0 + Duration::from_millis(800));
    assert!(drain_ev(&mut e).contains(&EngineEvent::CallerTranscript { text: String::new(), is_final: true }));
}

#[test]
fn silence_is_gated_with_keepalives_and_speech_brings_its_pre_roll() {
    let t0 = Instant::now();
    let mut s = Stt::new(dg());
    s.up(t0, false);
    let mut now = t0;
    let mut sent = Vec::new();
    for _ in 0..250 {
        // 5 s of silence from the start: nothing streamed
        s.audio_ulaw(now, &quiet());
        now += Duration::from_millis(20);
        if s.poll_timeout().is_some_and(|d| d <= now) {
            s.handle_timeout(now);
        }
        sent.extend(std::iter::from_fn(|| s.poll_transmit()));
    }
    assert!(sent.iter().all(|m| matches!(m, LinkMsg::Text(t) if t == r#"{"type":"KeepAlive"}"#)));
    assert_eq!(sent.len(), 1, "one keep-alive in 5 s (every 4 s)");
    s.audio_ulaw(now, &loud());
    let bytes: usize = std::iter::from_fn(|| s.poll_transmit())
        .map(|m| match m {
            LinkMsg::Binary(b) => b.len(),
            LinkMsg::Text(_) => 0,
        })
        .sum();
    assert_eq!(bytes, 3200 + 160, "400 ms of pre-roll, then the frame");
}

#[test]
fn a_dropped_socket_loses_no_caller_audio() {
    let t0 = Instant::now();
    let mut cfg = dg();
    cfg.gate_hangover = None;
    let mut e = CascadedEngine::new(cfg, el(), None);
    e.handle_link(t0, STT_LINK, LinkEvent::Up { reconnected: false });
    let frame = loud();
    for _ in 0..50 {
        e.handle_command(t0, EngineCommand::Audio(AudioRef::Encoded(&frame)));
    }
    assert_eq!(binary_bytes(&drain_tx(&mut e)), 8000);
    // Deepgram finalized the first 0.5 s; then the socket drops.
    e.handle_link(t0, STT_LINK, LinkEvent::Text(&results("My sink", 0.0, 0.5, true, false, false)));
    e.handle_link(t0, STT_LINK, LinkEvent::Lost);
    for _ in 0..10 {
        e.handle_command(t0, EngineCommand::Audio(AudioRef::Encoded(&frame)));
    }
    assert_eq!(binary_bytes(&drain_tx(&mut e)), 0, "nothing is sent into a dead socket");
    e.handle_link(t0, STT_LINK, LinkEvent::Up { reconnected: true });
    assert_eq!(binary_bytes(&drain_tx(&mut e)), 4000 + 1600, "the unfinalized 0.5 s and the 0.2 s of the gap");
    // The new connection's times start at the resent audio.
    e.handle_link(t0, STT_LINK, LinkEvent::Text(&results("is leaking", 0.0, 0.7, true, true, false)));
    e.handle_command(t0, EngineCommand::EndOfTurn);
    assert!(
        drain_ev(&mut e).contains(&EngineEvent::CallerTranscript { text: "My sink is leaking".into(), is_final: true })
    );
}

fn audio_msg(ctx: &str, samples: usize, chars: &str, starts: &[u32]) -> String {
    let ulaw = vec![crate::audio::g711::ulaw_encode_sample(1000); samples];
    json!({"audio": base64::engine::general_purpose::STANDARD.encode(ulaw), "contextId": ctx,
        "alignment": {"chars": chars.chars().map(|c| c.to_string()).collect::<Vec<_>>(),
            "charStartTimesMs": starts, "charDurationsMs": vec![10; starts.len()]}})
    .to_string()
}

#[test]
fn a_streamed_reply_is_spoken_sentence_by_sentence_with_its_alignment() {
    let t0 = Instant::now();
    let mut e = CascadedEngine::new(dg(), el(), None);
    e.handle_link(t0, TTS_LINK, LinkEvent::Up { reconnected: false });
    e.handle_command(t0, EngineCommand::Reply { text: "Sure. I can".into(), done: false });
    let sent = texts(&drain_tx(&mut e), TTS_LINK);
    assert_eq!(sent[0]["text"], " ");
    assert_eq!(sent[0]["context_id"], "r1");
    assert_eq!(sent[0]["generation_config"]["chunk_length_schedule"], json!([50, 120, 160, 250]));
    assert_eq!(
        sent[1],
        json!({"text": "Sure. ", "context_id": "r1", "flush": true}),
        "the first sentence goes at once"
    );
    assert_eq!(sent.len(), 2, "an unfinished sentence waits");
    e.handle_command(t0, EngineCommand::Reply { text: " send someone".into(), done: false });
    assert!(drain_tx(&mut e).is_empty());
    e.handle_command(t0, EngineCommand::Reply { text: " today.".into(), done: true });
    assert_eq!(
        texts(&drain_tx(&mut e), TTS_LINK),
        vec![
            json!({"text": "I can send someone today. ", "context_id": "r1", "flush": true}),
            json!({"context_id": "r1", "close_context": true}),
        ]
    );
    let ev = drain_ev(&mut e);
    assert_eq!(ev[0], EngineEvent::ResponseStarted(ResponseId(1)));
    assert!(ev.contains(&EngineEvent::AgentText(ResponseId(1), "Sure.".into())));
    // Audio: 400 ms, then 200 ms; the second chunk's times are shifted by the first.
    let t1 = t0 + Duration::from_millis(90);
    e.handle_link(t1, TTS_LINK, LinkEvent::Text(&audio_msg("r1", 3200, "Sure.", &[0, 80, 160, 240, 320])));
    e.handle_link(t1, TTS_LINK, LinkEvent::Text(&audio_msg("r1", 1600, " I", &[0, 100])));
    e.handle_link(t1, TTS_LINK, LinkEvent::Text(r#"{"isFinal": true, "contextId": "r1"}"#));
    let ev = drain_ev(&mut e);
    assert_eq!(ev[0], EngineEvent::Stage { stage: "tts_first_audio", latency: Duration::from_millis(90) });
    assert!(ev.contains(&EngineEvent::Alignment {
        response: ResponseId(1),
        chars: " I".into(),
        starts_ms: vec![400, 500]
    }));
    assert!(matches!(&ev[2], EngineEvent::Audio(c) if c.len() == 3200 && c.response == ResponseId(1)));
    assert_eq!(ev.last(), Some(&EngineEvent::ResponseDone(ResponseId(1))));
}

#[test]
fn a_barge_in_closes_the_context_and_its_late_audio_stays_stale() {
    let t0 = Instant::now();
    let mut e = CascadedEngine::new(dg(), el(), Some("Hello! How can I help?".into()));
    e.handle_link(t0, TTS_LINK, LinkEvent::Up { reconnected: false });
    e.handle_command(t0, EngineCommand::Start);
    drain_tx(&mut e);
    drain_ev(&mut e);
    e.handle_command(t0, EngineCommand::Cancel { response: ResponseId(1), heard_ms: 300 });
    assert!(texts(&drain_tx(&mut e), TTS_LINK).is_empty(), "already closed: the greeting was complete");
    e.handle_command(t0, EngineCommand::Reply { text: "Let me check that for you".into(), done: false });
    drain_tx(&mut e);
    e.handle_command(t0, EngineCommand::Cancel { response: ResponseId(2), heard_ms: 0 });
    assert_eq!(texts(&drain_tx(&mut e), TTS_LINK), vec![json!({"context_id": "r2", "close_context": true})]);
    e.handle_link(t0, TTS_LINK, LinkEvent::Text(&audio_msg("r2", 160, "Let", &[0, 20, 40])));
    let ev = drain_ev(&mut e);
    assert!(ev.iter().any(|x| matches!(x, EngineEvent::Audio(c) if c.response == ResponseId(2))));
    // The next reply is a new response on a new context; the cancelled one never says Done.
    e.handle_command(t0, EngineCommand::Reply { text: "Okay.".into(), done: true });
    let sent = texts(&drain_tx(&mut e), TTS_LINK);
    assert_eq!(sent[0]["context_id"], "r3");
    e.handle_link(t0, TTS_LINK, LinkEvent::Text(r#"{"isFinal": true, "contextId": "r2"}"#));
    assert!(!drain_ev(&mut e).contains(&EngineEvent::ResponseDone(ResponseId(2))));
}

#[test]
fn a_reply_the_voice_never_speaks_is_given_up_after_the_answer_timeout() {
    let t0 = Instant::now();
    let mut e = CascadedEngine::new(dg(), el(), None);
    e.handle_link(t0, TTS_LINK, LinkEvent::Up { reconnected: false });
    e.handle_command(t0, EngineCommand::Reply { text: "Sure, Tuesday at nine.".into(), done: true });
    drain_tx(&mut e);
    drain_ev(&mut e);
    // The watchdog is the next deadline (the keep-alive is 15 s away).
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    e.handle_timeout(t0 + Duration::from_millis(4900));
    assert!(drain_ev(&mut e).is_empty(), "not yet");
    e.handle_timeout(t0 + Duration::from_secs(5));
    let ev = drain_ev(&mut e);
    assert_eq!(ev[0], EngineEvent::ResponseDone(ResponseId(1)), "playback stops waiting for it");
    assert!(
        matches!(&ev[1], EngineEvent::ResponseFailed { response: ResponseId(1), code, message }
            if code == "engine_silent" && message.contains("5000 ms")),
        "{ev:?}"
    );
    // Its late audio never plays; the next reply is spoken as usual.
    e.handle_link(t0 + Duration::from_secs(6), TTS_LINK, LinkEvent::Text(&audio_msg("r1", 160, "Sure", &[0, 1, 2, 3])));
    assert!(drain_ev(&mut e).is_empty(), "a given-up response stays silent");
    e.handle_command(t0 + Duration::from_secs(7), EngineCommand::Reply { text: "Okay.".into(), done: true });
    assert_eq!(texts(&drain_tx(&mut e), TTS_LINK)[0]["context_id"], "r2");
    e.handle_link(
        t0 + Duration::from_secs(7),
        TTS_LINK,
        LinkEvent::Text(&audio_msg("r2", 160, "Okay.", &[0, 1, 2, 3, 4])),
    );
    assert!(drain_ev(&mut e).iter().any(|x| matches!(x, EngineEvent::Audio(c) if c.response == ResponseId(2))));
}

#[test]
fn a_voice_waiting_for_the_backend_s_next_words_is_not_given_up() {
    let t0 = Instant::now();
    let mut e = CascadedEngine::new(dg(), el(), None);
    e.handle_link(t0, TTS_LINK, LinkEvent::Up { reconnected: false });
    e.handle_command(t0, EngineCommand::Reply { text: "Sure. I can".into(), done: false });
    drain_tx(&mut e);
    // The flushed sentence is voiced in full (alignment says so) …
    e.handle_link(t0, TTS_LINK, LinkEvent::Text(&audio_msg("r1", 800, "Sure.", &[0, 10, 20, 30, 40])));
    drain_ev(&mut e);
    // … so a backend slow with the rest is not the voice's silence.
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(15)), "only the keep-alive is due");
    e.handle_timeout(t0 + Duration::from_secs(10));
    assert!(!drain_ev(&mut e).iter().any(|x| matches!(x, EngineEvent::ResponseFailed { .. })));
    // A closed reply whose audio stops before `isFinal` is ended by the watchdog.
    let t1 = t0 + Duration::from_secs(10);
    e.handle_command(t1, EngineCommand::Reply { text: " send someone today.".into(), done: true });
    drain_tx(&mut e);
    e.handle_link(
        t1,
        TTS_LINK,
        LinkEvent::Text(&audio_msg("r1", 800, " I can send", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])),
    );
    drain_ev(&mut e);
    e.handle_timeout(t1 + Duration::from_secs(5));
    let ev = drain_ev(&mut e);
    assert!(ev.contains(&EngineEvent::ResponseDone(ResponseId(1))), "{ev:?}");
    assert!(ev.iter().any(|x| matches!(x, EngineEvent::ResponseFailed { code, message, .. }
        if code == "engine_silent" && message.contains("the rest of its audio"))));
}

#[test]
fn a_reconnected_voice_resumes_the_words_not_yet_spoken() {
    let t0 = Instant::now();
    let mut e = CascadedEngine::new(dg(), el(), None);
    e.handle_command(t0, EngineCommand::Reply { text: "One two. Three four.".into(), done: true });
    drain_tx(&mut e);
    e.handle_link(
        t0,
        TTS_LINK,
        LinkEvent::Text(&audio_msg("r1", 800, "One two. ", &[0, 10, 20, 30, 40, 50, 60, 70, 80])),
    );
    e.handle_link(t0, TTS_LINK, LinkEvent::Lost);
    e.handle_link(t0, TTS_LINK, LinkEvent::Up { reconnected: true });
    let sent = texts(&drain_tx(&mut e), TTS_LINK);
    assert_eq!(sent[0]["context_id"], "r1.1");
    assert_eq!(sent[1], json!({"text": "Three four. ", "context_id": "r1.1", "flush": true}));
    assert_eq!(sent[2], json!({"context_id": "r1.1", "close_context": true}));
    // Its audio still belongs to response 1, after what was already received.
    e.handle_link(t0, TTS_LINK, LinkEvent::Text(&audio_msg("r1.1", 160, "T", &[0])));
    assert!(drain_ev(&mut e).iter().any(
        |x| matches!(x, EngineEvent::Alignment { response: ResponseId(1), starts_ms, .. } if starts_ms == &vec![100])
    ));
}

#[test]
fn a_lost_provider_ends_the_call_and_clips_play_at_the_output_rate() {
    let t0 = Instant::now();
    let mut cfg = el();
    cfg.audio = TtsAudio::Pcm(16000);
    let mut e = CascadedEngine::new(dg(), cfg, None);
    e.handle_command(t0, EngineCommand::Play(vec![100i16; 800].into()));
    let ev = drain_ev(&mut e);
    assert!(matches!(&ev[1], EngineEvent::Audio(c) if (1550..=1650).contains(&c.len())), "8 kHz clip at 16 kHz");
    e.handle_link(t0, STT_LINK, LinkEvent::Down("deepgram refused the API key (HTTP 401)"));
    assert!(
        matches!(&drain_ev(&mut e)[..], [EngineEvent::Error { fatal: true, code, .. }] if code == "stt_unavailable")
    );
    e.handle_command(t0, EngineCommand::Stop);
    let sent = drain_tx(&mut e);
    assert_eq!(texts(&sent, TTS_LINK), vec![json!({"close_socket": true})]);
    assert!(texts(&sent, STT_LINK).is_empty(), "the transcriber is already gone");
}

#[test]
fn stop_closes_the_stream_politely() {
    let t0 = Instant::now();
    let mut s = Stt::new(dg());
    s.stop(t0);
    assert_eq!(s.poll_transmit(), Some(LinkMsg::Text(r#"{"type":"CloseStream"}"#.into())));
    assert_eq!(s.poll_event(), None::<SttEvent>);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn the_factory_needs_both_keys_and_picks_wire_audio_from_the_stream() {
    use crate::carrier::AudioEncoding;
    use crate::engine::registry::{EngineFactory, EngineRequest};
    let plan = crate::contract::CallPlan {
        voice: Some("plan-voice".into()),
        stt: Some(crate::contract::SttPlan { model: Some("nova-2".into()), ..Default::default() }),
        ..Default::default()
    };
    let env = |dg: bool, el: bool| CascadedEnv {
        deepgram_key: dg.then(|| "k1".into()),
        deepgram_url: Some("ws://127.0.0.1:1/v1/listen".into()),
        elevenlabs_key: el.then(|| "k2".into()),
        elevenlabs_url: None,
    };
    assert!(CascadedFactory::new(CascadedSettings::default(), env(true, false)).available().is_err());
    assert!(CascadedFactory::new(CascadedSettings::default(), env(false, true)).available().is_err());
    let f = CascadedFactory::new(CascadedSettings::default(), env(true, true));
    let build = |encoding, rate| {
        let req = EngineRequest { plan: &plan, stream: AudioFormat { encoding, rate }, greet: true };
        f.build(&req).unwrap()
    };
    let phone = build(AudioEncoding::Pcmu, 8000);
    let links = phone.links();
    assert!(links[STT_LINK].url.starts_with("ws://127.0.0.1:1/v1/listen?model=nova-2&encoding=mulaw&sample_rate=8000"));
    assert!(
        links[TTS_LINK].url.contains("/plan-voice/multi-stream-input?") && links[TTS_LINK].url.contains("ulaw_8000")
    );
    let vonage = build(AudioEncoding::L16, 16000);
    assert_eq!(vonage.format(), EngineFormat { input: InputAudio::Pcm { rate: 16000 }, output_rate: 16000 });
    assert!(vonage.links()[STT_LINK].url.contains("encoding=linear16&sample_rate=16000"));
    assert!(vonage.links()[TTS_LINK].url.contains("output_format=pcm_16000"));
    let alaw = build(AudioEncoding::Pcma, 8000);
    assert!(alaw.links()[STT_LINK].url.contains("encoding=linear16&sample_rate=8000"));
    assert!(alaw.links()[TTS_LINK].url.contains("output_format=pcm_8000"));
}

#[test]
fn connected_once_both_sockets_are_up() {
    let t0 = Instant::now();
    let mut e = CascadedEngine::new(dg(), el(), None);
    e.handle_link(t0, STT_LINK, LinkEvent::Up { reconnected: false });
    assert!(!drain_ev(&mut e).contains(&EngineEvent::Connected), "the voice is not up yet");
    e.handle_link(t0, TTS_LINK, LinkEvent::Up { reconnected: false });
    assert_eq!(drain_ev(&mut e), vec![EngineEvent::Connected]);
    e.handle_link(t0, TTS_LINK, LinkEvent::Lost);
    e.handle_link(t0, TTS_LINK, LinkEvent::Up { reconnected: true });
    assert!(!drain_ev(&mut e).contains(&EngineEvent::Connected), "once per call");
}

#[test]
fn a_linear16_resend_starts_on_a_sample_and_a_new_phrase_needs_finalize_again() {
    let t0 = Instant::now();
    let mut cfg = dg();
    cfg.audio = SttAudio::Linear16(8000);
    cfg.gate_hangover = None;
    let mut s = Stt::new(cfg);
    s.up(t0, false);
    let loud: Vec<i16> = (0..160).map(|i| if i % 2 == 0 { 8000 } else { -8000 }).collect();
    for _ in 0..60 {
        s.audio_pcm(t0, &loud);
    }
    // 1.0199995 s of 16-bit audio is 16319.99 bytes: the resend starts at byte 16318.
    s.on_text(t0, &results("Hi.", 0.0, 1.0199995, true, true, false)).unwrap();
    assert_eq!(s.replay_len() % 2, 0, "whole samples only");
    assert_eq!(s.replay_len(), 60 * 320 - 16318);
    // Deepgram ended "Hi." — then a new phrase, finalized in part: our end of
    // turn must still ask for the rest.
    s.on_text(t0, &results("I need a plumber", 1.02, 0.8, true, false, false)).unwrap();
    std::iter::from_fn(|| s.poll_transmit()).count();
    s.end_of_turn(t0);
    assert_eq!(s.poll_transmit(), Some(LinkMsg::Text(r#"{"type":"Finalize"}"#.into())));
}

#[test]
fn a_context_pushed_out_early_still_ends_its_response() {
    let t0 = Instant::now();
    let mut e = CascadedEngine::new(dg(), el(), None);
    e.handle_command(t0, EngineCommand::Reply { text: "One".into(), done: false });
    e.handle_command(t0, EngineCommand::Say("Two.".into()));
    e.handle_command(t0, EngineCommand::Say("Three.".into()));
    assert!(drain_ev(&mut e).contains(&EngineEvent::ResponseDone(ResponseId(1))), "no response waits forever");
    // A reply closed after it stopped being spoken starts nothing new.
    e.handle_command(t0, EngineCommand::Reply { text: String::new(), done: true });
    assert!(!drain_ev(&mut e).iter().any(|x| matches!(x, EngineEvent::ResponseStarted(_))));
}
