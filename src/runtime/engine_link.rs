//! The socket to a network speech engine (OpenAI Realtime), owned by one small
//! task per call: it connects, sends the session configuration first on every
//! connection, forwards the call task's messages out and the engine's
//! messages in, and reconnects **once** if the socket drops mid-call.
//!
//! The call task never awaits this socket: it `try_send`s into a bounded lane
//! (a stalled engine costs dropped audio, counted, never a stalled call) and
//! receives [`LinkEvent`]s in its select loop. Dropping the [`EngineLink`]
//! closes the socket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, warn};

/// Where and how to connect.
#[derive(Clone)]
pub struct LinkConfig {
    /// Full WebSocket URL (with `?model=`).
    pub url: String,
    /// Bearer token.
    pub api_key: String,
    /// Send `OpenAI-Beta: realtime=v1`.
    pub beta: bool,
    /// Connect (TCP + TLS + upgrade) deadline.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig").field("url", &self.url).field("beta", &self.beta).finish()
    }
}

/// What the link reports to the call task.
#[derive(Debug)]
pub enum LinkEvent {
    /// A server message (JSON text).
    Text(String),
    /// The socket dropped and a new one is up (session config re-sent);
    /// responses in flight are lost.
    Reconnected,
    /// No engine: the first connection failed, or the one reconnect did.
    Failed(String),
}

/// The call task's end of the link.
#[derive(Debug)]
pub struct EngineLink {
    tx: mpsc::Sender<String>,
    /// Events from the engine.
    pub rx: mpsc::Receiver<LinkEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EngineLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a message could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The lane is full (the engine socket is stalled).
    Full,
    /// The link is gone.
    Closed,
}

impl EngineLink {
    /// Start connecting; `session_update` is sent first on every connection.
    pub fn spawn(cfg: LinkConfig, session_update: String, lane: usize) -> Self {
        let (tx, out_rx) = mpsc::channel(lane.max(8));
        let (ev_tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(run(cfg, session_update, out_rx, ev_tx));
        Self { tx, rx, task }
    }

    /// Queue a message for the engine (never waits).
    pub fn send(&self, msg: String) -> Result<(), SendError> {
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(cfg: &LinkConfig) -> Result<Ws, String> {
    let mut req = cfg.url.as_str().into_client_request().map_err(|e| format!("engine URL: {e}"))?;
    let h = req.headers_mut();
    h.insert("Authorization", format!("Bearer {}", cfg.api_key).parse().map_err(|_| "API key is not a valid header")?);
    if cfg.beta {
        h.insert("OpenAI-Beta", "realtime=v1".parse().expect("static header"));
    }
    // Small read/write buffers: tungstenite zero-fills its read buffer on every
    // read (PERFORMANCE.md), and the default is 128 KiB per socket.
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let fut = tokio_tungstenite::connect_async_with_config(req, Some(ws_cfg), true);
    match tokio::time::timeout(cfg.connect_timeout, fut).await {
        Err(_) => Err(format!("engine connect timed out after {:?}", cfg.connect_timeout)),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status();
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).chars().take(200).collect::<String>());
            Err(match status.as_u16() {
                401 | 403 => format!("engine refused the API key (HTTP {status})"),
                429 => format!("engine rate limit or quota (HTTP {status})"),
                _ => format!("engine answered HTTP {status}: {}", body.unwrap_or_default()),
            })
        }
        Ok(Err(e)) => Err(format!("engine connect failed: {e}")),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

/// How a connection ended.
enum Ended {
    /// The call dropped its sender: we are done.
    CallGone,
    /// The engine socket broke.
    Dropped(String),
}

async fn pump(ws: &mut Ws, out_rx: &mut mpsc::Receiver<String>, ev_tx: &mpsc::Sender<LinkEvent>) -> Ended {
    loop {
        tokio::select! {
            msg = out_rx.recv() => match msg {
                Some(m) => {
                    if let Err(e) = ws.send(Message::text(m)).await {
                        return Ended::Dropped(format!("engine write failed: {e}"));
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    return Ended::CallGone;
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if ev_tx.send(LinkEvent::Text(t.as_str().to_owned())).await.is_err() {
                        return Ended::CallGone;
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    return Ended::Dropped(format!("engine closed the socket ({})", c.map_or("no code".into(), |c| c.code.to_string())));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ended::Dropped(format!("engine socket error: {e}")),
                None => return Ended::Dropped("engine socket ended".into()),
            }
        }
    }
}

async fn run(
    cfg: LinkConfig,
    session_update: String,
    mut out_rx: mpsc::Receiver<String>,
    ev_tx: mpsc::Sender<LinkEvent>,
) {
    let mut reconnects_left = 1;
    let mut first = true;
    loop {
        let mut ws = match connect(&cfg).await {
            Ok(ws) => ws,
            Err(e) => {
                let _ = ev_tx.send(LinkEvent::Failed(e)).await;
                return;
            }
        };
        if ws.send(Message::text(session_update.clone())).await.is_err() {
            let _ = ev_tx.send(LinkEvent::Failed("engine closed before the session was configured".into())).await;
            return;
        }
        if !first {
            let _ = ev_tx.send(LinkEvent::Reconnected).await;
        }
        first = false;
        match pump(&mut ws, &mut out_rx, &ev_tx).await {
            Ended::CallGone => return,
            Ended::Dropped(why) if reconnects_left > 0 => {
                reconnects_left -= 1;
                warn!(reason = %why, "engine socket dropped mid-call; reconnecting once");
                // Messages queued for the dead session (audio of the lost turn) are stale.
                while out_rx.try_recv().is_ok() {}
            }
            Ended::Dropped(why) => {
                debug!(reason = %why, "engine socket dropped again");
                let _ = ev_tx.send(LinkEvent::Failed(why)).await;
                return;
            }
        }
    }
}
