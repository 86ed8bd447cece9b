//! Assembling and running the server: state from config, the listener, and
//! graceful shutdown (stop admitting, let live calls finish up to a deadline,
//! then tell the rest to hang up).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::api::{AppState, admin_router, router};
use crate::callback::client::CallbackClient;
use crate::callback::delivery::DeliveryConfig;
use crate::config::{Config, Secrets};
use crate::engine::local::{LocalClips, LocalEngineError, LocalFactory};
use crate::engine::openai_realtime::RealtimeFactory;
use crate::engine::registry::EngineRegistry;
use crate::runtime::admission::PendingCalls;
use crate::runtime::call_task::{CallContext, CallLimits};
use crate::runtime::registry::Registry;
use crate::session::{ControlCommand, Prompts};
use crate::tenant::{NumberStore, TenantError};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Clips for the local engine could not be loaded.
    #[error(transparent)]
    Clips(#[from] LocalEngineError),
    /// Binding or serving failed.
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The number store could not be opened.
    #[error("number store: {0}")]
    Tenants(#[from] TenantError),
    /// The configuration is insecure or incomplete for what it asks.
    #[error("{0}")]
    Setup(String),
}

/// Install the process-wide TLS crypto provider (aws-lc-rs, as the HTTP
/// client uses). rustls is linked with two providers here, and a client
/// that takes the process default (the engines' `wss://` links, `rediss://`)
/// panics while none is installed. The first call wins; later ones do nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Build the shared state for `config` and `secrets`.
pub fn build_state(config: Config, secrets: Secrets) -> Result<Arc<AppState>, ServerError> {
    install_tls_provider();
    let policy =
        crate::netguard::NetPolicy::new(&config.callbacks.allow_private_networks).map_err(ServerError::Setup)?;
    let client = CallbackClient::new(config.callbacks.max_response_bytes, policy);
    // Carrier REST APIs are the operator's URLs, not a tenant's: a plain client.
    let rest_http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ServerError::Setup(format!("HTTP client: {e}")))?;
    // Carriers: one registration line each (checks their signature settings,
    // gives their call-control API).
    let twilio = crate::api::twilio::setup(&config, &secrets, &rest_http).map_err(ServerError::Setup)?;
    let telnyx = crate::api::telnyx::setup(&config, &secrets, &rest_http).map_err(ServerError::Setup)?;
    let vonage = crate::api::vonage::setup(&config, &secrets, &rest_http).map_err(ServerError::Setup)?;
    // Streams present their webhook's token whenever any carrier's webhooks are signed.
    let validate =
        twilio.validating || secrets.telnyx_public_key.is_some() || secrets.vonage_signature_secret.is_some();
    let carriers: Vec<Arc<dyn crate::api::carrier_control::CarrierControl>> =
        vec![twilio.control, telnyx.control, vonage.control];
    let carrier_routes = crate::api::twilio::routes()
        .merge(crate::api::telnyx::routes(telnyx.telnyx))
        .merge(crate::api::vonage::routes(vonage.vonage))
        .merge(crate::api::webrtc::routes(crate::api::webrtc::WebRtc::new(
            &config.webrtc,
            secrets.turn_credential.as_deref(),
        )));
    let clips = LocalClips::load(&config.engine.local.greeting_wav, &config.engine.local.reply_wav)?;
    // Engines by name: one registration line each.
    let mut engines = EngineRegistry::new(&config.engine.kind, "local");
    engines.register(LocalFactory::new(clips));
    engines.register(RealtimeFactory::new(
        config.engine.openai_realtime.clone(),
        secrets.openai_realtime_url.clone(),
        secrets.openai_api_key.clone(),
    ));
    engines.register(crate::engine::cascaded::CascadedFactory::new(
        config.engine.cascaded.clone(),
        secrets.cascaded.clone(),
    ));
    engines.check_default().map_err(|e| ServerError::Setup(format!("engine.kind = {:?}: {e}", config.engine.kind)))?;
    let tenants = Arc::new(NumberStore::open(&config.storage.database, &config.numbers)?);
    // One id per process, for the cluster and for the call rows it writes.
    let mut cluster_config = config.cluster.clone();
    cluster_config.node_id = crate::cluster::node_id(&config.cluster);
    // Call data: a PostgreSQL shared by the cluster (the environment's URL
    // wins: it may hold a password), or this node's SQLite.
    let postgres_url = secrets.postgres_url.clone().unwrap_or_else(|| config.storage.postgres_url.clone());
    let store = if postgres_url.trim().is_empty() {
        crate::callstore::CallStore::open(&config.storage.database, config.storage.memory_max_calls)
    } else {
        crate::callstore::CallStore::open_postgres(
            postgres_url.trim(),
            &config.storage.postgres_ca_file,
            &cluster_config.node_id,
        )
    }
    .map_err(|e| ServerError::Setup(format!("call store: {e}")))?;
    // The end-of-turn model: loaded when configured (the smart detector needs
    // it; a plan may also ask for it per call).
    let turn_pool = if config.turn_model.model.is_empty() {
        None
    } else {
        Some(
            crate::runtime::turn_pool::TurnPool::start(&config.turn_model)
                .map_err(|e| ServerError::Setup(format!("turn_model: {e} (run scripts/fetch-smart-turn.sh)")))?,
        )
    };
    let s = &config.server;
    let limits = CallLimits {
        write_timeout: Duration::from_millis(s.write_timeout_ms),
        idle_timeout: Duration::from_millis(s.idle_timeout_ms),
        start_timeout: Duration::from_millis(s.start_timeout_ms),
        max_queued_messages: s.max_queued_messages,
        max_protocol_errors: s.max_protocol_errors,
    };
    let call = Arc::new(CallContext {
        session: config.session(),
        limits,
        engines,
        registry: Registry::new(),
        pending: PendingCalls::new(),
        capacity: crate::runtime::capacity::Capacity::new(config.server.max_calls, config.limits.max_calls_per_tenant),
        parked: crate::runtime::parked::ParkedCalls::new(),
        require_stream_token: validate,
        client: client.clone(),
        delivery: DeliveryConfig::from_config(&config.callbacks),
        deliveries: crate::callback::delivery::Deliveries::new(),
        prompts: Prompts::builtin(),
        callbacks: config.callbacks.clone(),
        recordings: Some(crate::recording::RecordingService::start(
            std::path::Path::new(&config.recording.dir),
            crate::recording::Buffering {
                ring_slots: config.recording.ring_slots,
                max_buffered_bytes: config.recording.max_buffered_mb.saturating_mul(1 << 20),
                header_update: Duration::from_millis(config.recording.header_update_ms),
            },
        )?),
        record_by_default: config.recording.enabled,
        store: Some(store),
        public_http: config.public_http_url(),
        turn_pool,
        carriers: carriers.clone(),
        dashboard: crate::runtime::dashboard::Dashboard::new(),
    });
    let metrics = crate::metrics::install();
    for c in &carriers {
        crate::metrics::announce_carrier(c.carrier(), "local");
    }
    let fetches = Arc::new(tokio::sync::Semaphore::new(config.limits.max_concurrent_fetches.max(1)));
    // 0 (no outbound calls at all) is refused by the handler before it reserves.
    let outbound_limit = config.limits.max_outbound_calls_per_tenant;
    let rate = crate::api::rate::RateLimiter::new(config.limits.api_requests_per_second, config.limits.api_burst);
    // Cluster mode: the environment's URL wins (it may hold a password).
    let redis_url = secrets.redis_url.clone().unwrap_or_else(|| config.cluster.redis_url.clone());
    let (cluster, cluster_requests) = if redis_url.trim().is_empty() {
        (None, None)
    } else {
        let (c, rx) = crate::cluster::Cluster::new(
            &cluster_config,
            redis_url.trim(),
            config.cluster.max_calls > 0 || config.limits.max_calls_per_tenant > 0,
            (config.storage.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(config.storage.retention_days) * 86_400)),
        )
        .map_err(|e| ServerError::Setup(e.to_string()))?;
        // A little longer than this node waits for a stream, so its sweep finds the copy.
        let ttl = Duration::from_millis(config.server.stream_wait_ms) + Duration::from_secs(5);
        call.pending.share_through(c.clone(), ttl, tenants.clone());
        info!(node = %c.node, "cluster mode: sharing numbers, calls and control through Redis");
        (Some(c), Some(rx))
    };
    Ok(Arc::new(AppState {
        config,
        secrets,
        tenants,
        call,
        metrics,
        carriers,
        carrier_routes,
        fetches,
        rate,
        accepting: AtomicBool::new(true),
        dialing: crate::runtime::dialing::DialingCalls::new(),
        outbound: crate::runtime::capacity::Capacity::new(usize::MAX, outbound_limit),
        cluster,
        cluster_http: rest_http.clone(),
        cluster_requests: std::sync::Mutex::new(cluster_requests),
    }))
}

/// An outbound call the carrier has not reported on after this long (the
/// longest ring plus a machine's greeting, with margin) is taken as failed.
const DIALING_MAX: Duration = Duration::from_secs(300);

/// A running server's addresses.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The admin listener (`server.admin_listen`), if configured.
    pub admin_addr: Option<SocketAddr>,
    /// Shared state (for tests and embedding).
    pub state: Arc<AppState>,
}

/// The listeners a server serves on.
pub struct Listeners {
    /// Carriers, the control API, health.
    pub public: TcpListener,
    /// Metrics and the admin API, when configured apart.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Bind `listen` and, if configured, `server.admin_listen`.
    pub async fn bind(config: &Config, listen: SocketAddr) -> Result<Self, ServerError> {
        let public = TcpListener::bind(listen).await?;
        let admin = match config.server.admin_listen.trim() {
            "" => None,
            a => {
                let addr: SocketAddr = a
                    .parse()
                    .map_err(|_| ServerError::Setup(format!("server.admin_listen = {a:?} is not an address")))?;
                Some(TcpListener::bind(addr).await?)
            }
        };
        Ok(Self { public, admin })
    }
}

/// Serve until `shutdown` resolves, then drain: refuse new calls (webhooks
/// answer busy, streams 503) while `/healthz` says 503 and the control API
/// stays up; let live calls finish for `server.shutdown_grace_ms`, hang up the
/// rest, and flush what they leave — `call.ended` deliveries, the call store,
/// the recordings — before the listeners close.
pub async fn serve(
    state: Arc<AppState>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let grace = Duration::from_millis(state.config.server.shutdown_grace_ms);
    let l = &state.config.limits;
    let limits = crate::listener::ListenerLimits {
        max_connections: l.max_connections,
        header_read_timeout: Duration::from_millis(l.header_read_timeout_ms),
        send_buffer: state.config.server.socket_send_buffer_bytes,
    };
    // Calls a process that died left open are ended before any new one comes
    // (store reads block: off the runtime's workers).
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || crate::runtime::recovery::recover(&st.call, &st.tenants)).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut served =
        vec![tokio::spawn(crate::listener::run(listeners.public, router(state.clone()), limits, stop_rx.clone()))];
    if let Some(admin) = listeners.admin {
        served.push(tokio::spawn(crate::listener::run(admin, admin_router(state.clone()), limits, stop_rx)));
    }
    // Histogram samples wait in the recorder until drained; drain them every few
    // seconds so an unscraped server does not grow.
    let st = state.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for n in 0u64.. {
            tick.tick().await;
            if n % 5 == 0 {
                st.metrics.run_upkeep();
            }
            // Routes whose stream never came: the backend hears the call ended.
            let wait = Duration::from_millis(st.config.server.stream_wait_ms);
            for expired in st.call.pending.sweep_expired(wait) {
                // Another node may have taken its stream (cluster mode): it reports the call then.
                if st.call.pending.settle_expired(&expired).await {
                    crate::runtime::call_task::report_unconnected(&st.call, expired.route, "no_stream");
                }
            }
            st.call.registry.sweep_ended();
            // Outbound calls the carrier never reported on.
            for d in st.dialing.sweep(DIALING_MAX) {
                warn!(call = %d.route.call_id, "the carrier never reported on the outbound call");
                crate::runtime::call_task::report_unconnected(&st.call, d.route, "failed");
            }
            // Transfers whose outcome never came: the call is over after a day.
            for p in st.call.parked.sweep(Duration::from_secs(86_400)) {
                crate::runtime::call_task::end_parked(&st.call, p, None, "transferred");
            }
            st.rate.sweep(std::time::Instant::now());
        }
    });
    let dashboard = tokio::spawn(state.call.dashboard.clone().run(state.call.registry.clone()));
    // Cluster mode: numbers and control requests from the other nodes, this node's calls to them.
    let (beat_stop, beat_rx) = tokio::sync::watch::channel(false);
    let mut cluster_tasks = Vec::new();
    let mut heartbeat = None;
    if let Some(c) = state.cluster.clone() {
        cluster_tasks.push(tokio::spawn(c.clone().subscribe(
            state.tenants.clone(),
            state.call.pending.clone(),
            state.call.store.clone(),
        )));
        if let Some(rx) = state.cluster_requests.lock().expect("requests lock").take() {
            cluster_tasks.push(tokio::spawn(crate::api::cluster_control::serve(state.clone(), c.clone(), rx)));
        }
        heartbeat = Some(tokio::spawn(crate::cluster::calls::heartbeat(c, state.call.registry.clone(), beat_rx)));
    }
    // Retention: delete call data older than `storage.retention_days`, hourly.
    let retention = (state.config.storage.retention_days > 0).then(|| {
        let days = state.config.storage.retention_days as i64;
        let store = state.call.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let Some(store) = store.clone() else { return };
                let cutoff = crate::callstore::unix_ms(std::time::SystemTime::now()) - days * 86_400_000;
                match tokio::task::spawn_blocking(move || store.sweep(cutoff)).await {
                    Ok(Ok(n)) if n > 0 => info!(deleted = n, "retention: old call data deleted"),
                    Ok(Err(e)) => warn!(error = %e, "retention sweep failed"),
                    _ => {}
                }
            }
        })
    });
    shutdown.await;
    state.accepting.store(false, Ordering::Release);
    drain(&state, grace).await;
    let _ = stop_tx.send(true);
    for s in served {
        let _ = s.await;
    }
    upkeep.abort();
    dashboard.abort();
    // The calls are over: take them out of the cluster view, then leave.
    let _ = beat_stop.send(true);
    if let Some(h) = heartbeat {
        let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
    }
    for t in cluster_tasks {
        t.abort();
    }
    if let Some(r) = retention {
        r.abort();
    }
    Ok(())
}

/// Let live calls finish for most of `grace`, hang up the rest, then flush
/// what they left behind within what remains (at least a few seconds).
pub async fn drain(state: &AppState, grace: Duration) {
    let registry = &state.call.registry;
    let started = tokio::time::Instant::now();
    let flush_reserve = (grace / 4).min(Duration::from_secs(5));
    let live = registry.len();
    if live > 0 {
        info!(live, grace_ms = grace.as_millis() as u64, "shutdown: waiting for live calls");
        if tokio::time::timeout(grace - flush_reserve, registry.wait_empty()).await.is_err() {
            let n = registry.broadcast(ControlCommand::Shutdown);
            warn!(told = n, "shutdown grace over: hanging up remaining calls");
            let _ = tokio::time::timeout(Duration::from_secs(3), registry.wait_empty()).await;
        }
    }
    // Outbound calls still ringing: the carrier goes on, our record ends.
    for d in state.dialing.sweep(Duration::ZERO) {
        crate::runtime::call_task::report_unconnected(&state.call, d.route, "shutdown");
    }
    // Calls announced but never connected: their backends hear how they ended.
    for route in state.call.pending.sweep(Duration::ZERO) {
        crate::runtime::call_task::report_unconnected(&state.call, route, "shutdown");
    }
    // Calls out on a transfer: the bridge goes on at the carrier, our record ends.
    for p in state.call.parked.sweep(Duration::ZERO) {
        crate::runtime::call_task::end_parked(&state.call, p, None, "transferred");
    }
    let left = grace.saturating_sub(started.elapsed()).max(Duration::from_secs(2));
    let delivered = state.call.deliveries.wait_idle(left).await;
    if !delivered {
        warn!(pending = state.call.deliveries.active(), "shutdown: some callback deliveries did not finish");
    }
    let left = grace.saturating_sub(started.elapsed()).max(Duration::from_secs(2));
    if let Some(rec) = &state.call.recordings
        && !rec.finish(left).await
    {
        warn!(unfinished = rec.unfinished(), "shutdown: some recordings were not finished");
    }
    if let Some(store) = state.call.store.clone() {
        let left = grace.saturating_sub(started.elapsed()).max(Duration::from_secs(2));
        let synced = tokio::task::spawn_blocking(move || store.sync_within(left)).await.unwrap_or(false);
        if !synced {
            warn!("shutdown: the call store did not confirm its last writes");
        }
    }
    info!(took_ms = started.elapsed().as_millis() as u64, "shutdown: drained");
}

/// Start a server on `addr` in the background (tests, embedding). Returns its
/// addresses, its state, and a sender that triggers graceful shutdown.
pub async fn spawn(
    config: Config,
    addr: SocketAddr,
) -> Result<(Running, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), ServerError>>), ServerError>
{
    spawn_with(config, Secrets::default(), addr).await
}

/// [`spawn`] with explicit secrets.
pub async fn spawn_with(
    config: Config,
    secrets: Secrets,
    addr: SocketAddr,
) -> Result<(Running, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), ServerError>>), ServerError>
{
    let listeners = Listeners::bind(&config, addr).await?;
    let addr = listeners.public.local_addr()?;
    let admin_addr = listeners.admin.as_ref().map(|l| l.local_addr()).transpose()?;
    let state = build_state(config, secrets)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let join = tokio::spawn(async move {
        serve(st, listeners, async move {
            let _ = rx.await;
        })
        .await
    });
    Ok((Running { addr, admin_addr, state }, tx, join))
}
