//! HTTP surface (axum): carrier webhooks and stream upgrades, health, metrics.
//!
//! Handlers are thin: they check admission and hand the socket to a call task.

pub mod carrier_control;
pub mod control;
pub mod twilio;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;

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
    /// Concurrent `say` audio fetches.
    pub fetches: Arc<tokio::sync::Semaphore>,
    /// False once shutdown began: new calls are refused.
    pub accepting: AtomicBool,
}

impl AppState {
    /// The call-control API of `carrier`.
    pub fn carrier_control(&self, carrier: &str) -> Option<&Arc<dyn carrier_control::CarrierControl>> {
        self.carriers.iter().find(|c| c.carrier() == carrier)
    }

    /// Whether a new call may be admitted now.
    pub fn admit(&self) -> Result<(), (StatusCode, &'static str)> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
        }
        if self.call.registry.len() >= self.config.server.max_calls {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "at capacity"));
        }
        Ok(())
    }
}

/// The full router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/numbers", post(control::create_number))
        .route("/v1/numbers/{number}", get(control::get_number).delete(control::delete_number))
        .route("/v1/calls", get(control::list_calls))
        .route("/v1/calls/{id}", get(control::get_call).delete(control::delete_call))
        .route("/v1/calls/{id}/transcript", get(control::transcript))
        .route("/v1/calls/{id}/recording", get(control::recording))
        .route("/v1/calls/{id}/say", post(control::say))
        .route("/v1/calls/{id}/interrupt", post(control::interrupt))
        .route("/v1/calls/{id}/hangup", post(control::hangup))
        .route("/v1/calls/{id}/transfer", post(control::transfer))
        .route("/openapi.json", get(control::openapi))
        .route("/schema/callbacks.json", get(control::callbacks_schema))
        .merge(twilio::routes())
        .with_state(state)
}

async fn healthz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    if s.accepting.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}
