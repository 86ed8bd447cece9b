//! Bad input over real sockets: each case gets a clear outcome (metric, and a
//! close with a reason where the call cannot go on) and never affects another
//! call.

mod common;

use std::time::Duration;

use callbridge_testkit::twilio_peer::ServerMessage;
use common::net::*;
use futures_util::SinkExt;
use tokio::time::{Instant, interval};
use tokio_tungstenite::tungstenite::Message;

const CFG: &str = r#"
[engine.local]
greeting_wav = ""
"#;

fn errors(srv: &TestServer, kind: &str) -> f64 {
    srv.metric("callbridge_protocol_errors_total", &[("kind", kind)])
}

/// Drive a healthy call through one caller turn; true if reply audio came back.
async fn healthy_turn(tw: &mut FakeTwilio, chunk: usize) -> bool {
    let speech = ulaw_fixture("caller_short_8k.wav");
    let mut tick = interval(Duration::from_millis(20 * chunk as u64 / 160));
    for f in speech.chunks(chunk) {
        tick.tick().await;
        tw.frame(f).await;
    }
    let give_up = Instant::now() + Duration::from_secs(3);
    while Instant::now() < give_up {
        tick.tick().await;
        tw.frame(&vec![0xFF; chunk]).await;
        while let Ok(ev) = tw.rx.try_recv() {
            if let Rx::Msg(_, ServerMessage::Media(_)) = ev {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_bad_base64_and_binary_are_counted_and_the_call_goes_on() {
    let srv = TestServer::start(CFG).await;
    let before: Vec<f64> =
        ["malformed_json", "unknown_event", "bad_base64", "binary_frame"].iter().map(|k| errors(&srv, k)).collect();
    // A second, well-behaved call runs alongside the misbehaving one.
    let mut good = FakeTwilio::connect(&srv.url(), 100).await;
    good.start().await;
    let mut tw = FakeTwilio::connect(&srv.url(), 1).await;
    tw.start().await;
    tw.send("{not json".into()).await;
    tw.send(r#"{"event":"bogus","streamSid":"x"}"#.into()).await;
    let sid = tw.peer.stream_sid.clone();
    tw.send(format!(r#"{{"event":"media","streamSid":"{sid}","media":{{"track":"inbound","payload":"***"}}}}"#)).await;
    tw.tx.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let (a, b) = tokio::join!(healthy_turn(&mut tw, 160), healthy_turn(&mut good, 160));
    assert!(a, "the misbehaving call still works");
    assert!(b, "the other call is unaffected");
    for (i, k) in ["malformed_json", "unknown_event", "bad_base64", "binary_frame"].iter().enumerate() {
        assert!(errors(&srv, k) >= before[i] + 1.0, "{k} counted");
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_before_start_closes_with_policy_violation() {
    let srv = TestServer::start(CFG).await;
    let mut tw = FakeTwilio::connect(&srv.url(), 2).await;
    let c = tw.peer.connected();
    tw.send(c).await;
    tw.frame(&[0xFF; 160]).await;
    let (code, reason) = tw.closed(Duration::from_secs(3)).await.expect("close frame");
    assert_eq!(code, 1008);
    assert!(reason.contains("media before start"), "{reason}");
    assert!(errors(&srv, "before_start") >= 1.0);
    srv.wait_no_calls().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_wrong_format_closes_with_unsupported_data() {
    let srv = TestServer::start(CFG).await;
    let mut tw = FakeTwilio::connect(&srv.url(), 3).await;
    let start = tw.peer.start(&[]).replace("audio/x-mulaw", "audio/x-l16").replace("8000", "16000");
    tw.send(start).await;
    let (code, reason) = tw.closed(Duration::from_secs(3)).await.expect("close frame");
    assert_eq!(code, 1003);
    assert!(reason.contains("unsupported media format"), "{reason}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_that_are_not_whole_frames_are_reframed_not_lost() {
    let srv = TestServer::start(CFG).await;
    let before = errors(&srv, "partial_frame");
    let mut tw = FakeTwilio::connect(&srv.url(), 4).await;
    tw.start().await;
    // 100-byte payloads (12.5 ms): every caller sample still reaches the VAD.
    assert!(healthy_turn(&mut tw, 100).await, "turn detected from odd-sized payloads");
    assert!(errors(&srv, "partial_frame") > before);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_with_too_big() {
    let srv = TestServer::start("[server]\nmax_message_bytes = 4096\n[engine.local]\ngreeting_wav = \"\"\n").await;
    let mut good = FakeTwilio::connect(&srv.url(), 200).await;
    good.start().await;
    let mut tw = FakeTwilio::connect(&srv.url(), 5).await;
    tw.start().await;
    tw.frame(&vec![0xFF; 8000]).await; // ≈10.7 KB message
    let (code, _) = tw.closed(Duration::from_secs(3)).await.expect("close frame");
    assert_eq!(code, 1009);
    assert!(errors(&srv, "message_too_big") >= 1.0);
    assert!(healthy_turn(&mut good, 160).await, "the other call is unaffected");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_protocol_errors_close_the_call() {
    let srv = TestServer::start("[server]\nmax_protocol_errors = 3\n").await;
    let mut tw = FakeTwilio::connect(&srv.url(), 6).await;
    tw.start().await;
    for _ in 0..4 {
        tw.send("garbage".into()).await;
    }
    let (code, reason) = tw.closed(Duration::from_secs(3)).await.expect("close frame");
    assert_eq!(code, 1008);
    assert!(reason.contains("too many protocol errors"), "{reason}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_without_hurting_others() {
    // Small kernel buffers and a long lead make back-pressure show up quickly.
    let srv = TestServer::start(
        "[server]\nsocket_send_buffer_bytes = 4096\nwrite_timeout_ms = 300\n[playback]\nlead_ms = 2000\n[engine.local]\ngreeting_wav = \"\"\n",
    )
    .await;
    let before = errors(&srv, "slow_consumer");
    let mut good = FakeTwilio::connect(&srv.url(), 300).await;
    good.start().await;
    // The stuck client: a tiny receive buffer and no reader at all.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(srv.addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(srv.url(), tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await.unwrap();
    use futures_util::StreamExt;
    let (mut tx, _rx_never_read) = ws.split();
    let mut peer = callbridge_testkit::twilio_peer::TwilioPeer::new(7);
    tx.send(Message::text(peer.start(&[]))).await.unwrap();
    let speech = ulaw_fixture("caller_short_8k.wav");
    let mut tick = interval(Duration::from_millis(20));
    let mut ts = 0;
    let mut disconnected = false;
    let give_up = Instant::now() + Duration::from_secs(8);
    let mut frames = speech.chunks_exact(160).chain(std::iter::repeat(&[0xFFu8; 160][..]));
    while Instant::now() < give_up {
        tick.tick().await;
        ts += 20;
        if tx.send(Message::text(peer.media(frames.next().unwrap(), ts))).await.is_err() {
            disconnected = true;
            break;
        }
        if errors(&srv, "slow_consumer") > before {
            disconnected = true;
            break;
        }
    }
    assert!(disconnected, "the stuck client was disconnected");
    assert!(errors(&srv, "slow_consumer") > before);
    assert!(healthy_turn(&mut good, 160).await, "the other call is unaffected");
    srv.shutdown().await;
}
