//! Helpers for tests that go through the signed Twilio entry: a validating
//! server with two tenants, the voice webhook as Twilio signs it, signed stream
//! upgrades, and paced talking.

#![allow(dead_code)]

use std::time::Duration;

use callbridge::carrier::twilio::signature as twsig;
use callbridge::config::{Config, Secrets};
use callbridge::signature::callback as cbsig;
use callbridge_testkit::twilio_peer::ServerMessage;
use tokio::time::{Instant, interval};

use super::backend::{FakeBackend, Received};
use super::net::*;

pub const AUTH_TOKEN: &str = "12345";
pub const PUBLIC: &str = "wss://cb.example.com";
pub const SECRET_A: &str = "whsec_tenant_a_0123456789";
pub const NUMBER_A: &str = "+15550001111";
pub const NUMBER_B: &str = "+15550002222";

pub fn secrets() -> Secrets {
    Secrets {
        admin_token: Some("admin-token".into()),
        twilio_auth_tokens: vec![AUTH_TOKEN.into()],
        twilio_account_sid: Some("AC0000".into()),
        ..Default::default()
    }
}

/// A validating server with tenants A and B, A's callback at `backend`.
pub async fn server(backend: &FakeBackend, extra: &str) -> TestServer {
    server_with(backend, extra, secrets()).await
}

/// [`server`] with other secrets.
pub async fn server_with(backend: &FakeBackend, extra: &str, secrets: Secrets) -> TestServer {
    let toml = format!(
        r#"
[server]
public_url = "{PUBLIC}"
validate_twilio_signatures = true
[engine.local]
greeting_wav = ""
[twilio]
api_base_url = "{base}"
[[numbers]]
number = "{NUMBER_A}"
callback_url = "{url}"
secret = "{SECRET_A}"
api_token = "tenant-a-token"
transfer_allow = ["+1", "pbx.example.com"]
[[numbers]]
number = "{NUMBER_B}"
callback_url = "http://127.0.0.1:9/never"
secret = "whsec_tenant_b_0123456789"
api_token = "tenant-b-token"
"#,
        base = backend.base(),
        url = backend.url()
    );
    let toml = merge_toml(&toml, extra);
    let mut cfg = Config::from_toml(&toml, "test").expect("config");
    cfg.server.shutdown_grace_ms = 300;
    if !extra.contains("database") {
        cfg.storage.database = String::new();
    }
    TestServer::start_with(cfg, secrets).await
}

/// `base` with the keys of `extra` laid over it (tables merged, so `extra`
/// may add to `[server]` and the like).
pub fn merge_toml(base: &str, extra: &str) -> String {
    fn merge(a: &mut toml::Table, b: toml::Table) {
        for (k, v) in b {
            match (a.get_mut(&k), v) {
                (Some(toml::Value::Table(x)), toml::Value::Table(y)) => merge(x, y),
                (Some(toml::Value::Array(x)), toml::Value::Array(y)) if k == "numbers" => x.extend(y),
                (_, v) => {
                    a.insert(k, v);
                }
            }
        }
    }
    let mut a: toml::Table = base.parse().expect("base TOML");
    merge(&mut a, extra.parse().expect("extra TOML"));
    toml::to_string(&a).expect("TOML serializes")
}

pub fn voice_params(tw: &FakeTwilio, to: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", tw.peer.account_sid.as_str()),
        ("CallSid", tw.peer.call_sid.as_str()),
        ("From", "+15557770000"),
        ("To", to),
        ("CallStatus", "ringing"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// POST the voice webhook as Twilio would (signed unless `signature` is given).
pub async fn webhook(srv: &TestServer, params: &[(String, String)], signature: Option<&str>) -> (u16, String) {
    webhook_at(srv.addr, params, signature).await
}

/// [`webhook`] to a server at `addr` (a spawned binary, say).
pub async fn webhook_at(
    addr: std::net::SocketAddr,
    params: &[(String, String)],
    signature: Option<&str>,
) -> (u16, String) {
    let sig = signature
        .map(str::to_string)
        .unwrap_or_else(|| twsig::compute(AUTH_TOKEN, "https://cb.example.com/twilio/voice", params));
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/twilio/voice"))
        .header("X-Twilio-Signature", sig)
        .form(params)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// POST one of Twilio's webhooks to `path_and_query` (the voice URL, a status
/// callback, a `<Dial action>`), signed as Twilio signs it over our public URL.
pub async fn twilio_post(srv: &TestServer, path_and_query: &str, params: &[(&str, &str)]) -> (u16, String) {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let sig = twsig::compute(AUTH_TOKEN, &format!("https://cb.example.com{path_and_query}"), &params);
    let r = reqwest::Client::new()
        .post(format!("http://{}{path_and_query}", srv.addr))
        .header("X-Twilio-Signature", sig)
        .form(&params)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub fn token_of(twiml: &str) -> String {
    let i = twiml.find(r#"name="cb_token" value=""#).expect("token parameter") + 23;
    twiml[i..i + 64].to_string()
}

pub fn stream_signature() -> String {
    twsig::compute(AUTH_TOKEN, "wss://cb.example.com/twilio/stream", &[])
}

/// Place a call to `to` through the webhook and open its signed stream.
pub async fn call(srv: &TestServer, n: u64, to: &str) -> FakeTwilio {
    call_at(srv.addr, n, to).await
}

/// [`call`] to a server at `addr`.
pub async fn call_at(addr: std::net::SocketAddr, n: u64, to: &str) -> FakeTwilio {
    let url = format!("ws://{addr}/twilio/stream");
    let mut tw = FakeTwilio::connect_signed(&url, n, Some(&stream_signature())).await.expect("upgrade");
    let (status, twiml) = webhook_at(addr, &voice_params(&tw, to), None).await;
    assert_eq!(status, 200, "{twiml}");
    let token = token_of(&twiml);
    tw.start_with(&[("from", "+15557770000"), ("to", to), ("cb_token", &token)]).await;
    tw
}

/// Stream `ulaw` paced at 20 ms, then `tail` frames of silence; returns what arrived.
pub async fn talk(tw: &mut FakeTwilio, ulaw: &[u8], tail: usize) -> Vec<Rx> {
    let mut tick = interval(Duration::from_millis(20));
    let silence = [0xFFu8; 160];
    let mut got = Vec::new();
    for f in ulaw.chunks_exact(160).chain(std::iter::repeat_n(&silence[..], tail)) {
        tick.tick().await;
        tw.frame(f).await;
        while let Ok(ev) = tw.rx.try_recv() {
            got.push(ev);
        }
    }
    got
}

/// Keep streaming silence until no bot audio arrived for 600 ms (bounded).
pub async fn until_quiet(tw: &mut FakeTwilio, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = Instant::now();
    let mut tick = interval(Duration::from_millis(20));
    let silence = vec![0xFFu8; 160];
    while Instant::now() - last < Duration::from_millis(600) {
        assert!(Instant::now() < deadline, "bot audio did not stop within {within:?}");
        tick.tick().await;
        tw.frame(&silence).await;
        while let Ok(ev) = tw.rx.try_recv() {
            if matches!(ev, Rx::Msg(_, ServerMessage::Media(_))) {
                last = Instant::now();
            }
        }
    }
}

pub fn media_count(rx: &[Rx]) -> usize {
    rx.iter().filter(|e| matches!(e, Rx::Msg(_, ServerMessage::Media(_)))).count()
}

pub fn verify_all(events: &[Received], secret: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for e in events {
        cbsig::verify(secret, &e.signature, &e.raw, now, 300)
            .unwrap_or_else(|err| panic!("{} signature: {err}", e.kind()));
        assert_eq!(
            e.body["idempotency_key"].as_str().unwrap(),
            format!("{}:{}", e.body["call_id"].as_str().unwrap(), e.body["seq"])
        );
    }
}

/// After a drain: exactly one signed `call.ended` per call, each the
/// shutdown and carrying the caller's turn, and `n` calls in the store at
/// `db` ended as the shutdown. Returns the call ids.
pub fn drained_by_shutdown(events: &[Received], n: usize, db: &std::path::Path) -> Vec<String> {
    let ended: Vec<_> = events.iter().filter(|e| e.kind() == "call.ended").collect();
    assert_eq!(ended.len(), n, "one call.ended per call");
    let mut ids: Vec<String> = ended.iter().map(|e| e.body["call_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no call reported twice");
    for e in &ended {
        assert_eq!(e.body["reason"], "shutdown", "{}", e.body);
        let convo = e.body["conversation"].as_array().unwrap();
        assert!(convo.iter().any(|t| t["type"] == "turn.user"), "the caller's turn is in the report");
    }
    verify_all(events, SECRET_A);
    let conn = rusqlite::Connection::open(db).unwrap();
    let shut: i64 = conn
        .query_row("SELECT COUNT(*) FROM calls WHERE reason = 'shutdown' AND ended_at IS NOT NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(shut, n as i64, "the store has every call, ended");
    ids
}
