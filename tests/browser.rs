//! The `/phone` page in a real browser: Debian's headless Chromium (driven
//! over WebDriver by `chromedriver`, both on 127.0.0.1) with a fake
//! microphone playing a WAV — 2.5 s of silence, a caller's sentence, 9 s of
//! silence, looped. The page places a call to the embedded default agent;
//! the test asserts that the agent's audio reached the page (RTP bytes in
//! `getStats`, a WebAudio level), that the caller talking over the greeting
//! stopped it (a `barge_in`, the greeting's `turn.agent` interrupted), that
//! the caller's turn was heard and answered, and that hanging up ends the
//! call. A screenshot is saved under `target/test-artifacts/`.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them and sets
//! `CALLBRIDGE_REQUIRE_BROWSER=1`; elsewhere a missing browser skips, loudly).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use callbridge::audio::resample::Resampler;
use callbridge_testkit::webdriver::{Browser, available};
use common::net::TestServer;

/// The fake microphone's WAV (16 kHz mono 16-bit).
fn microphone_wav() -> PathBuf {
    let (rate, pcm) =
        callbridge::audio::wav::read_wav_mono_i16(&std::fs::read("fixtures/audio/caller_short_8k.wav").unwrap())
            .unwrap();
    let mut rs = Resampler::new(rate, 16_000, 160).unwrap();
    let mut speech = Vec::new();
    let mut buf = vec![0i16; rs.output_len(160)];
    for chunk in pcm.chunks_exact(160) {
        let n = rs.process(chunk, &mut buf);
        speech.extend_from_slice(&buf[..n]);
    }
    let path = std::env::temp_dir().join(format!("cb-fake-mic-{}.wav", std::process::id()));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    let silence = |w: &mut hound::WavWriter<_>, secs: f64| {
        for _ in 0..(16_000.0 * secs) as usize {
            w.write_sample(0i16).unwrap();
        }
    };
    silence(&mut w, 2.5);
    for s in speech {
        w.write_sample(s).unwrap();
    }
    silence(&mut w, 9.0);
    w.finalize().unwrap();
    path
}

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_page_calls_the_agent_in_chromium() {
    if let Err(why) = available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let srv = TestServer::start("").await;
    let wav = microphone_wav();
    let browser = Browser::start(Some(&wav)).await;
    browser.goto(&format!("http://{}/phone", srv.addr)).await;
    assert_eq!(browser.eval("return document.title").await, "callbridge phone");
    browser.eval("document.getElementById('call').click(); return true;").await;
    let in_call = browser.wait_for("return window.cb.status === 'in call'", Duration::from_secs(20)).await;
    if !in_call {
        browser.screenshot(&artifact("phone-failed.png")).await;
        panic!("the page did not connect: {}", browser.eval("return JSON.stringify(window.cb)").await);
    }
    let has = |kind: &str| format!("return window.cb.events.some(e => e.type === '{kind}')");
    let mut missing = Vec::new();
    for kind in ["barge_in", "turn.user", "turn.agent"] {
        if !browser.wait_for(&has(kind), Duration::from_secs(25)).await {
            missing.push(kind);
        }
    }
    let heard = browser
        .wait_for("return window.cb.bytesReceived > 5000 && window.cb.maxLevel > 0.01", Duration::from_secs(5))
        .await;
    browser.screenshot(&artifact("phone.png")).await;
    let state = browser.eval("return JSON.stringify({status: cb.status, bytes: cb.bytesReceived, maxLevel: cb.maxLevel, events: cb.events.map(e => e.type)})").await;
    eprintln!("page: {state}");
    assert!(missing.is_empty(), "events missing from the page: {missing:?}; {state}");
    assert!(heard, "the agent's audio reached the page: {state}");
    let interrupted =
        browser.eval("return window.cb.events.some(e => e.type === 'turn.agent' && e.interrupted === true)").await;
    assert_eq!(interrupted, true, "the greeting was cut off by the caller: {state}");
    assert_eq!(srv.metric("callbridge_calls_active", &[]), 1.0);

    browser.eval("document.getElementById('hangup').click(); return true;").await;
    assert!(browser.wait_for("return window.cb.status === 'hung up'", Duration::from_secs(5)).await);
    srv.wait_no_calls().await;
    browser.quit().await;
    let _ = std::fs::remove_file(&wav);
    srv.shutdown().await;
}
