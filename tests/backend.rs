//! Backends own the conversation: signed Twilio entry, call plans, the callback
//! event stream, and what happens when any of it misbehaves. Real sockets on
//! 127.0.0.1 only: callbridge, a fake Twilio media client, and a fake tenant
//! backend (tests/common/backend.rs). Every wait is bounded.

mod common;

use std::time::Duration;

use callbridge::carrier::twilio::signature as twsig;
use callbridge::config::Config;
use callbridge_testkit::twilio_peer::ServerMessage;
use common::backend::{FakeBackend, Mode, Received};
use common::calls::*;
use common::net::*;
use serde_json::{Value, json};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_call_gets_its_plan_and_the_backend_hears_the_conversation() {
    let backend = FakeBackend::start().await;
    // The plan shortens endpointing to 250 ms: the reply must come sooner than the 500 ms default allows.
    backend.set("call.started", Mode::Json(json!({"turn": {"endpoint_silence_ms": 250}, "future_field": true})));
    let srv = server(&backend, "").await;
    let mut tw = call(&srv, 1, NUMBER_A).await;
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    assert!(media_count(&got) > 5, "the bot answered");
    // Let the reply play out (its turn.agent is reported when all of it was sent), then hang up.
    until_quiet(&mut tw, Duration::from_secs(10)).await;
    let stop = tw.peer.stop();
    tw.send(stop).await;
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    verify_all(&events, SECRET_A);

    let kinds: Vec<&str> = events.iter().map(Received::kind).collect();
    assert_eq!(kinds, ["call.started", "turn.user", "turn.agent", "call.ended"], "in order, nothing else");
    let seqs: Vec<u64> = events.iter().map(|e| e.body["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let call_id = events[0].body["call_id"].as_str().unwrap();
    assert!(events.iter().all(|e| e.body["call_id"] == call_id));

    let started = &events[0].body;
    assert_eq!(started["to"], NUMBER_A);
    assert_eq!(started["from"], "+15557770000");
    assert_eq!(started["carrier_call_id"].as_str().unwrap(), tw.peer.call_sid);

    let user = &events[1].body;
    let (s, e) = (user["start_ms"].as_u64().unwrap(), user["end_ms"].as_u64().unwrap());
    assert!(s < e && e - s > 300 && e - s < 2500, "user turn spans the speech ({s}..{e})");
    assert_eq!(user["transcript"], Value::Null, "the local engine does not transcribe");

    let agent = &events[2].body;
    assert_eq!(agent["interrupted"], false);
    assert!(agent["sent_ms"].as_u64().unwrap() > 1000);
    assert_eq!(agent["heard_ms"], agent["sent_ms"], "heard all of it");
    assert!(agent["start_ms"].as_u64().unwrap() >= e);

    let ended = &events[3].body;
    assert_eq!(ended["reason"], "caller_hangup");
    assert_eq!((ended["carrier"].as_str(), ended["engine"].as_str()), (Some("twilio"), Some("local")));
    assert_eq!(ended["from"], "+15557770000");
    assert!(ended.get("transcript").is_none(), "the local engine has no words to report");
    assert!(ended["answered_at"].is_string() && ended["started_at"].is_string() && ended["ended_at"].is_string());
    assert_eq!(ended["user_turns"], 1);
    assert_eq!(ended["agent_turns"], 1);
    assert_eq!(ended["events_dropped"], 0);
    let convo: Vec<&str> =
        ended["conversation"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(convo, ["turn.user", "turn.agent"], "the whole conversation rides in call.ended");
    assert_eq!(ended["conversation"][1]["heard_ms"], agent["heard_ms"]);
    let latency = ended["latencies"][0]["response_latency_ms"].as_u64().unwrap();
    assert!((250..450).contains(&latency), "plan's 250 ms endpointing applied (latency {latency} ms)");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_unsigned_requests_are_refused_before_any_engine() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "").await;
    let tw = FakeTwilio::connect_signed(&srv.url(), 1, Some(&stream_signature())).await.unwrap();
    let params = voice_params(&tw, NUMBER_A);

    // Webhook: no signature, a wrong one, one for other parameters.
    assert_eq!(webhook(&srv, &params, Some("")).await.0, 403);
    assert_eq!(webhook(&srv, &params, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")).await.0, 403);
    let mut other = params.clone();
    other[3].1 = NUMBER_B.into();
    let sig_for_b = twsig::compute(AUTH_TOKEN, "https://cb.example.com/twilio/voice", &other);
    assert_eq!(webhook(&srv, &params, Some(&sig_for_b)).await.0, 403, "signature of other params");
    assert!(backend.received().is_empty(), "no callback for refused webhooks");

    // Stream upgrade: unsigned or badly signed → HTTP 403, no socket.
    for sig in [None, Some("bm9wZQ==")] {
        match FakeTwilio::connect_signed(&srv.url(), 2, sig).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("unsigned upgrade accepted"),
        }
    }

    // A signed upgrade (replayable) without a token, or with a token of another call.
    let (_, twiml) = webhook(&srv, &params, None).await;
    let token_1 = token_of(&twiml);
    for (n, token) in [(3, None), (4, Some(token_1.as_str())), (5, Some("0".repeat(64).as_str()))] {
        let mut tw = FakeTwilio::connect_signed(&srv.url(), n, Some(&stream_signature())).await.unwrap();
        let mut p = vec![("to", NUMBER_A)];
        if let Some(t) = token {
            p.push(("cb_token", t));
        }
        tw.start_with(&p).await;
        let mut media = 0;
        let close = loop {
            match tw.next(Duration::from_secs(3)).await.expect("closed") {
                Rx::Closed(c) => break c,
                Rx::Msg(_, ServerMessage::Media(_)) => media += 1,
                _ => {}
            }
        };
        assert_eq!(close.map(|c| c.0), Some(1008), "call {n} refused");
        assert_eq!(media, 0, "nothing was played");
    }
    assert_eq!(srv.metric("callbridge_auth_rejected_total", &[("reason", "bad_stream_token")]), 3.0);
    assert_eq!(srv.metric("callbridge_auth_rejected_total", &[("reason", "webhook_bad_signature")]), 2.0);
    // The legitimate stream still works with its own token.
    let mut tw = tw;
    tw.start_with(&[("cb_token", &token_1)]).await;
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 50).await;
    assert!(media_count(&got) > 0, "the genuine call is answered");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_number_is_not_in_service() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "").await;
    let tw = FakeTwilio::connect_signed(&srv.url(), 1, Some(&stream_signature())).await.unwrap();
    let (status, twiml) = webhook(&srv, &voice_params(&tw, "+15559990000"), None).await;
    assert_eq!(status, 200);
    assert_eq!(twiml, callbridge::api::twilio::NOT_IN_SERVICE_TWIML);
    assert!(backend.received().is_empty());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plan_callback_falls_back_within_budget_and_the_caller_hears_the_fallback() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "[callbacks]\nblocking_timeout_ms = 400\nmax_response_bytes = 4096\n").await;
    let cases = [
        (Mode::NotJson, "bad_body"),
        (Mode::Json(json!({"record": "yes please"})), "bad_body"),
        (Mode::Json(json!({"tools": [{"description": "no name"}]})), "bad_body"),
        (Mode::Huge(100_000), "too_large"),
        (Mode::Redirect, "redirect"),
        (Mode::Status(500), "http_5xx"),
        (Mode::Status(404), "http_4xx"),
        (Mode::Hang, "timeout"),
    ];
    for (i, (mode, kind)) in cases.into_iter().enumerate() {
        backend.set("call.started", mode.clone());
        let before = srv.metric("callbridge_callback_fallbacks_total", &[("kind", kind)]);
        let tw = FakeTwilio::connect_signed(&srv.url(), 10 + i as u64, Some(&stream_signature())).await.unwrap();
        let t0 = Instant::now();
        let (status, twiml) = webhook(&srv, &voice_params(&tw, NUMBER_A), None).await;
        let took = t0.elapsed();
        assert_eq!(status, 200, "{mode:?}");
        assert!(twiml.contains("<Connect><Stream"), "{mode:?}: the call is still answered");
        assert!(took < Duration::from_millis(900), "{mode:?}: answered within the budget ({took:?})");
        assert_eq!(
            srv.metric("callbridge_callback_fallbacks_total", &[("kind", kind)]),
            before + 1.0,
            "{mode:?} counted as {kind}"
        );
    }
    // The caller of a call whose plan timed out hears the fallback line, and the call goes on.
    backend.set("call.started", Mode::Hang);
    let mut tw = call(&srv, 30, NUMBER_A).await;
    let got = talk(&mut tw, &[], 60).await;
    assert!(media_count(&got) > 10, "fallback line played ({} messages)", media_count(&got));
    srv.shutdown().await;

    // An unreachable callback URL behaves the same.
    let toml = format!(
        "[server]\npublic_url = \"{PUBLIC}\"\nvalidate_twilio_signatures = true\n[callbacks]\nblocking_timeout_ms = 400\n\
         [storage]\ndatabase = \"\"\n[[numbers]]\nnumber = \"{NUMBER_A}\"\ncallback_url = \"http://127.0.0.1:9/cb\"\nsecret = \"{SECRET_A}\"\n"
    );
    let srv = TestServer::start_with(Config::from_toml(&toml, "t").unwrap(), secrets()).await;
    let tw = FakeTwilio::connect_signed(&srv.url(), 40, Some(&stream_signature())).await.unwrap();
    let (status, twiml) = webhook(&srv, &voice_params(&tw, NUMBER_A), None).await;
    assert_eq!(status, 200);
    assert!(twiml.contains("cb_token"));
    assert_eq!(srv.metric("callbridge_callback_fallbacks_total", &[("kind", "unreachable")]), 1.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_retried_in_order_dropped_when_hopeless_and_never_stall_audio() {
    let backend = FakeBackend::start().await;
    // turn.user fails twice then succeeds; dtmf always fails (dropped after 3 attempts).
    backend.set("turn.user", Mode::FailTimes(2));
    backend.set("dtmf", Mode::Status(500));
    let srv = server(&backend, "[callbacks]\nmax_attempts = 3\nretry_backoff_ms = 50\n").await;
    let mut tw = call(&srv, 1, NUMBER_A).await;
    let dtmf = tw.peer.dtmf('5');
    tw.send(dtmf).await;
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 200).await;
    assert!(media_count(&got) > 5, "the bot answered while the backend failed");
    let stop = tw.peer.stop();
    tw.send(stop).await;
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    verify_all(&events, SECRET_A);
    let kinds: Vec<&str> = events.iter().map(Received::kind).collect();
    assert_eq!(
        kinds,
        ["call.started", "dtmf", "dtmf", "dtmf", "turn.user", "turn.user", "turn.user", "turn.agent", "call.ended"],
        "each event retried in place, order kept"
    );
    // Retries carry the same idempotency key.
    assert_eq!(events[4].body["idempotency_key"], events[6].body["idempotency_key"]);
    assert_eq!(events[8].body["events_dropped"], 1, "the dtmf event was dropped");
    assert_eq!(srv.metric("callbridge_callback_events_total", &[("type", "dtmf"), ("outcome", "dropped")]), 1.0);

    // A backend that hangs on every event: audio is unaffected.
    backend.set("turn.user", Mode::Hang);
    let mut tw = call(&srv, 2, NUMBER_A).await;
    let t0 = Instant::now();
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    let first = got.iter().find_map(|e| match e {
        Rx::Msg(at, ServerMessage::Media(_)) => Some(*at),
        _ => None,
    });
    let speech_ms = ulaw_fixture("caller_short_8k.wav").len() as u64 / 8;
    let first = first.expect("reply while the backend hangs") - t0;
    assert!(first < Duration::from_millis(speech_ms + 900), "reply not delayed by the backend ({first:?})");
    srv.shutdown().await;
}
