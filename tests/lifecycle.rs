//! Call lifecycle over real sockets: many calls leave nothing behind (registry
//! empty, gauges back to zero), and graceful shutdown refuses new calls while
//! live ones finish, then hangs up the rest with 1001.

mod common;

use std::time::Duration;

use common::net::*;
use tokio::time::interval;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_leave_nothing_behind_and_shutdown_is_graceful() {
    let srv = TestServer::start("").await;
    // Leak check: N calls that connect, talk briefly, and end in different ways.
    let n = 24;
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = srv.url();
        tasks.push(tokio::spawn(async move {
            let mut tw = FakeTwilio::connect(&url, 1000 + i).await;
            tw.start().await;
            let mut tick = interval(Duration::from_millis(20));
            for _ in 0..10 {
                tick.tick().await;
                tw.frame(&[0xFF; 160]).await;
            }
            match i % 3 {
                0 => {
                    let s = tw.peer.stop();
                    tw.send(s).await;
                    tw.closed(Duration::from_secs(3)).await;
                }
                1 => tw.vanish().await, // TCP dropped without a stop or close
                _ => {
                    use futures_util::SinkExt;
                    let _ = tw.tx.close().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    srv.wait_no_calls().await;
    assert!(srv.state.call.registry.is_empty());
    assert_eq!(srv.metric("callbridge_calls_active", &[]), 0.0, "gauge back to zero");
    assert!(srv.metric("callbridge_calls_total", &[]) >= n as f64);

    // Graceful shutdown with one live call.
    let mut live = FakeTwilio::connect(&srv.url(), 1).await;
    live.start().await;
    live.frame(&[0xFF; 160]).await;
    let addr = srv.addr;
    let registry = srv.state.call.registry.clone();
    tokio::time::timeout(Duration::from_secs(2), async {
        while registry.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let state = srv.state.clone();
    let stopper = tokio::spawn(srv.shutdown());
    // New calls are refused while the live one continues.
    tokio::time::timeout(Duration::from_secs(2), async {
        while state.accepting.load(std::sync::atomic::Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/twilio/stream")).await;
    assert!(refused.is_err(), "no new calls during shutdown");
    live.frame(&[0xFF; 160]).await;
    // After the grace period (300 ms in tests) the live call is told to go away.
    let (code, reason) = live.closed(Duration::from_secs(5)).await.expect("close frame");
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.contains("shutdown"), "{reason}");
    stopper.await.unwrap();
    assert!(state.call.registry.is_empty());
}
