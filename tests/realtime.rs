//! The OpenAI Realtime engine against the in-repo FAKE Realtime server
//! (`callbridge_testkit::fake_realtime`), all on 127.0.0.1: a full turn with µ-law passing
//! through both ways, barge-in truncation at the heard position, a tool call
//! through the tenant's callback (and its filler/fallback), an engine drop
//! and reconnect, persistent failure, GA and beta names, a refused key.

mod common;

use std::sync::Arc;
use std::time::Duration;

use callbridge::config::{Config, Secrets};
use callbridge_testkit::fake_realtime::{FakeRealtime, FakeRealtimeConfig};
use callbridge_testkit::twilio_peer::ServerMessage;
use common::backend::{FakeBackend, Mode, Received};
use common::calls::*;
use common::net::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::time::{Instant, interval};

fn reply() -> Arc<[u8]> {
    ulaw_fixture("bot_reply_8k.wav").into()
}

fn rt_secrets(fake: &FakeRealtime) -> Secrets {
    Secrets { openai_api_key: Some("sk-test".into()), openai_realtime_url: Some(fake.url()), ..secrets() }
}

/// An unsigned (local development) server whose default engine is the fake.
async fn rt_server(fake: &FakeRealtime, extra: &str) -> TestServer {
    let toml = format!("[engine]\nkind = \"openai_realtime\"\n{extra}\n[storage]\ndatabase = \"\"\n");
    let mut cfg = Config::from_toml(&toml, "test").expect("config");
    cfg.server.shutdown_grace_ms = 300;
    TestServer::start_with(cfg, rt_secrets(fake)).await
}

const NO_GREETING: &str = "[engine.openai_realtime]\ngreeting = \"\"\n";

/// µ-law has two zeros (0x7F, 0xFF); decoding then encoding maps both to 0xFF.
fn canon(b: &[u8]) -> Vec<u8> {
    b.iter().map(|&x| if x == 0x7F { 0xFF } else { x }).collect()
}

fn media_bytes(rx: &[Rx]) -> Vec<u8> {
    rx.iter()
        .filter_map(|e| match e {
            Rx::Msg(_, ServerMessage::Media(p)) => Some(p.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_turn_passes_mulaw_through_both_ways() {
    let fake = FakeRealtime::start(FakeRealtimeConfig::new(reply())).await.unwrap();
    let srv = rt_server(&fake, NO_GREETING).await;
    let mut tw = FakeTwilio::connect(&srv.url(), 1).await;
    tw.start().await;
    let update = fake.wait_for("session.update", 1, Duration::from_secs(3)).await;
    let s = &update[0]["session"];
    assert_eq!(s["type"], "realtime");
    assert_eq!(s["audio"]["input"]["format"], json!({"type": "audio/pcmu"}));
    assert_eq!(s["audio"]["output"]["format"], json!({"type": "audio/pcmu"}));
    assert_eq!(s["audio"]["input"]["turn_detection"], Value::Null, "local turn detection");
    assert_eq!(fake.headers()[0], ("Bearer sk-test".to_string(), None));

    let speech = ulaw_fixture("caller_short_8k.wav");
    let got = talk(&mut tw, &speech, 100).await;
    // Caller audio reached the engine byte for byte.
    let sent: Vec<u8> =
        speech.chunks_exact(160).flatten().copied().chain(std::iter::repeat_n(0xFF, 160 * 100)).collect();
    // It goes in 100 ms appends (engine.openai_realtime.append_ms): all but the
    // last, unfinished 100 ms of the silence after the turn has arrived.
    let deadline = Instant::now() + Duration::from_secs(2);
    while fake.appended().len() + 800 <= sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let appended = fake.appended();
    assert!(sent.len() - appended.len() < 800, "{} of {} bytes appended", appended.len(), sent.len());
    assert_eq!(appended, sent[..appended.len()], "µ-law forwarded untouched");
    // Full 100 ms appends, but for the rest of the turn sent before its commit.
    let appends = fake.appends() as usize;
    assert!((appended.len().div_ceil(800)..=appended.len() / 800 + 1).contains(&appends), "{appends} appends");
    let kinds: Vec<String> = fake.received().iter().map(|(_, v)| v["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["session.update", "input_audio_buffer.commit", "response.create"], "one turn, one response");
    // The engine's audio reached the caller bit-exactly (µ-law → PCM → µ-law).
    let heard = media_bytes(&got);
    assert!(heard.len() >= 8000, "at least a second of reply arrived ({} bytes)", heard.len());
    assert_eq!(canon(&heard), canon(&reply()[..heard.len()]));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_truncates_the_item_at_what_the_caller_heard() {
    let fake = FakeRealtime::start(FakeRealtimeConfig::new(reply())).await.unwrap();
    let srv = rt_server(&fake, NO_GREETING).await;
    let mut tw = FakeTwilio::connect(&srv.url(), 1).await;
    tw.start().await;
    let mut tick = interval(Duration::from_millis(20));
    let silence = [0xFFu8; 160];
    for f in ulaw_fixture("caller_short_8k.wav").chunks_exact(160) {
        tick.tick().await;
        tw.frame(f).await;
    }
    // Wait for the reply to start, let it play ~1.5 s, then talk over it.
    let mut first_media = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while first_media.is_none_or(|t: Instant| t.elapsed() < Duration::from_millis(1500)) {
        assert!(Instant::now() < deadline, "reply did not start");
        tick.tick().await;
        tw.frame(&silence).await;
        while let Ok(ev) = tw.rx.try_recv() {
            if let Rx::Msg(at, ServerMessage::Media(_)) = ev {
                first_media.get_or_insert(at);
            }
        }
    }
    let first_media = first_media.unwrap();
    let mut cleared = None;
    for f in ulaw_fixture("caller_leak_8k.wav").chunks_exact(160).skip(15).take(40) {
        tick.tick().await;
        tw.frame(f).await;
        while let Ok(ev) = tw.rx.try_recv() {
            if let Rx::Msg(at, ServerMessage::Clear) = ev {
                cleared.get_or_insert(at);
            }
        }
    }
    let cleared = cleared.expect("clear sent on barge-in");
    let truncates = fake.wait_for("conversation.item.truncate", 1, Duration::from_secs(2)).await;
    assert_eq!(truncates.len(), 1, "one truncate");
    let t = &truncates[0];
    assert_eq!(t["item_id"], "item_resp_1_1");
    assert_eq!(t["content_index"], 0);
    // A real Twilio plays from the first media it receives, in real time, until the clear.
    let heard_by_caller = (cleared - first_media).as_millis() as i64;
    let told = t["audio_end_ms"].as_i64().unwrap();
    assert!((told - heard_by_caller).abs() <= 20, "truncated at {told} ms, caller heard {heard_by_caller} ms");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_goes_to_the_backend_and_its_result_back_to_the_engine() {
    let mut fc = FakeRealtimeConfig::new(reply());
    fc.tool_call = Some(("schedule_appointment".into(), r#"{"when":"tomorrow morning"}"#.into()));
    fc.transcript = Some("my kitchen sink is leaking".into());
    let fake = FakeRealtime::start(fc).await.unwrap();
    let backend = FakeBackend::start().await;
    backend.set(
        "call.started",
        Mode::Json(json!({"engine": "openai_realtime", "greeting": "", "instructions": "Book plumbers.",
            "tools": [{"name": "schedule_appointment", "description": "Book a visit",
                       "parameters": {"type": "object", "properties": {"when": {"type": "string"}}}}]})),
    );
    backend.set("tool.call", Mode::Json(json!({"result": {"booked": true, "slot": "tomorrow 8-10am"}})));
    let srv = server_with(&backend, "", rt_secrets(&fake)).await;
    let mut tw = call(&srv, 1, NUMBER_A).await;
    let update = fake.wait_for("session.update", 1, Duration::from_secs(3)).await;
    assert_eq!(update[0]["session"]["instructions"], "Book plumbers.");
    assert_eq!(update[0]["session"]["tools"][0]["name"], "schedule_appointment");
    assert_eq!(update[0]["session"]["tools"][0]["type"], "function");

    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 120).await;
    let events = backend.wait_for("tool.call", Duration::from_secs(3)).await;
    let tool = events.iter().find(|e| e.kind() == "tool.call").unwrap();
    assert_eq!(tool.body["name"], "schedule_appointment");
    assert_eq!(tool.body["arguments"], json!({"when": "tomorrow morning"}));
    assert_eq!(tool.body["tool_call_id"], "call_resp_1_1");
    let outputs = fake.wait_for("conversation.item.create", 1, Duration::from_secs(2)).await;
    assert_eq!(outputs[0]["item"]["type"], "function_call_output");
    assert_eq!(outputs[0]["item"]["call_id"], "call_resp_1_1");
    let out: Value = serde_json::from_str(outputs[0]["item"]["output"].as_str().unwrap()).unwrap();
    assert_eq!(out, json!({"booked": true, "slot": "tomorrow 8-10am"}));
    assert_eq!(fake.wait_for("response.create", 2, Duration::from_secs(2)).await.len(), 2, "answer after the tool");
    assert!(media_bytes(&got).len() > 4000, "the follow-up answer is heard");

    until_quiet(&mut tw, Duration::from_secs(15)).await;
    let stop = tw.peer.stop();
    tw.send(stop).await;
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    verify_all(&events, SECRET_A);
    let user = events.iter().find(|e| e.kind() == "turn.user").expect("turn.user");
    assert_eq!(user.body["transcript"], "my kitchen sink is leaking");
    let agent = events.iter().find(|e| e.kind() == "turn.agent").expect("turn.agent");
    assert_eq!(agent.body["text"], "I can book a technician for tomorrow.");
    // tool.call is sent at once (blocking) and may overtake queued events; seq orders them all.
    let mut seqs: Vec<u64> = events.iter().map(|e| e.body["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "one sequence, no gaps");
    let ended = &events.last().unwrap().body;
    assert!(ended["latencies"][0]["engine_first_audio_ms"].is_u64(), "{ended}");
    let convo: Vec<&str> =
        ended["conversation"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    let at = |k: &str| convo.iter().position(|c| *c == k).unwrap_or_else(|| panic!("{k} in {convo:?}"));
    assert!(at("tool.call") < at("tool.result"), "{convo:?}");
    assert_eq!(ended["conversation"][at("tool.result")]["result"]["slot"], "tomorrow 8-10am");
    // The report: who, when, which engine, and the words as plain text.
    assert_eq!(ended["engine"], "openai_realtime");
    assert_eq!(ended["to"], NUMBER_A);
    let text = ended["transcript"].as_str().unwrap();
    assert!(text.starts_with("caller: my kitchen sink is leaking\n"), "{text}");
    assert!(text.contains("agent: I can book a technician for tomorrow."), "{text}");
    let t = |k: &str| humantime::parse_rfc3339(ended[k].as_str().unwrap_or_else(|| panic!("{k}"))).unwrap();
    assert!(t("started_at") <= t("answered_at") && t("answered_at") <= t("ended_at"), "{ended}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tool_gets_the_filler_then_the_fallback_and_the_call_goes_on() {
    let mut fc = FakeRealtimeConfig::new(reply());
    fc.tool_call = Some(("schedule_appointment".into(), "{}".into()));
    let fake = FakeRealtime::start(fc).await.unwrap();
    let backend = FakeBackend::start().await;
    backend.set("call.started", Mode::Json(json!({"greeting": "", "tools": [{"name": "schedule_appointment"}]})));
    backend.set("tool.call", Mode::Hang);
    let extra =
        "[engine]\nkind = \"openai_realtime\"\n[callbacks]\nblocking_timeout_ms = 1200\nfiller_after_ms = 300\n";
    let srv = server_with(&backend, extra, rt_secrets(&fake)).await;
    let fallbacks = srv.metric("callbridge_callback_fallbacks_total", &[("type", "tool.call"), ("kind", "timeout")]);
    let mut tw = call(&srv, 1, NUMBER_A).await;
    let speech = ulaw_fixture("caller_short_8k.wav");
    let got = talk(&mut tw, &speech, 150).await;
    let tool_at = backend.wait_for("tool.call", Duration::from_secs(2)).await;
    let tool_at = tool_at.iter().find(|e| e.kind() == "tool.call").unwrap().at;
    let media: Vec<Instant> = got
        .iter()
        .filter_map(|e| match e {
            Rx::Msg(at, ServerMessage::Media(_)) => Some(*at),
            _ => None,
        })
        .collect();
    let first = *media.first().expect("the caller heard something");
    let waited = first.saturating_duration_since(tool_at.into());
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(800),
        "filler after ~300 ms of waiting ({waited:?})"
    );
    assert!(media.len() > 50, "filler and fallback lines played ({} messages)", media.len());
    let outputs = fake.wait_for("conversation.item.create", 1, Duration::from_secs(2)).await;
    assert!(outputs[0]["item"]["output"].as_str().unwrap().contains("error"), "the model is told the tool failed");
    assert_eq!(fake.of_type("response.create").len(), 1, "no second answer on top of the fallback line");
    assert_eq!(
        srv.metric("callbridge_callback_fallbacks_total", &[("type", "tool.call"), ("kind", "timeout")]),
        fallbacks + 1.0
    );
    // The call goes on: the next turn is answered by the engine.
    let _ = talk(&mut tw, &speech, 60).await;
    assert_eq!(fake.wait_for("response.create", 2, Duration::from_secs(3)).await.len(), 2);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_drop_reconnects_once_with_an_apology_then_fails_cleanly() {
    let mut fc = FakeRealtimeConfig::new(reply());
    fc.drop_after_deltas = Some(5);
    let fake = FakeRealtime::start(fc).await.unwrap();
    let srv = rt_server(&fake, NO_GREETING).await;
    let reconnects = srv.metric("callbridge_engine_errors_total", &[("kind", "reconnected")]);
    let mut tw = FakeTwilio::connect(&srv.url(), 1).await;
    tw.start().await;
    let speech = ulaw_fixture("caller_short_8k.wav");
    let got = talk(&mut tw, &speech, 150).await;
    assert_eq!(fake.connections(), 2, "reconnected once");
    assert_eq!(fake.of_type("session.update").len(), 2, "same session config on the new socket");
    assert_eq!(fake.of_type("session.update")[0], fake.of_type("session.update")[1]);
    let heard = media_bytes(&got).len();
    assert!(heard > 500 * 8 + 8000, "after 500 ms of reply, the apology plays ({heard} bytes)");
    assert_eq!(srv.metric("callbridge_engine_errors_total", &[("kind", "reconnected")]), reconnects + 1.0);
    // The new session answers the next turn.
    let got = talk(&mut tw, &speech, 80).await;
    assert!(media_bytes(&got).len() > 4000, "answered after the reconnect");
    srv.shutdown().await;

    // A second drop is not survived: the call ends cleanly as an engine error.
    let engine_errors = |srv: &TestServer| srv.metric("callbridge_calls_ended_total", &[("reason", "engine_error")]);
    let mut fc = FakeRealtimeConfig::new(reply());
    fc.drop_after_deltas = Some(3);
    fc.refuse_reconnect = true;
    let fake = FakeRealtime::start(fc).await.unwrap();
    let srv = rt_server(&fake, NO_GREETING).await;
    let before = engine_errors(&srv);
    let mut tw = FakeTwilio::connect(&srv.url(), 2).await;
    tw.start().await;
    let mut tick = interval(Duration::from_millis(20));
    // The fixture's own trailing silence ends the turn; the engine drops mid-answer and stays
    // down, so the call may end before the last frame is sent (sends may fail; that is fine).
    for (i, f) in speech.chunks_exact(160).enumerate() {
        tick.tick().await;
        let m = tw.peer.media(f, i as u64 * 20);
        if futures_util::SinkExt::send(&mut tw.tx, tokio_tungstenite::tungstenite::Message::text(m)).await.is_err() {
            break;
        }
    }
    let close = tw.closed(Duration::from_secs(5)).await;
    assert_eq!(close.map(|c| c.0), Some(1000), "a clean close");
    srv.wait_no_calls().await;
    assert_eq!(engine_errors(&srv), before + 1.0, "ended as engine_error");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_gone_silent_is_given_up_the_caller_hears_the_fallback_and_the_next_turn_is_answered() {
    // Fault: the engine's socket stays open but it never answers the first turn.
    let mut fc = FakeRealtimeConfig::new(reply());
    fc.ignore_creates = 1;
    let fake = FakeRealtime::start(fc).await.unwrap();
    let srv = rt_server(&fake, "[engine.openai_realtime]\ngreeting = \"\"\nanswer_timeout_ms = 1000\n").await;
    let failed = |srv: &TestServer| srv.metric("callbridge_engine_errors_total", &[("kind", "response_failed")]);
    let before = failed(&srv);
    let mut tw = FakeTwilio::connect(&srv.url(), 1).await;
    tw.start().await;
    let speech = ulaw_fixture("caller_short_8k.wav");
    // The turn ends in the fixture's trailing silence; 2.5 s more of silence covers the 1 s watchdog.
    let got = talk(&mut tw, &speech, 125).await;
    let heard = media_bytes(&got);
    let fallback: Vec<u8> = {
        let pcm = callbridge::engine::local::load_clip("builtin:fallback").unwrap();
        let mut u = vec![0u8; pcm.len()];
        callbridge::audio::g711::ulaw_encode(&pcm, &mut u);
        u
    };
    assert!(heard.len() >= 4000, "the caller is not left in silence ({} bytes)", heard.len());
    assert!(canon(&heard) == canon(&fallback[..heard.len().min(fallback.len())]), "what plays is the fallback");
    assert_eq!(failed(&srv), before + 1.0, "counted as a failed response");
    let cancels = fake.of_type("response.cancel");
    assert_eq!(cancels.len(), 1, "the silent response is cancelled on the engine's side");
    until_quiet(&mut tw, Duration::from_secs(8)).await;
    // The call goes on: the next turn is answered by the engine as usual.
    let got = talk(&mut tw, &speech, 100).await;
    let heard = media_bytes(&got);
    assert!(heard.len() > 4000, "answered after the silence ({} bytes)", heard.len());
    assert!(canon(&heard) == canon(&reply()[..heard.len()]), "with the engine's reply");
    assert_eq!(fake.of_type("response.create").len(), 2, "one request per turn, none lost or doubled");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_greeting_is_spoken_first() {
    let fake = FakeRealtime::start(FakeRealtimeConfig::new(reply())).await.unwrap();
    let srv = rt_server(&fake, "").await;
    let mut tw = FakeTwilio::connect(&srv.url(), 1).await;
    tw.start().await;
    let got = talk(&mut tw, &[], 60).await;
    assert_eq!(fake.headers()[0].1, None, "no beta header: the GA interface");
    let create = &fake.of_type("response.create")[0];
    assert!(create["response"]["instructions"].as_str().unwrap().contains("Hello! How can I help you today?"));
    let heard = media_bytes(&got);
    assert!(heard.len() > 4000, "greeting played");
    assert_eq!(canon(&heard), canon(&reply()[..heard.len()]));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_ends_the_call_as_an_engine_error_with_call_ended() {
    let mut fc = FakeRealtimeConfig::new(reply());
    fc.refuse_status = Some(401);
    let fake = FakeRealtime::start(fc).await.unwrap();
    let backend = FakeBackend::start().await;
    backend.set("call.started", Mode::Json(json!({"engine": "openai_realtime"})));
    let srv = server_with(&backend, "", rt_secrets(&fake)).await;
    let t0 = Instant::now();
    let mut tw = call(&srv, 1, NUMBER_A).await;
    assert_eq!(tw.closed(Duration::from_secs(3)).await.map(|c| c.0), Some(1000));
    assert!(t0.elapsed() < Duration::from_secs(2));
    let events = backend.wait_for("call.ended", Duration::from_secs(3)).await;
    assert_eq!(events.last().map(Received::kind), Some("call.ended"));
    assert_eq!(events.last().unwrap().body["reason"], "engine_error");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_vad_mode_leaves_turns_to_the_engine_and_still_stops_playback_at_once() {
    let mut fc = FakeRealtimeConfig::new(reply());
    fc.server_vad = true;
    let fake = FakeRealtime::start(fc).await.unwrap();
    // Our own barge-in needs 2 s of speech here: any stop within the 900 ms the
    // caller talks below comes from the engine's speech_started alone.
    let extra = "[engine.openai_realtime]\nturn_detection = \"server_vad\"\n[turn]\nbarge_in_min_speech_ms = 2000\n";
    let srv = rt_server(&fake, extra).await;
    let mut tw = FakeTwilio::connect(&srv.url(), 1).await;
    tw.start().await;
    // The greeting plays (our response.create); caller turns are the engine's to end.
    let got = talk(&mut tw, &[], 40).await;
    assert!(media_bytes(&got).len() > 2000, "greeting plays");
    let s = &fake.of_type("session.update")[0]["session"];
    assert_eq!(s["audio"]["input"]["turn_detection"]["type"], "server_vad");
    // The caller talks over it: the engine says speech_started: clear.
    let got = talk(&mut tw, &ulaw_fixture("caller_leak_8k.wav")[160 * 15..160 * 60], 10).await;
    assert!(got.iter().any(|e| matches!(e, Rx::Msg(_, ServerMessage::Clear))), "playback stopped");
    assert!(fake.of_type("input_audio_buffer.commit").is_empty(), "no commits from us in server_vad mode");
    assert_eq!(fake.of_type("response.create").len(), 1, "only the greeting was asked for by us");
    srv.shutdown().await;
}

/// A server whose tenant's plan enables `builtin`, with the fake engine
/// calling tool `name` with `args` on the caller's first turn.
async fn builtin_rig(plan: Value, name: &str, args: &str) -> (FakeRealtime, FakeBackend, TestServer, FakeTwilio) {
    let mut fc = FakeRealtimeConfig::new(reply());
    fc.tool_call = Some((name.into(), args.into()));
    let fake = FakeRealtime::start(fc).await.unwrap();
    let backend = FakeBackend::start().await;
    let mut plan = plan;
    plan["engine"] = json!("openai_realtime");
    plan["greeting"] = json!("");
    backend.set("call.started", Mode::Json(plan));
    let srv = server_with(&backend, "", rt_secrets(&fake)).await;
    let tw = call(&srv, 1, NUMBER_A).await;
    (fake, backend, srv, tw)
}

/// Stream silence until `done` holds (bounded); returns what arrived.
async fn listen_until(tw: &mut FakeTwilio, within: Duration, mut done: impl FnMut(&[Rx]) -> bool) -> Vec<Rx> {
    let deadline = Instant::now() + within;
    let mut tick = interval(Duration::from_millis(20));
    let mut got = Vec::new();
    while !done(&got) {
        if Instant::now() >= deadline {
            let clears = got.iter().filter(|e| matches!(e, Rx::Msg(_, ServerMessage::Clear))).count();
            let closed = got.iter().any(|e| matches!(e, Rx::Closed(_)));
            let media = media_bytes(&got).len();
            panic!("not within {within:?}: {media} media bytes, {clears} clears, closed {closed}");
        }
        tick.tick().await;
        if tw.tx.send(tokio_tungstenite::tungstenite::Message::text(tw.peer.media(&[0xFF; 160], tw.ts))).await.is_ok() {
            tw.ts += 20;
        }
        while let Ok(ev) = tw.rx.try_recv() {
            got.push(ev);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_ends_the_call_with_end_call_and_the_backend_is_not_asked() {
    let plan = json!({"builtin_tools": ["end_call"]});
    let (fake, backend, srv, mut tw) = builtin_rig(plan, "end_call", r#"{"reason":"booked"}"#).await;
    let update = fake.wait_for("session.update", 1, Duration::from_secs(3)).await;
    let tools: Vec<&str> =
        update[0]["session"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tools, ["end_call"], "offered to the model");
    let mut got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    got.extend(
        listen_until(&mut tw, Duration::from_secs(15), |rx| rx.iter().any(|e| matches!(e, Rx::Closed(_)))).await,
    );
    // The model heard its tool's result; nothing was playing, so the line closed.
    let outputs = fake.wait_for("conversation.item.create", 1, Duration::from_secs(1)).await;
    assert_eq!(outputs[0]["item"]["type"], "function_call_output");
    assert!(got.iter().any(|e| matches!(e, Rx::Closed(_))), "callbridge hung up");
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    assert!(events.iter().all(|e| e.kind() != "tool.call"), "a built-in tool is not the backend's");
    let ended = &events.last().unwrap().body;
    assert_eq!(ended["reason"], "agent_hangup", "{ended}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_transfers_with_transfer_call_to_a_named_destination_only() {
    let plan = json!({"builtin_tools": ["transfer_call"],
        "transfer_destinations": [{"name": "on_call", "to": "+15557654321", "description": "the plumber on call"}]});
    let (_fake, backend, srv, mut tw) = builtin_rig(plan, "transfer_call", r#"{"destination":"on_call"}"#).await;
    talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    listen_until(&mut tw, Duration::from_secs(15), |_| !backend.twilio_updates().is_empty()).await;
    let (_, sid, form) = &backend.twilio_updates()[0];
    assert_eq!(sid, &tw.peer.call_sid);
    assert!(form["Twiml"].contains(">+15557654321</Dial>"), "{}", form["Twiml"]);
    // New TwiML ends the stream at Twilio; then Twilio reports the bridged call completed.
    let stop = tw.peer.stop();
    tw.send(stop).await;
    srv.wait_no_calls().await;
    let id = backend.received()[0].body["call_id"].as_str().unwrap().to_string();
    let outcome = [("CallSid", tw.peer.call_sid.as_str()), ("DialCallStatus", "completed")];
    let (st, _) = twilio_post(&srv, &format!("/twilio/transfer-status?call={id}"), &outcome).await;
    assert_eq!(st, 200);
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    assert!(events.iter().any(|e| e.kind() == "transfer.completed" && e.body["to"] == "+15557654321"));
    assert_eq!(events.last().unwrap().body["reason"], "transferred");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_presses_keys_with_send_dtmf_and_the_tones_decode_from_the_stream() {
    let plan = json!({"builtin_tools": ["send_dtmf"]});
    let (fake, backend, srv, mut tw) = builtin_rig(plan, "send_dtmf", r#"{"digits":"41#"}"#).await;
    let mut got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 0).await;
    fake.wait_for("conversation.item.create", 1, Duration::from_secs(5)).await;
    let keys = |ulaw: &[u8]| {
        let mut pcm = vec![0i16; ulaw.len()];
        callbridge::audio::g711::ulaw_decode(ulaw, &mut pcm);
        callbridge::audio::dtmf::decode(&pcm, 8000)
    };
    // The tones may already have begun while the caller was still streaming:
    // judge what arrived before and after together.
    let before = media_bytes(&got);
    let heard = |rx: &[Rx]| keys(&[before.as_slice(), &media_bytes(rx)].concat()).len() >= 3;
    let more = listen_until(&mut tw, Duration::from_secs(10), heard).await;
    got.extend(more);
    assert_eq!(keys(&media_bytes(&got)), "41#", "Goertzel hears the keys in what Twilio received");
    let outputs = fake.wait_for("conversation.item.create", 1, Duration::from_secs(1)).await;
    assert!(outputs[0]["item"]["output"].as_str().unwrap().contains("41#"), "{}", outputs[0]);
    let stop = tw.peer.stop();
    tw.send(stop).await;
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    assert!(events.iter().all(|e| e.kind() != "tool.call"));
    srv.shutdown().await;
}
