//! The carrier connection as a call task sees it: messages in, the
//! [`WireOut`] queue written out, a close at the end.
//!
//! One trait, [`Transport`], over the sockets a call can run on: axum's
//! server-side WebSocket (carriers dialling in) and tokio-tungstenite's (tests
//! over in-memory duplex pipes in paused time, and anything that dials out).
//! The socket is never split: one poll drives both directions, so there is no
//! lock between two halves. Pings and pongs are answered by the WebSocket
//! layer and surface as [`Received::Control`], which is not caller activity.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use crate::carrier::{MsgKind, OutMsg, WireIn, WireOut};

/// Text of a received message, in whichever wrapper its socket produced.
#[derive(Debug)]
pub enum Text {
    /// From axum's WebSocket.
    Axum(axum::extract::ws::Utf8Bytes),
    /// From tungstenite's.
    Tungstenite(tungstenite::Utf8Bytes),
    /// Made by a shell that is not a WebSocket (WebRTC's start message).
    Owned(Box<str>),
}

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            Text::Axum(t) => t.as_str(),
            Text::Tungstenite(t) => t.as_str(),
            Text::Owned(t) => t,
        }
    }
}

/// One thing read from the connection.
#[derive(Debug)]
pub enum Received {
    /// A text message.
    Text(Text),
    /// A binary message.
    Binary(Bytes),
    /// Ping or pong (answered below us); not caller activity.
    Control,
    /// The peer closed (or the stream ended).
    Closed,
    /// The connection went away without a closing handshake (reset, EOF):
    /// the network or the carrier's side broke, the phone call may be up.
    Lost,
    /// A message over the size limit.
    TooBig,
    /// The socket failed.
    Failed(String),
}

impl Received {
    /// The message as the carrier codec takes it.
    pub fn wire(&self) -> Option<WireIn<'_>> {
        match self {
            Received::Text(t) => Some(WireIn::Text(t.as_str())),
            Received::Binary(b) => Some(WireIn::Binary(b)),
            _ => None,
        }
    }
}

/// A failed write.
#[derive(Debug, thiserror::Error)]
#[error("transport write failed: {0}")]
pub struct WriteError(pub String);

/// A carrier connection.
pub trait Transport: Send + Unpin + 'static {
    /// The next message.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Received>;

    /// Write everything queued in `out` and flush. `Pending` while the peer
    /// is not taking writes (the queue keeps what is left).
    fn poll_write(&mut self, cx: &mut Context<'_>, out: &mut WireOut) -> Poll<Result<(), WriteError>>;

    /// Whether written messages are still waiting to be flushed to the peer.
    fn flush_pending(&self) -> bool;

    /// How long this peer may send nothing before it counts as gone, when
    /// that is shorter than the server's `idle_timeout_ms` (a browser sends
    /// media every 20 ms; a carrier's socket has its own close).
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// Send a close frame (if given) and close, within the caller's deadline.
    fn close(&mut self, frame: Option<(u16, String)>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// How a tungstenite read error ends the connection: a peer that vanished
/// (reset without a closing handshake) is a lost stream, not a failure.
fn read_error(e: tungstenite::Error) -> Received {
    use tungstenite::Error as E;
    use tungstenite::error::ProtocolError;
    match e {
        E::Capacity(_) => Received::TooBig,
        E::ConnectionClosed | E::AlreadyClosed => Received::Closed,
        E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Received::Lost,
        E::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            Received::Lost
        }
        other => Received::Failed(other.to_string()),
    }
}

/// Pending writes and flushing shared by the WebSocket implementations.
fn poll_write_sink<S, M>(
    sink: &mut S,
    cx: &mut Context<'_>,
    out: &mut WireOut,
    needs_flush: &mut bool,
    convert: impl Fn(OutMsg) -> Option<M>,
) -> Poll<Result<(), WriteError>>
where
    S: Sink<M> + Unpin,
    S::Error: std::fmt::Display,
{
    while !out.is_empty() {
        ready!(sink.poll_ready_unpin(cx)).map_err(|e| WriteError(e.to_string()))?;
        let Some(m) = out.pop().and_then(&convert) else { continue };
        sink.start_send_unpin(m).map_err(|e| WriteError(e.to_string()))?;
        *needs_flush = true;
    }
    // Every message went into the socket's write buffer (copied): the arena
    // is free again.
    out.reclaim();
    if *needs_flush {
        ready!(sink.poll_flush_unpin(cx)).map_err(|e| WriteError(e.to_string()))?;
        *needs_flush = false;
    }
    Poll::Ready(Ok(()))
}

/// axum's server-side WebSocket.
pub struct AxumSocket {
    ws: axum::extract::ws::WebSocket,
    needs_flush: bool,
}

impl AxumSocket {
    /// Wrap an upgraded socket.
    pub fn new(ws: axum::extract::ws::WebSocket) -> Self {
        Self { ws, needs_flush: false }
    }
}

impl Transport for AxumSocket {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        use axum::extract::ws::Message;
        Poll::Ready(match ready!(self.ws.poll_next_unpin(cx)) {
            None => Received::Closed,
            Some(Ok(Message::Text(t))) => Received::Text(Text::Axum(t)),
            Some(Ok(Message::Binary(b))) => Received::Binary(b),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Received::Control,
            Some(Ok(Message::Close(_))) => Received::Closed,
            Some(Err(e)) => match e.into_inner().downcast::<tungstenite::Error>() {
                Ok(te) => read_error(*te),
                Err(other) => Received::Failed(other.to_string()),
            },
        })
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, out: &mut WireOut) -> Poll<Result<(), WriteError>> {
        use axum::extract::ws::{Message, Utf8Bytes};
        poll_write_sink(&mut self.ws, cx, out, &mut self.needs_flush, |m| match m.kind {
            MsgKind::Text => Utf8Bytes::try_from(m.data).ok().map(Message::Text),
            MsgKind::Binary => Some(Message::Binary(m.data)),
        })
    }

    fn flush_pending(&self) -> bool {
        self.needs_flush
    }

    fn close(&mut self, frame: Option<(u16, String)>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
        Box::pin(async move {
            if let Some((code, reason)) = frame {
                let reason: String = reason.chars().take(120).collect();
                let _ = self.ws.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))).await;
            }
            let _ = self.ws.close().await;
        })
    }
}

/// tokio-tungstenite's WebSocket over any byte stream.
pub struct TungsteniteSocket<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    needs_flush: bool,
}

impl<S> TungsteniteSocket<S> {
    /// Wrap a WebSocket.
    pub fn new(ws: tokio_tungstenite::WebSocketStream<S>) -> Self {
        Self { ws, needs_flush: false }
    }
}

impl<S> Transport for TungsteniteSocket<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        use tungstenite::Message;
        Poll::Ready(match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
            None => Received::Closed,
            Some(Ok(Message::Text(t))) => Received::Text(Text::Tungstenite(t)),
            Some(Ok(Message::Binary(b))) => Received::Binary(b),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Received::Control,
            Some(Ok(Message::Close(_))) => Received::Closed,
            Some(Err(e)) => read_error(e),
        })
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, out: &mut WireOut) -> Poll<Result<(), WriteError>> {
        use tungstenite::{Message, Utf8Bytes};
        poll_write_sink(&mut self.ws, cx, out, &mut self.needs_flush, |m| match m.kind {
            MsgKind::Text => Utf8Bytes::try_from(m.data).ok().map(Message::Text),
            MsgKind::Binary => Some(Message::Binary(m.data)),
        })
    }

    fn flush_pending(&self) -> bool {
        self.needs_flush
    }

    fn close(&mut self, frame: Option<(u16, String)>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        use tungstenite::protocol::CloseFrame;
        Box::pin(async move {
            let frame = frame.map(|(code, reason)| CloseFrame {
                code: code.into(),
                reason: reason.chars().take(120).collect::<String>().into(),
            });
            let _ = self.ws.close(frame).await;
        })
    }
}
