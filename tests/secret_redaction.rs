//! Secrets never reach the logs: the real binary, at `RUST_LOG=trace`, with
//! secrets in its config file (numbers' signing secrets and API tokens) and in
//! its environment (admin token, Twilio auth token, OpenAI, Deepgram and ElevenLabs keys, Telnyx API
//! key, Vonage signature secret and private key), serving a number
//! registration and carriers' webhooks, then SIGTERM. Every log line is read; none
//! may contain any secret.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CFG_SECRET: &str = "whsec_CFG_9f8e7d6c5b4a39281706";
const CFG_TOKEN: &str = "tok_CFG_5e4d3c2b1a0f9e8d7c6b";
const ADMIN: &str = "admin_ENV_0a1b2c3d4e5f60718293";
const TWILIO: &str = "twauth_ENV_a9b8c7d6e5f4a3b2c1d0";
const OPENAI: &str = "sk-ENV_f0e1d2c3b4a5968778695a4b";
const API_SECRET: &str = "whsec_API_1122334455667788aabb";
const TELNYX: &str = "KEY_TELNYX_ENV_0f1e2d3c4b5a6978";
const VONAGE: &str = "vonsig_ENV_8a7b6c5d4e3f2a1b0c9d";
const DEEPGRAM: &str = "dg_ENV_7c6b5a4d3e2f1a0b9c8d";
const ELEVENLABS: &str = "xi_ENV_3e4d5c6b7a8f9e0d1c2b";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http(port: u16, req: &str) -> String {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn no_secret_from_config_or_environment_reaches_the_logs_at_any_level() {
    let dir = std::env::temp_dir().join(format!("cb-secrets-{}", callbridge::signature::random_hex()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let cfg = dir.join("cb.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[storage]
database = "{db}"
[recording]
dir = "{rec}"
[callbacks]
allow_private_networks = ["127.0.0.0/8"]
[[numbers]]
number = "+15550001111"
callback_url = "http://127.0.0.1:9/cb"
secret = "{CFG_SECRET}"
api_token = "{CFG_TOKEN}"
"#,
            db = dir.join("cb.db").display(),
            rec = dir.join("rec").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .args(["serve", "--config", cfg.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "trace")
        .env("CALLBRIDGE_ADMIN_TOKEN", ADMIN)
        .env("TWILIO_AUTH_TOKEN", TWILIO)
        .env("OPENAI_API_KEY", OPENAI)
        .env("DEEPGRAM_API_KEY", DEEPGRAM)
        .env("ELEVENLABS_API_KEY", ELEVENLABS)
        .env("TELNYX_API_KEY", TELNYX)
        .env("VONAGE_SIGNATURE_SECRET", VONAGE)
        .env("VONAGE_APPLICATION_ID", "app-0000")
        .env("VONAGE_PRIVATE_KEY_PATH", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vonage/test_private_key.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !http(port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 200") {
        assert!(t0.elapsed() < Duration::from_secs(20), "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A number registered over the API: its secret and the token it is given.
    let body = format!(r#"{{"number":"+15550002222","callback_url":"http://127.0.0.1:9/cb","secret":"{API_SECRET}"}}"#);
    let resp = http(
        port,
        &format!(
            "POST /v1/numbers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let token_at = resp.find("cbt_").expect("an API token is returned");
    let api_token = resp[token_at..token_at + 68].to_string();
    // The tenant uses its token; someone tries a wrong admin token.
    let resp = http(
        port,
        &format!("GET /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_token}\r\nConnection: close\r\n\r\n"),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    http(
        port,
        "GET /v1/numbers/+15550002222 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n",
    );
    // A webhook for the tenant's numbers (refused unsigned) and /metrics.
    let form = "CallSid=CA0123&From=%2B15557770000&To=%2B15550001111";
    http(
        port,
        &format!(
            "POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    let telnyx = r#"{"data":{"id":"e1","event_type":"call.initiated","payload":{"call_control_id":"v3:x","to":"+15550001111","from":"+15557770000","direction":"incoming"}}}"#;
    http(
        port,
        &format!(
            "POST /telnyx/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{telnyx}",
            telnyx.len()
        ),
    );
    http(
        port,
        "GET /vonage/answer?to=15550001111&from=1555&uuid=u-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a.b.c\r\nConnection: close\r\n\r\n",
    );
    http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut logs = String::new();
    child.stdout.take().unwrap().read_to_string(&mut logs).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(logs.contains("effective configuration"), "the config dump was logged:\n{logs}");
    assert!(logs.contains("<redacted>"), "secrets are shown as redacted");
    assert!(logs.lines().count() > 20, "trace logging is on ({} lines)", logs.lines().count());
    let pem = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vonage/test_private_key.pem"))
        .unwrap();
    let key_line = pem.lines().nth(3).unwrap();
    for secret in [
        CFG_SECRET,
        CFG_TOKEN,
        ADMIN,
        TWILIO,
        OPENAI,
        DEEPGRAM,
        ELEVENLABS,
        API_SECRET,
        TELNYX,
        VONAGE,
        key_line,
        api_token.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
    let _ = std::fs::remove_dir_all(dir);
}
