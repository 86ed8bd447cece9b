//! The `/dashboard` page in a real browser during a loadtest: Debian's
//! headless Chromium (over WebDriver, `chromedriver` on 127.0.0.1) opens the
//! page of an in-process server, connects with the admin token, and the test
//! asserts the live numbers move while the loadtest's Twilio callers talk
//! and barge in: live calls listed with a state, response and barge-in
//! latency charted, CPU and memory sampled, durations growing, and the call
//! count back to zero when the run ends. A screenshot is saved under
//! `target/test-artifacts/`.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them and sets
//! `CALLBRIDGE_REQUIRE_BROWSER=1`; elsewhere a missing browser skips, loudly).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use callbridge_testkit::webdriver::{Browser, available};
use loadtest::report::Report;
use loadtest::run::{Options, run};
use loadtest::script::ScriptTiming;
use serde_json::Value;

const ADMIN: &str = "dashboard-admin-token-0123";

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_loadtest_live_in_chromium() {
    if let Err(why) = available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let cfg = callbridge::config::Config::from_toml(
        "[engine.local]\ngreeting_wav = \"\"\n[storage]\ndatabase = \"\"\n",
        "test",
    )
    .unwrap();
    let secrets = callbridge::config::Secrets { admin_token: Some(ADMIN.into()), ..Default::default() };
    let (srv, stop, join) = callbridge::server::spawn_with(cfg, secrets, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fixtures = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/audio"));
    let clips = loadtest::clip::load_caller_clips(fixtures).unwrap();

    let browser = Browser::start(None).await;
    browser.goto(&format!("http://{}/dashboard", srv.addr)).await;
    assert_eq!(browser.eval("return document.title").await, "callbridge dashboard");
    // A wrong token is refused, on the page.
    browser
        .eval(
            "document.getElementById('token').value = 'wrong'; document.getElementById('connect').click(); return true",
        )
        .await;
    assert!(
        browser.wait_for("return window.dash.status.startsWith('refused')", Duration::from_secs(10)).await,
        "{}",
        browser.eval("return JSON.stringify(window.dash)").await
    );
    browser
        .eval(&format!(
            "document.getElementById('token').value = '{ADMIN}'; document.getElementById('connect').click(); return true"
        ))
        .await;
    assert!(
        browser
            .wait_for("return window.dash.status === 'live' && window.dash.ticks >= 1", Duration::from_secs(10))
            .await
    );

    let opts = Options {
        url: format!("ws://{}/twilio/stream", srv.addr),
        calls: 12,
        ramp: Duration::from_millis(1200),
        duration: Duration::from_secs(14),
        mix: "talk=1,barge-in=1".parse().unwrap(),
        server_pid: None,
        clips: Arc::new(clips),
        timing: ScriptTiming { barge_after_ms: 600.0, ..ScriptTiming::default() },
        progress: false,
        carrier: Default::default(),
        webhook: None,
        total_calls: None,
        tickers: 1,
    };
    let load = tokio::spawn({
        let opts = opts.clone();
        async move { run(opts).await }
    });

    let live = browser
        .wait_for(
            "const d = window.dash; return d.last && d.last.calls_total === 12 \
             && d.last.calls.every(c => ['listening','thinking','speaking'].includes(c.state)) \
             && document.querySelectorAll('#calls tr').length === 12",
            Duration::from_secs(15),
        )
        .await;
    if !live {
        browser.screenshot(&artifact("dashboard-failed.png")).await;
        panic!("the page never listed the 12 calls: {}", browser.eval("return JSON.stringify(window.dash.last)").await);
    }
    let first: Value = browser.eval("return window.dash.last").await;
    let moved = browser
        .wait_for(
            "const s = window.dash.seconds; return s.some(x => x.response.n > 0) && s.some(x => x.barge_in.n > 0) \
             && s.some(x => x.process && x.process.cpu_percent > 0) && s.some(x => x.turns > 0) \
             && window.dash.last.calls.some(c => c.state === 'speaking')",
            Duration::from_secs(20),
        )
        .await;
    browser.screenshot(&artifact("dashboard.png")).await;
    let last: Value = browser.eval("return window.dash.last").await;
    assert!(
        moved,
        "the live numbers did not move: {}",
        browser.eval("return JSON.stringify(window.dash.seconds.slice(-5))").await
    );
    let dur =
        |v: &Value| v["calls"].as_array().unwrap().iter().map(|c| c["duration_ms"].as_u64().unwrap()).max().unwrap();
    assert!(dur(&last) > dur(&first), "durations grow: {} then {}", dur(&first), dur(&last));
    let tiles: Value = browser
        .eval(
            "return ['t-calls','t-resp','t-barge','t-cpu','t-rss'].map(id => document.getElementById(id).textContent)",
        )
        .await;
    assert!(tiles.as_array().unwrap().iter().all(|t| t != "–"), "every tile shows a number: {tiles}");
    let draws = browser.eval("return window.dash.draws").await.as_u64().unwrap();
    assert!(draws >= 5, "the charts are redrawn each tick: {draws}");
    let data = load.await.unwrap().unwrap();
    let report = Report::build(&opts, data);
    assert_eq!(report.failure_count(), 0, "{:?}", report.failures);
    assert!(
        browser.wait_for("return window.dash.last.calls_total === 0", Duration::from_secs(10)).await,
        "the calls leave the dashboard when they end"
    );
    browser.quit().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
}
