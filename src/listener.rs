//! The HTTP listener: accepts connections and serves the router on them
//! (HTTP/1.1 with upgrades for WebSockets, and HTTP/2), with the limits a
//! public endpoint needs against slow-loris and connection floods:
//!
//! - at most `limits.max_connections` open at once; more are closed at accept;
//! - request headers must arrive within `limits.header_read_timeout_ms`;
//! - (the router adds a request timeout for everything but upgraded sockets).
//!
//! It keeps serving until told to stop — so `/healthz` and the control API
//! stay up while the server drains calls — then stops accepting, lets the
//! requests in flight finish, and closes the rest.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Deadline for a request's headers.
    pub header_read_timeout: Duration,
    /// SO_SNDBUF per connection (0 = OS default).
    pub send_buffer: usize,
}

/// Serve `app` on `listener` until `stop` turns true.
pub async fn run(listener: TcpListener, app: Router, limits: ListenerLimits, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Tells every connection task to finish gracefully.
    let (closing_tx, closing_rx) = watch::channel(false);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep going.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
            debug!(%peer, "connection limit reached; closing");
            drop(tcp);
            continue;
        };
        // Latency: never let Nagle hold a 20 ms frame back.
        let _ = tcp.set_nodelay(true);
        if limits.send_buffer > 0 {
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(limits.send_buffer);
        }
        let service = app.clone().map_request(|req: hyper::Request<Incoming>| req.map(Body::new));
        let mut closing = closing_rx.clone();
        let header_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
            builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(service));
            let mut conn = std::pin::pin!(conn);
            let mut told = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            debug!(%peer, error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = closing.wait_for(|c| *c), if !told => {
                        told = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Requests in flight finish; idle keep-alive connections close.
    let all = limits.max_connections.max(1) as u32;
    let _ = tokio::time::timeout(Duration::from_secs(5), permits.acquire_many(all)).await;
}
