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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let ended: Vec<_> = backend.received().into_iter().filter(|e| e.kind() == "call.ended").collect();
        if ended.len() >= n {
            return ended[n - 1].body["reason"].as_str().unwrap().to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no call.ended #{n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
