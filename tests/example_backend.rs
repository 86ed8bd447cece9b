//! The example Python backend (`examples/receptionist/`) against a real
//! callbridge on 127.0.0.1: signature self-test, a call that uses its plan,
//! events it stores, a transfer it requests when the caller presses 0, and a
//! missed caller it calls back.
//! Needs `python3` (CI installs it). The child process is killed on every path.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use callbridge::config::Config;
use common::backend::FakeBackend;
use common::calls::*;
use common::net::*;

const SCRIPT: &str = "examples/receptionist/receptionist.py";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the example on `port` with `args`, once it says it is listening
/// (its log is drained so it never blocks on a full pipe).
fn receptionist(port: u16, db: &std::path::Path, args: &[&str]) -> Kill {
    let mut child = Kill(
        Command::new("python3")
            .args([SCRIPT, "--port", &port.to_string(), "--db", db.to_str().unwrap()])
            .args(args)
            .env("RECEPTIONIST_SECRET", SECRET_A)
            .env("CALLBRIDGE_API_TOKEN", "tenant-a-token")
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is installed"),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "backend started: {line}");
    std::thread::spawn(move || for _ in stderr.lines() {});
    child
}

/// A validating server config whose number A calls back the example on a
/// free port, with `extra` laid over it; the port, a scratch folder and the
/// example's database path in it.
fn example_config(extra: &str) -> (u16, std::path::PathBuf, std::path::PathBuf, Config) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("cb-example-{}", callbridge::signature::random_hex()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("receptionist.db");
    let toml = format!(
        r#"
[server]
public_url = "{PUBLIC}"
validate_twilio_signatures = true
[storage]
database = ""
[recording]
dir = "{rec}"
[[numbers]]
number = "{NUMBER_A}"
callback_url = "http://127.0.0.1:{port}/"
secret = "{SECRET_A}"
api_token = "tenant-a-token"
"#,
        rec = dir.join("recordings").display()
    );
    let mut cfg = Config::from_toml(&merge_toml(&toml, extra), "t").unwrap();
    cfg.server.shutdown_grace_ms = 300;
    (port, dir, db, cfg)
}

#[test]
fn the_example_verifies_the_documented_signature_vector() {
    let out = Command::new("python3").args([SCRIPT, "--self-test"]).output().expect("python3 is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "self-test ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_receptionist_plans_stores_and_transfers() {
    let twilio = FakeBackend::start().await;
    let twilio_base = format!("[engine.local]\ngreeting_wav = \"\"\n[twilio]\napi_base_url = \"{}\"\n", twilio.base());
    let (port, dir, db, cfg) = example_config(&twilio_base);
    let srv = TestServer::start_with(cfg, secrets()).await;

    let callbridge = format!("http://{}", srv.addr);
    let child = receptionist(port, &db, &["--callbridge", &callbridge, "--on-call", "+15550009999"]);

    let mut tw = call(&srv, 1, NUMBER_A).await;
    let got = talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 60).await;
    assert!(media_count(&got) > 5, "answered");
    let zero = tw.peer.dtmf('0');
    tw.send(zero).await;

    // The example transfers through our control API → Twilio REST.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while twilio.twilio_updates().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no transfer requested");
        let _ = talk(&mut tw, &[], 5).await;
    }
    let (_, sid, form) = &twilio.twilio_updates()[0];
    assert_eq!(sid, &tw.peer.call_sid);
    assert!(form["Twiml"].contains(r#" method="POST">+15550009999</Dial>"#), "{}", form["Twiml"]);
    let stop = tw.peer.stop();
    tw.send(stop).await;
    srv.wait_no_calls().await;
    // The transferred leg ends: Twilio reports it to the <Dial action>.
    let twiml = &form["Twiml"];
    let at = twiml.find("action=\"").unwrap() + 8;
    let action = twiml[at..at + twiml[at..].find('"').unwrap()].replace("&amp;", "&");
    let outcome: Vec<(String, String)> = [("CallSid", tw.peer.call_sid.as_str()), ("DialCallStatus", "completed")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sig = callbridge::carrier::twilio::signature::compute(AUTH_TOKEN, &action, &outcome);
    let r = reqwest::Client::new()
        .post(format!("http://{}{}", srv.addr, action.trim_start_matches("https://cb.example.com")))
        .header("X-Twilio-Signature", sig)
        .form(&outcome)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // What it stored: the conversation, in order, ending as transferred.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut st = conn.prepare("SELECT type, body FROM events ORDER BY rowid").unwrap();
        let rows: Vec<(String, String)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        if rows.iter().any(|(t, _)| t == "call.ended") || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kinds: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"turn.user"), "{kinds:?}");
    assert!(kinds.contains(&"dtmf"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"call.ended"), "{kinds:?}");
    let ended: serde_json::Value = serde_json::from_str(&rows.last().unwrap().1).unwrap();
    assert_eq!(ended["reason"], "transferred");
    // The plan's 600 ms endpointing was applied.
    let latency = ended["latencies"][0]["response_latency_ms"].as_u64().unwrap();
    assert!((580..800).contains(&latency), "plan applied (600 ms, not the default 500): latency {latency} ms");
    srv.shutdown().await;
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_as_the_brain_takes_a_booking_over_the_cascaded_engine() {
    use callbridge_testkit::fake_deepgram::{FakeDeepgram, FakeDeepgramConfig};
    use callbridge_testkit::fake_elevenlabs::{FakeElevenLabs, FakeElevenLabsConfig};
    let said = ["My kitchen sink is leaking.", "Dana Lopez.", "42 Maple Street.", "Tomorrow morning."];
    let dg =
        FakeDeepgram::start(FakeDeepgramConfig { script: said.map(String::from).to_vec(), drop_after_bytes: None })
            .await
            .unwrap();
    let el = FakeElevenLabs::start(FakeElevenLabsConfig { ms_per_char: 20, ..Default::default() }).await.unwrap();
    let (port, dir, db, cfg) = example_config("");
    let mut keys = secrets();
    keys.cascaded = callbridge::engine::cascaded::CascadedEnv {
        deepgram_key: Some("dg".into()),
        deepgram_url: Some(dg.url()),
        elevenlabs_key: Some("el".into()),
        elevenlabs_url: Some(el.url()),
    };
    let srv = TestServer::start_with(cfg, keys).await;
    let child = receptionist(port, &db, &["--cascaded"]);

    let mut tw = call(&srv, 1, NUMBER_A).await;
    until_quiet(&mut tw, Duration::from_secs(10)).await; // the greeting
    let speech = ulaw_fixture("caller_short_8k.wav");
    for _ in 0..3 {
        talk(&mut tw, &speech, 0).await;
        until_quiet(&mut tw, Duration::from_secs(10)).await;
    }
    talk(&mut tw, &speech, 0).await;
    // The read-back, then the script hangs up.
    let closed = tw.closed(Duration::from_secs(15)).await;
    assert!(closed.is_some(), "the backend's hangup action ended the call");
    let spoken: String = el.received().iter().filter_map(|m| m["text"].as_str()).collect();
    assert!(spoken.contains("What seems to be the problem?"), "{spoken}");
    assert!(spoken.contains("Thanks, Dana Lopez. What is the address?"), "{spoken}");
    assert!(spoken.contains("Dana Lopez, a plumber will come to 42 Maple Street Tomorrow morning."), "{spoken}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let booked: (String, String, String) = conn
        .query_row("SELECT name, address, problem FROM bookings", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!(booked, ("Dana Lopez".into(), "42 Maple Street".into(), "My kitchen sink is leaking".into()));
    srv.shutdown().await;
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_calls_back_a_missed_caller() {
    let twilio = FakeBackend::start().await;
    let twilio_base = format!("[twilio]\napi_base_url = \"{}\"\n", twilio.base());
    let (port, dir, db, cfg) = example_config(&twilio_base);
    let mut secrets = secrets();
    secrets.twilio_account_sid = Some("AC0123456789abcdef0123456789abcdef".into());
    let srv = TestServer::start_with(cfg, secrets).await;
    let callbridge = format!("http://{}", srv.addr);
    let child = receptionist(port, &db, &["--callbridge", &callbridge, "--call-back-missed"]);

    // A caller rings and hangs up before the stream connects: Twilio says the stream stopped.
    let peer = callbridge_testkit::twilio_peer::TwilioPeer::new(7);
    let params: Vec<(String, String)> = [
        ("AccountSid", peer.account_sid.as_str()),
        ("CallSid", peer.call_sid.as_str()),
        ("From", "+15557770000"),
        ("To", NUMBER_A),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (st, _) = webhook(&srv, &params, None).await;
    assert_eq!(st, 200);
    let stopped = [("CallSid", peer.call_sid.as_str()), ("StreamEvent", "stream-stopped")];
    assert_eq!(twilio_post(&srv, "/twilio/stream-status", &stopped).await.0, 204);

    // The example hears `missed` and calls the caller back from the number.
    let (_, form, _) = twilio.wait_twilio_create(Duration::from_secs(10)).await;
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    assert_eq!((get("To"), get("From"), get("MachineDetection")), ("+15557770000", NUMBER_A, "DetectMessageEnd"));
    srv.shutdown().await;
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}
