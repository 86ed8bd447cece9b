//! Faults on browser calls, over real sockets on 127.0.0.1 (the `webrtc`
//! crate as the browser: ICE, DTLS, SRTP, Opus): the tab closes while the bot
//! speaks; the browser's network dies while the bot speaks (no close, no more
//! packets); the process is told to stop with live browser calls. Each checks
//! that the call ends once, its backend hears `call.ended` with the caller's
//! turn and the cut-off reply as far as it was heard, and the recording is
//! complete. (The same faults for phone carriers: `tests/faults.rs`.)

mod common;

use std::time::Duration;

use callbridge_testkit::webrtc_peer::{FRAME, WebRtcPeer, caller_48k};
use common::backend::FakeBackend;
use common::binary::*;
use common::calls::*;
use tokio::time::{Instant, interval};

/// Loud enough to be the agent's voice.
const LOUD: f32 = 300.0;

fn reply_ms() -> u64 {
    callbridge::engine::local::load_clip("builtin:reply").unwrap().len() as u64 / 8
}

/// A browser call to tenant A's number (its token), connected.
async fn browser(base: &str) -> WebRtcPeer {
    let peer = WebRtcPeer::call(base, "number=%2B15550001111&from=tester", Some("tenant-a-token"))
        .await
        .expect("the offer is answered");
    assert!(peer.connected(Duration::from_secs(10)).await, "ICE and DTLS come up on loopback");
    peer
}

/// The caller says their turn, then keeps the line open (silence) until the
/// agent's reply has been heard for `reply_packets` packets. Returns when
/// each peer heard the reply begin.
async fn talk_until_answered(peers: &mut [WebRtcPeer], reply_packets: usize) -> Vec<std::time::Instant> {
    let speech = caller_48k("caller_short_8k.wav");
    let zero = [0i16; FRAME];
    let mut tick = interval(Duration::from_millis(20));
    let t0 = Instant::now();
    let mut i = 0;
    loop {
        tick.tick().await;
        let frame = speech.chunks_exact(FRAME).nth(i).unwrap_or(&zero);
        for p in peers.iter_mut() {
            p.send_frame(frame).await.unwrap();
        }
        i += 1;
        let since = std::time::Instant::now() - t0.elapsed();
        let loud: Vec<Vec<std::time::Instant>> = peers
            .iter()
            .map(|p| p.heard().iter().filter(|h| h.at >= since && h.rms > LOUD).map(|h| h.at).collect())
            .collect();
        if loud.iter().all(|l| l.len() >= reply_packets) {
            return loud.iter().map(|l| l[0]).collect();
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "every caller is answered");
    }
}

/// A `call.ended` checked for the caller's turn and a cut-off reply, heard
/// as far as the browser heard it before it left (`played`), give or take
/// a few packets of lead and scheduling.
fn check_cut_off(ended: &common::backend::Received, played: Duration) {
    let convo = ended.body["conversation"].as_array().unwrap();
    assert!(convo.iter().any(|t| t["type"] == "turn.user"), "the caller's turn is kept: {convo:?}");
    let agent = convo.iter().find(|t| t["type"] == "turn.agent").expect("the cut-off reply is reported");
    let heard = agent["heard_ms"].as_u64().unwrap();
    let reply = reply_ms();
    let played = played.as_millis() as u64;
    eprintln!("reported heard {heard} ms; the browser had heard {played} ms of a {reply} ms reply");
    assert!(heard < reply, "heard {heard} ms of a {reply} ms reply: not all of it");
    assert!(heard.abs_diff(played) <= 300, "reported heard {heard} ms, the browser heard {played} ms");
    assert_eq!(agent["interrupted"], true, "{agent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_tab_closed_mid_reply_ends_the_call_with_what_the_caller_heard() {
    let backend = FakeBackend::start().await;
    let dir = test_dir("webrtc-close");
    let extra = format!(
        "[recording]\nenabled = true\ndir = \"{}\"\n[webrtc]\nmedia_timeout_ms = 1500\n",
        dir.join("rec").display()
    );
    let srv = server(&backend, &extra).await;
    let base = format!("http://{}", srv.addr);
    let mut peers = [browser(&base).await];
    let reply_began = talk_until_answered(&mut peers, 25).await;
    let [peer] = peers;
    // DTLS close_notify goes out; the WebRTC stack keeps the server's side
    // "connected" (a remote close leaves ICE up), so the silence ends it.
    let closed = std::time::Instant::now();
    peer.close().await;
    let events = backend.wait_for("call.ended", Duration::from_secs(10)).await;
    let took = closed.elapsed();
    let ended: Vec<_> = events.iter().filter(|e| e.kind() == "call.ended").collect();
    assert_eq!(ended.len(), 1, "one call.ended");
    assert_eq!(ended[0].body["carrier"], "webrtc");
    assert_eq!(ended[0].body["reason"], "idle_timeout", "{}", ended[0].body);
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(5), "ended {took:?} after the close");
    check_cut_off(ended[0], closed - reply_began[0]);
    let id = ended[0].body["call_id"].as_str().unwrap();
    srv.wait_no_calls().await;
    finished_wav_secs(&dir.join("rec").join(format!("{id}.wav")), Duration::from_secs(5)).await;
    verify_all(&events, SECRET_A);
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_whose_network_dies_mid_reply_is_ended_at_the_idle_timeout_with_its_turn_and_the_cut_off_reply() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "[webrtc]\nmedia_timeout_ms = 1000\n").await;
    assert!(reply_ms() > 2000, "the reply outlasts what is played before and during the timeout");
    let base = format!("http://{}", srv.addr);
    let mut peers = [browser(&base).await];
    let reply_began = talk_until_answered(&mut peers, 10).await;
    // No more packets and no close: the peer is still up as far as ICE
    // knows, but the caller's audio has stopped coming (and, for all we
    // know, ours has stopped reaching them).
    let gone = Instant::now();
    let played = std::time::Instant::now() - reply_began[0];
    let events = backend.wait_for("call.ended", Duration::from_secs(10)).await;
    let took = gone.elapsed();
    let ended: Vec<_> = events.iter().filter(|e| e.kind() == "call.ended").collect();
    assert_eq!(ended.len(), 1, "one call.ended");
    assert_eq!(ended[0].body["reason"], "idle_timeout", "{}", ended[0].body);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "ended {took:?} after the last packet"
    );
    check_cut_off(ended[0], played);
    srv.wait_no_calls().await;
    let [peer] = peers;
    peer.close().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_live_browser_calls_drains_each_with_its_call_ended_and_a_valid_recording() {
    const N: usize = 8;
    let backend = FakeBackend::start().await;
    let dir = test_dir("webrtc-sigterm");
    let cfg = tenant_config(&dir, &backend.url(), "[server]\nshutdown_grace_ms = 1500\n");
    let mut bin = Binary::start(&dir, &cfg).await;
    let base = format!("http://{}", bin.addr);
    let mut peers = Vec::new();
    for _ in 0..N {
        peers.push(browser(&base).await);
    }
    talk_until_answered(&mut peers, 5).await;
    let signalled = Instant::now();
    bin.signal("TERM");
    // The callers stay on the line (silence) until the server ends each call.
    let zero = [0i16; FRAME];
    let mut tick = interval(Duration::from_millis(20));
    while !peers.iter().all(WebRtcPeer::ended) {
        tick.tick().await;
        for p in peers.iter_mut().filter(|p| !p.ended()) {
            let _ = p.send_frame(&zero).await;
        }
        assert!(signalled.elapsed() < Duration::from_secs(15), "every browser call is ended after the grace");
    }
    bin.wait_exit(Duration::from_secs(20));
    let events = backend.received();
    let ids = drained_by_shutdown(&events, N, &dir.join("cb.db"));
    assert!(events.iter().filter(|e| e.kind() == "call.ended").all(|e| e.body["carrier"] == "webrtc"));
    for id in ids {
        let secs = valid_wav_secs(&dir.join("rec").join(format!("{id}.wav")));
        assert!(secs >= 2.0, "{id}: the recording holds the call ({secs:.2} s)");
    }
    for p in &peers {
        p.close().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}
