//! The loadtest's WebRTC mode against an in-process server on 127.0.0.1:
//! a few browser calls barge in, are answered, and hang up.

use std::sync::Arc;
use std::time::Duration;

use loadtest::webrtc::{WebRtcOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_browser_calls_barge_in_and_are_answered() {
    let cfg = callbridge::config::Config::from_toml("[storage]\ndatabase = \"\"\n", "test").unwrap();
    let (srv, stop, join) = callbridge::server::spawn(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fixtures = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/audio"));
    let clips = loadtest::clip::load_caller_clips(fixtures).unwrap();
    assert!(
        run(WebRtcOptions {
            base: "http://192.0.2.1:80".into(),
            calls: 1,
            ramp: Duration::ZERO,
            duration: Duration::ZERO,
            barge_after: Duration::ZERO,
            server_pid: None,
            clips: Arc::new(clips.clone()),
        })
        .await
        .is_err(),
        "loopback only"
    );
    let opts = WebRtcOptions {
        base: format!("http://{}", srv.addr),
        calls: 3,
        ramp: Duration::from_millis(600),
        duration: Duration::from_secs(14),
        barge_after: Duration::from_millis(600),
        server_pid: Some(std::process::id()),
        clips: Arc::new(clips),
    };
    let report = run(opts).await.unwrap();
    println!("{}", report.table());
    assert_eq!((report.calls, report.connected), (3, 3));
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.barge_in_latency_ms.n >= 3, "each call barged in: {:?}", report.barge_in_latency_ms);
    let b95 = report.barge_in_latency_ms.p95.unwrap();
    assert!(b95 < 400.0, "barge-in p95 {b95} ms");
    assert!(report.response_latency_ms.n >= 3, "{:?}", report.response_latency_ms);
    // Local engine: the answer starts when the turn ends (500 ms of silence).
    let p50 = report.response_latency_ms.p50.unwrap();
    assert!((400.0..1500.0).contains(&p50), "response p50 {p50} ms");
    assert!(report.server_cpu_mean.is_some() && report.server_rss_kib.is_some());
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
}
