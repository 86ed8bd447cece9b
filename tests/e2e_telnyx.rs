//! Telnyx end to end on 127.0.0.1: signed Call Control webhooks to a FAKE
//! Call Control API (answer with the stream, reject, hangup), then a fake
//! Telnyx media stream with the local engine: the greeting, a turn answered
//! (frames sent out of order), barge-in clearing the far end, a hang-up from
//! the control API reaching Call Control, and `call.ended` at the backend.
//! Bad input: unsigned, stale and tampered webhooks, a repeated delivery, a
//! stream without its token. Every wait is bounded.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use callbridge::carrier::telnyx::signature::sign;
use callbridge::config::{Config, Secrets};
use callbridge_testkit::telnyx_peer::{ServerMessage, TelnyxPeer};
use common::backend::FakeBackend;
use common::net::{TestServer, is_loud, ulaw_fixture};
use futures_util::{SinkExt, StreamExt};
use ring::signature::KeyPair;
use serde_json::{Value, json};
use tokio::time::{Instant, interval};
use tokio_tungstenite::tungstenite::Message;

const NUMBER: &str = "+15550001111";
const SECRET: &str = "whsec_tenant_a_0123456789";
const API_KEY: &str = "KEYfake_telnyx_0123456789";

struct Rig {
    srv: TestServer,
    backend: FakeBackend,
    pkcs8: Vec<u8>,
}

async fn rig() -> Rig {
    let backend = FakeBackend::start().await;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec();
    let public = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap().public_key().as_ref().to_vec();
    let toml = format!(
        r#"
[server]
public_url = "wss://cb.example.com"
[telnyx]
api_url = "{base}"
connection_id = "conn-1"
[[numbers]]
number = "{NUMBER}"
callback_url = "{url}"
secret = "{SECRET}"
api_token = "tenant-a-token"
transfer_allow = ["+1"]
[[numbers]]
number = "+15550003333"
callback_url = "{url}"
secret = "whsec_tenant_c_0123456789"
carrier = "twilio"
"#,
        base = backend.base(),
        url = backend.url()
    );
    let mut cfg = Config::from_toml(&toml, "test").unwrap();
    cfg.server.shutdown_grace_ms = 300;
    cfg.storage.database = String::new();
    let secrets = Secrets {
        telnyx_api_key: Some(API_KEY.into()),
        telnyx_public_key: Some(base64::engine::general_purpose::STANDARD.encode(public)),
        ..Default::default()
    };
    Rig { srv: TestServer::start_with(cfg, secrets).await, backend, pkcs8 }
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn event(id: &str, kind: &str, payload: Value) -> String {
    json!({"data": {"record_type": "event", "event_type": kind, "id": id, "occurred_at": "2026-12-02T06:00:00Z",
        "payload": payload}, "meta": {"attempt": 1, "delivered_to": "https://cb.example.com/telnyx/webhook"}})
    .to_string()
}

fn initiated(peer: &TelnyxPeer, to: &str) -> Value {
    json!({"call_control_id": peer.call_control_id, "call_leg_id": "leg-1", "call_session_id": "session-1",
        "connection_id": "conn-1", "from": "+15557770000", "to": to, "direction": "incoming", "state": "parked",
        "client_state": ""})
}

/// POST a webhook signed at `ts` (or with `sig` as given).
async fn post(rig: &Rig, body: &str, ts: u64, sig: Option<&str>) -> u16 {
    let ts = ts.to_string();
    let sig = sig.map(str::to_string).unwrap_or_else(|| sign(&rig.pkcs8, &ts, body.as_bytes()).unwrap());
    reqwest::Client::new()
        .post(format!("http://{}/telnyx/webhook", rig.srv.addr))
        .header("telnyx-timestamp", ts)
        .header("telnyx-signature-ed25519", sig)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(rig: &Rig) -> Ws {
    let url = format!("ws://{}/telnyx/stream", rig.srv.addr);
    tokio_tungstenite::connect_async(url).await.expect("upgrade").0
}

async fn send(ws: &mut Ws, text: String) {
    ws.send(Message::text(text)).await.unwrap();
}

/// Everything the server sent within `within`, parsed as Telnyx reads it; a close ends it.
async fn drain(ws: &mut Ws, peer: &TelnyxPeer, within: Duration) -> (Vec<ServerMessage>, Option<u16>) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => got.push(peer.parse(t.as_str()).expect("Telnyx reads it")),
            Ok(Some(Ok(Message::Close(c)))) => return (got, Some(c.map_or(1005, |c| u16::from(c.code)))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => return (got, Some(1006)),
            Err(_) => return (got, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telnyx_call_is_answered_talks_barges_in_and_hangs_up() {
    let rig = rig().await;
    let mut peer = TelnyxPeer::new(1);

    // call.initiated → call.started to the backend → answer with the stream.
    let body = event("ev-1", "call.initiated", initiated(&peer, NUMBER));
    assert_eq!(post(&rig, &body, now_s(), None).await, 200);
    assert_eq!(post(&rig, &body, now_s(), None).await, 200, "a repeated delivery is acknowledged");
    let answer = rig.backend.wait_telnyx("answer", Duration::from_secs(5)).await;
    assert_eq!(answer.call_control_id, peer.call_control_id);
    assert_eq!(answer.authorization, format!("Bearer {API_KEY}"));
    assert_eq!(answer.body["stream_url"], "wss://cb.example.com/telnyx/stream");
    assert_eq!(answer.body["stream_track"], "inbound_track");
    assert_eq!(answer.body["stream_bidirectional_mode"], "rtp");
    assert_eq!(answer.body["stream_bidirectional_codec"], "PCMU");
    let client_state = answer.body["client_state"].as_str().unwrap().to_string();
    let started = rig.backend.wait_for("call.started", Duration::from_secs(2)).await;
    let started = started.iter().find(|e| e.kind() == "call.started").unwrap();
    assert_eq!(started.body["carrier"], "telnyx");
    assert_eq!(started.body["carrier_call_id"], peer.call_control_id.as_str());
    // De-duplication is decided before the webhook answers: the repeat never started a task.
    let dup = rig.srv.metric("callbridge_carrier_webhooks_total", &[("carrier", "telnyx"), ("outcome", "duplicate")]);
    assert_eq!(dup, 1.0);
    let answers = rig.backend.telnyx_actions().iter().filter(|a| a.action == "answer").count();
    assert_eq!(answers, 1, "the repeated call.initiated was not answered twice");

    // The stream presents the client_state; the greeting plays.
    let mut ws = open(&rig).await;
    send(&mut ws, peer.connected()).await;
    send(&mut ws, peer.start("+15557770000", NUMBER, &client_state)).await;
    let silence = vec![0xFFu8; 160];
    let mut tick = interval(Duration::from_millis(20));
    let mut ts = 0;
    let mut greeting = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while greeting < 10 && Instant::now() < deadline {
        tick.tick().await;
        let (_, m) = peer.media(&silence, ts);
        ts += 20;
        send(&mut ws, m).await;
        let (got, closed) = drain(&mut ws, &peer, Duration::from_millis(1)).await;
        assert!(closed.is_none(), "closed during greeting");
        greeting += got.iter().filter(|m| matches!(m, ServerMessage::Media(p) if is_loud(p))).count();
    }
    assert!(greeting >= 10, "the greeting plays ({greeting} loud messages)");
    // Let the greeting end (it is short), keeping the stream alive.
    for _ in 0..150 {
        tick.tick().await;
        let (_, m) = peer.media(&silence, ts);
        ts += 20;
        send(&mut ws, m).await;
        let _ = drain(&mut ws, &peer, Duration::from_millis(1)).await;
    }

    // The caller speaks, frames swapped in pairs (Telnyx does not promise order): a reply comes.
    let speech = ulaw_fixture("caller_short_8k.wav");
    let frames: Vec<String> = speech
        .chunks_exact(160)
        .chain(std::iter::repeat_n(&silence[..], 60))
        .map(|f| {
            let (_, m) = peer.media(f, ts);
            ts += 20;
            m
        })
        .collect();
    let mut reply = 0;
    for pair in frames.chunks(2) {
        tick.tick().await;
        for m in pair.iter().rev() {
            send(&mut ws, m.clone()).await;
        }
        tick.tick().await;
        let (got, _) = drain(&mut ws, &peer, Duration::from_millis(1)).await;
        reply += got.iter().filter(|m| matches!(m, ServerMessage::Media(p) if is_loud(p))).count();
    }
    assert!(reply >= 5, "the turn was answered ({reply} loud reply messages)");
    let user = rig.backend.wait_for("turn.user", Duration::from_secs(2)).await;
    assert!(user.iter().any(|e| e.kind() == "turn.user"));

    // Meanwhile another stream misbehaves — binary frames, then a codec nobody asked for — and
    // is closed; this call goes on.
    let mut bad = open(&rig).await;
    let mut stranger = TelnyxPeer::new(99);
    send(&mut bad, stranger.connected()).await;
    bad.send(Message::binary(vec![0u8; 160])).await.unwrap();
    send(&mut bad, stranger.start("+1", NUMBER, "").replace("PCMU", "G722")).await;
    assert_eq!(drain(&mut bad, &stranger, Duration::from_secs(3)).await.1, Some(1003));
    assert!(
        rig.srv.metric("callbridge_protocol_errors_total", &[("carrier", "telnyx"), ("kind", "binary_frame")]) >= 1.0
    );
    let _ = stranger.stop();

    // Barge-in: the caller talks over the reply; clear reaches Telnyx.
    let interrupt = ulaw_fixture("caller_leak_8k.wav");
    let mut cleared = false;
    for f in interrupt.chunks_exact(160).skip(15).take(60) {
        tick.tick().await;
        let (_, m) = peer.media(f, ts);
        ts += 20;
        send(&mut ws, m).await;
        let (got, _) = drain(&mut ws, &peer, Duration::from_millis(1)).await;
        cleared |= got.contains(&ServerMessage::Clear);
    }
    assert!(cleared, "barge-in sent {{\"event\":\"clear\"}}");

    // Hang-up from the control API: the stream closes and Call Control hangs the call up.
    let (id, listed) = common::net::first_live_call(rig.srv.addr, "tenant-a-token").await;
    assert_eq!(listed["carrier"], "telnyx");
    let st = common::net::call_action(rig.srv.addr, "tenant-a-token", &id, "hangup", None).await;
    assert!((200..300).contains(&st), "{st}");
    let (_, closed) = drain(&mut ws, &peer, Duration::from_secs(3)).await;
    assert_eq!(closed, Some(1000));
    let hangup = rig.backend.wait_telnyx("hangup", Duration::from_secs(3)).await;
    assert_eq!(hangup.call_control_id, peer.call_control_id);
    let events = rig.backend.wait_for("call.ended", Duration::from_secs(3)).await;
    let ended = events.iter().find(|e| e.kind() == "call.ended").unwrap();
    assert_eq!(ended.body["reason"], "hangup");
    assert_eq!(
        (ended.body["carrier"].as_str(), ended.body["carrier_call_id"].as_str()),
        (Some("telnyx"), Some(peer.call_control_id.as_str()))
    );
    assert_eq!(events.last().unwrap().kind(), "call.ended", "call.ended comes last");
    // Telnyx's own recording, saved after the hang-up, reaches the backend on its own (seq 0).
    let saved = json!({"call_control_id": peer.call_control_id, "call_leg_id": "leg-1", "channels": "single",
        "recording_urls": {"wav": "https://telnyx.example/r.wav", "mp3": null},
        "recording_started_at": "2026-12-02T06:00:00Z", "recording_ended_at": "2026-12-02T06:01:00Z"});
    assert_eq!(post(&rig, &event("ev-9", "call.recording.saved", saved), now_s(), None).await, 200);
    let events = rig.backend.wait_for("carrier.recording", Duration::from_secs(3)).await;
    let rec = events.iter().find(|e| e.kind() == "carrier.recording").unwrap();
    assert_eq!(rec.body["seq"], 0);
    assert_eq!(rec.body["call_id"], ended.body["call_id"]);
    assert_eq!(rec.body["urls"], json!({"wav": "https://telnyx.example/r.wav"}));
    common::calls::verify_all(std::slice::from_ref(rec), SECRET);
    rig.srv.shutdown().await;
}

/// Streams silence until the greeting has played and gone quiet (bounded).
async fn past_greeting(ws: &mut Ws, peer: &mut TelnyxPeer, ts: &mut u64) {
    let silence = [0xFFu8; 160];
    let mut tick = interval(Duration::from_millis(20));
    let (mut heard, mut quiet) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (heard < 10 || quiet < 25) && Instant::now() < deadline {
        tick.tick().await;
        let (_, m) = peer.media(&silence, *ts);
        *ts += 20;
        send(ws, m).await;
        let (got, closed) = drain(ws, peer, Duration::from_millis(1)).await;
        assert!(closed.is_none(), "closed during greeting");
        let loud = got.iter().filter(|m| matches!(m, ServerMessage::Media(p) if is_loud(p))).count();
        heard += loud;
        quiet = if loud > 0 { 0 } else { quiet + 1 };
    }
    assert!(heard >= 10 && quiet >= 25, "the greeting played and ended ({heard} loud messages)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telnyx_stream_that_vanishes_mid_reply_ends_the_call_with_what_the_caller_heard() {
    let rig = rig().await;
    let mut peer = TelnyxPeer::new(7);
    let body = event("ev-v1", "call.initiated", initiated(&peer, NUMBER));
    assert_eq!(post(&rig, &body, now_s(), None).await, 200);
    let answer = rig.backend.wait_telnyx("answer", Duration::from_secs(5)).await;
    let client_state = answer.body["client_state"].as_str().unwrap().to_string();
    let mut ws = open(&rig).await;
    send(&mut ws, peer.connected()).await;
    send(&mut ws, peer.start("+15557770000", NUMBER, &client_state)).await;
    let mut ts = 0;
    past_greeting(&mut ws, &mut peer, &mut ts).await;

    // Talk, then stream silence until the reply has played for ≈ 0.5 s; then the socket is gone
    // (no stop event, no close frame).
    let silence = [0xFFu8; 160];
    let speech = ulaw_fixture("caller_short_8k.wav");
    let mut tick = interval(Duration::from_millis(20));
    let mut reply = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    for f in speech.chunks_exact(160).chain(std::iter::repeat(&silence[..])) {
        tick.tick().await;
        let (_, m) = peer.media(f, ts);
        ts += 20;
        send(&mut ws, m).await;
        let (got, _) = drain(&mut ws, &peer, Duration::from_millis(1)).await;
        reply += got.iter().filter(|m| matches!(m, ServerMessage::Media(p) if is_loud(p))).count();
        if reply >= 25 {
            break;
        }
        assert!(Instant::now() < deadline, "the bot answered");
    }
    drop(ws);

    rig.backend.ended_lost_mid_reply("telnyx", 300).await;
    // The phone call outlives its media stream at Telnyx: it is hung up through Call Control.
    let hangup = rig.backend.wait_telnyx("hangup", Duration::from_secs(3)).await;
    assert_eq!(hangup.call_control_id, peer.call_control_id);
    rig.srv.wait_no_calls().await;
    rig.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_must_be_signed_fresh_and_streams_must_bring_their_token() {
    let rig = rig().await;
    let peer = TelnyxPeer::new(2);
    let body = event("ev-2", "call.initiated", initiated(&peer, NUMBER));
    // Unsigned, stale, tampered, another key: all 403, and nothing is answered.
    let r = reqwest::Client::new()
        .post(format!("http://{}/telnyx/webhook", rig.srv.addr))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "unsigned");
    assert_eq!(post(&rig, &body, now_s() - 301, None).await, 403, "stale");
    let good = sign(&rig.pkcs8, &now_s().to_string(), body.as_bytes()).unwrap();
    let tampered = body.replace(NUMBER, "+15550002222");
    assert_eq!(post(&rig, &tampered, now_s(), Some(&good)).await, 403, "tampered");
    // Refusals are decided before any task starts: nothing can come later.
    assert!(rig.backend.telnyx_actions().is_empty(), "nothing answered: {:?}", rig.backend.telnyx_actions());
    assert!(rig.srv.metric("callbridge_auth_rejected_total", &[("reason", "webhook_stale")]) >= 1.0);

    // A call to a number nobody registered is rejected through Call Control.
    let mut stranger = TelnyxPeer::new(3);
    let body = event("ev-3", "call.initiated", initiated(&stranger, "+15559990000"));
    assert_eq!(post(&rig, &body, now_s(), None).await, 200);
    let reject = rig.backend.wait_telnyx("reject", Duration::from_secs(3)).await;
    assert_eq!(reject.call_control_id, stranger.call_control_id);
    assert_eq!(reject.body["cause"], "CALL_REJECTED");

    // A number registered with Twilio does not take calls through Telnyx.
    let twilio_number = TelnyxPeer::new(6);
    let body = event("ev-6", "call.initiated", initiated(&twilio_number, "+15550003333"));
    assert_eq!(post(&rig, &body, now_s(), None).await, 200);
    let cmd =
        rig.backend.wait_command(Duration::from_secs(3), |a| a.call_control_id == twilio_number.call_control_id).await;
    assert_eq!((cmd.action.as_str(), cmd.body["cause"].as_str()), ("reject", Some("CALL_REJECTED")));
    assert_eq!(rig.srv.metric("callbridge_calls_rejected_total", &[("reason", "wrong_carrier")]), 1.0);

    // A stream without our client_state is refused (1008) and hangs nothing up.
    let mut ws = open(&rig).await;
    send(&mut ws, stranger.connected()).await;
    send(&mut ws, stranger.start("+15557770000", NUMBER, "")).await;
    let (_, closed) = drain(&mut ws, &stranger, Duration::from_secs(3)).await;
    assert_eq!(closed, Some(1008));
    // A wrong codec is a clear error too.
    let mut ws = open(&rig).await;
    send(&mut ws, stranger.connected()).await;
    let bad = stranger.start("+1", NUMBER, "").replace("PCMU", "OPUS");
    send(&mut ws, bad).await;
    let (_, closed) = drain(&mut ws, &stranger, Duration::from_secs(3)).await;
    assert_eq!(closed, Some(1003), "unsupported format");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!rig.backend.telnyx_actions().iter().any(|a| a.action == "hangup"));

    // Hung up while the plan was being decided or before the stream came: call.ended "missed".
    let late = TelnyxPeer::new(4);
    let body = event("ev-4", "call.initiated", initiated(&late, NUMBER));
    assert_eq!(post(&rig, &body, now_s(), None).await, 200);
    rig.backend.wait_telnyx("answer", Duration::from_secs(3)).await;
    let hangup = json!({"call_control_id": late.call_control_id, "hangup_cause": "originator_cancel",
        "hangup_source": "caller", "from": "+15557770000", "to": NUMBER, "state": "hangup"});
    assert_eq!(post(&rig, &event("ev-5", "call.hangup", hangup), now_s(), None).await, 200);
    let events = rig.backend.wait_for("call.ended", Duration::from_secs(3)).await;
    let ended = events.iter().find(|e| e.kind() == "call.ended").unwrap();
    assert_eq!(ended.body["reason"], "missed");
    rig.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_goes_through_call_control_and_its_bridge_settles_the_call() {
    let rig = rig().await;
    let mut peer = TelnyxPeer::new(5);
    let body = event("ev-10", "call.initiated", initiated(&peer, NUMBER));
    assert_eq!(post(&rig, &body, now_s(), None).await, 200);
    let answer = rig.backend.wait_telnyx("answer", Duration::from_secs(5)).await;
    let mut ws = open(&rig).await;
    send(&mut ws, peer.connected()).await;
    send(&mut ws, peer.start("+15557770000", NUMBER, answer.body["client_state"].as_str().unwrap())).await;
    let (id, _) = common::net::first_live_call(rig.srv.addr, "tenant-a-token").await;
    let to = json!({"to": "+15557654321"});
    assert_eq!(common::net::call_action(rig.srv.addr, "tenant-a-token", &id, "transfer", Some(to)).await, 202);
    let transfer = rig.backend.wait_telnyx("transfer", Duration::from_secs(3)).await;
    assert_eq!(transfer.call_control_id, peer.call_control_id);
    assert_eq!(transfer.body["to"], "+15557654321");
    let (_, closed) = drain(&mut ws, &peer, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "the stream ends with the transfer");
    // Telnyx bridges the caller to the destination, returning our client_state.
    let bridged = json!({"call_control_id": peer.call_control_id, "client_state": transfer.body["client_state"],
        "from": "+15557770000", "to": "+15557654321", "state": "bridged"});
    assert_eq!(post(&rig, &event("ev-11", "call.bridged", bridged), now_s(), None).await, 200);
    let events = rig.backend.wait_for("call.ended", Duration::from_secs(3)).await;
    let kinds: Vec<_> = events.iter().map(|e| e.kind().to_string()).collect();
    assert!(kinds.contains(&"transfer.completed".to_string()), "{kinds:?}");
    assert_eq!(events.last().unwrap().body["reason"], "transferred", "{kinds:?}");
    assert!(!rig.backend.telnyx_actions().iter().any(|a| a.action == "hangup"), "a transferred call is not hung up");
    let _ = peer.stop();
    rig.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_can_reject_or_forward_a_telnyx_call() {
    let rig = rig().await;
    rig.backend.set("call.started", common::backend::Mode::Json(json!({"reject": {"reason": "busy"}})));
    let busy = TelnyxPeer::new(20);
    assert_eq!(post(&rig, &event("ev-20", "call.initiated", initiated(&busy, NUMBER)), now_s(), None).await, 200);
    let reject = rig.backend.wait_telnyx("reject", Duration::from_secs(3)).await;
    assert_eq!(
        (reject.call_control_id.as_str(), reject.body["cause"].as_str()),
        (busy.call_control_id.as_str(), Some("USER_BUSY"))
    );
    rig.backend.set("call.started", common::backend::Mode::Json(json!({"forward": "+15557654321"})));
    let fwd = TelnyxPeer::new(21);
    assert_eq!(post(&rig, &event("ev-21", "call.initiated", initiated(&fwd, NUMBER)), now_s(), None).await, 200);
    let t = rig.backend.wait_telnyx("transfer", Duration::from_secs(3)).await;
    assert_eq!(
        (t.call_control_id.as_str(), t.body["to"].as_str()),
        (fwd.call_control_id.as_str(), Some("+15557654321"))
    );
    assert!(!rig.backend.telnyx_actions().iter().any(|a| a.action == "answer"), "no engine answered");
    let ended = |r: &[common::backend::Received]| -> Vec<String> {
        r.iter().filter(|e| e.kind() == "call.ended").map(|e| e.body["reason"].as_str().unwrap().to_string()).collect()
    };
    let got = rig.backend.wait_received(Duration::from_secs(3), |r| ended(r).len() >= 2).await;
    assert_eq!(ended(&got), ["rejected", "forwarded"]);
    rig.srv.shutdown().await;
}

/// `POST /v1/calls` as tenant A.
async fn place(rig: &Rig, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/calls", rig.srv.addr))
        .bearer_auth("tenant-a-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The dial of the `n`th outbound call (recorded before `POST /v1/calls` answered): (call_control_id, client_state, body).
fn dialled(rig: &Rig, n: usize) -> (String, String, Value) {
    let dials: Vec<_> = rig.backend.telnyx_actions().into_iter().filter(|a| a.action == "dial").collect();
    let d = dials.get(n).unwrap_or_else(|| panic!("no dial {n}"));
    (d.call_control_id.clone(), d.body["client_state"].as_str().unwrap().to_string(), d.body.clone())
}

fn outbound_event(ccid: &str, client_state: &str, extra: Value) -> Value {
    let mut p = json!({"call_control_id": ccid, "call_leg_id": "leg-out", "connection_id": "conn-1",
        "from": NUMBER, "to": "+15557654321", "direction": "outgoing", "client_state": client_state});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_telnyx_calls_are_dialled_detected_connected_or_reported() {
    let rig = rig().await;
    // Answered by a human after machine detection: the stream starts and the call runs.
    let (st, placed) = place(&rig, json!({"to": "+15557654321", "machine_detection": "hangup"})).await;
    assert_eq!(st, 202, "{placed}");
    let (ccid, cs, dial) = dialled(&rig, 0);
    assert_eq!(placed["carrier_call_id"], ccid.as_str());
    assert_eq!((dial["connection_id"].as_str(), dial["to"].as_str()), (Some("conn-1"), Some("+15557654321")));
    assert_eq!((dial["from"].as_str(), dial["answering_machine_detection"].as_str()), (Some(NUMBER), Some("detect")));
    assert_eq!(dial["webhook_url"], "https://cb.example.com/telnyx/webhook");
    let answered = event("out-1", "call.answered", outbound_event(&ccid, &cs, json!({})));
    assert_eq!(post(&rig, &answered, now_s(), None).await, 200);
    let human = outbound_event(&ccid, &cs, json!({"result": "human"}));
    assert_eq!(post(&rig, &event("out-2", "call.machine.detection.ended", human), now_s(), None).await, 200);
    let streaming = rig.backend.wait_telnyx("streaming_start", Duration::from_secs(3)).await;
    assert_eq!(streaming.call_control_id, ccid);
    assert_eq!(streaming.body["stream_bidirectional_mode"], "rtp");
    let stream_state = streaming.body["client_state"].as_str().unwrap().to_string();
    let starts = rig.backend.telnyx_actions().iter().filter(|a| a.action == "streaming_start").count();
    assert_eq!(starts, 1, "call.answered alone did not start it (detection was running)");
    let mut peer = TelnyxPeer::new(5);
    peer.call_control_id = ccid.clone();
    let mut ws = open(&rig).await;
    send(&mut ws, peer.connected()).await;
    send(&mut ws, peer.start(NUMBER, "+15557654321", &stream_state)).await;
    let silence = vec![0xFFu8; 160];
    let mut tick = interval(Duration::from_millis(20));
    let (mut ts, mut loud) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while loud < 10 && Instant::now() < deadline {
        tick.tick().await;
        let (_, m) = peer.media(&silence, ts);
        ts += 20;
        send(&mut ws, m).await;
        let (got, closed) = drain(&mut ws, &peer, Duration::from_millis(1)).await;
        assert!(closed.is_none());
        loud += got.iter().filter(|m| matches!(m, ServerMessage::Media(p) if is_loud(p))).count();
    }
    assert!(loud >= 10, "the callee hears the greeting");
    send(&mut ws, peer.stop()).await;
    let events = rig.backend.wait_for("call.ended", Duration::from_secs(5)).await;
    let end = &events.iter().find(|e| e.kind() == "call.ended").unwrap().body;
    assert_eq!((end["direction"].as_str(), end["answered_by"].as_str()), (Some("outbound"), Some("human")));
    assert_eq!(end["carrier_call_id"], ccid.as_str());

    // Busy: the hang-up before any answer is the outcome.
    let (st, placed) = place(&rig, json!({"to": "+15557654321"})).await;
    assert_eq!(st, 202);
    let (ccid, cs, dial) = dialled(&rig, 1);
    assert!(dial.get("answering_machine_detection").is_none());
    let busy = outbound_event(&ccid, &cs, json!({"hangup_cause": "user_busy", "hangup_source": "callee"}));
    assert_eq!(post(&rig, &event("out-3", "call.hangup", busy), now_s(), None).await, 200);
    let events = rig
        .backend
        .wait_received(Duration::from_secs(5), |r| {
            r.iter().any(|e| e.kind() == "call.ended" && e.body["call_id"] == placed["call_id"])
        })
        .await;
    let end = events.iter().find(|e| e.kind() == "call.ended" && e.body["call_id"] == placed["call_id"]).unwrap();
    assert_eq!(end.body["reason"], "busy");

    // A machine under "hangup": Call Control hangs it up, the backend hears `machine`.
    let (st, placed) = place(&rig, json!({"to": "+15557654321", "machine_detection": "hangup"})).await;
    assert_eq!(st, 202);
    let (ccid, cs, _) = dialled(&rig, 2);
    let machine = outbound_event(&ccid, &cs, json!({"result": "machine"}));
    assert_eq!(post(&rig, &event("out-4", "call.machine.detection.ended", machine), now_s(), None).await, 200);
    let hangup =
        rig.backend.wait_command(Duration::from_secs(3), |a| a.action == "hangup" && a.call_control_id == ccid).await;
    assert_eq!(hangup.authorization, format!("Bearer {API_KEY}"));
    let events = rig
        .backend
        .wait_received(Duration::from_secs(5), |r| {
            r.iter().any(|e| e.kind() == "call.ended" && e.body["call_id"] == placed["call_id"])
        })
        .await;
    let end = events.iter().find(|e| e.kind() == "call.ended" && e.body["call_id"] == placed["call_id"]).unwrap();
    assert_eq!((end.body["reason"].as_str(), end.body["answered_by"].as_str()), (Some("machine"), Some("machine")));
    rig.srv.shutdown().await;
}
