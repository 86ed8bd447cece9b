//! SIGTERM during a live call loses nothing: the real binary, a recorded call
//! to a tenant, SIGTERM mid-call. While it drains, `/healthz` answers 503 and
//! the control API still answers; the call is hung up at the end of the grace
//! period; then the backend has the call's `call.ended` with its whole
//! conversation, the SQLite store has the call and its events, and the WAV is
//! complete (final header, every second of the call).

mod common;

use std::time::Duration;

use callbridge_testkit::twilio_peer::ServerMessage;
use common::backend::FakeBackend;
use common::binary::*;
use common::calls::*;
use common::net::*;
use tokio::time::{Instant, interval};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_call_delivers_call_ended_and_leaves_a_complete_store_and_recording() {
    let backend = FakeBackend::start().await;
    let dir = test_dir("sigterm");
    let db = dir.join("cb.db");
    let rec = dir.join("rec");
    let mut bin =
        Binary::start(&dir, &tenant_config(&dir, &backend.url(), "[server]\nshutdown_grace_ms = 3000\n")).await;
    // A call: the signed webhook, the signed stream with its token.
    let mut tw = call_at(bin.addr, 7, NUMBER_A).await;
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    assert!(media_count(&got) > 0, "the call is answered");
    // SIGTERM mid-call; the caller keeps talking (silence) until the server hangs up.
    bin.signal("TERM");
    let sent_at = Instant::now();
    let mut tick = interval(Duration::from_millis(20));
    let mut frames = 0u64;
    let mut health = None;
    let mut api = None;
    let close = loop {
        tick.tick().await;
        let m = tw.peer.media(&[0xFF; 160], 0);
        if futures_util::SinkExt::send(&mut tw.tx, tokio_tungstenite::tungstenite::Message::text(m)).await.is_ok() {
            frames += 1;
        }
        if frames == 25 {
            health = Some(bin.get("/healthz", None).await);
            api = Some(bin.get("/v1/calls", Some("tenant-a-token")).await);
        }
        let mut closed = None;
        while let Ok(ev) = tw.rx.try_recv() {
            match ev {
                Rx::Closed(c) => closed = Some(c),
                Rx::Msg(_, ServerMessage::Media(_)) | Rx::Msg(..) | Rx::Bad(_) => {}
            }
        }
        if let Some(c) = closed {
            break c;
        }
        assert!(sent_at.elapsed() < Duration::from_secs(10), "the call was not hung up");
    };
    assert_eq!(health, Some(503), "draining: /healthz says so");
    assert_eq!(api, Some(200), "the control API stays up while draining");
    assert_eq!(close.map(|c| c.0), Some(1001), "hung up as going away after the grace");
    assert!(sent_at.elapsed() >= Duration::from_millis(2000), "the call had most of the grace period");
    bin.wait_exit(Duration::from_secs(15));
    // The backend got the call's end, with the conversation.
    let events = backend.received();
    let ended: Vec<_> = events.iter().filter(|e| e.kind() == "call.ended").collect();
    assert_eq!(ended.len(), 1, "exactly one call.ended");
    assert_eq!(events.last().unwrap().kind(), "call.ended", "and it is the last event");
    let body = &ended[0].body;
    assert_eq!(body["reason"], "shutdown");
    let convo: Vec<&str> =
        body["conversation"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(convo.contains(&"turn.user") && convo.contains(&"turn.agent"), "{convo:?}");
    let call_id = body["call_id"].as_str().unwrap().to_string();
    // The store has the call, ended, with its events.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (reason, n_events): (Option<String>, i64) = conn
        .query_row(
            "SELECT reason, (SELECT COUNT(*) FROM call_events WHERE call_id = ?1) FROM calls WHERE call_id = ?1",
            [&call_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(reason.as_deref(), Some("shutdown"));
    assert!(n_events >= 3, "call.started, turns and call.ended stored ({n_events})");
    // The recording is complete: final header, and as long as the call.
    let secs = valid_wav_secs(&rec.join(format!("{call_id}.wav")));
    let spoken = (ulaw_fixture("caller_short_8k.wav").len() / 160 + 60) as f64 * 0.02 + frames as f64 * 0.02;
    assert!(secs >= spoken - 0.5, "the recording holds the whole call ({secs:.2} s of {spoken:.2} s)");
    let _ = std::fs::remove_dir_all(dir);
}
