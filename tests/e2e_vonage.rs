//! Vonage end to end on 127.0.0.1: signed answer and event webhooks (HS256 JWT
//! with a body hash), the NCCO connecting to our WebSocket, then a fake Vonage
//! WebSocket with binary 16 kHz PCM frames and the local engine: the greeting,
//! a turn answered, barge-in `clear`, hang-up through the FAKE Voice API with
//! an RS256 token, and `call.ended`. Bad input: unsigned, stale and tampered
//! webhooks, frames of the wrong size, text where audio is expected, a
//! WebSocket without its token. Every wait is bounded.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use callbridge::carrier::vonage::jwt::sign_webhook;
use callbridge::config::{Config, Secrets};
use callbridge_testkit::vonage_peer::{ServerMessage, VonagePeer};
use common::backend::FakeBackend;
use common::net::{TestServer, is_loud, ulaw_fixture};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::{Instant, interval};
use tokio_tungstenite::tungstenite::Message;

const NUMBER: &str = "+15550001111";
const SECRET: &str = "whsec_tenant_a_0123456789";
const SIGNATURE_SECRET: &str = "vonage-signature-secret-0123456789";

struct Rig {
    srv: TestServer,
    backend: FakeBackend,
}

async fn rig() -> Rig {
    let backend = FakeBackend::start().await;
    let toml = format!(
        r#"
[server]
public_url = "wss://cb.example.com"
[vonage]
api_url = "{base}"
[[numbers]]
number = "{NUMBER}"
callback_url = "{url}"
secret = "{SECRET}"
api_token = "tenant-a-token"
transfer_allow = ["+1"]
"#,
        base = backend.base(),
        url = backend.url()
    );
    let mut cfg = Config::from_toml(&toml, "test").unwrap();
    cfg.server.shutdown_grace_ms = 300;
    cfg.storage.database = String::new();
    let secrets = Secrets {
        vonage_signature_secret: Some(SIGNATURE_SECRET.into()),
        vonage_application_id: Some("app-0000".into()),
        vonage_private_key_path: Some("tests/data/vonage/test_private_key.pem".into()),
        ..Default::default()
    };
    Rig { srv: TestServer::start_with(cfg, secrets).await, backend }
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The answer webhook as Vonage sends it (GET with a query, signed over the empty body).
async fn answer(rig: &Rig, peer: &VonagePeer, to: &str, iat: u64) -> (u16, Value) {
    let query =
        format!("to={}&from=15557770000&uuid={}&conversation_uuid=CON-1", to.trim_start_matches('+'), peer.uuid);
    // Signed GET webhooks hash their query as compact JSON in URL order.
    let covered = callbridge::carrier::vonage::jwt::query_payload(&query);
    let r = reqwest::Client::new()
        .get(format!("http://{}/vonage/answer?{query}", rig.srv.addr))
        .bearer_auth(sign_webhook(SIGNATURE_SECRET, &covered, iat))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn event(rig: &Rig, body: Value, query: &str) -> u16 {
    let raw = body.to_string();
    reqwest::Client::new()
        .post(format!("http://{}/vonage/event{query}", rig.srv.addr))
        .bearer_auth(sign_webhook(SIGNATURE_SECRET, raw.as_bytes(), now_s()))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connect as Vonage with the NCCO's endpoint headers.
async fn connect(rig: &Rig, peer: &VonagePeer, ncco: &Value) -> Ws {
    let ep = &ncco[0]["endpoint"][0];
    assert_eq!(ep["uri"], "wss://cb.example.com/vonage/stream");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/vonage/stream", rig.srv.addr)).await.unwrap();
    let headers: Vec<(String, String)> =
        ep["headers"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ws.send(Message::text(peer.connected(&h))).await.unwrap();
    ws
}

async fn drain(ws: &mut Ws, peer: &VonagePeer, within: Duration) -> (Vec<ServerMessage>, Option<u16>) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => got.push(peer.parse_binary(&b).expect("Vonage reads it")),
            Ok(Some(Ok(Message::Text(t)))) => got.push(peer.parse(t.as_str()).expect("Vonage reads it")),
            Ok(Some(Ok(Message::Close(c)))) => return (got, Some(c.map_or(1005, |c| u16::from(c.code)))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => return (got, Some(1006)),
            Err(_) => return (got, None),
        }
    }
}

/// Send one 20 ms frame of µ-law as Vonage PCM and collect what came back.
async fn frame(ws: &mut Ws, peer: &VonagePeer, ulaw: &[u8]) -> Vec<ServerMessage> {
    ws.send(Message::binary(peer.media(ulaw))).await.unwrap();
    let (got, closed) = drain(ws, peer, Duration::from_millis(1)).await;
    assert!(closed.is_none(), "closed mid-call");
    got
}

fn loud(got: &[ServerMessage]) -> usize {
    got.iter().filter(|m| matches!(m, ServerMessage::Media(p) if is_loud(p))).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vonage_call_is_connected_talks_barges_in_and_hangs_up() {
    let rig = rig().await;
    let peer = VonagePeer::new(1, 16000);
    let (status, ncco) = answer(&rig, &peer, NUMBER, now_s()).await;
    assert_eq!(status, 200);
    let connect_action = &ncco[0];
    assert_eq!(connect_action["action"], "connect");
    assert_eq!(connect_action["endpoint"][0]["type"], "websocket");
    assert_eq!(connect_action["endpoint"][0]["content-type"], "audio/l16;rate=16000");
    assert_eq!(connect_action["endpoint"][0]["headers"]["call_uuid"], peer.uuid.as_str());
    assert_eq!(connect_action["endpoint"][0]["headers"]["from"], "+15557770000", "E.164 for the backend");
    let started = rig.backend.wait_for("call.started", Duration::from_secs(2)).await;
    let started = started.iter().find(|e| e.kind() == "call.started").unwrap();
    assert_eq!((started.body["carrier"].as_str(), started.body["to"].as_str()), (Some("vonage"), Some(NUMBER)));

    let mut ws = connect(&rig, &peer, &ncco).await;
    let silence = vec![0xFFu8; 160];
    let mut tick = interval(Duration::from_millis(20));
    let (mut greeting, mut sizes_ok) = (0, true);
    let deadline = Instant::now() + Duration::from_secs(3);
    while greeting < 10 && Instant::now() < deadline {
        tick.tick().await;
        let got = frame(&mut ws, &peer, &silence).await;
        sizes_ok &= got.iter().all(|m| !matches!(m, ServerMessage::Media(p) if p.len() != 160));
        greeting += loud(&got);
    }
    assert!(greeting >= 10, "the greeting plays as 20 ms binary frames ({greeting})");
    assert!(sizes_ok, "every audio message is exactly 20 ms");
    for _ in 0..150 {
        tick.tick().await;
        frame(&mut ws, &peer, &silence).await;
    }
    // A wrong-sized frame and a stray text are counted, not fatal.
    ws.send(Message::binary(vec![0u8; 320])).await.unwrap();
    ws.send(Message::text(r#"{"event":"websocket:something_new"}"#)).await.unwrap();

    let speech = ulaw_fixture("caller_short_8k.wav");
    let mut reply = 0;
    for f in speech.chunks_exact(160).chain(std::iter::repeat_n(&silence[..], 60)) {
        tick.tick().await;
        reply += loud(&frame(&mut ws, &peer, f).await);
    }
    assert!(reply >= 5, "the turn was answered ({reply} loud reply frames)");
    assert!(
        rig.srv.metric("callbridge_protocol_errors_total", &[("carrier", "vonage"), ("kind", "bad_frame_size")]) >= 1.0
    );

    // Meanwhile another socket sends audio before websocket:connected and is closed; this call goes on.
    let (mut bad, _) = tokio_tungstenite::connect_async(format!("ws://{}/vonage/stream", rig.srv.addr)).await.unwrap();
    bad.send(Message::binary(vec![0u8; 640])).await.unwrap();
    assert_eq!(drain(&mut bad, &peer, Duration::from_secs(3)).await.1, Some(1008));

    let interrupt = ulaw_fixture("caller_leak_8k.wav");
    let mut cleared = false;
    for f in interrupt.chunks_exact(160).skip(15).take(60) {
        tick.tick().await;
        cleared |= frame(&mut ws, &peer, f).await.contains(&ServerMessage::Clear);
    }
    assert!(cleared, "barge-in sent {{\"action\":\"clear\"}}");

    let (id, _) = common::net::first_live_call(rig.srv.addr, "tenant-a-token").await;
    let st = common::net::call_action(rig.srv.addr, "tenant-a-token", &id, "hangup", None).await;
    assert!((200..300).contains(&st), "{st}");
    let (_, closed) = drain(&mut ws, &peer, Duration::from_secs(3)).await;
    assert_eq!(closed, Some(1000));
    let hangup = rig.backend.wait_vonage("hangup", Duration::from_secs(3)).await;
    assert_eq!(hangup.call_control_id, peer.uuid);
    // The Voice API token is RS256 with the application's key.
    let token = hangup.authorization.strip_prefix("Bearer ").unwrap();
    let (msg, sig) = token.rsplit_once('.').unwrap();
    let public = std::fs::read("tests/data/vonage/test_public_key_pkcs1.der").unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &public)
        .verify(msg.as_bytes(), &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap())
        .expect("signed with the application's private key");
    let events = rig.backend.wait_for("call.ended", Duration::from_secs(3)).await;
    assert_eq!(events.last().unwrap().kind(), "call.ended");
    assert_eq!(events.last().unwrap().body["reason"], "hangup");
    let ended = &events.last().unwrap().body;
    assert_eq!(
        (ended["carrier"].as_str(), ended["carrier_call_id"].as_str()),
        (Some("vonage"), Some(peer.uuid.as_str()))
    );
    rig.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vonage_socket_that_vanishes_mid_reply_ends_the_call_with_what_the_caller_heard() {
    let rig = rig().await;
    let peer = VonagePeer::new(7, 16000);
    let (status, ncco) = answer(&rig, &peer, NUMBER, now_s()).await;
    assert_eq!(status, 200);
    let mut ws = connect(&rig, &peer, &ncco).await;
    let silence = vec![0xFFu8; 160];
    let mut tick = interval(Duration::from_millis(20));
    // The greeting plays and ends.
    let (mut heard, mut quiet) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (heard < 10 || quiet < 25) && Instant::now() < deadline {
        tick.tick().await;
        let l = loud(&frame(&mut ws, &peer, &silence).await);
        heard += l;
        quiet = if l > 0 { 0 } else { quiet + 1 };
    }
    assert!(heard >= 10 && quiet >= 25, "the greeting played and ended ({heard} loud frames)");

    // Talk, then silence until the reply has played for ≈ 0.5 s; then the socket is gone
    // (no close frame).
    let speech = ulaw_fixture("caller_short_8k.wav");
    let mut reply = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    for f in speech.chunks_exact(160).chain(std::iter::repeat(&silence[..])) {
        tick.tick().await;
        reply += loud(&frame(&mut ws, &peer, f).await);
        if reply >= 25 {
            break;
        }
        assert!(Instant::now() < deadline, "the bot answered");
    }
    drop(ws);

    rig.backend.ended_lost_mid_reply("vonage", 300).await;
    // The phone call outlives its WebSocket at Vonage: it is hung up through the Voice API.
    let hangup = rig.backend.wait_vonage("hangup", Duration::from_secs(3)).await;
    assert_eq!(hangup.call_control_id, peer.uuid);
    rig.srv.wait_no_calls().await;
    rig.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_must_be_signed_and_fresh_and_websockets_must_bring_their_token() {
    let rig = rig().await;
    let peer = VonagePeer::new(2, 16000);
    // Unsigned, stale, another secret: 403 and no call.started.
    let r = reqwest::Client::new()
        .get(format!("http://{}/vonage/answer?uuid={}&to=15550001111&from=1", rig.srv.addr, peer.uuid))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(answer(&rig, &peer, NUMBER, now_s() - 301).await.0, 403, "stale");
    let body = json!({"status": "completed", "uuid": peer.uuid}).to_string();
    let r = reqwest::Client::new()
        .post(format!("http://{}/vonage/event", rig.srv.addr))
        .bearer_auth(sign_webhook(SIGNATURE_SECRET, b"{}", now_s()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "the body hash does not match");
    assert!(rig.backend.received().iter().all(|e| e.kind() != "call.started"));

    // An unregistered number hears it is not in service.
    let (status, ncco) = answer(&rig, &peer, "+15559990000", now_s()).await;
    assert_eq!((status, ncco[0]["action"].as_str()), (200, Some("talk")));

    // A WebSocket without our token is refused (1008); one at 44.1 kHz is unsupported (1003).
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/vonage/stream", rig.srv.addr)).await.unwrap();
    ws.send(Message::text(peer.connected(&[("call_uuid", peer.uuid.as_str())]))).await.unwrap();
    assert_eq!(drain(&mut ws, &peer, Duration::from_secs(3)).await.1, Some(1008));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/vonage/stream", rig.srv.addr)).await.unwrap();
    ws.send(Message::binary(vec![0u8; 640])).await.unwrap();
    assert_eq!(drain(&mut ws, &peer, Duration::from_secs(3)).await.1, Some(1008), "audio before websocket:connected");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/vonage/stream", rig.srv.addr)).await.unwrap();
    let odd = VonagePeer::new(3, 16000).connected(&[]).replace("rate=16000", "rate=44100");
    ws.send(Message::text(odd)).await.unwrap();
    assert_eq!(drain(&mut ws, &peer, Duration::from_secs(3)).await.1, Some(1003));
    assert!(rig.backend.vonage_updates().is_empty(), "nothing hung up: {:?}", rig.backend.vonage_updates());

    // The caller hangs up before the WebSocket came: call.ended "missed".
    let late = VonagePeer::new(4, 16000);
    assert_eq!(answer(&rig, &late, NUMBER, now_s()).await.0, 200);
    assert_eq!(event(&rig, json!({"status": "completed", "uuid": late.uuid, "direction": "inbound"}), "").await, 204);
    let events = rig.backend.wait_for("call.ended", Duration::from_secs(3)).await;
    assert_eq!(events.iter().find(|e| e.kind() == "call.ended").unwrap().body["reason"], "missed");
    rig.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_runs_a_new_ncco_and_its_answer_settles_the_call() {
    let rig = rig().await;
    let peer = VonagePeer::new(5, 8000);
    let (_, ncco) = answer(&rig, &peer, NUMBER, now_s()).await;
    let mut ws = connect(&rig, &peer, &ncco).await;
    let (id, _) = common::net::first_live_call(rig.srv.addr, "tenant-a-token").await;
    let to = json!({"to": "+15557654321"});
    assert_eq!(common::net::call_action(rig.srv.addr, "tenant-a-token", &id, "transfer", Some(to)).await, 202);
    let t = rig.backend.wait_vonage("transfer", Duration::from_secs(3)).await;
    assert_eq!(t.call_control_id, peer.uuid);
    let ncco = &t.body["destination"]["ncco"][0];
    assert_eq!(ncco["endpoint"][0], json!({"type": "phone", "number": "15557654321"}));
    let event_url = ncco["eventUrl"][0].as_str().unwrap();
    assert!(event_url.starts_with("https://cb.example.com/vonage/event?transfer="), "{event_url}");
    assert!(drain(&mut ws, &peer, Duration::from_secs(3)).await.1.is_some(), "our WebSocket ends");
    let query = &event_url[event_url.find('?').unwrap()..];
    assert_eq!(event(&rig, json!({"status": "answered", "uuid": "leg-2"}), query).await, 204);
    let events = rig.backend.wait_for("call.ended", Duration::from_secs(3)).await;
    let kinds: Vec<_> = events.iter().map(|e| e.kind().to_string()).collect();
    assert!(kinds.contains(&"transfer.completed".to_string()), "{kinds:?}");
    assert_eq!(events.last().unwrap().body["reason"], "transferred");
    assert!(!rig.backend.vonage_updates().iter().any(|a| a.action == "hangup"));
    rig.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_can_reject_or_forward_a_vonage_call() {
    let rig = rig().await;
    rig.backend.set("call.started", common::backend::Mode::Json(json!({"reject": {"say": "We are closed today."}})));
    let (status, ncco) = answer(&rig, &VonagePeer::new(20, 16000), NUMBER, now_s()).await;
    assert_eq!(status, 200);
    assert_eq!(ncco, json!([{"action": "talk", "text": "We are closed today."}]));
    rig.backend.set("call.started", common::backend::Mode::Json(json!({"forward": "sip:oncall@pbx.example.com"})));
    let (_, ncco) = answer(&rig, &VonagePeer::new(21, 16000), NUMBER, now_s()).await;
    // Outside transfer_allow (only "+1" here): answered with the engine as usual.
    assert_eq!(ncco[0]["endpoint"][0]["type"], "websocket");
    rig.backend.set("call.started", common::backend::Mode::Json(json!({"forward": "+15557654321"})));
    let (_, ncco) = answer(&rig, &VonagePeer::new(22, 16000), NUMBER, now_s()).await;
    assert_eq!(
        ncco,
        json!([{"action": "connect", "from": "15550001111", "endpoint": [{"type": "phone", "number": "15557654321"}]}])
    );
    let ended = |r: &[common::backend::Received]| -> Vec<String> {
        r.iter().filter(|e| e.kind() == "call.ended").map(|e| e.body["reason"].as_str().unwrap().to_string()).collect()
    };
    let got = rig.backend.wait_received(Duration::from_secs(3), |r| ended(r).len() >= 2).await;
    assert_eq!(ended(&got), ["rejected", "forwarded"]);
    rig.srv.shutdown().await;
}

/// POST a signed JSON webhook to `path_and_query`, as Vonage does.
async fn signed_post(rig: &Rig, path_and_query: &str, body: Value) -> (u16, Value) {
    let raw = body.to_string();
    let r = reqwest::Client::new()
        .post(format!("http://{}{path_and_query}", rig.srv.addr))
        .bearer_auth(sign_webhook(SIGNATURE_SECRET, raw.as_bytes(), now_s()))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `POST /v1/calls` as tenant A; returns (status, answer, the Voice API create body).
async fn place(rig: &Rig, body: Value) -> (u16, Value, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/calls", rig.srv.addr))
        .bearer_auth("tenant-a-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (st, answer) = (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null));
    let create = rig.backend.vonage_updates().into_iter().rfind(|a| a.action == "create");
    (st, answer, create.map_or(Value::Null, |c| c.body))
}

fn our_path(url: &Value) -> String {
    url[0].as_str().unwrap().strip_prefix("https://cb.example.com").expect("our public base").to_string()
}

async fn ended_of(rig: &Rig, call_id: &Value) -> Value {
    let events = rig
        .backend
        .wait_received(Duration::from_secs(5), |r| {
            r.iter().any(|e| e.kind() == "call.ended" && &e.body["call_id"] == call_id)
        })
        .await;
    events.into_iter().find(|e| e.kind() == "call.ended" && &e.body["call_id"] == call_id).unwrap().body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_vonage_calls_are_created_connected_or_reported() {
    let rig = rig().await;
    let (st, placed, create) = place(&rig, json!({"to": "+15557654321", "machine_detection": "hangup"})).await;
    assert_eq!(st, 202, "{placed}");
    assert_eq!(create["to"], json!([{"type": "phone", "number": "15557654321"}]));
    assert_eq!(create["from"], json!({"type": "phone", "number": "15550001111"}));
    assert_eq!((create["machine_detection"].as_str(), create["ringing_timer"].as_u64()), (Some("hangup"), Some(30)));
    let uuid = placed["carrier_call_id"].as_str().unwrap().to_string();
    let create_auth = rig.backend.vonage_updates()[0].authorization.clone();
    assert!(create_auth.starts_with("Bearer ey"), "an RS256 application JWT");

    // Answered: the answer URL gets the NCCO that connects the callee to our WebSocket.
    let mut peer = VonagePeer::new(2, 16000);
    peer.uuid = uuid.clone();
    let answer = our_path(&create["answer_url"]);
    let (st, ncco) = signed_post(
        &rig,
        &answer,
        json!({"uuid": uuid, "conversation_uuid": "CON-2", "from": "15550001111", "to": "15557654321"}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(ncco[0]["endpoint"][0]["headers"]["call_uuid"], uuid.as_str());
    let mut ws = connect(&rig, &peer, &ncco).await;
    let silence = vec![0xFFu8; 160];
    let mut tick = interval(Duration::from_millis(20));
    let mut greeting = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while greeting < 10 && Instant::now() < deadline {
        tick.tick().await;
        greeting += loud(&frame(&mut ws, &peer, &silence).await);
    }
    assert!(greeting >= 10, "the callee hears the greeting ({greeting})");
    ws.close(None).await.unwrap();
    let end = ended_of(&rig, &placed["call_id"]).await;
    assert_eq!((end["direction"].as_str(), end["carrier_call_id"].as_str()), (Some("outbound"), Some(uuid.as_str())));

    // Busy, and a machine Vonage hung up on: each reported once, with its outcome.
    for (status, reason) in [("busy", "busy"), ("machine", "machine"), ("timeout", "no_answer")] {
        let (st, placed, create) = place(&rig, json!({"to": "+15557654321"})).await;
        assert_eq!(st, 202);
        let uuid = placed["carrier_call_id"].as_str().unwrap();
        let events = our_path(&create["event_url"]);
        let (st, _) = signed_post(&rig, &events, json!({"uuid": uuid, "status": "ringing"})).await;
        assert_eq!(st, 204);
        for _ in 0..2 {
            signed_post(&rig, &events, json!({"uuid": uuid, "status": status})).await;
        }
        let end = ended_of(&rig, &placed["call_id"]).await;
        assert_eq!(end["reason"], reason, "{status}");
        let ends = rig
            .backend
            .received()
            .iter()
            .filter(|e| e.kind() == "call.ended" && e.body["call_id"] == placed["call_id"])
            .count();
        assert_eq!(ends, 1, "one call.ended for {status}");
    }
    rig.srv.shutdown().await;
}
