//! Tenant URLs cannot reach private addresses: with the default policy a
//! callback URL on loopback (as a literal or as a name) is never contacted —
//! the call is still answered, on the defaults with the fallback line — and a
//! `say` audio URL on loopback or link-local is refused with one uniform
//! answer. The allow-list opens exactly what it lists.

mod common;

use std::time::Duration;

use common::backend::{FakeBackend, Mode};
use common::calls::*;
use common::net::*;
use serde_json::json;

fn strict_config(backend: &FakeBackend, callback_url: &str) -> callbridge::config::Config {
    let toml = format!(
        r#"
[server]
public_url = "{PUBLIC}"
validate_twilio_signatures = true
[engine.local]
greeting_wav = ""
[storage]
database = ""
[[numbers]]
number = "{NUMBER_A}"
callback_url = "{callback_url}"
secret = "{SECRET_A}"
api_token = "tenant-a-token"
"#
    );
    let _ = backend;
    let mut cfg = callbridge::config::Config::from_toml(&toml, "test").unwrap();
    cfg.server.shutdown_grace_ms = 300;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_on_loopback_is_never_contacted_and_the_call_is_still_answered() {
    for host in ["127.0.0.1", "localhost"] {
        let backend = FakeBackend::start().await;
        backend.set("call.started", Mode::Json(json!({"greeting": "should never be read"})));
        let url = format!("http://{host}:{}/callbridge", backend.addr.port());
        let srv = TestServer::start_strict(strict_config(&backend, &url), secrets()).await;
        let fallbacks = srv.metric("callbridge_callback_fallbacks_total", &[("kind", "forbidden_address")]);
        let mut tw = call(&srv, 1, NUMBER_A).await;
        let got = talk(&mut tw, &[], 100).await;
        assert!(media_count(&got) > 0, "{host}: the caller hears the fallback line");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(backend.received().is_empty(), "{host}: the loopback backend was never contacted");
        assert_eq!(
            srv.metric("callbridge_callback_fallbacks_total", &[("kind", "forbidden_address")]),
            fallbacks + 1.0,
            "{host}: counted as a refused address"
        );
        srv.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn say_audio_urls_on_private_addresses_are_refused_uniformly() {
    let backend = FakeBackend::start().await;
    // Only the backend's own address is allowed (so the call has a tenant), nothing else private.
    let mut cfg = strict_config(&backend, &backend.url());
    cfg.callbacks.allow_private_networks = vec![format!("{}/32", backend.addr.ip())];
    let srv = TestServer::start_strict(cfg, secrets()).await;
    let mut tw = call(&srv, 1, NUMBER_A).await;
    let _ = talk(&mut tw, &[], 20).await;
    let calls: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/v1/calls", srv.addr))
        .bearer_auth("tenant-a-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = calls["calls"][0]["call_id"].as_str().unwrap().to_string();
    let say = |audio_url: String| {
        let (addr, id) = (srv.addr, id.clone());
        async move {
            let r = reqwest::Client::new()
                .post(format!("http://{addr}/v1/calls/{id}/say"))
                .bearer_auth("tenant-a-token")
                .json(&json!({"audio_url": audio_url}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    for url in ["http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x.wav", "http://10.0.0.1/x.wav"] {
        let (status, body) = say(url.into()).await;
        assert_eq!(status, 422, "{url}");
        assert!(body["message"].as_str().unwrap().contains("not reachable"), "{url}: {body}");
    }
    // A name (resolved at connect time) and a closed port on an allowed address get
    // the same answer: nothing tells a tenant what listens where.
    let (status, body) = say("http://localhost:9/x.wav".into()).await;
    assert_eq!(status, 422);
    let (status2, body2) = say(format!("http://{}:9/x.wav", backend.addr.ip())).await;
    assert_eq!(status2, 422);
    assert_eq!(body["message"], body2["message"], "refused or closed: the same answer");
    srv.shutdown().await;
}
