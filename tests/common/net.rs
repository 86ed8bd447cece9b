//! Real-socket helpers: a server on 127.0.0.1 port 0 and a fake Twilio client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callbridge::api::AppState;
use callbridge::audio::g711;
use callbridge::config::Config;
use callbridge_testkit::twilio_peer::{ServerMessage, TwilioPeer};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<Result<(), callbridge::server::ServerError>>>,
}

impl TestServer {
    pub async fn start(extra_toml: &str) -> Self {
        let mut cfg = Config::from_toml(extra_toml, "test").expect("test config");
        // Tests end with calls still up; hang them up quickly on shutdown.
        cfg.server.shutdown_grace_ms = 300;
        // No database file unless a test asks for one.
        if !extra_toml.contains("database") {
            cfg.storage.database = String::new();
        }
        Self::start_with(cfg, callbridge::config::Secrets::default()).await
    }

    /// Tests' backends and fakes live on loopback: allow it (unless the test set the list).
    pub async fn start_with(mut cfg: Config, secrets: callbridge::config::Secrets) -> Self {
        if cfg.callbacks.allow_private_networks.is_empty() {
            cfg.callbacks.allow_private_networks = vec!["127.0.0.0/8".into()];
        }
        Self::start_strict(cfg, secrets).await
    }

    /// Exactly `cfg` (tenant URLs on loopback refused unless it allows them).
    pub async fn start_strict(cfg: Config, secrets: callbridge::config::Secrets) -> Self {
        let (running, stop, join) =
            callbridge::server::spawn_with(cfg, secrets, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        Self { addr: running.addr, state: running.state, stop: Some(stop), join: Some(join) }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/twilio/stream", self.addr)
    }

    /// Sum of a metric's samples whose label set contains every `labels` pair.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.state.metrics.render();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.join.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), j).await;
        }
    }

    /// Wait (bounded) until no call is live.
    pub async fn wait_no_calls(&self) {
        let r = self.state.call.registry.clone();
        tokio::time::timeout(Duration::from_secs(5), r.wait_empty()).await.expect("calls ended");
    }
}

/// Load a WAV fixture as µ-law bytes.
pub fn ulaw_fixture(name: &str) -> Vec<u8> {
    let (rate, pcm) =
        callbridge::audio::wav::read_wav_mono_i16(&std::fs::read(format!("fixtures/audio/{name}")).unwrap()).unwrap();
    assert_eq!(rate, 8000);
    let mut out = vec![0u8; pcm.len()];
    g711::ulaw_encode(&pcm, &mut out);
    out
}

/// What the fake Twilio received, with arrival times.
#[derive(Debug)]
pub enum Rx {
    Msg(Instant, ServerMessage),
    Bad(String),
    Closed(Option<(u16, String)>),
}

/// A fake Twilio client: a writer half and a reader task reporting messages.
pub struct FakeTwilio {
    pub peer: TwilioPeer,
    pub tx: SplitSink<Ws, Message>,
    pub rx: mpsc::UnboundedReceiver<Rx>,
    pub ts: u64,
    reader: tokio::task::JoinHandle<()>,
}

impl FakeTwilio {
    pub async fn connect(url: &str, n: u64) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        Self::from_ws(ws, n)
    }

    /// Connect with an `X-Twilio-Signature` header (or none), as Twilio does.
    pub async fn connect_signed(
        url: &str,
        n: u64,
        signature: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request()?;
        if let Some(sig) = signature {
            req.headers_mut().insert("X-Twilio-Signature", sig.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Self::from_ws(ws, n))
    }

    /// `connected` + `start` with these custom parameters.
    pub async fn start_with(&mut self, params: &[(&str, &str)]) {
        let c = self.peer.connected();
        self.send(c).await;
        let s = self.peer.start(params);
        self.send(s).await;
    }

    pub fn from_ws(ws: Ws, n: u64) -> Self {
        let (tx, stream) = ws.split();
        let peer = TwilioPeer::new(n);
        let (etx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(stream, peer.clone(), etx));
        Self { peer, tx, rx, ts: 0, reader }
    }

    /// Drop the TCP connection without any WebSocket close (a vanished peer).
    pub async fn vanish(self) {
        self.reader.abort();
        let _ = self.reader.await;
        drop(self.tx);
    }

    pub async fn send(&mut self, text: String) {
        self.tx.send(Message::text(text)).await.expect("send");
    }

    pub async fn start(&mut self) {
        let c = self.peer.connected();
        self.send(c).await;
        let s = self.peer.start(&[("tenant", "test")]);
        self.send(s).await;
    }

    pub async fn frame(&mut self, ulaw: &[u8]) {
        let m = self.peer.media(ulaw, self.ts);
        self.ts += 20;
        self.send(m).await;
    }

    /// Next received event within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Rx> {
        tokio::time::timeout(within, self.rx.recv()).await.ok().flatten()
    }

    /// Wait for the socket to close; returns the close frame.
    pub async fn closed(&mut self, within: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Rx::Closed(c))) => return c,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => panic!("socket did not close within {within:?}"),
            }
        }
    }
}

async fn read_loop(mut stream: SplitStream<Ws>, peer: TwilioPeer, tx: mpsc::UnboundedSender<Rx>) {
    while let Some(m) = stream.next().await {
        match m {
            Ok(Message::Text(t)) => {
                let ev = match peer.parse(t.as_str()) {
                    Ok(msg) => Rx::Msg(Instant::now(), msg),
                    Err(e) => Rx::Bad(e.to_string()),
                };
                let _ = tx.send(ev);
            }
            Ok(Message::Close(c)) => {
                let _ = tx.send(Rx::Closed(c.map(|c| (u16::from(c.code), c.reason.to_string()))));
                return;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Rx::Closed(None));
}

/// Whether a µ-law frame carries sound (not silence).
pub fn is_loud(ulaw: &[u8]) -> bool {
    let mut pcm = vec![0i16; ulaw.len()];
    g711::ulaw_decode(ulaw, &mut pcm);
    callbridge::audio::vad::EnergyGate::level_dbfs(&pcm) > -45.0
}

/// The first live call the tenant with `token` sees, waiting up to 3 s for it:
/// its id and its listing.
pub async fn first_live_call(addr: SocketAddr, token: &str) -> (String, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let calls: serde_json::Value = reqwest::Client::new()
            .get(format!("http://{addr}/v1/calls"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = calls["calls"][0]["call_id"].as_str() {
            return (id.to_string(), calls["calls"][0].clone());
        }
        assert!(Instant::now() < deadline, "no live call listed: {calls}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /v1/calls/{id}/{action}` with the tenant's token (and a JSON body); the status.
pub async fn call_action(
    addr: SocketAddr,
    token: &str,
    id: &str,
    action: &str,
    body: Option<serde_json::Value>,
) -> u16 {
    let mut req = reqwest::Client::new().post(format!("http://{addr}/v1/calls/{id}/{action}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}
