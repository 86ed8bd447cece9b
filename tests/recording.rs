//! Call data over real sockets on 127.0.0.1: the stereo recording matches what
//! the caller said and what they heard (a barge-in cuts the bot channel where
//! playback stopped), the transcript, Range downloads, erasure, tenant
//! isolation, a recording folder that cannot be written, and `kill -9`.

mod common;

use std::time::Duration;

use callbridge::audio::g711;
use callbridge_testkit::twilio_peer::ServerMessage;
use common::backend::{FakeBackend, Mode};
use common::calls::*;
use common::net::*;
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::{Instant, interval};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cb-{name}-{}", callbridge::signature::random_hex()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn decode(ulaw: &[u8]) -> Vec<i16> {
    let mut v = vec![0i16; ulaw.len()];
    g711::ulaw_decode(ulaw, &mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_holds_what_was_said_and_heard_and_the_data_api_guards_it() {
    let backend = FakeBackend::start().await;
    backend.set("call.started", Mode::Json(json!({"record": true})));
    let dir = tmp("rec");
    let extra = format!("[recording]\ndir = \"{}\"\nheader_update_ms = 200\n", dir.display());
    let srv = server(&backend, &extra).await;
    let mut tw = call(&srv, 1, NUMBER_A).await;

    // The caller speaks, waits for the reply, lets ~1 s of it play, then talks over it.
    let mut sent: Vec<u8> = Vec::new();
    let mut got_media: Vec<u8> = Vec::new();
    let (mut first_media_pos, mut clear_pos) = (None, None);
    let mut tick = interval(Duration::from_millis(20));
    let speech = ulaw_fixture("caller_short_8k.wav");
    let leak = ulaw_fixture("caller_leak_8k.wav");
    let silence = vec![0xFFu8; 160];
    let mut frames: Box<dyn Iterator<Item = Vec<u8>>> =
        Box::new(speech.chunks_exact(160).map(<[u8]>::to_vec).chain(std::iter::repeat(silence.clone())));
    let mut barging = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while clear_pos.is_none() {
        assert!(Instant::now() < deadline, "no barge-in");
        tick.tick().await;
        let f = frames.next().unwrap();
        tw.frame(&f).await;
        sent.extend_from_slice(&f);
        while let Ok(ev) = tw.rx.try_recv() {
            match ev {
                Rx::Msg(_, ServerMessage::Media(p)) if clear_pos.is_none() => {
                    // Position on the caller's timeline when this audio started playing.
                    first_media_pos.get_or_insert(sent.len() - 160);
                    got_media.extend_from_slice(&p);
                }
                Rx::Msg(_, ServerMessage::Clear) => clear_pos = Some(sent.len() - 160),
                _ => {}
            }
        }
        if !barging && first_media_pos.is_some_and(|p| sent.len() - p >= 8000) {
            barging = true;
            frames =
                Box::new(leak.chunks_exact(160).skip(15).map(<[u8]>::to_vec).chain(std::iter::repeat(silence.clone())));
        }
    }
    // Keep talking a little, then hang up.
    for f in leak.chunks_exact(160).skip(15 + 60).take(40) {
        tick.tick().await;
        tw.frame(f).await;
        sent.extend_from_slice(f);
    }
    let stop = tw.peer.stop();
    tw.send(stop).await;
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    let ended = &events.last().unwrap().body;
    let call_id = ended["call_id"].as_str().unwrap().to_string();
    assert_eq!(
        ended["recording_url"].as_str().unwrap(),
        format!("https://cb.example.com/v1/calls/{call_id}/recording")
    );
    assert_eq!(ended["recording_loss"], serde_json::Value::Null, "nothing lost");
    let ms = ended["recording_duration_ms"].as_u64().unwrap();
    let sent_ms = sent.len() as u64 / 8;
    assert!(ms.abs_diff(sent_ms) <= 100, "recording {ms} ms for {sent_ms} ms of call audio");

    // Download it (tenant A) and compare both channels.
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/calls/{call_id}/recording", srv.addr);
    let mut wav = Vec::new();
    for _ in 0..50 {
        let r = http.get(&url).bearer_auth("tenant-a-token").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        wav = r.bytes().await.unwrap().to_vec();
        if wav.len() >= 44 + sent.len() * 4 {
            break; // the writer has finished the file
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rd = hound::WavReader::new(std::io::Cursor::new(wav.clone())).expect("valid WAV");
    assert_eq!((rd.spec().channels, rd.spec().sample_rate, rd.spec().bits_per_sample), (2, 8000, 16));
    let s: Vec<i16> = rd.into_samples::<i16>().map(Result::unwrap).collect();
    let (left, right): (Vec<i16>, Vec<i16>) = s.chunks(2).map(|f| (f[0], f[1])).unzip();
    assert_eq!(&left[..sent.len()], &decode(&sent)[..], "caller channel is exactly what the caller sent");
    // The carrier codec µ-law-encodes exactly the PCM the recorder saw: compare in µ-law.
    let mut right_ulaw = vec![0u8; right.len()];
    g711::ulaw_encode(&right, &mut right_ulaw);
    let sound = |b: &u8| *b != 0xFF && *b != 0x7F;
    let first_bot = right_ulaw.iter().position(sound).expect("bot audio recorded");
    let lead_in = got_media.iter().position(sound).unwrap();
    let start = first_bot - lead_in;
    let expected_start = first_media_pos.unwrap();
    assert!(
        start.abs_diff(expected_start) <= 160,
        "bot channel starts where the caller heard it: {start} vs {expected_start} samples"
    );
    let cut = clear_pos.unwrap();
    let played = &right_ulaw[start..cut - 160];
    assert!(played == &got_media[..played.len()], "bot channel is what was played, sample for sample");
    let after = &right[cut + 160..(cut + 160 + 4000).min(right.len())];
    assert!(
        after.len() >= 3200 && after.iter().all(|&v| v == 0),
        "the bot channel stops within a frame of the barge-in"
    );

    // The transcript, in order, for A only; a Range request; erasure.
    let tr_url = format!("http://{}/v1/calls/{call_id}/transcript", srv.addr);
    let tr: serde_json::Value =
        http.get(&tr_url).bearer_auth("tenant-a-token").send().await.unwrap().json().await.unwrap();
    let kinds: Vec<&str> = tr["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"turn.user"), "{kinds:?}");
    assert!(kinds.contains(&"barge_in") && kinds.contains(&"turn.agent"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"call.ended"));
    let interrupted = tr["events"].as_array().unwrap().iter().find(|e| e["type"] == "turn.agent").unwrap();
    assert_eq!(interrupted["interrupted"], true);
    assert_eq!(http.get(&tr_url).bearer_auth("tenant-b-token").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(http.get(&url).bearer_auth("tenant-b-token").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let r = http.get(&url).bearer_auth("tenant-a-token").header("Range", "bytes=0-43").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let head = r.bytes().await.unwrap();
    assert_eq!((head.len(), &head[..4]), (44, &b"RIFF"[..]));
    let del = format!("http://{}/v1/calls/{call_id}", srv.addr);
    assert_eq!(http.delete(&del).bearer_auth("tenant-b-token").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(http.delete(&del).bearer_auth("tenant-a-token").send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert!(!dir.join(format!("{call_id}.wav")).exists(), "recording erased");
    assert_eq!(http.get(&tr_url).bearer_auth("tenant-a-token").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_cannot_be_written_costs_the_recording_not_the_call() {
    let backend = FakeBackend::start().await;
    let dir = tmp("recfail");
    let blocker = dir.join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let extra = format!("[recording]\nenabled = true\ndir = \"{}\"\n", blocker.join("rec").display());
    let srv = server(&backend, &extra).await;
    let mut tw = call(&srv, 1, NUMBER_A).await;
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    assert!(media_count(&got) > 5, "the call is answered as usual");
    let stop = tw.peer.stop();
    tw.send(stop).await;
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    let loss = events.last().unwrap().body["recording_loss"].as_str().unwrap_or("").to_string();
    assert!(loss.contains("recording stopped") && loss.contains("cannot create"), "report says what was lost: {loss}");
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_wav_opens_and_holds_the_audio_up_to_the_last_header_update() {
    let dir = tmp("kill9");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.join("cb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\ndatabase = \"\"\n[recording]\nenabled = true\ndir = \"{}\"\nheader_update_ms = 200\n",
            dir.join("rec").display()
        ),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_callbridge"))
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("ws://127.0.0.1:{port}/twilio/stream");
    let mut tw = None;
    for _ in 0..100 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
            tw = Some(FakeTwilio::from_ws(ws, 1));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tw = tw.expect("server came up");
    tw.start().await;
    let speech = ulaw_fixture("caller_leak_8k.wav");
    let mut tick = interval(Duration::from_millis(20));
    let n = 100; // 2 s
    for f in speech.chunks_exact(160).take(n) {
        tick.tick().await;
        tw.frame(f).await;
    }
    // Long enough for the writer (every 100 ms) to commit and rewrite the header (every 200 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    child.0.kill().unwrap(); // SIGKILL: no chance to finalize
    child.0.wait().unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.join("rec")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let rd = hound::WavReader::open(&files[0]).expect("the WAV opens after kill -9");
    let frames = rd.len() as usize / 2;
    assert!(
        frames >= (n - 20) * 160 && frames <= n * 160 + 1600,
        "holds audio up to the last update ({frames} frames)"
    );
    let left: Vec<i16> = rd.into_samples::<i16>().map(Result::unwrap).step_by(2).collect();
    assert_eq!(left, decode(&speech[..frames]), "and it is the caller's audio");
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}
