//! Cluster mode: several nodes behind one load balancer, coordinated through
//! Redis (`[cluster] redis_url`). Without it nothing here runs and a node
//! decides everything alone.
//!
//! What is shared and where it lives (every key and channel starts with
//! `cluster.key_prefix`):
//! - numbers: the hash `numbers` (number → tenant JSON), changes announced on
//!   the channel `numbers` ([`numbers`]);
//! - live calls: `call:{id}` (owner node, tenant, carrier, …) and the sorted set
//!   `calls:{tenant}`, rewritten every heartbeat with a TTL ([`calls`]);
//! - control requests for a call another node holds: published on the owner's
//!   channel `node:{node}:control`, answered on `node:{node}:reply` ([`routing`]);
//! - routes between a webhook and its stream: `pending:{carrier}:{id}:{token}`
//!   with a TTL ([`pending`]);
//! - which node keeps an ended call's data: `data:{id}` → node, and each live
//!   node's `node:{node}` → its `advertise_url` ([`calls`]).
//!
//! Invariants: Redis is never on a call's per-frame path; every command has a
//! timeout (`cluster.command_timeout_ms`), so Redis being down makes cluster
//! operations fail fast while live calls go on untouched. The Redis URL is
//! never logged (it may hold a password).

pub mod admission;
pub mod calls;
pub mod numbers;
pub mod pending;
pub mod routing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::ClusterConfig;
use crate::tenant::NumberStore;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis did not answer, or refused the command.
    #[error("redis: {0}")]
    Redis(String),
    /// A command took longer than `cluster.command_timeout_ms`.
    #[error("redis did not answer in time")]
    Timeout,
    /// The cluster's data did not parse (another version, or tampering).
    #[error("bad cluster data: {0}")]
    Data(String),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        // The error's text never holds the URL or its password.
        ClusterError::Redis(e.to_string())
    }
}

/// A node's link to the cluster.
pub struct Cluster {
    /// This node's name.
    pub node: String,
    prefix: String,
    conn: ConnectionManager,
    client: redis::Client,
    timeout: Duration,
    /// Heartbeat period and call TTL.
    pub heartbeat: Duration,
    /// How long a call lives in the view without a heartbeat.
    pub call_ttl: Duration,
    /// How long a routed request waits for its answer.
    pub route_timeout: Duration,
    /// Whether the subscription (numbers, control, replies) is up.
    subscribed: AtomicBool,
    /// The local database's numbers have been moved to Redis.
    seeded: AtomicBool,
    next_request: AtomicU64,
    replies: DashMap<u64, oneshot::Sender<routing::Reply>>,
    /// Leases this node took and has not given back (their expiry is pushed
    /// on every heartbeat): call → tenant.
    pub(crate) leases: DashMap<crate::ids::CallId, Option<String>>,
    /// Whether any cluster-wide call limit is set (leases exist at all).
    pub(crate) admission: bool,
    /// Where other nodes reach this node for its call data ("" = they cannot).
    pub(crate) advertise_url: String,
    /// How long the cluster remembers which node holds an ended call's data
    /// (the store's retention; none = as long as Redis keeps it).
    pub(crate) data_ttl: Option<Duration>,
    /// Control requests for this node's calls, to the API layer.
    requests: mpsc::Sender<routing::Request>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).field("prefix", &self.prefix).finish()
    }
}

/// Control requests other nodes sent for this node's calls.
pub type Requests = mpsc::Receiver<routing::Request>;

impl Cluster {
    /// Link to the cluster at `url` (no I/O yet: the connection is made on
    /// first use and remade whenever it drops). Returns the request lane the
    /// API layer serves.
    /// `admission`: whether a cluster-wide limit applies (`cluster.max_calls`
    /// or `limits.max_calls_per_tenant` set).
    /// `data_ttl`: the call store's retention.
    pub fn new(
        cfg: &ClusterConfig,
        url: &str,
        admission: bool,
        data_ttl: Option<Duration>,
    ) -> Result<(Arc<Self>, Requests), ClusterError> {
        let client = client(url, &cfg.redis_ca_file)?;
        let timeout = Duration::from_millis(cfg.command_timeout_ms);
        let mc = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), mc)?;
        let node = if cfg.node_id.is_empty() { default_node_id() } else { cfg.node_id.clone() };
        let (tx, rx) = mpsc::channel(256);
        let c = Arc::new(Self {
            node,
            prefix: cfg.key_prefix.clone(),
            conn,
            client,
            timeout,
            heartbeat: Duration::from_millis(cfg.heartbeat_ms),
            call_ttl: Duration::from_millis(cfg.call_ttl_ms),
            route_timeout: Duration::from_millis(cfg.route_timeout_ms),
            subscribed: AtomicBool::new(false),
            seeded: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
            replies: DashMap::new(),
            leases: DashMap::new(),
            admission,
            advertise_url: cfg.advertise_url.trim_end_matches('/').to_string(),
            data_ttl,
            requests: tx,
        });
        Ok((c, rx))
    }

    /// `prefix` + `rest`.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// A connection (cheap clone of the shared multiplexed one).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Run `f` on a connection within the command timeout.
    pub(crate) async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, ClusterError> {
        let mut c = self.conn();
        match tokio::time::timeout(self.timeout, f(&mut c)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// Whether the subscription is up (Redis reachable a moment ago).
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// Whether Redis answers (and the subscription is up).
    pub async fn healthy(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.run(async |c| c.ping::<String>().await).await.is_ok()
    }

    /// Keep the subscription to the cluster's channels up: number changes
    /// (applied to `store`), control requests for this node's calls, and the
    /// answers to this node's routed requests. Reconnects with backoff; every
    /// (re)connect resyncs all numbers (changes announced while it was down
    /// were missed). Runs until the process ends.
    pub async fn subscribe(
        self: Arc<Self>,
        store: Arc<NumberStore>,
        pending: Arc<crate::runtime::admission::PendingCalls>,
        calls: Option<crate::callstore::CallStore>,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut was_down = false;
        loop {
            match self.session(&store, &pending, calls.as_ref(), &mut backoff, was_down).await {
                Ok(()) => {}
                Err(e) => {
                    if !was_down {
                        warn!(node = %self.node, error = %e, "cluster: Redis subscription down; retrying");
                    }
                }
            }
            was_down = true;
            self.subscribed.store(false, Ordering::Release);
            // Whoever waits for an answer over the lost subscription will not get it.
            self.replies.clear();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn session(
        self: &Arc<Self>,
        store: &Arc<NumberStore>,
        pending: &crate::runtime::admission::PendingCalls,
        calls: Option<&crate::callstore::CallStore>,
        backoff: &mut Duration,
        was_down: bool,
    ) -> Result<(), ClusterError> {
        let mut ps = tokio::time::timeout(self.timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| ClusterError::Timeout)??;
        let numbers_ch = self.key("numbers");
        let control_ch = self.key(&format!("node:{}:control", self.node));
        let reply_ch = self.key(&format!("node:{}:reply", self.node));
        let taken_ch = self.key(&format!("node:{}:taken", self.node));
        let erased_ch = self.key("erased");
        ps.subscribe(&[&numbers_ch, &control_ch, &reply_ch, &taken_ch, &erased_ch]).await?;
        if !self.seeded.load(Ordering::Acquire) {
            numbers::seed(self, store).await?;
            self.seeded.store(true, Ordering::Release);
        }
        numbers::resync(self, store).await?;
        // Erasures announced while this node was away (idempotent: a tenant
        // with nothing left here costs one query).
        if let Some(calls) = calls {
            let calls = calls.clone();
            let erased = self.erased_tenants().await?;
            tokio::spawn(async move {
                for t in erased {
                    numbers::erase_here(&calls, t).await;
                }
            });
        }
        self.subscribed.store(true, Ordering::Release);
        *backoff = Duration::from_millis(100);
        if was_down {
            info!(node = %self.node, "cluster: Redis subscription back");
        }
        let mut stream = ps.on_message();
        while let Some(msg) = stream.next().await {
            let ch = msg.get_channel_name();
            let payload = msg.get_payload_bytes();
            if ch == numbers_ch {
                // Off the loop: control requests and replies queued behind it go on.
                let number = String::from_utf8_lossy(payload).into_owned();
                let (c, st) = (self.clone(), store.clone());
                tokio::spawn(async move { numbers::refresh(&c, &st, &number).await });
            } else if ch == erased_ch {
                if let Some(calls) = calls {
                    let (calls, tenant) = (calls.clone(), String::from_utf8_lossy(payload).into_owned());
                    tokio::spawn(async move { numbers::erase_here(&calls, tenant).await });
                }
            } else if ch == taken_ch {
                if let Some((carrier, id)) = std::str::from_utf8(payload).ok().and_then(|p| p.split_once('\n')) {
                    pending.forget_taken(carrier, id);
                }
            } else if ch == control_ch {
                match serde_json::from_slice::<routing::Request>(payload) {
                    Ok(req) => {
                        if let Err(mpsc::error::TrySendError::Full(req)) = self.requests.try_send(req) {
                            let busy = routing::Reply::busy(req.id);
                            let _ = self.reply(&req.reply_to, &busy).await;
                        }
                    }
                    Err(e) => warn!(error = %e, "cluster: unreadable control request dropped"),
                }
            } else if ch == reply_ch {
                match serde_json::from_slice::<routing::Reply>(payload) {
                    Ok(r) => {
                        if let Some((_, tx)) = self.replies.remove(&r.id) {
                            let _ = tx.send(r);
                        }
                    }
                    Err(e) => warn!(error = %e, "cluster: unreadable control reply dropped"),
                }
            }
        }
        Err(ClusterError::Redis("subscription closed".into()))
    }

    /// Publish `msg` on `channel`; how many nodes heard it.
    pub(crate) async fn publish(&self, channel: &str, msg: &[u8]) -> Result<usize, ClusterError> {
        let ch = channel.to_string();
        let msg = msg.to_vec();
        self.run(async move |c| c.publish::<_, _, usize>(ch, msg).await).await
    }
}

/// The Redis client for `url`: `rediss://` speaks TLS (rustls) and verifies
/// the server against the public roots, or against the CA certificates in
/// `ca_file` (PEM) when set. Errors never repeat the URL.
fn client(url: &str, ca_file: &str) -> Result<redis::Client, ClusterError> {
    let bad = |e: String| ClusterError::Redis(format!("cluster.redis_url: {e}"));
    // rediss:// takes the process's TLS provider (`server::install_tls_provider`).
    let tls = url.starts_with("rediss://");
    if ca_file.is_empty() {
        return redis::Client::open(url).map_err(|e| bad(e.to_string()));
    }
    if !tls {
        return Err(ClusterError::Redis(
            "cluster.redis_ca_file is set but cluster.redis_url is not rediss:// (TLS)".into(),
        ));
    }
    let pem =
        std::fs::read(ca_file).map_err(|e| ClusterError::Redis(format!("cluster.redis_ca_file {ca_file:?}: {e}")))?;
    let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
    redis::Client::build_with_tls(url, certs).map_err(|e| bad(e.to_string()))
}

/// This node's id: `cluster.node_id`, or the host name and a random suffix
/// (unique per process, readable in logs). Resolve it once per process.
pub fn node_id(cfg: &ClusterConfig) -> String {
    if cfg.node_id.is_empty() { default_node_id() } else { cfg.node_id.clone() }
}

/// Host name and a random suffix: unique per process, readable in logs.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().replace([':', ' ', '*', '?', '['], "-"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", &crate::signature::random_hex()[..8])
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
