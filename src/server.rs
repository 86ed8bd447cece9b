//! Assembling and running the server: state from config, the listener, and
//! graceful shutdown (stop admitting, let live calls finish up to a deadline,
//! then tell the rest to hang up).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::api::{AppState, router};
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

/// Build the shared state for `config` and `secrets`.
pub fn build_state(config: Config, secrets: Secrets) -> Result<Arc<AppState>, ServerError> {
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
    let validate = twilio.validating;
    let carriers: Vec<Arc<dyn crate::api::carrier_control::CarrierControl>> = vec![twilio.control];
    let clips = LocalClips::load(&config.engine.local.greeting_wav, &config.engine.local.reply_wav)?;
    // Engines by name: one registration line each.
    let mut engines = EngineRegistry::new(&config.engine.kind, "local");
    engines.register(LocalFactory::new(clips));
    engines.register(RealtimeFactory::new(
        config.engine.openai_realtime.clone(),
        secrets.openai_realtime_url.clone(),
        secrets.openai_api_key.clone(),
    ));
    engines.check_default().map_err(|e| ServerError::Setup(format!("engine.kind = {:?}: {e}", config.engine.kind)))?;
    let tenants = Arc::new(NumberStore::open(&config.storage.database, &config.numbers)?);
    let store = crate::callstore::CallStore::open(&config.storage.database)
        .map_err(|e| ServerError::Setup(format!("call store: {e}")))?;
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
        require_stream_token: validate,
        client: client.clone(),
        delivery: DeliveryConfig::from_config(&config.callbacks),
        prompts: Prompts::builtin(),
        callbacks: config.callbacks.clone(),
        recordings: Some(crate::recording::RecordingService::start(
            std::path::Path::new(&config.recording.dir),
            config.recording.ring_slots,
            Duration::from_millis(config.recording.header_update_ms),
        )?),
        record_by_default: config.recording.enabled,
        store: Some(store),
        public_http: config.public_http_url(),
    });
    let metrics = crate::metrics::install();
    for c in &carriers {
        crate::metrics::announce_carrier(c.carrier(), "local");
    }
    let fetches = Arc::new(tokio::sync::Semaphore::new(8));
    Ok(Arc::new(AppState {
        config,
        secrets,
        tenants,
        call,
        metrics,
        carriers,
        fetches,
        accepting: AtomicBool::new(true),
    }))
}

/// A running server's address and a handle to stop it.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Shared state (for tests and embedding).
    pub state: Arc<AppState>,
}

/// Bind `config.server.listen` (or `listen` if given) and serve until `shutdown`
/// resolves, then drain calls. `on_bound` learns the bound address.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let grace = Duration::from_millis(state.config.server.shutdown_grace_ms);
    let app = router(state.clone());
    let sndbuf = state.config.server.socket_send_buffer_bytes;
    let listener = listener.tap_io(move |tcp| {
        // Latency: never let Nagle hold a 20 ms frame back.
        let _ = tcp.set_nodelay(true);
        if sndbuf > 0 {
            let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(sndbuf);
        }
    });
    // Histogram samples wait in the recorder until drained; drain them every few
    // seconds so an unscraped server does not grow.
    let metrics = state.metrics.clone();
    let call = state.call.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            metrics.run_upkeep();
            // Routes whose stream never came, and the ended-calls memory.
            call.pending.sweep(Duration::from_secs(300));
            call.registry.sweep_ended();
        }
    });
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
    let st = state.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        st.accepting.store(false, Ordering::Release);
        let _ = stop_tx.send(true);
    });
    let served = server.await;
    if *stop_rx.borrow() {
        drain(&state, grace).await;
    }
    upkeep.abort();
    if let Some(r) = retention {
        r.abort();
    }
    served?;
    Ok(())
}

/// Let live calls finish for up to `grace`, then hang the rest up.
pub async fn drain(state: &AppState, grace: Duration) {
    let registry = &state.call.registry;
    let live = registry.len();
    if live == 0 {
        return;
    }
    info!(live, grace_ms = grace.as_millis() as u64, "shutdown: waiting for live calls");
    if tokio::time::timeout(grace, registry.wait_empty()).await.is_err() {
        let n = registry.broadcast(ControlCommand::Shutdown);
        warn!(told = n, "shutdown grace over: hanging up remaining calls");
        let _ = tokio::time::timeout(Duration::from_secs(3), registry.wait_empty()).await;
    }
}

/// Bind a listener for `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    Ok(TcpListener::bind(addr).await?)
}

/// Start a server on `addr` in the background (tests, embedding). Returns its
/// address, its state, and a sender that triggers graceful shutdown.
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
    let state = build_state(config, secrets)?;
    let listener = bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let join = tokio::spawn(async move {
        serve(st, listener, async move {
            let _ = rx.await;
        })
        .await
    });
    Ok((Running { addr, state }, tx, join))
}
