//! The dashboard's feed over real HTTP on 127.0.0.1: who may read it, what
//! each token sees (the admin: every call and the process; a tenant: only its
//! own calls and figures), and that a live call's turn shows up in it — its
//! state, its response latency, then its end. Every wait is bounded.

mod common;

use std::time::Duration;

use common::backend::FakeBackend;
use common::calls::*;
use common::net::*;
use serde_json::Value;

/// Reads server-sent events off a streaming response.
struct Feed {
    resp: reqwest::Response,
    buf: String,
}

impl Feed {
    async fn open(srv: &TestServer, token: Option<&str>) -> Result<Self, (u16, String)> {
        let mut r = reqwest::Client::new().get(format!("http://{}/v1/dashboard/events", srv.addr));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        if !resp.status().is_success() {
            return Err((resp.status().as_u16(), resp.text().await.unwrap_or_default()));
        }
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Ok(Self { resp, buf: String::new() })
    }

    /// The next event (name, JSON data).
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(cut) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..cut + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for l in block.lines() {
                    if let Some(n) = l.strip_prefix("event:") {
                        name = n.trim().into();
                    } else if let Some(d) = l.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return (name, serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.resp.chunk())
                .await
                .expect("a tick within 5 s")
                .unwrap()
                .expect("the feed stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Ticks until one satisfies `f` (at most `n`).
    async fn until(&mut self, n: usize, f: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..n {
            let (name, v) = self.next().await;
            if name == "tick" && f(&v) {
                return v;
            }
        }
        panic!("no tick matched in {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_shows_each_token_its_own_calls_and_a_turn_moves_the_numbers() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "").await;

    assert_eq!(Feed::open(&srv, None).await.err().map(|e| e.0), Some(401));
    assert_eq!(Feed::open(&srv, Some("not-a-token")).await.err().map(|e| e.0), Some(401));

    let mut admin = Feed::open(&srv, Some("admin-token")).await.unwrap();
    let (name, first) = admin.next().await;
    assert_eq!((name.as_str(), first["scope"].as_str()), ("history", Some("admin")));
    let mut a = Feed::open(&srv, Some("tenant-a-token")).await.unwrap();
    let (_, first) = a.next().await;
    assert_eq!(first["scope"], "tenant");
    let mut b = Feed::open(&srv, Some("tenant-b-token")).await.unwrap();
    b.next().await;

    let mut tw = call(&srv, 1, NUMBER_A).await;
    let t = admin.until(5, |t| t["calls_total"] == 1).await;
    let c = &t["calls"][0];
    assert_eq!((c["carrier"].as_str(), c["to"].as_str()), (Some("twilio"), Some(NUMBER_A)));
    assert!(!c["tenant"].as_str().unwrap_or("").is_empty(), "the admin sees whose call it is: {c}");
    assert!(["listening", "thinking", "speaking"].contains(&c["state"].as_str().unwrap()), "{c}");
    let p = &t["second"]["process"];
    assert!(p["rss_mib"].as_f64().unwrap() > 1.0, "the process is sampled: {p}");

    let seen_by_a = a.until(5, |t| t["calls_total"] == 1).await;
    assert!(seen_by_a["calls"][0].get("tenant").is_none());
    assert!(seen_by_a["second"].get("process").is_none(), "a tenant does not see the process");
    let seen_by_b = b.next().await.1;
    assert_eq!((seen_by_b["calls_total"].as_u64(), seen_by_b["second"]["calls"].as_u64()), (Some(0), Some(0)));

    // A caller's turn: its response latency reaches the admin's and A's figures, never B's.
    talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 40).await;
    let with_response = |t: &Value| t["second"]["response"]["n"].as_u64().unwrap_or(0) > 0;
    let t = a.until(8, with_response).await;
    let p50 = t["second"]["response"]["p50_ms"].as_f64().unwrap();
    assert!((300.0..3000.0).contains(&p50), "response p50 {p50} ms");
    let at = t["second"]["t_ms"].as_u64().unwrap();
    let seen = admin.until(8, |t| t["second"]["t_ms"].as_u64() >= Some(at)).await;
    assert_eq!(seen["second"]["t_ms"].as_u64(), Some(at), "the admin reads the same second");
    assert!(seen["second"]["response"]["n"].as_u64() >= t["second"]["response"]["n"].as_u64());
    // B's tick of that very second has none of A's figures.
    let same = b.until(12, |t| t["second"]["t_ms"].as_u64() >= Some(at)).await;
    assert_eq!(same["second"]["t_ms"].as_u64(), Some(at));
    assert_eq!(same["second"]["response"]["n"], 0, "B never sees A's figures: {same}");

    drop(tw);
    admin.until(10, |t| t["calls_total"] == 0).await;
    a.until(10, |t| t["calls_total"] == 0).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_without_a_token_and_holds_no_secret() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "").await;
    let resp = reqwest::get(format!("http://{}/dashboard", srv.addr)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("/v1/dashboard/events") && html.contains("Authorization"));
    assert!(!html.contains("admin-token"));
    srv.shutdown().await;
}
