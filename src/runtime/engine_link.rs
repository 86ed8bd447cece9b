//! The sockets of network engines, one small task per link: connect with the
//! URL and headers the engine supplied ([`LinkSpec`]), send its hello first on
//! every connection, forward the call task's messages out and the engine's
//! messages in (text and binary alike), and reconnect as many times as the
//! spec allows if the socket drops mid-call. It knows no engine by name.
//!
//! The call task never awaits a link: it `try_send`s into a bounded lane (a
//! stalled engine costs dropped messages, counted, never a stalled call) and
//! receives [`LinkUpdate`]s in its select loop. Dropping the [`LinkLanes`]
//! closes every socket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, warn};

use crate::engine::{LinkEvent, LinkMsg, LinkSpec};

/// What a link reports to the call task (owned form of [`LinkEvent`]).
#[derive(Debug)]
pub enum LinkUpdate {
    /// Dropped; reconnecting.
    Lost,
    /// Connected; `reconnected` after a drop.
    Up {
        /// a reconnect
        reconnected: bool,
    },
    /// A text message.
    Text(tungstenite::Utf8Bytes),
    /// A binary message.
    Binary(bytes::Bytes),
    /// Gone for good.
    Down(String),
}

impl LinkUpdate {
    /// The borrowed form the engine takes.
    pub fn as_event(&self) -> LinkEvent<'_> {
        match self {
            LinkUpdate::Lost => LinkEvent::Lost,
            LinkUpdate::Up { reconnected } => LinkEvent::Up { reconnected: *reconnected },
            LinkUpdate::Text(t) => LinkEvent::Text(t.as_str()),
            LinkUpdate::Binary(b) => LinkEvent::Binary(b),
            LinkUpdate::Down(why) => LinkEvent::Down(why),
        }
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

/// The call task's sending end of its engine's links. Dropping it closes
/// every socket.
#[derive(Debug, Default)]
pub struct LinkLanes {
    lanes: Vec<(mpsc::Sender<Queued>, bool)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LinkLanes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl LinkLanes {
    /// Queue a message for link `link` (never waits).
    pub fn send(&self, link: usize, msg: LinkMsg) -> Result<(), SendError> {
        let (lane, time_text) = self.lanes.get(link).ok_or(SendError::Closed)?;
        // Text (control, JSON) is timed from here to the socket where the link
        // asks for it; audio frames never are.
        let at = (*time_text && matches!(msg, LinkMsg::Text(_))).then(tokio::time::Instant::now);
        lane.try_send((at, msg)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

/// An update from link `.0`, read off its socket at `.2`.
type Tagged = (usize, LinkUpdate, tokio::time::Instant);

/// The call task's receiving end: updates from every link, by index, with
/// when each was read (so provider timings exclude our own queueing).
#[derive(Debug)]
pub struct LinkEvents {
    rx: Option<mpsc::Receiver<Tagged>>,
}

impl LinkEvents {
    /// The next update from any link (never resolves when there are none).
    pub async fn next(&mut self) -> Option<Tagged> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// Start connecting every link in `specs` (none for engines without sockets).
pub fn spawn(specs: Vec<LinkSpec>) -> (LinkLanes, LinkEvents) {
    if specs.is_empty() {
        return (LinkLanes::default(), LinkEvents { rx: None });
    }
    let (ev_tx, rx) = mpsc::channel(256);
    let mut lanes = LinkLanes::default();
    for (i, spec) in specs.into_iter().enumerate() {
        let (tx, out_rx) = mpsc::channel(spec.max_queued.max(8));
        lanes.lanes.push((tx, spec.time_text));
        lanes.tasks.push(tokio::spawn(run(i, spec, out_rx, ev_tx.clone())));
    }
    (lanes, LinkEvents { rx: Some(rx) })
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a link could not connect (never carries a header value: they hold keys).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a WebSocket URL.
    #[error("{0}: bad URL: {1}")]
    Url(&'static str, String),
    /// A header the engine supplied is not valid HTTP.
    #[error("{0}: header {1} is not valid")]
    Header(&'static str, String),
    /// No connection within the deadline.
    #[error("{0} connect timed out after {1:?}")]
    Timeout(&'static str, Duration),
    /// 401/403 on the upgrade.
    #[error("{0} refused the API key (HTTP {1})")]
    Refused(&'static str, u16),
    /// 429 on the upgrade.
    #[error("{0} rate limit or quota (HTTP {1})")]
    Quota(&'static str, u16),
    /// Another HTTP status.
    #[error("{0} answered HTTP {1}: {2}")]
    Status(&'static str, u16, String),
    /// TCP, TLS or WebSocket failure.
    #[error("{0} connect failed: {1}")]
    Failed(&'static str, String),
}

async fn connect(spec: &LinkSpec) -> Result<Ws, ConnectError> {
    let n = spec.name;
    let mut req = spec.url.as_str().into_client_request().map_err(|e| ConnectError::Url(n, e.to_string()))?;
    for (k, v) in &spec.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| ConnectError::Header(n, k.clone()))?;
        let value = HeaderValue::from_str(v).map_err(|_| ConnectError::Header(n, k.clone()))?;
        req.headers_mut().insert(name, value);
    }
    // Small read/write buffers: tungstenite zero-fills its read buffer on every
    // read (PERFORMANCE.md), and the default is 128 KiB per socket.
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let fut = tokio_tungstenite::connect_async_with_config(req, Some(ws_cfg), true);
    match tokio::time::timeout(spec.connect_timeout, fut).await {
        Err(_) => Err(ConnectError::Timeout(n, spec.connect_timeout)),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).chars().take(200).collect::<String>());
            Err(match status {
                401 | 403 => ConnectError::Refused(n, status),
                429 => ConnectError::Quota(n, status),
                _ => ConnectError::Status(n, status, body.unwrap_or_default()),
            })
        }
        Ok(Err(e)) => Err(ConnectError::Failed(n, e.to_string())),
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

fn to_message(m: LinkMsg) -> Message {
    match m {
        LinkMsg::Text(t) => Message::text(t),
        LinkMsg::Binary(b) => Message::Binary(b),
    }
}

async fn pump(
    i: usize,
    name: &str,
    ws: &mut Ws,
    out_rx: &mut mpsc::Receiver<Queued>,
    send_delay: &metrics::Histogram,
    ev_tx: &mpsc::Sender<Tagged>,
) -> Ended {
    loop {
        tokio::select! {
            msg = out_rx.recv() => match msg {
                Some((at, m)) => {
                    if let Err(e) = ws.send(to_message(m)).await {
                        return Ended::Dropped(format!("{name} write failed: {e}"));
                    }
                    if let Some(at) = at {
                        crate::metrics::observe(send_delay, at.elapsed());
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    return Ended::CallGone;
                }
            },
            msg = ws.next() => {
                let read_at = tokio::time::Instant::now();
                let update = match msg {
                    Some(Ok(Message::Text(t))) => LinkUpdate::Text(t),
                    Some(Ok(Message::Binary(b))) => LinkUpdate::Binary(b),
                    Some(Ok(Message::Close(c))) => {
                        let code = c.map_or("no code".into(), |c| c.code.to_string());
                        return Ended::Dropped(format!("{name} closed the socket ({code})"));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Ended::Dropped(format!("{name} socket error: {e}")),
                    None => return Ended::Dropped(format!("{name} socket ended")),
                };
                if ev_tx.send((i, update, read_at)).await.is_err() {
                    return Ended::CallGone;
                }
            }
        }
    }
}

/// A message for a link, with when it was queued (text only).
type Queued = (Option<tokio::time::Instant>, LinkMsg);

async fn run(i: usize, spec: LinkSpec, mut out_rx: mpsc::Receiver<Queued>, ev_tx: mpsc::Sender<Tagged>) {
    let send_delay = metrics::histogram!(crate::metrics::LINK_SEND_DELAY, "engine" => spec.name);
    let mut reconnects_left = spec.reconnects;
    let mut first = true;
    loop {
        let mut ws = match connect(&spec).await {
            Ok(ws) => ws,
            Err(e) => {
                let _ = ev_tx.send((i, LinkUpdate::Down(e.to_string()), tokio::time::Instant::now())).await;
                return;
            }
        };
        if !first {
            // Messages queued while the socket was down belong to the lost
            // session (the engine was told with `Lost` and resends what it must).
            while out_rx.try_recv().is_ok() {}
        }
        let mut hello_ok = true;
        for m in &spec.hello {
            if ws.send(to_message(m.clone())).await.is_err() {
                hello_ok = false;
                break;
            }
        }
        if !hello_ok {
            let why = format!("{} closed before it was configured", spec.name);
            let _ = ev_tx.send((i, LinkUpdate::Down(why), tokio::time::Instant::now())).await;
            return;
        }
        if ev_tx.send((i, LinkUpdate::Up { reconnected: !first }, tokio::time::Instant::now())).await.is_err() {
            return;
        }
        first = false;
        match pump(i, spec.name, &mut ws, &mut out_rx, &send_delay, &ev_tx).await {
            Ended::CallGone => return,
            Ended::Dropped(why) if reconnects_left > 0 => {
                reconnects_left -= 1;
                warn!(engine = spec.name, reason = %why, "engine socket dropped mid-call; reconnecting");
                if ev_tx.send((i, LinkUpdate::Lost, tokio::time::Instant::now())).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ended::Dropped(why) => {
                debug!(engine = spec.name, reason = %why, "engine socket dropped for good");
                let _ = ev_tx.send((i, LinkUpdate::Down(why), tokio::time::Instant::now())).await;
                return;
            }
        }
    }
}
