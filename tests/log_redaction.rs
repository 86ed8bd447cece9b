//! Phone numbers are PII: a call whose webhook and stream carry caller and
//! callee numbers leaves no trace of them in the logs, with callbridge's own
//! logging at its most verbose.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::net::*;
use tokio::time::interval;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_numbers_never_reach_the_logs() {
    let logs = Captured::default();
    let sink = logs.clone();
    // Our code at its most verbose; libraries at info (at trace, tungstenite
    // dumps whole frames — that is the operator's explicit choice).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,callbridge=trace"))
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();
    let srv = TestServer::start("").await;
    let (caller, callee) = ("+15551234567", "+15557654321");
    // The webhook carries the numbers...
    let body = "CallSid=CA123&From=%2B15551234567&To=%2B15557654321";
    let req = format!(
        "POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.unwrap().unwrap();
        assert!(out.contains(caller), "TwiML hands the number to the stream");
    }
    // ...and so does the stream's start, as custom parameters.
    let mut tw = FakeTwilio::connect(&srv.url(), 9).await;
    let c = tw.peer.connected();
    tw.send(c).await;
    let start = tw.peer.start(&[("from", caller), ("to", callee)]);
    tw.send(start).await;
    let speech = ulaw_fixture("caller_short_8k.wav");
    let mut tick = interval(Duration::from_millis(20));
    for f in speech.chunks_exact(160) {
        tick.tick().await;
        tw.frame(f).await;
    }
    let stop = tw.peer.stop();
    tw.send(stop).await;
    tw.closed(Duration::from_secs(3)).await;
    srv.shutdown().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("stream started"), "the call was logged at all:\n{text}");
    for n in [caller, callee, "15551234567", "15557654321"] {
        assert!(!text.contains(n), "{n} leaked into the logs:\n{text}");
    }
}
