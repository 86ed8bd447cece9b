//! SIGTERM during a live call loses nothing: the real binary, a recorded call
//! to a tenant, SIGTERM mid-call. While it drains, `/healthz` answers 503 and
//! the control API still answers; the call is hung up at the end of the grace
//! period; then the backend has the call's `call.ended` with its whole
//! conversation, the SQLite store has the call and its events, and the WAV is
//! complete (final header, every second of the call).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use callbridge_testkit::twilio_peer::ServerMessage;
use common::backend::FakeBackend;
use common::calls::*;
use common::net::*;
use tokio::time::{Instant, interval};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn get(port: u16, path: &str, token: Option<&str>) -> u16 {
    let mut r = reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_call_delivers_call_ended_and_leaves_a_complete_store_and_recording() {
    let backend = FakeBackend::start().await;
    let dir = std::env::temp_dir().join(format!("cb-sigterm-{}", callbridge::signature::random_hex()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let db = dir.join("cb.db");
    let rec = dir.join("rec");
    let cfg = dir.join("cb.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
public_url = "{PUBLIC}"
validate_twilio_signatures = true
shutdown_grace_ms = 3000
[engine.local]
greeting_wav = ""
[storage]
database = "{db}"
[recording]
enabled = true
dir = "{rec}"
[callbacks]
allow_private_networks = ["127.0.0.0/8"]
[[numbers]]
number = "{NUMBER_A}"
callback_url = "{url}"
secret = "{SECRET_A}"
api_token = "tenant-a-token"
"#,
            db = db.display(),
            rec = rec.display(),
            url = backend.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .args(["serve", "--config", cfg.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while get(port, "/healthz", None).await != 200 {
        assert!(t0.elapsed() < Duration::from_secs(20), "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A call: the signed webhook, the signed stream with its token.
    let url = format!("ws://127.0.0.1:{port}/twilio/stream");
    let mut tw = FakeTwilio::connect_signed(&url, 7, Some(&stream_signature())).await.unwrap();
    let params = voice_params(&tw, NUMBER_A);
    let sig =
        callbridge::carrier::twilio::signature::compute(AUTH_TOKEN, "https://cb.example.com/twilio/voice", &params);
    let twiml = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/twilio/voice"))
        .header("X-Twilio-Signature", sig)
        .form(&params)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = token_of(&twiml);
    tw.start_with(&[("from", "+15557770000"), ("to", NUMBER_A), ("cb_token", &token)]).await;
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    assert!(media_count(&got) > 0, "the call is answered");
    // SIGTERM mid-call; the caller keeps talking (silence) until the server hangs up.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
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
            health = Some(get(port, "/healthz", None).await);
            api = Some(get(port, "/v1/calls", Some("tenant-a-token")).await);
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
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "did not exit after draining");
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let wav = rec.join(format!("{call_id}.wav"));
    let size = std::fs::metadata(&wav).unwrap().len();
    let rd = hound::WavReader::open(&wav).unwrap();
    let frames_in_header = rd.len() as u64 / 2;
    assert_eq!(44 + frames_in_header * 4, size, "the header counts every sample in the file");
    let secs = frames_in_header as f64 / 8000.0;
    let spoken = (ulaw_fixture("caller_short_8k.wav").len() / 160 + 60) as f64 * 0.02 + frames as f64 * 0.02;
    assert!(secs >= spoken - 0.5, "the recording holds the whole call ({secs:.2} s of {spoken:.2} s)");
    let _ = std::fs::remove_dir_all(dir);
}
