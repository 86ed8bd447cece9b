//! Real sockets on 127.0.0.1: a fake Twilio client streams speech, hears the
//! reply, barges in and receives `clear`. Frames are paced with an interval, as
//! Twilio paces them; every wait is bounded.

mod common;

use std::time::Duration;

use callbridge_testkit::twilio_peer::ServerMessage;
use common::net::*;
use tokio::time::{Instant, interval};

const CFG: &str = r#"
[engine.local]
greeting_wav = ""
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_is_answered_and_can_barge_in() {
    let srv = TestServer::start(CFG).await;
    let calls_before = srv.metric("callbridge_calls_total", &[]);
    let barge_before = srv.metric("callbridge_barge_ins_total", &[]);
    let mut tw = FakeTwilio::connect(&srv.url(), 1).await;
    tw.start().await;

    // 1. The caller says something; Twilio keeps streaming silence afterwards.
    let speech = ulaw_fixture("caller_short_8k.wav");
    let silence = vec![0xFFu8; 160];
    let mut tick = interval(Duration::from_millis(20));
    for f in speech.chunks_exact(160) {
        tick.tick().await;
        tw.frame(f).await;
    }
    // 2. The reply arrives: real audio, paced, with marks.
    let mut media = 0;
    let mut loud = 0;
    let mut marks = 0;
    let mut first_media = None;
    let give_up = Instant::now() + Duration::from_secs(3);
    // `media` counts 20 ms frames.
    while media < 40 && Instant::now() < give_up {
        tick.tick().await;
        tw.frame(&silence).await;
        while let Ok(ev) = tw.rx.try_recv() {
            match ev {
                Rx::Msg(at, ServerMessage::Media(p)) => {
                    assert_eq!(p.len(), 320, "whole 40 ms messages (playback.frames_per_message = 2)");
                    first_media.get_or_insert(at);
                    media += 2;
                    loud += is_loud(&p) as usize;
                }
                Rx::Msg(_, ServerMessage::Mark(_)) => marks += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(media >= 40, "reply audio arrived ({media} frames)");
    assert!(loud > 5, "reply is speech, not silence ({loud} loud messages)");
    assert!(marks >= 1, "marks follow the audio ({marks})");
    // Paced: 40 frames (800 ms of audio) cannot arrive much faster than real time.
    let span = Instant::now() - first_media.unwrap();
    assert!(span >= Duration::from_millis(600), "audio was paced, not burst ({span:?})");

    // 3. The caller talks over the bot: clear arrives while they are speaking.
    let interrupt = ulaw_fixture("caller_leak_8k.wav");
    let mut onset = None;
    let mut cleared_at = None;
    let mut media_after_clear = 0;
    for (i, f) in interrupt.chunks_exact(160).enumerate().skip(15).take(60) {
        tick.tick().await;
        tw.frame(f).await;
        if i == 15 {
            onset = Some(Instant::now());
        }
        while let Ok(ev) = tw.rx.try_recv() {
            match ev {
                Rx::Msg(at, ServerMessage::Clear) => cleared_at = Some(at),
                Rx::Msg(_, ServerMessage::Media(_)) if cleared_at.is_some() => media_after_clear += 1,
                _ => {}
            }
        }
    }
    let cleared_at = cleared_at.expect("clear received while the caller was speaking");
    let barge = cleared_at - onset.unwrap();
    assert!(barge < Duration::from_millis(1200), "clear came during the interruption ({barge:?})");
    assert_eq!(media_after_clear, 0, "no audio of the interrupted reply after clear");

    // 4. Hang up: the server closes normally and forgets the call.
    let stop = tw.peer.stop();
    tw.send(stop).await;
    let close = tw.closed(Duration::from_secs(3)).await;
    assert_eq!(close.map(|c| c.0), Some(1000));
    srv.wait_no_calls().await;
    assert!(srv.metric("callbridge_calls_total", &[]) >= calls_before + 1.0);
    assert!(srv.metric("callbridge_barge_ins_total", &[]) >= barge_before + 1.0);
    assert!(srv.metric("callbridge_response_latency_seconds_count", &[]) >= 1.0);
    assert!(srv.metric("callbridge_barge_in_latency_seconds_count", &[]) >= 1.0);
    assert!(srv.metric("callbridge_frames_in_total", &[("carrier", "twilio")]) >= 100.0);
    assert!(srv.metric("callbridge_frames_out_total", &[("carrier", "twilio")]) >= 40.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_twiml() {
    let srv = TestServer::start("[server]\npublic_url = \"wss://cb.example.com\"\n").await;
    // A stream that connects and vanishes before `start` takes its slot back and is counted.
    let closed_before = srv.metric("callbridge_calls_ended_total", &[("reason", "peer_closed")]);
    let tw = FakeTwilio::connect(&srv.url(), 9).await;
    tokio::time::timeout(Duration::from_secs(2), async {
        while srv.state.call.registry.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stream was registered");
    tw.vanish().await;
    srv.wait_no_calls().await;
    assert_eq!(srv.metric("callbridge_calls_ended_total", &[("reason", "peer_closed")]), closed_before + 1.0);
    let resp = http(srv.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let resp = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = "CallSid=CA123&From=%2B15551234567&To=%2B15557654321";
    let req = format!(
        "POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = http(srv.addr, &req).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains(r#"<Connect><Stream url="wss://cb.example.com/twilio/stream" statusCallback="https://cb.example.com/twilio/stream-status" statusCallbackMethod="POST">"#),
        "{resp}"
    );
    assert!(resp.contains(r#"<Parameter name="from" value="+15551234567"/>"#), "{resp}");
    assert!(!resp.contains("stream?"), "no query string in the stream URL");
    srv.shutdown().await;
}

async fn http(addr: std::net::SocketAddr, req: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.unwrap().unwrap();
    out
}
