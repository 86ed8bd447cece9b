//! A few calls against an in-process callbridge server on 127.0.0.1 port 0.

use std::sync::Arc;
use std::time::Duration;

use loadtest::report::Report;
use loadtest::run::{Options, run};
use loadtest::script::ScriptTiming;

/// An in-process server (local engine, no greeting, memory store) and the caller clips.
async fn server_and_clips() -> (
    callbridge::server::Running,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), callbridge::server::ServerError>>,
    Vec<loadtest::clip::Clip>,
) {
    let cfg = callbridge::config::Config::from_toml(
        "[engine.local]\ngreeting_wav = \"\"\n[storage]\ndatabase = \"\"\n",
        "test",
    )
    .unwrap();
    let (srv, stop, join) = callbridge::server::spawn(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fixtures = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/audio"));
    (srv, stop, join, loadtest::clip::load_caller_clips(fixtures).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_calls_talk_and_barge_in_against_a_real_server() {
    let (srv, stop, join, clips) = server_and_clips().await;
    let opts = Options {
        url: format!("ws://{}/twilio/stream", srv.addr),
        calls: 4,
        ramp: Duration::from_millis(400),
        duration: Duration::from_secs(9),
        mix: "talk=1,barge-in=1".parse().unwrap(),
        server_pid: Some(std::process::id()),
        clips: Arc::new(clips),
        timing: ScriptTiming { barge_after_ms: 600.0, ..ScriptTiming::default() },
        progress: false,
        carrier: Default::default(),
        webhook: None,
        total_calls: None,
        tickers: 1,
    };
    let data = run(opts.clone()).await.unwrap();
    let report = Report::build(&opts, data);
    println!("{}", report.table());
    assert_eq!(report.connections, 4);
    assert_eq!(report.failure_count(), 0, "{:?}", report.failures);
    assert!(report.response_latency_ms.n >= 4, "every call got answers");
    // Local engine: the reply begins as soon as the caller's turn ends (500 ms of silence).
    let p50 = report.response_latency_ms.p50.unwrap();
    assert!((450.0..1500.0).contains(&p50), "response latency p50 {p50}");
    assert!(report.by_scenario["barge-in"].barge_in_latency_ms.n >= 1, "barge-ins measured");
    assert!(report.marks_echoed > 0);
    assert!(report.server.is_some(), "server samples taken from /proc");
    // The ticker counted every frame it sent: 4 calls × ~9 s at 50 frames a second.
    let lag = &report.generator_send_lag;
    assert!((1200..2000).contains(&lag.frames), "frames sent {}", lag.frames);
    assert!(lag.p50_ms <= lag.p99_ms && lag.p99_ms <= lag.max_ms, "{lag:?}");
    let dir = std::env::temp_dir().join(format!("cb-loadtest-{}", std::process::id()));
    report.write(&dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["calls"], 4);
    assert!(std::fs::read_to_string(dir.join("report.html")).unwrap().contains("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
}

/// Telnyx and Vonage callers through the same generator: the frames they send
/// (pre-encoded base64 JSON, binary 16 kHz PCM) are read and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_and_vonage_callers_are_answered() {
    let (srv, stop, join, clips) = server_and_clips().await;
    let clips = Arc::new(clips);
    let one = |carrier: &'static str| {
        let opts = Options {
            url: format!("ws://{}/{carrier}/stream", srv.addr),
            calls: 2,
            ramp: Duration::from_millis(200),
            duration: Duration::from_secs(9),
            mix: "talk".parse().unwrap(),
            server_pid: None,
            clips: clips.clone(),
            timing: ScriptTiming::default(),
            progress: false,
            carrier: carrier.parse().unwrap(),
            webhook: None,
            total_calls: None,
            tickers: 1,
        };
        async move { (carrier, Report::build(&opts, run(opts.clone()).await.unwrap())) }
    };
    // Both at once, on one server.
    let (a, b) = tokio::join!(one("telnyx"), one("vonage"));
    for (carrier, report) in [a, b] {
        println!("{}", report.table());
        assert_eq!(report.connections, 2, "{carrier}");
        assert_eq!(report.failure_count(), 0, "{carrier}: {:?}", report.failures);
        assert!(report.response_latency_ms.n >= 2, "{carrier}: every call answered");
        assert!(report.bot_frames > 50, "{carrier}: bot audio received");
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
}
