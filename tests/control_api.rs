//! The control API over real HTTP on 127.0.0.1: numbers (admin), live-call
//! control (tenant), isolation between tenants, persistence across restarts,
//! and transfers through a fake Twilio REST server. Every wait is bounded.

mod common;

use std::time::Duration;

use callbridge_testkit::twilio_peer::ServerMessage;
use common::backend::FakeBackend;
use common::calls::*;
use common::net::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(srv: &TestServer) -> Self {
        Self { base: format!("http://{}", srv.addr), http: reqwest::Client::new() }
    }

    async fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_admin_only_persist_across_restarts_and_tokens_see_only_their_own() {
    let backend = FakeBackend::start().await;
    let dir = std::env::temp_dir().join(format!("cb-api-{}", callbridge::signature::random_hex()));
    let db = dir.join("cb.db");
    let extra = format!("[storage]\ndatabase = \"{}\"\n", db.display());
    let srv = server(&backend, &extra).await;
    let api = Api::new(&srv);
    let new = json!({"number": "+15553334444", "callback_url": backend.url(), "secret": "whsec_new_tenant_0123"});

    assert_eq!(api.req("POST", "/v1/numbers", None, Some(new.clone())).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.req("POST", "/v1/numbers", Some("tenant-a-token"), Some(new.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, body) = api.req("POST", "/v1/numbers", Some("admin-token"), Some(new.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let token = body["api_token"].as_str().unwrap().to_string();
    assert!(body.get("secret").is_none(), "the secret is never echoed");
    assert_eq!(api.req("POST", "/v1/numbers", Some("admin-token"), Some(new.clone())).await.0, StatusCode::CONFLICT);
    let bad = json!({"number": "5553334444", "callback_url": backend.url(), "secret": "whsec_new_tenant_0123"});
    let (st, body) = api.req("POST", "/v1/numbers", Some("admin-token"), Some(bad)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("E.164"));
    let typo = json!({"numbr": "+15553334444"});
    assert_eq!(api.req("POST", "/v1/numbers", Some("admin-token"), Some(typo)).await.0, StatusCode::BAD_REQUEST);

    // Reading a registration: admin or its own token; never another tenant's.
    let path = "/v1/numbers/%2B15553334444";
    assert_eq!(api.req("GET", path, Some(&token), None).await.0, StatusCode::OK);
    assert_eq!(api.req("GET", path, Some("admin-token"), None).await.1["callback_url"], backend.url());
    assert_eq!(api.req("GET", path, Some("tenant-a-token"), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.req("DELETE", "/v1/numbers/%2B15550001111", Some("admin-token"), None).await.0,
        StatusCode::CONFLICT
    );
    srv.shutdown().await;

    // Restart on the same database: the registration and its token survive.
    let srv = server(&backend, &extra).await;
    let api = Api::new(&srv);
    assert_eq!(api.req("GET", path, Some(&token), None).await.0, StatusCode::OK);
    assert_eq!(api.req("GET", "/v1/calls", Some(&token), None).await.1, json!({"calls": []}));
    assert_eq!(api.req("DELETE", path, Some(&token), None).await.0, StatusCode::UNAUTHORIZED, "admin only");
    assert_eq!(api.req("DELETE", path, Some("admin-token"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.req("DELETE", path, Some("admin-token"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.req("GET", "/v1/calls", Some(&token), None).await.0, StatusCode::UNAUTHORIZED, "token revoked");
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);

    // Without CALLBRIDGE_ADMIN_TOKEN the admin API is off, clearly.
    let srv = TestServer::start("").await;
    let (st, body) = Api::new(&srv).req("POST", "/v1/numbers", Some("anything"), Some(new)).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "admin_disabled");
    srv.shutdown().await;
}

/// Twilio's `<Dial action>` request for a transfer's outcome, signed.
async fn dial_action(srv: &TestServer, action: &str, tw: &FakeTwilio, status: &str) -> (u16, String) {
    let form: Vec<(String, String)> = [
        ("AccountSid", tw.peer.account_sid.as_str()),
        ("CallSid", tw.peer.call_sid.as_str()),
        ("DialCallStatus", status),
        ("DialCallDuration", "42"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sig = callbridge::carrier::twilio::signature::compute(AUTH_TOKEN, action, &form);
    let path = action.trim_start_matches("https://cb.example.com");
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", srv.addr))
        .header("X-Twilio-Signature", sig)
        .form(&form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_nobody_answers_brings_the_caller_back_on_the_same_call() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "").await;
    let mut tw = call(&srv, 1, NUMBER_A).await;
    let _ = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    let client = reqwest::Client::new();
    let calls: serde_json::Value = client
        .get(format!("http://{}/v1/calls", srv.addr))
        .bearer_auth("tenant-a-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = calls["calls"][0]["call_id"].as_str().unwrap().to_string();
    let r = client
        .post(format!("http://{}/v1/calls/{id}/transfer", srv.addr))
        .bearer_auth("tenant-a-token")
        .json(&json!({"to": "+15557654321"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let stop = tw.peer.stop();
    tw.send(stop).await;
    srv.wait_no_calls().await;
    // Busy: the answer connects a new stream for the same call.
    let action = format!("https://cb.example.com/twilio/transfer-status?call={id}");
    let (status, twiml) = dial_action(&srv, &action, &tw, "busy").await;
    assert_eq!(status, 200);
    assert!(twiml.contains("<Connect><Stream"), "{twiml}");
    let token = token_of(&twiml);
    let mut back = FakeTwilio::connect_signed(&srv.url(), 1, Some(&stream_signature())).await.unwrap();
    back.start_with(&[("from", "+15557770000"), ("to", NUMBER_A), ("cb_token", &token)]).await;
    let got = talk(&mut back, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    assert!(media_count(&got) > 20, "the caller hears the bot again (the transfer line, then a reply)");
    let listed: serde_json::Value = client
        .get(format!("http://{}/v1/calls", srv.addr))
        .bearer_auth("tenant-a-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["calls"][0]["call_id"], id, "the same call, resumed");
    let stop = back.peer.stop();
    back.send(stop).await;
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    verify_all(&events, SECRET_A);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "call.ended").count(), 1, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"call.ended"));
    let failed = events.iter().find(|e| e.kind() == "transfer.failed").expect("transfer.failed");
    assert_eq!(failed.body["status"], "busy");
    let ended = events.last().unwrap();
    assert_eq!(ended.body["reason"], "caller_hangup");
    assert!(events.iter().all(|e| e.body["call_id"] == id.as_str()), "one call id throughout");
    let mut seqs: Vec<u64> = events.iter().map(|e| e.body["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "one sequence across both legs");
    let turns = events.iter().filter(|e| e.kind() == "turn.user").count();
    assert!(turns >= 2, "turns of both legs were delivered ({turns})");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_control_their_live_calls_and_only_theirs() {
    let backend = FakeBackend::start().await;
    let srv = server(&backend, "").await;
    let api = Api::new(&srv);
    let mut tw = call(&srv, 1, NUMBER_A).await;
    // The call is listed once its stream started.
    let mut listed = Value::Null;
    for _ in 0..50 {
        listed = api.req("GET", "/v1/calls", Some("tenant-a-token"), None).await.1;
        if listed["calls"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = listed["calls"][0]["call_id"].as_str().expect("call listed").to_string();
    assert_eq!(listed["calls"][0]["carrier_call_id"].as_str().unwrap(), tw.peer.call_sid);
    assert_eq!(api.req("GET", "/v1/calls", Some("tenant-b-token"), None).await.1, json!({"calls": []}));
    assert_eq!(api.req("GET", "/v1/calls", None, None).await.0, StatusCode::UNAUTHORIZED);

    // Tenant B cannot see or touch A's call: indistinguishable from no call.
    for (m, p, b) in [
        ("GET", format!("/v1/calls/{id}"), None),
        ("POST", format!("/v1/calls/{id}/hangup"), None),
        ("POST", format!("/v1/calls/{id}/interrupt"), None),
        ("POST", format!("/v1/calls/{id}/say"), Some(json!({"audio_url": format!("{}/audio.wav", backend.base())}))),
        ("POST", format!("/v1/calls/{id}/transfer"), Some(json!({"to": "+15557654321"}))),
    ] {
        let (st, body) = api.req(m, &p, Some("tenant-b-token"), b).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{m} {p}: {body}");
    }
    assert_eq!(api.req("GET", "/v1/calls/call_nonsense", Some("tenant-a-token"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.req("GET", &format!("/v1/calls/{id}"), Some("tenant-a-token"), None).await.0, StatusCode::OK);

    // say: text is refused by the local engine; exactly one of text/audio_url; a WAV URL plays.
    let say = format!("/v1/calls/{id}/say");
    let (st, body) = api.req("POST", &say, Some("tenant-a-token"), Some(json!({"text": "hello"}))).await;
    assert_eq!((st, body["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("cannot_say")));
    assert_eq!(api.req("POST", &say, Some("tenant-a-token"), Some(json!({}))).await.0, StatusCode::BAD_REQUEST);
    let (st, _) =
        api.req("POST", &say, Some("tenant-a-token"), Some(json!({"audio_url": "http://127.0.0.1:9/x.wav"}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "unreachable audio");
    let (st, _) = api.req("POST", &say, Some("tenant-a-token"), Some(json!({"audio_url": backend.url()}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "not a WAV");
    let wav = format!("{}/audio.wav", backend.base());
    let (st, body) = api.req("POST", &say, Some("tenant-a-token"), Some(json!({"audio_url": wav}))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let got = talk(&mut tw, &[], 40).await;
    assert!(media_count(&got) > 5, "the clip plays");

    // interrupt: the carrier is told to clear what it holds.
    let (st, _) = api.req("POST", &format!("/v1/calls/{id}/interrupt"), Some("tenant-a-token"), None).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let got = talk(&mut tw, &[], 10).await;
    assert!(got.iter().any(|e| matches!(e, Rx::Msg(_, ServerMessage::Clear))), "clear sent");

    // transfer: Twilio REST gets <Dial> with Basic auth; then the call ends as transferred.
    let transfer = format!("/v1/calls/{id}/transfer");
    let (st, _) = api.req("POST", &transfer, Some("tenant-a-token"), Some(json!({"to": "not a number"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, body) = api.req("POST", &transfer, Some("tenant-a-token"), Some(json!({"to": "+15557654321"}))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let updates = backend.twilio_updates();
    assert_eq!(updates.len(), 1);
    let (account, sid, form) = &updates[0];
    assert_eq!((account.as_str(), sid.as_str()), (tw.peer.account_sid.as_str(), tw.peer.call_sid.as_str()));
    let action = format!("https://cb.example.com/twilio/transfer-status?call={id}");
    assert_eq!(
        form["Twiml"],
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="{action}" method="POST">+15557654321</Dial></Response>"#
        )
    );
    use base64::Engine as _;
    // Basic auth with the account the auth token belongs to (TWILIO_ACCOUNT_SID); the call's own account in the URL.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("AC0000:{AUTH_TOKEN}"));
    assert_eq!(form["_authorization"], format!("Basic {basic}"));
    // Twilio then stops the stream; the call is not over until the transfer is.
    let stop = tw.peer.stop();
    tw.send(stop).await;
    srv.wait_no_calls().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!backend.received().iter().any(|e| e.kind() == "call.ended"), "no call.ended while the transfer runs");
    // The transferred leg ends: Twilio requests the <Dial action>.
    let (status, twiml) = dial_action(&srv, &action, &tw, "completed").await;
    assert_eq!(status, 200);
    assert!(twiml.contains("<Hangup/>"), "{twiml}");
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind()).collect();
    let n = kinds.len();
    assert_eq!(&kinds[n - 2..], ["transfer.completed", "call.ended"], "{kinds:?}");
    assert_eq!(events[n - 2].body["to"], "+15557654321");
    assert_eq!(events.last().unwrap().body["reason"], "transferred");
    verify_all(&events, SECRET_A);

    // The call is over: control answers 410, not 404.
    srv.wait_no_calls().await;
    assert_eq!(api.req("GET", &format!("/v1/calls/{id}"), Some("tenant-a-token"), None).await.0, StatusCode::GONE);
    assert_eq!(
        api.req("POST", &format!("/v1/calls/{id}/hangup"), Some("tenant-a-token"), None).await.0,
        StatusCode::GONE
    );
    assert_eq!(api.req("GET", &format!("/v1/calls/{id}"), Some("tenant-b-token"), None).await.0, StatusCode::NOT_FOUND);

    // hangup of a live call closes its stream; a transfer Twilio says is over is 410.
    let mut tw = call(&srv, 2, NUMBER_A).await;
    let _ = talk(&mut tw, &[], 5).await;
    let id = api.req("GET", "/v1/calls", Some("tenant-a-token"), None).await.1["calls"][0]["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Toll fraud: destinations outside the tenant's list never reach the carrier.
    let updates = backend.twilio_updates().len();
    for to in ["+882345678901", "+442071234567", "sip:desk@pbx.evil.example"] {
        let (st, body) =
            api.req("POST", &format!("/v1/calls/{id}/transfer"), Some("tenant-a-token"), Some(json!({"to": to}))).await;
        assert_eq!((st, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("destination_not_allowed")), "{to}");
    }
    assert_eq!(backend.twilio_updates().len(), updates, "nothing was dialled");
    backend.set_twilio_status(404);
    let (st, _) = api
        .req(
            "POST",
            &format!("/v1/calls/{id}/transfer"),
            Some("tenant-a-token"),
            Some(json!({"to": "sip:desk@pbx.example.com"})),
        )
        .await;
    assert_eq!(st, StatusCode::GONE);
    backend.set_twilio_status(401);
    let (st, body) = api
        .req("POST", &format!("/v1/calls/{id}/transfer"), Some("tenant-a-token"), Some(json!({"to": "+15557654321"})))
        .await;
    assert_eq!((st, body["error"].as_str()), (StatusCode::BAD_GATEWAY, Some("carrier_error")));
    let (st, _) = api.req("POST", &format!("/v1/calls/{id}/hangup"), Some("tenant-a-token"), None).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(tw.closed(Duration::from_secs(3)).await.map(|c| c.0), Some(1000));
    srv.shutdown().await;
}

#[tokio::test]
async fn documents_are_served_and_the_schema_matches_every_event() {
    let srv = TestServer::start("").await;
    let api = Api::new(&srv);
    let (st, openapi) = api.req("GET", "/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(openapi["openapi"], "3.1.0");
    for p in ["/v1/numbers", "/v1/calls", "/v1/calls/{id}/say", "/v1/calls/{id}/transfer"] {
        assert!(openapi["paths"].get(p).is_some(), "{p} documented");
    }
    assert!(openapi["paths"]["/v1/calls"]["post"]["responses"]["202"].is_object(), "outbound calls documented");
    let (st, schema) = api.req("GET", "/schema/callbacks.json", None, None).await;
    assert_eq!(st, StatusCode::OK);

    use callbridge::contract::*;
    let samples = [
        Event::CallStarted {
            from: "+1".into(),
            to: "+2".into(),
            carrier: "twilio".into(),
            carrier_call_id: "CA".into(),
            account_id: "AC".into(),
            caller: CallerInfo {
                caller_name: "DANA LOPEZ".into(),
                forwarded_from: "+15550009999".into(),
                direction: "inbound".into(),
                parent_call_id: "CA1".into(),
            },
        },
        Event::TurnUser(UserTurn { turn: 1, start_ms: 1, end_ms: 2, transcript: Some("hi".into()) }),
        Event::TurnAgent(AgentTurn {
            turn: 2,
            response_id: 1,
            start_ms: 3,
            end_ms: 4,
            text: None,
            sent_ms: 1,
            heard_ms: 1,
            heard_text: None,
            interrupted: false,
        }),
        Event::BargeIn { at_ms: 1, response_id: 1, heard_ms: 1, latency_ms: 1 },
        Event::Dtmf { digit: "1".into(), at_ms: 1 },
        Event::ToolCall { tool_call_id: "t".into(), name: "n".into(), arguments: json!({}) },
        Event::Error { source: "engine".into(), code: "response_failed".into(), message: "m".into() },
        Event::TransferCompleted { to: "+15557654321".into(), status: "completed".into() },
        Event::TransferFailed { to: "+15557654321".into(), status: "busy".into() },
        Event::CallStatus { status: "answered".into(), at_ms: 0 },
        Event::SpeechStarted { who: "caller".into(), at_ms: 1 },
        Event::SpeechStopped { who: "agent".into(), at_ms: 2 },
        Event::TranscriptPartial { text: "my sink".into(), at_ms: 3 },
        Event::CarrierRecording {
            carrier: "telnyx".into(),
            carrier_call_id: "v3:x".into(),
            urls: [("wav".to_string(), "https://example.com/r.wav".to_string())].into(),
            public_urls: Default::default(),
            channels: "single".into(),
            started_at: "2026-12-02T06:00:00Z".into(),
            ended_at: "2026-12-02T06:01:00Z".into(),
        },
        Event::CallEnded(CallSummary {
            latencies: vec![TurnLatency { turn: 1, ..Default::default() }],
            reason: "hangup".into(),
            direction: "outbound".into(),
            answered_by: "human".into(),
            ..Default::default()
        }),
    ];
    let reasons = schema["$defs"]["call.ended"]["properties"]["reason"]["enum"].as_array().unwrap();
    for r in ["busy", "no_answer", "failed", "canceled", "machine", "missed", "agent_hangup", "rejected"] {
        assert!(reasons.iter().any(|x| x == r), "call.ended reason {r} is in the schema");
    }
    let listed: Vec<&str> = schema["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["$ref"].as_str().unwrap().trim_start_matches("#/$defs/"))
        .collect();
    for ev in samples {
        let kind = ev.kind();
        assert!(listed.contains(&kind), "{kind} listed in oneOf");
        let v = serde_json::to_value(Envelope::new("call_1", 1, std::time::SystemTime::now(), ev)).unwrap();
        let def = &schema["$defs"][kind];
        let props = def["properties"].as_object().unwrap_or_else(|| panic!("{kind} defined"));
        for key in v.as_object().unwrap().keys() {
            assert!(props.contains_key(key), "{kind}.{key} is in the schema");
        }
        for req in def["required"].as_array().unwrap() {
            assert!(v.get(req.as_str().unwrap()).is_some(), "{kind} always sends {req}");
        }
        assert_eq!(props["type"]["const"], kind);
    }
    srv.shutdown().await;
}
