//! Between the webhook and the stream: what the voice webhook decided about a
//! call (its id, tenant, plan), kept by carrier call id until the call's stream
//! starts and claims it. Entries nobody claims expire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::callback::CallPlan;
use crate::ids::CallId;
use crate::tenant::Tenant;

/// How a call is handled, decided at the webhook.
#[derive(Debug, Clone)]
pub struct Route {
    /// Our id (already used in `call.started`).
    pub call_id: CallId,
    /// Owner, or none (embedded default: no callback).
    pub tenant: Option<Arc<Tenant>>,
    /// The backend's plan (defaults when it failed).
    pub plan: CallPlan,
    /// The plan request failed or timed out: say the fallback line.
    pub plan_failed: bool,
    /// Caller.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Callback sequence numbers already used.
    pub seq_used: u64,
}

/// Routes waiting for their stream, by carrier call id.
#[derive(Debug, Default)]
pub struct PendingCalls {
    map: DashMap<String, (Route, Instant)>,
}

impl PendingCalls {
    /// Empty.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Keep `route` for the stream of `carrier_call_id`.
    pub fn insert(&self, carrier_call_id: &str, route: Route) {
        self.map.insert(carrier_call_id.to_string(), (route, Instant::now()));
    }

    /// Claim the route of `carrier_call_id` (once).
    pub fn take(&self, carrier_call_id: &str) -> Option<Route> {
        self.map.remove(carrier_call_id).map(|(_, (r, _))| r)
    }

    /// Drop routes older than `max_age`.
    pub fn sweep(&self, max_age: Duration) {
        self.map.retain(|_, (_, at)| at.elapsed() < max_age);
    }

    /// Routes waiting.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
