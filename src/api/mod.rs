//! HTTP surface (axum): carrier webhooks and stream upgrades, health, metrics.
//!
//! Handlers are thin: they check admission and hand the socket to a call task.

pub mod arrival;
pub mod carrier_control;
pub mod cluster_control;
pub mod control;
pub mod dashboard;
pub mod outbound;
pub mod rate;
pub mod telnyx;
pub mod twilio;
pub mod vonage;
pub mod webrtc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;

use crate::config::{Config, Secrets};
use crate::runtime::call_task::CallContext;
use crate::tenant::NumberStore;

/// Shared server state (read-only but for the admission flag).
pub struct AppState {
    /// Effective configuration.
    pub config: Config,
    /// Keys from the environment.
    pub secrets: Secrets,
    /// Registered numbers.
    pub tenants: Arc<NumberStore>,
    /// What every call task gets.
    pub call: Arc<CallContext>,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Each carrier's call-control REST API.
    pub carriers: Vec<Arc<dyn carrier_control::CarrierControl>>,
    /// Each carrier's webhooks and stream upgrades.
    pub carrier_routes: Router<Arc<AppState>>,
    /// Concurrent `say` audio fetches.
    pub fetches: Arc<tokio::sync::Semaphore>,
    /// Control API requests per tenant.
    pub rate: rate::RateLimiter,
    /// False once shutdown began: new calls are refused.
    pub accepting: AtomicBool,
    /// Outbound calls being dialled.
    pub dialing: Arc<crate::runtime::dialing::DialingCalls>,
    /// Outbound calls per tenant (`limits.max_outbound_calls_per_tenant`).
    pub outbound: Arc<crate::runtime::capacity::Capacity>,
    /// This node's link to the cluster (`[cluster]`), if configured.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// HTTP to the other nodes (their `cluster.advertise_url`: operator addresses).
    pub cluster_http: reqwest::Client,
    /// Requests other nodes route here, until [`crate::server::serve`] takes them.
    pub cluster_requests: std::sync::Mutex<Option<crate::cluster::Requests>>,
}

impl AppState {
    /// The call-control API of `carrier`.
    pub fn carrier_control(&self, carrier: &str) -> Option<&Arc<dyn carrier_control::CarrierControl>> {
        self.carriers.iter().find(|c| c.carrier() == carrier)
    }

    /// Whether a media stream may connect now. Its call slot is reserved by
    /// its webhook (or at `start` for streams no webhook announced); this only
    /// bounds the sockets waiting for their `start`.
    pub fn admit_stream(&self) -> Result<(), (StatusCode, &'static str)> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
        }
        if self.call.registry.len() >= self.config.server.max_calls.saturating_mul(2).max(16) {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "at capacity"));
        }
        Ok(())
    }
}

/// A carrier's media-stream upgrade with the server's WebSocket limits
/// (read buffer at least `min_read` bytes).
pub fn stream_socket(
    ws: axum::extract::ws::WebSocketUpgrade,
    cfg: &crate::config::ServerConfig,
    min_read: usize,
) -> axum::extract::ws::WebSocketUpgrade {
    ws.read_buffer_size(cfg.read_buffer_bytes.max(min_read))
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
}

/// Whether a carrier's webhooks may come unsigned (no key configured): only
/// on a loopback listener, or with `CALLBRIDGE_ALLOW_UNSIGNED=1`.
pub fn unsigned_allowed(config: &Config, secrets: &Secrets) -> bool {
    config.server.listen.ip().is_loopback() || secrets.allow_unsigned
}

/// The public router: carriers' webhooks and streams, the tenants' control
/// API, health; metrics and the admin API too unless `server.admin_listen`
/// puts them on their own listener. Every request but an upgraded WebSocket
/// must be answered within `limits.request_timeout_ms`.
pub fn router(state: Arc<AppState>) -> Router {
    let admin_apart = !state.config.server.admin_listen.trim().is_empty();
    let timeout = Duration::from_millis(state.config.limits.request_timeout_ms);
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/calls", get(control::list_calls).post(outbound::create_call))
        .route("/v1/calls/{id}", get(control::get_call).delete(control::delete_call))
        .route("/v1/calls/{id}/transcript", get(control::transcript))
        .route("/v1/calls/{id}/recording", get(control::recording))
        .route("/v1/calls/{id}/say", post(control::say))
        .route("/v1/calls/{id}/interrupt", post(control::interrupt))
        .route("/v1/calls/{id}/hangup", post(control::hangup))
        .route("/v1/calls/{id}/transfer", post(control::transfer))
        .route("/openapi.json", get(control::openapi))
        .route("/schema/callbacks.json", get(control::callbacks_schema))
        .merge(dashboard_routes())
        .merge(state.carrier_routes.clone());
    if !admin_apart {
        r = r.merge(admin_routes()).route("/metrics", get(public_metrics));
    }
    r.layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout)).with_state(state)
}

/// The admin router (`server.admin_listen`): metrics without a token, the
/// admin API (still behind the admin token), health.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .merge(admin_routes())
        .route("/dashboard", get(dashboard::page))
        .route("/v1/dashboard/events", get(dashboard::admin_events))
        .with_state(state)
}

/// The live dashboard on the public listener (a token is needed for its
/// feed; the admin's only while the admin listener is not apart).
fn dashboard_routes() -> Router<Arc<AppState>> {
    Router::new().route("/dashboard", get(dashboard::page)).route("/v1/dashboard/events", get(dashboard::events))
}

fn admin_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/numbers", post(control::create_number))
        .route("/v1/numbers/{number}", get(control::get_number).delete(control::delete_number))
}

async fn healthz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    if s.accepting.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> axum::response::Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

/// `/metrics` on the public listener: with `CALLBRIDGE_METRICS_TOKEN` set, only
/// for that bearer token; without it, only when the listener is loopback
/// (local development). Otherwise it is not there (404).
async fn public_metrics(State(s): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> axum::response::Response {
    match s.secrets.metrics_token.as_deref() {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .unwrap_or("");
            if bool::from(subtle::ConstantTimeEq::ct_eq(given.trim().as_bytes(), token.as_bytes())) {
                metrics_text(State(s)).await
            } else {
                (StatusCode::UNAUTHORIZED, "metrics bearer token required\n").into_response()
            }
        }
        None if s.config.server.listen.ip().is_loopback() => metrics_text(State(s)).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
