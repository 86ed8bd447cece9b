//! Outbound calls (`POST /v1/calls`) end to end on loopback: callbridge, a
//! fake Twilio REST "create call" and a fake tenant backend
//! (tests/common/backend.rs), and this test playing Twilio's side — the
//! signed answer webhook, the media stream, the status callback. Answered,
//! busy, not answered, a machine, limits and refusals. Every wait is bounded.

mod common;

use std::time::Duration;

use callbridge::config::Secrets;
use common::backend::{FakeBackend, Mode, Received};
use common::calls::*;
use common::net::*;
use serde_json::{Value, json};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CALLEE: &str = "+15557654321";

fn outbound_secrets() -> Secrets {
    Secrets { twilio_account_sid: Some(ACCOUNT.into()), ..secrets() }
}

async fn outbound_server(backend: &FakeBackend, extra: &str) -> TestServer {
    server_with(backend, extra, outbound_secrets()).await
}

/// `POST /v1/calls` with tenant A's token.
async fn place(srv: &TestServer, body: Value) -> (u16, Value) {
    place_as(srv, "tenant-a-token", body).await
}

async fn place_as(srv: &TestServer, token: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/calls", srv.addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn form_values<'a>(form: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    form.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
}

fn form_value<'a>(form: &'a [(String, String)], key: &str) -> &'a str {
    form_values(form, key).first().copied().unwrap_or("")
}

/// The path and query of a URL on our public base.
fn local_path(url: &str) -> &str {
    url.strip_prefix("https://cb.example.com").expect("our public base")
}

fn ended(events: &[Received]) -> Vec<&Value> {
    events.iter().filter(|e| e.kind() == "call.ended").map(|e| &e.body).collect()
}

/// Wait until `call.ended` arrived, then check it is the only one and the last.
async fn the_one_end(backend: &FakeBackend) -> Value {
    let events = backend.wait_for("call.ended", Duration::from_secs(5)).await;
    verify_all(&events, SECRET_A);
    let ends = ended(&events);
    assert_eq!(ends.len(), 1, "exactly one call.ended");
    assert_eq!(events.last().unwrap().kind(), "call.ended", "call.ended comes last");
    ends[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_outbound_call_runs_like_an_inbound_one() {
    let backend = FakeBackend::start().await;
    backend.set("call.started", Mode::Json(json!({"events": ["call.status"]})));
    let srv = outbound_server(&backend, "").await;
    let (st, placed) = place(&srv, json!({"to": CALLEE, "machine_detection": "hangup"})).await;
    assert_eq!(st, 202, "{placed}");
    let call_id = placed["call_id"].as_str().unwrap().to_string();
    assert_eq!(placed["status"], "dialing");

    // What Twilio was asked to do.
    let creates = backend.twilio_creates();
    assert_eq!(creates.len(), 1);
    let (account, form, sid) = &creates[0];
    assert_eq!(account, ACCOUNT);
    assert_eq!(placed["carrier_call_id"], sid.as_str());
    assert_eq!((form_value(form, "To"), form_value(form, "From")), (CALLEE, NUMBER_A));
    assert_eq!(form_value(form, "Url"), format!("https://cb.example.com/twilio/outbound?call={call_id}"));
    assert_eq!(
        form_value(form, "StatusCallback"),
        format!("https://cb.example.com/twilio/outbound-status?call={call_id}")
    );
    assert_eq!(form_values(form, "StatusCallbackEvent"), ["completed"]);
    assert_eq!((form_value(form, "MachineDetection"), form_value(form, "Timeout")), ("Enable", "30"));
    assert!(form_value(form, "_authorization").starts_with("Basic "), "HTTP Basic with the account's credentials");

    // The backend heard of the call before it rang, as outbound.
    let started = backend.wait_for("call.started", Duration::from_secs(2)).await;
    let cs = &started[0].body;
    assert_eq!((cs["call_id"].as_str(), cs["direction"].as_str()), (Some(call_id.as_str()), Some("outbound")));
    assert_eq!((cs["from"].as_str(), cs["to"].as_str()), (Some(NUMBER_A), Some(CALLEE)));

    // Listed while it rings.
    let list: Value = reqwest::Client::new()
        .get(format!("http://{}/v1/calls", srv.addr))
        .bearer_auth("tenant-a-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["calls"][0]["state"], "dialing", "{list}");

    // The callee answers: Twilio asks for TwiML, then opens the stream.
    let answer = local_path(form_value(form, "Url")).to_string();
    let answer_params = [
        ("AccountSid", ACCOUNT),
        ("CallSid", sid.as_str()),
        ("From", NUMBER_A),
        ("To", CALLEE),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-api"),
        ("AnsweredBy", "human"),
    ];
    // Another call's sid on this call's answer URL gets nothing.
    let wrong = [("CallSid", "CA99999999999999999999999999999999"), ("AnsweredBy", "human")];
    let (_, twiml) = twilio_post(&srv, &answer, &wrong).await;
    assert!(twiml.contains("<Hangup/>") && !twiml.contains("cb_token"), "{twiml}");
    let (st, twiml) = twilio_post(&srv, &answer, &answer_params).await;
    assert_eq!(st, 200);
    assert!(twiml.contains("<Connect><Stream"), "{twiml}");
    let token = token_of(&twiml);
    let mut tw = FakeTwilio::connect_signed(&srv.url(), 1, Some(&stream_signature())).await.expect("upgrade");
    tw.peer.call_sid = sid.clone();
    tw.peer.account_sid = ACCOUNT.into();
    tw.start_with(&[("from", NUMBER_A), ("to", CALLEE), ("cb_token", &token)]).await;
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    assert!(media_count(&got) > 5, "the agent answered the callee");
    until_quiet(&mut tw, Duration::from_secs(10)).await;
    let stop = tw.peer.stop();
    tw.send(stop).await;
    // Twilio's status callback after the answered call ended changes nothing.
    let status = local_path(form_value(form, "StatusCallback")).to_string();
    let (st, _) = twilio_post(&srv, &status, &[("CallSid", sid), ("CallStatus", "completed")]).await;
    assert_eq!(st, 204);

    let end = the_one_end(&backend).await;
    assert_eq!(end["reason"], "caller_hangup", "{end}");
    assert_eq!((end["direction"].as_str(), end["answered_by"].as_str()), (Some("outbound"), Some("human")));
    assert_eq!(end["carrier_call_id"], sid.as_str());
    assert!(end["user_turns"].as_u64().unwrap() >= 1);
    let events = backend.received();
    let mut by_seq: Vec<&Received> = events.iter().collect();
    by_seq.sort_by_key(|e| e.body["seq"].as_u64());
    let statuses: Vec<&str> =
        by_seq.iter().filter(|e| e.kind() == "call.status").map(|e| e.body["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.first(), Some(&"ringing"), "ringing while it rang: {statuses:?}");
    assert!(statuses.contains(&"answered") && statuses.last() == Some(&"ended"), "{statuses:?}");
    assert_eq!(by_seq[1].kind(), "call.status", "ringing right after call.started");
    assert_eq!(by_seq[by_seq.len() - 2].body["status"], "ended", "ended right before call.ended");
    assert!(events.iter().any(|e| e.kind() == "turn.user"), "the conversation is reported as for an inbound call");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_not_answered_and_failed_calls_are_reported_once() {
    let backend = FakeBackend::start().await;
    let srv = outbound_server(&backend, "").await;
    for (n, (twilio_status, reason)) in
        [("busy", "busy"), ("no-answer", "no_answer"), ("failed", "failed"), ("canceled", "canceled")]
            .into_iter()
            .enumerate()
    {
        let (st, placed) = place(&srv, json!({"to": CALLEE, "ring_timeout_s": 20})).await;
        assert_eq!(st, 202, "{placed}");
        let call_id = placed["call_id"].as_str().unwrap();
        let creates = backend.twilio_creates();
        let (_, form, sid) = &creates[n];
        assert_eq!(form_value(form, "Timeout"), "20");
        assert!(form_values(form, "MachineDetection").is_empty(), "no detection unless asked");
        let status = local_path(form_value(form, "StatusCallback")).to_string();
        // A status naming another call is ignored; this call's is reported, once.
        let (st, _) = twilio_post(
            &srv,
            &status,
            &[("CallSid", "CA00000000000000000000000000000001"), ("CallStatus", twilio_status)],
        )
        .await;
        assert_eq!(st, 204);
        for _ in 0..2 {
            let (st, _) = twilio_post(&srv, &status, &[("CallSid", sid), ("CallStatus", twilio_status)]).await;
            assert_eq!(st, 204);
        }
        let events = backend
            .wait_received(Duration::from_secs(5), |r| {
                r.iter().any(|e| e.kind() == "call.ended" && e.body["call_id"] == call_id)
            })
            .await;
        let mine: Vec<_> = events.iter().filter(|e| e.body["call_id"] == call_id).collect();
        let kinds: Vec<_> = mine.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, ["call.started", "call.ended"], "{twilio_status}");
        let end = &mine[1].body;
        assert_eq!((end["reason"].as_str(), end["direction"].as_str()), (Some(reason), Some("outbound")));
        // The answer webhook of a call already over finds nothing to connect.
        let answer = local_path(form_value(form, "Url")).to_string();
        let (_, twiml) = twilio_post(&srv, &answer, &[("CallSid", sid), ("AnsweredBy", "human")]).await;
        assert!(twiml.contains("<Hangup/>"), "{twiml}");
    }
    assert_eq!(srv.metric("callbridge_outbound_calls_total", &[("outcome", "busy")]), 1.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_is_hung_up_on_or_left_a_message_as_asked() {
    let backend = FakeBackend::start().await;
    let srv = outbound_server(&backend, "").await;
    // hangup: a machine answering ends the call without any stream.
    let (st, placed) = place(&srv, json!({"to": CALLEE, "machine_detection": "hangup"})).await;
    assert_eq!(st, 202);
    let (_, form, sid) = backend.twilio_creates()[0].clone();
    let answer = local_path(form_value(&form, "Url")).to_string();
    let (_, twiml) = twilio_post(&srv, &answer, &[("CallSid", &sid), ("AnsweredBy", "machine_start")]).await;
    assert!(twiml.contains("<Hangup/>") && !twiml.contains("<Stream"), "{twiml}");
    let end = the_one_end(&backend).await;
    assert_eq!(end["call_id"], placed["call_id"]);
    assert_eq!((end["reason"].as_str(), end["answered_by"].as_str()), (Some("machine"), Some("machine")));

    // leave_message: Twilio waits for the beep, and the agent then speaks.
    let (st, _) = place(&srv, json!({"to": CALLEE, "machine_detection": "leave_message"})).await;
    assert_eq!(st, 202);
    let (_, form, sid) = backend.twilio_creates()[1].clone();
    assert_eq!(form_value(&form, "MachineDetection"), "DetectMessageEnd");
    let answer = local_path(form_value(&form, "Url")).to_string();
    let (_, twiml) = twilio_post(&srv, &answer, &[("CallSid", &sid), ("AnsweredBy", "machine_end_beep")]).await;
    assert!(twiml.contains("<Connect><Stream"), "the message is left: {twiml}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_are_limited_per_tenant_and_refused_where_not_allowed() {
    let backend = FakeBackend::start().await;
    let srv = outbound_server(&backend, "[limits]\nmax_outbound_calls_per_tenant = 1\n").await;
    // Refusals before anything is dialled.
    let (st, e) = place_as(&srv, "nope", json!({"to": CALLEE})).await;
    assert_eq!((st, e["error"].as_str()), (401, Some("unauthorized")));
    let (st, e) = place(&srv, json!({"to": CALLEE, "from": NUMBER_B})).await;
    assert_eq!((st, e["error"].as_str()), (403, Some("from_not_owned")), "only from the token's own number");
    let (st, e) = place(&srv, json!({"to": "+449005550000"})).await;
    assert_eq!((st, e["error"].as_str()), (403, Some("destination_not_allowed")), "outside transfer_allow");
    let (st, e) = place(&srv, json!({"to": "not a number"})).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid")));
    let (st, e) = place(&srv, json!({"to": CALLEE, "ring_timeout_s": 1000})).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid")));
    let (st, e) = place(&srv, json!({"to": CALLEE, "machine_detection": "maybe"})).await;
    assert_eq!(st, 400, "{e}");
    assert!(backend.twilio_creates().is_empty(), "nothing was dialled");
    assert!(backend.received().is_empty(), "the backend heard of no call");

    // One at a time: the second waits until the first is over.
    let (st, _) = place(&srv, json!({"to": CALLEE})).await;
    assert_eq!(st, 202);
    let (st, e) = place(&srv, json!({"to": CALLEE})).await;
    assert_eq!((st, e["error"].as_str()), (429, Some("outbound_limit")));
    let (_, form, sid) = backend.twilio_creates()[0].clone();
    let status = local_path(form_value(&form, "StatusCallback")).to_string();
    twilio_post(&srv, &status, &[("CallSid", &sid), ("CallStatus", "no-answer")]).await;
    let (st, placed) = place(&srv, json!({"to": CALLEE})).await;
    assert_eq!(st, 202, "the slot came back: {placed}");

    // The carrier refusing the call: 502, and the backend hears it failed.
    backend.set_twilio_create_status(400);
    let before = ended(&backend.received()).len();
    srv.shutdown().await;
    let srv = outbound_server(&backend, "").await;
    let (st, e) = place(&srv, json!({"to": CALLEE})).await;
    assert_eq!((st, e["error"].as_str()), (502, Some("carrier_error")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("not a valid phone number"), "the carrier's reason: {e}");
    let events =
        backend.wait_received(Duration::from_secs(5), |r| ended(r).iter().any(|e| e["reason"] == "failed")).await;
    assert!(ended(&events).len() > before);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_in_the_request_wins_and_a_rejecting_backend_stops_the_call() {
    let backend = FakeBackend::start().await;
    backend.set("call.started", Mode::Json(json!({"reject": {"reason": "busy"}})));
    let srv = outbound_server(&backend, "").await;
    // The backend's plan rejects: nothing is dialled, the call is over.
    let (st, e) = place(&srv, json!({"to": CALLEE})).await;
    assert_eq!((st, e["error"].as_str()), (409, Some("rejected")));
    assert!(backend.twilio_creates().is_empty());
    let end = the_one_end(&backend).await;
    assert_eq!(end["reason"], "rejected");
    // With a plan in the request, the backend's reply does not decide.
    let (st, _) =
        place(&srv, json!({"to": CALLEE, "plan": {"greeting": "Hi, this is Ace Plumbing calling back."}})).await;
    assert_eq!(st, 202);
    assert_eq!(backend.twilio_creates().len(), 1);
    // Unsigned Twilio webhooks are refused.
    let (_, form, sid) = backend.twilio_creates()[0].clone();
    let answer = local_path(form_value(&form, "Url")).to_string();
    let r = reqwest::Client::new()
        .post(format!("http://{}{answer}", srv.addr))
        .form(&[("CallSid", sid.as_str()), ("AnsweredBy", "human")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    srv.shutdown().await;
}
