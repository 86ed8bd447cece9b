//! Faults, over real sockets on 127.0.0.1: the process is told to stop with
//! 50 live calls; the process is killed (`kill -9`) under live calls and
//! started again; the carrier's connection vanishes while the bot speaks.
//! Each checks that the calls end properly and nothing the caller said is
//! lost. (Other faults live next to what they break: engine drop and an
//! engine gone silent in `tests/realtime.rs`, a speech-to-text drop in
//! `tests/cascaded.rs`, failing/slow/hanging callbacks in `tests/backend.rs`
//! and `tests/realtime.rs`, an unwritable recording in `tests/recording.rs`,
//! a database that refuses writes in `src/callstore/`, the same faults
//! on browser calls in `tests/webrtc_faults.rs`; the index is in
//! BENCHMARKS.md §8.)

mod common;

use std::time::Duration;

use common::backend::FakeBackend;
use common::binary::*;
use common::calls::*;
use common::net::*;
use futures_util::SinkExt;
use tokio::time::{Instant, interval};
use tokio_tungstenite::tungstenite::Message;

/// Pace `calls` together: the caller's speech, then silence, one frame per
/// call every 20 ms, for `frames` ticks (or until every call is closed).
/// Returns, per call, how many frames were sent and whether it was closed
/// (and with what code).
async fn pace(calls: &mut [FakeTwilio], speech: &[u8], frames: usize) -> Vec<(usize, Option<u16>)> {
    let mut tick = interval(Duration::from_millis(20));
    let mut out = vec![(0usize, None); calls.len()];
    let silence = [0xFFu8; 160];
    for i in 0..frames {
        tick.tick().await;
        for (c, (sent, closed)) in calls.iter_mut().zip(out.iter_mut()) {
            while let Ok(ev) = c.rx.try_recv() {
                if let Rx::Closed(code) = ev {
                    *closed = Some(code.map_or(0, |c| c.0));
                }
            }
            if closed.is_some() {
                continue;
            }
            let f = speech.chunks_exact(160).nth(i).unwrap_or(&silence);
            let m = c.peer.media(f, i as u64 * 20);
            if c.tx.send(Message::text(m)).await.is_ok() {
                *sent += 1;
            }
        }
        if out.iter().all(|(_, c)| c.is_some()) {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_50_live_calls_drains_every_one_with_its_call_ended_and_a_valid_recording() {
    const N: usize = 50;
    let backend = FakeBackend::start().await;
    let dir = test_dir("sigterm50");
    let cfg = tenant_config(&dir, &backend.url(), "[server]\nshutdown_grace_ms = 2500\nmax_calls = 100\n");
    let mut bin = Binary::start(&dir, &cfg).await;
    let mut calls = Vec::new();
    for n in 0..N {
        calls.push(call_at(bin.addr, 100 + n as u64, NUMBER_A).await);
    }
    let speech = ulaw_fixture("caller_short_8k.wav");
    // Every caller speaks and is answered; then SIGTERM while all are live.
    let before = pace(&mut calls, &speech, speech.len() / 160 + 40).await;
    assert!(before.iter().all(|(_, c)| c.is_none()), "all 50 calls are live before the signal");
    bin.signal("TERM");
    let after = pace(&mut calls, &[], 500).await;
    for (i, (_, closed)) in after.iter().enumerate() {
        assert_eq!(*closed, Some(1001), "call {i} is hung up as going away once the grace is over");
    }
    bin.wait_exit(Duration::from_secs(20));
    // Every call has exactly one call.ended, as the shutdown, with the caller's turn in it.
    // The store has them all, ended; every recording is complete and as long as its call.
    let ids = drained_by_shutdown(&backend.received(), N, &dir.join("cb.db"));
    let spoken = (before[0].0 + after[0].0) as f64 * 0.02;
    for id in ids {
        let secs = valid_wav_secs(&dir.join("rec").join(format!("{id}.wav")));
        assert!(secs >= spoken - 1.0, "{id}: the recording holds the call ({secs:.2} s of ≈ {spoken:.2} s)");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_restart_ends_the_open_calls_as_interrupted_and_tells_their_backend() {
    const N: usize = 3;
    let backend = FakeBackend::start().await;
    let dir = test_dir("kill9-restart");
    let cfg = tenant_config(&dir, &backend.url(), "[recording]\nheader_update_ms = 200\n");
    let bin = Binary::start(&dir, &cfg).await;
    let mut calls = Vec::new();
    for n in 0..N {
        calls.push(call_at(bin.addr, 200 + n as u64, NUMBER_A).await);
    }
    let speech = ulaw_fixture("caller_short_8k.wav");
    let sent = pace(&mut calls, &speech, speech.len() / 160 + 60).await;
    assert!(sent.iter().all(|(_, c)| c.is_none()), "live when killed");
    // Kill once the store holds each caller's turn and each recording's header
    // has been rewritten past the speech (both are written in the background).
    let spoken = sent[0].0 as f64 * 0.02;
    let db = rusqlite::Connection::open(dir.join("cb.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let turns: i64 =
            db.query_row("SELECT COUNT(*) FROM call_events WHERE type = 'turn.user'", [], |r| r.get(0)).unwrap();
        let headers: Vec<f64> = std::fs::read_dir(dir.join("rec"))
            .unwrap()
            .filter_map(|e| hound::WavReader::open(e.unwrap().path()).ok())
            .map(|r| r.duration() as f64 / r.spec().sample_rate as f64)
            .collect();
        if turns >= N as i64 && headers.len() == N && headers.iter().all(|&h| h >= spoken - 0.5) {
            break;
        }
        assert!(Instant::now() < deadline, "store and headers caught up ({turns} turns, {headers:?} s)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bin.signal("KILL");
    drop(bin);
    assert!(backend.received().iter().all(|e| e.kind() != "call.ended"), "a killed process said nothing");
    let started: Vec<_> = backend.received().into_iter().filter(|e| e.kind() == "call.started").collect();
    assert_eq!(started.len(), N);
    // Start again on the same store and recordings.
    let bin = Binary::start(&dir, &cfg).await;
    let got = backend
        .wait_received(Duration::from_secs(10), |r| r.iter().filter(|e| e.kind() == "call.ended").count() >= N)
        .await;
    let ended: Vec<_> = got.iter().filter(|e| e.kind() == "call.ended").collect();
    assert_eq!(ended.len(), N, "each open call gets its one call.ended");
    verify_all(&got, SECRET_A);
    for e in &ended {
        let id = e.body["call_id"].as_str().unwrap();
        assert!(started.iter().any(|s| s.body["call_id"] == id), "{id} was one of ours");
        assert_eq!(e.body["reason"], "interrupted");
        // Numbered after everything the backend already had for the call.
        let last_seq = got
            .iter()
            .filter(|x| x.body["call_id"] == id && x.kind() != "call.ended")
            .map(|x| x.body["seq"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(e.body["seq"].as_u64().unwrap() > last_seq, "{id}: seq follows the stored events");
        let convo = e.body["conversation"].as_array().unwrap();
        assert!(convo.iter().any(|t| t["type"] == "turn.user"), "{id}: what the caller said is in the report");
        assert!(convo.iter().all(|t| t.get("seq").is_none()), "conversation entries carry no envelope fields");
        assert_eq!(e.body["user_turns"], convo.iter().filter(|t| t["type"] == "turn.user").count());
        // The recording opens and holds the call up to its last header update.
        let wav = dir.join("rec").join(format!("{id}.wav"));
        let rd = hound::WavReader::open(&wav).unwrap();
        let secs = rd.duration() as f64 / rd.spec().sample_rate as f64;
        assert!(secs >= spoken - 0.8 && secs <= spoken + 0.5, "{id}: {secs:.2} s recorded of ≈ {spoken:.2} s");
        let ms = e.body["recording_duration_ms"].as_u64().unwrap();
        assert_eq!(ms, (secs * 1000.0) as u64, "{id}: the report's length is the header's");
        assert!(e.body["recording_loss"].as_str().unwrap().contains("last header update"));
        // The data API agrees.
        let r = reqwest::Client::new()
            .get(format!("http://{}/v1/calls/{id}/transcript", bin.addr))
            .bearer_auth("tenant-a-token")
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["reason"], "interrupted", "{v}");
    }
    // A second restart finds nothing left to recover.
    drop(bin);
    let bin = Binary::start(&dir, &cfg).await;
    // Recovery runs before the listener: by now it has ended whatever it found.
    let metrics = reqwest::get(format!("http://{}/metrics", bin.addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("callbridge_calls_active"), "metrics are served");
    assert!(!metrics.contains(r#"reason="interrupted""#), "nothing is recovered twice");
    let open: i64 = db.query_row("SELECT COUNT(*) FROM calls WHERE ended_at IS NULL", [], |r| r.get(0)).unwrap();
    assert_eq!(open, 0, "no call is left open");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_vanishes_mid_reply_ends_the_call_with_what_the_caller_heard() {
    let backend = FakeBackend::start().await;
    let dir = test_dir("vanish");
    let extra = format!("[recording]\nenabled = true\ndir = \"{}\"\n", dir.join("rec").display());
    let srv = server(&backend, &extra).await;
    let mut tw = call(&srv, 1, NUMBER_A).await;
    let speech = ulaw_fixture("caller_short_8k.wav");
    let mut tick = interval(Duration::from_millis(20));
    let silence = [0xFFu8; 160];
    // Talk, then keep streaming silence until the reply has played for ≈ 0.5 s.
    let mut reply_frames = 0;
    let t0 = Instant::now();
    for (i, f) in speech.chunks_exact(160).chain(std::iter::repeat(&silence[..])).enumerate() {
        tick.tick().await;
        let m = tw.peer.media(f, i as u64 * 20);
        tw.send(m).await;
        while let Ok(ev) = tw.rx.try_recv() {
            if matches!(ev, Rx::Msg(_, callbridge_testkit::twilio_peer::ServerMessage::Media(_))) {
                reply_frames += 1;
            }
        }
        if reply_frames >= 25 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the bot answered");
    }
    tw.vanish().await;
    let ended = backend.ended_lost_mid_reply("twilio", 300).await;
    let id = ended["call_id"].as_str().unwrap();
    srv.wait_no_calls().await;
    finished_wav_secs(&dir.join("rec").join(format!("{id}.wav")), Duration::from_secs(5)).await;
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
