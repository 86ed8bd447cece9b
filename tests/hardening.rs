//! What a hostile network or a careless deployment could do, one test each:
//! unsigned webhooks for a tenant, replayed stream tokens, slow-loris
//! connections, capacity and per-tenant limits at the webhook, the API rate,
//! metrics and the admin API off the public listener, erasure by number, a
//! `call.ended` for calls whose stream never came, and unknown carrier events.

mod common;

use std::time::Duration;

use common::backend::FakeBackend;
use common::calls::*;
use common::net::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.unwrap().unwrap();
    out
}

fn form_post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_webhook_never_reaches_a_tenant_unless_the_development_flag_says_so() {
    let tenant = format!(
        "[[numbers]]\nnumber = \"{NUMBER_A}\"\ncallback_url = \"http://127.0.0.1:9/cb\"\nsecret = \"{SECRET_A}\"\n"
    );
    // Validation off (local development), a tenant registered.
    let srv = TestServer::start(&tenant).await;
    let body = format!("CallSid=CA0001&From=%2B15557770000&To={}", NUMBER_A.replace('+', "%2B"));
    let resp = http(srv.addr, &form_post("/twilio/voice", &body)).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "spoofed caller refused: {resp}");
    assert!(srv.state.call.pending.is_empty(), "no route for a stream to claim");
    srv.shutdown().await;
    // The keyless demo (no tenant) keeps working unsigned.
    let srv = TestServer::start("").await;
    let resp = http(srv.addr, &form_post("/twilio/voice", "CallSid=CA0002&From=%2B1555&To=%2B1666")).await;
    assert!(resp.contains("<Connect><Stream"), "{resp}");
    srv.shutdown().await;
    // The explicit development flag answers a tenant's number unsigned.
    let srv = TestServer::start(&format!("[server]\nallow_unsigned_tenant_calls = true\n{tenant}")).await;
    let resp = http(srv.addr, &form_post("/twilio/voice", &body)).await;
    assert!(resp.contains("<Connect><Stream"), "{resp}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_token_works_once() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "").await;
    let mut tw = FakeTwilio::connect_signed(&srv.url(), 1, Some(&stream_signature())).await.unwrap();
    let (_, twiml) = webhook(&srv, &voice_params(&tw, NUMBER_A), None).await;
    let token = token_of(&twiml);
    let params = [("from", "+15557770000"), ("to", NUMBER_A), ("cb_token", token.as_str())];
    tw.start_with(&params).await;
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    assert!(media_count(&got) > 0, "the genuine stream is answered");
    let stop = tw.peer.stop();
    tw.send(stop).await;
    tw.closed(Duration::from_secs(3)).await;
    // The same start replayed (same CallSid, same token) finds nothing.
    let mut replay = FakeTwilio::connect_signed(&srv.url(), 1, Some(&stream_signature())).await.unwrap();
    replay.start_with(&params).await;
    assert_eq!(replay.closed(Duration::from_secs(3)).await.map(|c| c.0), Some(1008), "replay refused");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_are_cut_and_webhooks_still_answer() {
    let srv = TestServer::start("[limits]\nmax_connections = 40\nheader_read_timeout_ms = 400\n").await;
    // Forty connections, each trickling a request line and holding every slot.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"POST /twilio/voice HTTP/1.1\r\nHo").await.unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The server closes each of them once its headers are overdue.
    let started = tokio::time::Instant::now();
    for s in &mut slow {
        let mut buf = [0u8; 256];
        let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(_)) | Ok(Err(_))), "a half-open connection was left open");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "closed at the header deadline");
    let resp = http(srv.addr, &form_post("/twilio/voice", "CallSid=CA9&From=%2B1555&To=%2B1666")).await;
    assert!(resp.contains("<Connect><Stream"), "the webhook answers: {resp}");
    // Beyond the connection limit new ones are closed at once, and counted.
    let before = srv.metric("callbridge_connections_refused_total", &[]);
    let mut held = Vec::new();
    for _ in 0..45 {
        held.push(tokio::net::TcpStream::connect(srv.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(srv.metric("callbridge_connections_refused_total", &[]) >= before + 5.0);
    drop(held);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_the_webhook_answers_busy_and_tenants_have_their_own_limit() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "[limits]\nmax_calls_per_tenant = 1\n").await;
    let tw1 = FakeTwilio::connect_signed(&srv.url(), 1, Some(&stream_signature())).await.unwrap();
    let (_, first) = webhook(&srv, &voice_params(&tw1, NUMBER_A), None).await;
    assert!(first.contains("<Connect><Stream"), "{first}");
    let tw2 = FakeTwilio::connect_signed(&srv.url(), 2, Some(&stream_signature())).await.unwrap();
    let (_, second) = webhook(&srv, &voice_params(&tw2, NUMBER_A), None).await;
    assert!(second.contains(r#"<Reject reason="busy"/>"#), "the tenant's second call is busy: {second}");
    let (_, other) = webhook(&srv, &voice_params(&tw2, NUMBER_B), None).await;
    assert!(other.contains("<Connect><Stream"), "another tenant is unaffected: {other}");
    assert!(srv.metric("callbridge_calls_rejected_total", &[("reason", "tenant_limit")]) >= 1.0);
    srv.shutdown().await;
    // Server-wide: one call, the second webhook is busy before any backend is asked.
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "[server]\nmax_calls = 1\n").await;
    let (_, first) = webhook(&srv, &voice_params(&tw1, NUMBER_A), None).await;
    assert!(first.contains("<Connect><Stream"));
    let asked = backend.received().len();
    let (_, second) = webhook(&srv, &voice_params(&tw2, NUMBER_B), None).await;
    assert!(second.contains(r#"<Reject reason="busy"/>"#), "{second}");
    assert_eq!(backend.received().len(), asked, "no call.started for a call that cannot be taken");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_is_rate_limited_per_tenant() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "[limits]\napi_requests_per_second = 1\napi_burst = 3\n").await;
    let get = |token: &'static str| {
        let addr = srv.addr;
        async move {
            reqwest::Client::new()
                .get(format!("http://{addr}/v1/calls"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let codes: Vec<u16> = futures_util::future::join_all((0..5).map(|_| get("tenant-a-token"))).await;
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 3, "the burst: {codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 429).count(), 2, "then 429: {codes:?}");
    assert_eq!(get("tenant-b-token").await, 200, "another tenant has its own bucket");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_admin_api_move_to_the_admin_listener_or_need_a_token() {
    let mut cfg = callbridge::config::Config::from_toml("[server]\nadmin_listen = \"127.0.0.1:0\"\n", "t").unwrap();
    cfg.storage.database = String::new();
    cfg.server.shutdown_grace_ms = 300;
    let (running, stop, join) =
        callbridge::server::spawn_with(cfg, secrets(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (public, admin) = (running.addr, running.admin_addr.expect("admin listener"));
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        http(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await
    }
    assert!(get(public, "/metrics").await.starts_with("HTTP/1.1 404"), "no metrics on the public listener");
    assert!(get(admin, "/metrics").await.starts_with("HTTP/1.1 200"));
    let numbers = "GET /v1/numbers/+15550001111 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-token\r\nConnection: close\r\n\r\n";
    assert!(http(public, numbers).await.starts_with("HTTP/1.1 404"), "no admin API on the public listener");
    assert!(http(admin, numbers).await.starts_with("HTTP/1.1 404 Not Found\r\n"), "the admin API answers there");
    assert!(get(public, "/healthz").await.starts_with("HTTP/1.1 200"));
    // The dashboard's admin view too; tenants still read theirs on the public listener.
    let feed = |addr: std::net::SocketAddr, token: &'static str| {
        reqwest::Client::new().get(format!("http://{addr}/v1/dashboard/events")).bearer_auth(token).send()
    };
    assert_eq!(feed(public, "admin-token").await.unwrap().status(), 401, "no admin view on the public listener");
    assert_eq!(feed(admin, "admin-token").await.unwrap().status(), 200);
    let _ = stop.send(());
    let _ = join.await;
    // Without an admin listener: a metrics token, when set, is required.
    let mut cfg = callbridge::config::Config::from_toml("", "t").unwrap();
    cfg.storage.database = String::new();
    let secrets = callbridge::config::Secrets { metrics_token: Some("m-token".into()), ..secrets() };
    let srv = TestServer::start_with(cfg, secrets).await;
    assert!(get(srv.addr, "/metrics").await.starts_with("HTTP/1.1 401"));
    let with = "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer m-token\r\nConnection: close\r\n\r\n";
    assert!(http(srv.addr, with).await.starts_with("HTTP/1.1 200"));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_number_erases_its_data_and_the_next_owner_sees_none_of_it() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "").await;
    let api = |method: &'static str, path: String, token: String, body: Option<serde_json::Value>| {
        let addr = srv.addr;
        async move {
            let mut r = reqwest::Client::new().request(method.parse().unwrap(), format!("http://{addr}{path}"));
            r = r.bearer_auth(token);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let number = "+15550003333";
    let reg = json!({"number": number, "callback_url": backend.url(), "secret": "whsec_first_owner_12345"});
    let (st, body) = api("POST", "/v1/numbers".into(), "admin-token".into(), Some(reg.clone())).await;
    assert_eq!(st, 201, "{body}");
    let first_token = body["api_token"].as_str().unwrap().to_string();
    let mut tw = call(&srv, 1, number).await;
    let _ = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    let (_, calls) = api("GET", "/v1/calls".into(), first_token.clone(), None).await;
    let id = calls["calls"][0]["call_id"].as_str().unwrap().to_string();
    let stop = tw.peer.stop();
    tw.send(stop).await;
    tw.closed(Duration::from_secs(3)).await;
    srv.wait_no_calls().await;
    backend.wait_for("call.ended", Duration::from_secs(5)).await;
    let store = srv.state.call.store.clone().unwrap();
    tokio::task::spawn_blocking({
        let s = store.clone();
        move || s.sync()
    })
    .await
    .unwrap();
    let (st, _) = api("GET", format!("/v1/calls/{id}/transcript"), first_token.clone(), None).await;
    assert_eq!(st, 200, "the owner reads its transcript");
    // Delete the number: its data goes with it.
    let (st, _) = api("DELETE", format!("/v1/numbers/{number}"), "admin-token".into(), None).await;
    assert_eq!(st, 204);
    let cid = id.clone();
    let row = tokio::task::spawn_blocking(move || store.call(&cid).unwrap()).await.unwrap();
    assert!(row.is_none(), "the call's data is erased");
    // The next owner of the number is another tenant and sees nothing.
    let reg2 = json!({"number": number, "callback_url": backend.url(), "secret": "whsec_second_owner_6789"});
    let (_, body) = api("POST", "/v1/numbers".into(), "admin-token".into(), Some(reg2)).await;
    let second_token = body["api_token"].as_str().unwrap().to_string();
    assert_eq!(api("GET", format!("/v1/calls/{id}/transcript"), second_token, None).await.0, 404);
    assert_eq!(api("GET", "/v1/calls".into(), first_token, None).await.0, 401, "the old token is revoked");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_started_gets_its_call_ended_even_without_a_stream() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "[server]\nstream_wait_ms = 300\n").await;
    // 1. The webhook answered; the stream never comes.
    let tw = FakeTwilio::connect_signed(&srv.url(), 1, Some(&stream_signature())).await.unwrap();
    let (_, twiml) = webhook(&srv, &voice_params(&tw, NUMBER_A), None).await;
    assert!(twiml.contains("<Connect><Stream"));
    let events = backend.wait_for("call.ended", Duration::from_secs(8)).await;
    let ended: Vec<_> = events.iter().filter(|e| e.kind() == "call.ended").collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].body["reason"], "no_stream");
    let started = events.iter().find(|e| e.kind() == "call.started").unwrap();
    assert_eq!(started.body["call_id"], ended[0].body["call_id"]);
    assert_eq!(ended[0].body["seq"], 2, "the call's next event");
    verify_all(&events, SECRET_A);
    // 2. The caller hangs up first: Twilio reports the stream stopped before it started.
    let tw2 = FakeTwilio::connect_signed(&srv.url(), 2, Some(&stream_signature())).await.unwrap();
    let params = voice_params(&tw2, NUMBER_A);
    let _ = webhook(&srv, &params, None).await;
    let status = vec![
        ("AccountSid".to_string(), tw2.peer.account_sid.clone()),
        ("CallSid".to_string(), tw2.peer.call_sid.clone()),
        ("StreamSid".to_string(), tw2.peer.stream_sid.clone()),
        ("StreamEvent".to_string(), "stream-stopped".to_string()),
    ];
    let sig = callbridge::carrier::twilio::signature::compute(
        AUTH_TOKEN,
        "https://cb.example.com/twilio/stream-status",
        &status,
    );
    let r = reqwest::Client::new()
        .post(format!("http://{}/twilio/stream-status", srv.addr))
        .header("X-Twilio-Signature", sig)
        .form(&status)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let missed = loop {
        let all = backend.received();
        if let Some(e) = all.iter().find(|e| e.kind() == "call.ended" && e.body["reason"] == "missed") {
            break e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no call.ended for the missed call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(missed.body["call_id"], ended[0].body["call_id"]);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_carrier_events_are_counted_and_never_close_the_call() {
    let srv = TestServer::start("[server]\nmax_protocol_errors = 3\n[engine.local]\ngreeting_wav = \"\"\n").await;
    let mut tw = FakeTwilio::connect(&srv.url(), 1).await;
    tw.start().await;
    let before = srv.metric("callbridge_protocol_errors_total", &[("kind", "unknown_event")]);
    let sid = tw.peer.stream_sid.clone();
    for i in 0..30 {
        tw.send(format!(r#"{{"event":"transcription{i}","streamSid":"{sid}"}}"#)).await;
    }
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    assert!(media_count(&got) > 0, "the call goes on and is answered");
    assert_eq!(srv.metric("callbridge_protocol_errors_total", &[("kind", "unknown_event")]), before + 30.0);
    srv.shutdown().await;
}
