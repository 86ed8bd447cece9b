//! Call-plan controls at the carrier's webhook: the `call.started` reply may
//! reject the call (busy or refused, optionally saying why) or forward it
//! straight to a number with no engine — within the number's
//! `transfer_allow`, else the call is answered as usual. Each ends with
//! `call.ended` (`rejected`, `forwarded`) at the backend and frees its slot.
//! Twilio here; Telnyx and Vonage in their end-to-end tests.

mod common;

use std::time::Duration;

use common::backend::{FakeBackend, Mode};
use common::calls::*;
use serde_json::json;

fn params(sid: &str, to: &str) -> Vec<(String, String)> {
    [("AccountSid", "AC0000"), ("CallSid", sid), ("From", "+15557770000"), ("To", to), ("CallStatus", "ringing")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn ended_reason(backend: &FakeBackend, n: usize) -> String {
    let ended = |r: &[common::backend::Received]| -> Vec<String> {
        r.iter().filter(|e| e.kind() == "call.ended").map(|e| e.body["reason"].as_str().unwrap().to_string()).collect()
    };
    let got = backend.wait_received(Duration::from_secs(3), |r| ended(r).len() >= n).await;
    ended(&got)[n - 1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_can_reject_or_forward_a_twilio_call_without_an_engine() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "").await;
    let active = || srv.state.call.capacity.live();

    backend.set("call.started", Mode::Json(json!({"reject": {"reason": "busy"}})));
    let mut p = params("CA00000000000000000000000000000001", NUMBER_A);
    p.extend(
        [("CallerName", "DANA LOPEZ"), ("ForwardedFrom", "+15550009999"), ("Direction", "inbound")]
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let (st, twiml) = webhook(&srv, &p, None).await;
    assert_eq!(st, 200);
    assert!(twiml.contains(r#"<Reject reason="busy"/>"#), "{twiml}");
    assert_eq!(ended_reason(&backend, 1).await, "rejected");
    // The carrier's caller metadata rides in call.started.
    let started = backend.received().into_iter().find(|e| e.kind() == "call.started").unwrap();
    assert_eq!(started.body["caller_name"], "DANA LOPEZ");
    assert_eq!(started.body["forwarded_from"], "+15550009999");
    assert_eq!(started.body["direction"], "inbound");
    assert!(started.body.get("parent_call_id").is_none(), "absent when the carrier does not say");

    backend.set("call.started", Mode::Json(json!({"reject": {"say": "We are closed <today> & tomorrow."}})));
    let (_, twiml) = webhook(&srv, &params("CA00000000000000000000000000000002", NUMBER_A), None).await;
    assert!(twiml.contains("<Say>We are closed &lt;today&gt; &amp; tomorrow.</Say><Hangup/>"), "{twiml}");
    assert_eq!(ended_reason(&backend, 2).await, "rejected");

    backend.set("call.started", Mode::Json(json!({"forward": "+15557654321"})));
    let (_, twiml) = webhook(&srv, &params("CA00000000000000000000000000000003", NUMBER_A), None).await;
    assert!(twiml.contains("<Dial>+15557654321</Dial>"), "{twiml}");
    assert!(!twiml.contains("<Stream"), "no engine: {twiml}");
    assert_eq!(ended_reason(&backend, 3).await, "forwarded");

    // Outside the number's transfer_allow ("+1", pbx.example.com): answered as usual.
    backend.set("call.started", Mode::Json(json!({"forward": "+442071234567"})));
    let (_, twiml) = webhook(&srv, &params("CA00000000000000000000000000000004", NUMBER_A), None).await;
    assert!(twiml.contains("<Connect><Stream"), "{twiml}");
    assert!(srv.metric("callbridge_call_errors_total", &[("source", "forward_refused")]) >= 1.0);
    // Only that last call holds a slot (waiting for its stream).
    assert_eq!(active(), 1);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plans_time_limit_says_goodbye_and_ends_the_call() {
    use common::net::{Rx, is_loud};
    let backend = FakeBackend::start().await;
    backend.set("call.started", Mode::Json(json!({"max_duration_s": 1})));
    let srv = server(&backend, "").await;
    let mut tw = call(&srv, 7, NUMBER_A).await;
    let t0 = tokio::time::Instant::now();
    // The caller stays silent; the goodbye line plays at 1 s, then the call ends.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut loud, mut closed) = (0, None);
    let (mut first_loud, mut last_loud) = (None, Duration::ZERO);
    while closed.is_none() && t0.elapsed() < Duration::from_secs(12) {
        tick.tick().await;
        // The server closes the socket at the end: a send may fail then.
        use futures_util::SinkExt;
        let m = tw.peer.media(&[0xFF; 160], 0);
        let _ = tw.tx.send(tokio_tungstenite::tungstenite::Message::text(m)).await;
        while let Ok(ev) = tw.rx.try_recv() {
            match ev {
                Rx::Msg(at, callbridge_testkit::twilio_peer::ServerMessage::Media(p)) if is_loud(&p) => {
                    first_loud.get_or_insert(at - t0);
                    last_loud = at - t0;
                    loud += 1;
                }
                Rx::Closed(c) => closed = Some(c),
                _ => {}
            }
        }
    }
    let took = t0.elapsed();
    assert!(loud > 50, "the goodbye line was heard ({loud} loud messages)");
    assert_eq!(closed.flatten().map(|c| c.0), Some(1000), "closed normally");
    // The line starts at 1 s (the stream started just before t0); the call ends after all of it played.
    let first = first_loud.unwrap();
    assert!(first > Duration::from_millis(700) && first < Duration::from_millis(1_600), "goodbye at {first:?}");
    assert!(took >= last_loud + Duration::from_millis(300), "ended {took:?}, last sound {last_loud:?}");
    assert!(took < Duration::from_secs(9), "{took:?}");
    assert_eq!(ended_reason(&backend, 1).await, "max_duration");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_call_with_status_events_is_ringing_then_ended_then_missed() {
    let backend = FakeBackend::start().await;
    backend.set("call.started", Mode::Json(json!({"events": ["call.status"]})));
    let srv = server(&backend, "").await;
    let sid = "CA00000000000000000000000000000009";
    let (st, _) = webhook(&srv, &params(sid, NUMBER_A), None).await;
    assert_eq!(st, 200);
    // The caller hangs up before the stream connects: Twilio says the stream stopped.
    let stopped = [("CallSid", sid), ("StreamEvent", "stream-stopped")];
    assert_eq!(twilio_post(&srv, "/twilio/stream-status", &stopped).await.0, 204);
    assert_eq!(ended_reason(&backend, 1).await, "missed");
    let mut events = backend.received();
    events.sort_by_key(|e| e.body["seq"].as_u64());
    let seen: Vec<(String, String)> =
        events.iter().map(|e| (e.kind().to_string(), e.body["status"].as_str().unwrap_or("").to_string())).collect();
    let want = [("call.started", ""), ("call.status", "ringing"), ("call.status", "ended"), ("call.ended", "")];
    assert_eq!(seen, want.map(|(a, b)| (a.to_string(), b.to_string())), "in order, one sequence");
    let seqs: Vec<u64> = events.iter().map(|e| e.body["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    srv.shutdown().await;
}
