//! A browser call end to end on 127.0.0.1, with the `webrtc` crate as the
//! browser (no browser here; `tests/browser` drives Chromium): WHIP-style
//! signalling, ICE/DTLS/SRTP on loopback, Opus both ways, the embedded local
//! engine. The agent's greeting reaches the peer; the caller talking over it
//! stops it (barge-in: nothing to clear, the server just stops sending); the
//! caller's turn is heard and answered; the page's event feed carries the
//! turns and the barge-in; `DELETE` hangs up and `call.ended` follows. Bad
//! offers and a tenant's number without its token are refused. Every wait is
//! bounded.

mod common;

use std::time::{Duration, Instant};

use callbridge_testkit::webrtc_peer::{FRAME, WebRtcPeer, caller_48k};
use common::backend::FakeBackend;
use common::net::TestServer;
use serde_json::Value;

/// Loud enough to be speech (the fixtures' voices sit well above this).
const LOUD: f32 = 300.0;

/// The event feed of a session, read in the background (SSE).
fn event_feed(base: &str, session: &str, bearer: Option<&str>) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut req = reqwest::Client::new().get(format!("{base}{session}/events"));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    tokio::spawn(async move {
        let Ok(mut r) = req.send().await else { return };
        let mut buf = String::new();
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(30), r.chunk()).await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = buf.find("\n\n") {
                let block: String = buf.drain(..i + 2).collect();
                for line in block.lines() {
                    if let Some(data) = line.strip_prefix("data:")
                        && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                    {
                        let _ = tx.send(v);
                    }
                }
            }
        }
    });
    rx
}

/// Frames of silence, paced in real time.
async fn silence(peer: &mut WebRtcPeer, frames: usize, tick: &mut tokio::time::Interval) {
    let zero = [0i16; FRAME];
    for _ in 0..frames {
        tick.tick().await;
        peer.send_frame(&zero).await.unwrap();
    }
}

fn loud_since(peer: &WebRtcPeer, since: Instant) -> usize {
    peer.heard().iter().filter(|h| h.at >= since && h.rms > LOUD).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_call_hears_the_agent_barges_in_is_answered_and_hangs_up() {
    let srv = TestServer::start("").await;
    let base = format!("http://{}", srv.addr);
    let mut peer = WebRtcPeer::call(&base, "", None).await.expect("the offer is answered");
    assert!(peer.session.starts_with("/webrtc/sessions/"), "Location: {}", peer.session);
    let mut feed = event_feed(&base, &peer.session, None);
    assert!(peer.connected(Duration::from_secs(10)).await, "ICE and DTLS come up on loopback");
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);

    // The greeting reaches the browser.
    let t0 = Instant::now();
    let mut greeted = false;
    for _ in 0..150 {
        silence(&mut peer, 1, &mut tick).await;
        if loud_since(&peer, t0) >= 10 {
            greeted = true;
            break;
        }
    }
    assert!(greeted, "the agent's greeting is heard within 3 s");

    // The caller talks over it: the agent stops.
    let speech = caller_48k("caller_leak_8k.wav");
    let talk_start = Instant::now();
    for frame in speech.chunks_exact(FRAME) {
        tick.tick().await;
        peer.send_frame(frame).await.unwrap();
    }
    let talk_end = Instant::now();
    let agent_during_talk: Vec<_> =
        peer.heard().into_iter().filter(|h| h.at >= talk_start && h.at < talk_end).collect();
    let last_loud = agent_during_talk.iter().rev().find(|h| h.rms > LOUD).map(|h| h.at);
    let stopped_after = last_loud.map_or(Duration::ZERO, |t| t.duration_since(talk_start));
    eprintln!(
        "agent stopped {stopped_after:?} after the caller began; {} agent packets during the talk",
        agent_during_talk.len()
    );
    assert!(
        stopped_after < Duration::from_millis(800),
        "the agent stopped {stopped_after:?} after the caller began (talk lasted {:?})",
        talk_end - talk_start
    );

    // The caller's turn ends in silence: the agent answers.
    let answered_from = Instant::now();
    let mut answered = false;
    for _ in 0..200 {
        silence(&mut peer, 1, &mut tick).await;
        if loud_since(&peer, answered_from) >= 10 {
            answered = true;
            break;
        }
    }
    assert!(answered, "the agent answers the caller's turn within 4 s");

    // The page's feed saw the barge-in and the turns.
    let mut kinds = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), feed.recv()).await {
        kinds.push(ev["type"].as_str().unwrap_or("").to_string());
    }
    eprintln!("feed: {kinds:?}");
    for want in ["barge_in", "turn.user", "turn.agent"] {
        assert!(kinds.iter().any(|k| k == want), "{want} in the feed: {kinds:?}");
    }
    let live = srv.metric("callbridge_calls_active", &[]);
    assert_eq!(live, 1.0, "one live call");

    assert_eq!(peer.hang_up().await.unwrap(), 204);
    let mut ended = None;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(200), feed.recv()).await {
            Ok(Some(ev)) if ev["type"] == "call.ended" => {
                ended = Some(ev);
                break;
            }
            Ok(None) => break,
            _ => {}
        }
    }
    let ended = ended.expect("call.ended reaches the page");
    assert_eq!(ended["reason"], "hangup", "{ended}");
    srv.wait_no_calls().await;
    assert_eq!(peer.hang_up().await.unwrap(), 404, "the session is gone");
    peer.close().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_checked_and_a_tenants_number_needs_its_token() {
    let backend = FakeBackend::start().await;
    let toml = format!(
        r#"
[[numbers]]
number = "+15550002222"
callback_url = "{}"
secret = "whsec_webrtc_0123456789"
api_token = "tenant-webrtc-token"
carrier = "twilio"
"#,
        backend.url()
    );
    let srv = TestServer::start(&toml).await;
    let base = format!("http://{}", srv.addr);
    let http = reqwest::Client::new();
    let post = |ct: &'static str, body: &'static str| {
        http.post(format!("{base}/webrtc/offer")).header("content-type", ct).body(body).send()
    };
    assert_eq!(post("application/json", "{}").await.unwrap().status().as_u16(), 415);
    assert_eq!(post("application/sdp", "hello").await.unwrap().status().as_u16(), 400);
    let garbage = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
    let r = http.post(format!("{base}/webrtc/offer")).header("content-type", "application/sdp").body(garbage).send();
    assert_eq!(r.await.unwrap().status().as_u16(), 400, "no audio we can take");

    // A registered number: refused without its tenant's token, answered with it.
    match WebRtcPeer::call(&base, "number=%2B15550002222", None).await {
        Err(callbridge_testkit::webrtc_peer::PeerError::Refused { status, .. }) => assert_eq!(status, 401),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("a tenant's number was answered without its token"),
    }
    match WebRtcPeer::call(&base, "number=%2B15550002222", Some("someone-else")).await {
        Err(callbridge_testkit::webrtc_peer::PeerError::Refused { status, .. }) => assert_eq!(status, 401),
        other => panic!("a wrong token: {:?}", other.err()),
    }
    let peer = WebRtcPeer::call(&base, "number=%2B15550002222&from=tester", Some("tenant-webrtc-token"))
        .await
        .expect("the tenant's own token calls its number (whichever carrier the number is with)");
    assert!(peer.connected(Duration::from_secs(10)).await);
    let started = backend.received().into_iter().find(|e| e.kind() == "call.started").expect("call.started");
    assert_eq!(started.body["carrier"], "webrtc", "{:?}", started.body);
    assert_eq!(started.body["from"], "tester");
    // The session is the tenant's: another bearer cannot hang it up.
    let r = http.delete(format!("{base}{}", peer.session)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(peer.hang_up().await.unwrap(), 204);
    srv.wait_no_calls().await;
    let got = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    let ended = got.iter().find(|e| e.kind() == "call.ended").expect("the backend hears the browser call end");
    assert_eq!(ended.body["reason"], "hangup", "{:?}", ended.body);
    peer.close().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_udp_port_range_holds_one_port_per_call_and_a_full_range_refuses() {
    // One free port: the range holds one call.
    let port = (45_000u16..55_000)
        .step_by(101)
        .find(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free UDP port");
    let srv = TestServer::start(&format!("[webrtc]\nudp_port_min = {port}\nudp_port_max = {port}\n")).await;
    let base = format!("http://{}", srv.addr);
    let peer = WebRtcPeer::call(&base, "", None).await.expect("the first call gets the port");
    assert!(peer.connected(Duration::from_secs(10)).await);
    assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(), "the call's socket holds port {port}");
    match WebRtcPeer::call(&base, "", None).await {
        Err(callbridge_testkit::webrtc_peer::PeerError::Refused { status, body }) => {
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("UDP port"), "{body}");
        }
        other => panic!("a second call with the range full: {:?}", other.err()),
    }
    assert_eq!(peer.hang_up().await.unwrap(), 204);
    peer.close().await;
    srv.wait_no_calls().await;
    let again = WebRtcPeer::call(&base, "", None).await.expect("the port is free again once the call ended");
    assert!(again.connected(Duration::from_secs(10)).await);
    assert_eq!(again.hang_up().await.unwrap(), 204);
    again.close().await;
    srv.shutdown().await;
}
