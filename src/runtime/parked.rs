//! Calls whose media left us for a transfer. The carrier bridged the caller
//! elsewhere; the call is not over until the carrier says how the transfer
//! went (Twilio: the `<Dial action>` callback). Until then its event stream
//! (sequence numbers, conversation log) and report wait here: a completed
//! transfer then ends the call (`transfer.completed`, `call.ended` reason
//! `transferred`), a failed one brings the caller back to the bot on the same
//! call (`transfer.failed`, a new stream that resumes it). Parked calls nobody
//! asks about end on their own after `max_age`.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::callback::delivery::EventSender;
use crate::contract::{CallPlan, CallSummary};
use crate::ids::CallId;
use crate::tenant::Tenant;

/// A call waiting for its transfer's outcome.
#[derive(Debug)]
pub struct Parked {
    /// Our id.
    pub call_id: CallId,
    /// Owner.
    pub tenant: Option<std::sync::Arc<Tenant>>,
    /// The plan it ran with.
    pub plan: CallPlan,
    /// Caller.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Where it was transferred.
    pub destination: String,
    /// Its event stream, where it left off.
    pub events: EventSender,
    /// The report so far (reason and conversation filled in at the end).
    pub summary: CallSummary,
    at: Instant,
}

impl Parked {
    /// A call parked now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        call_id: CallId,
        tenant: Option<std::sync::Arc<Tenant>>,
        plan: CallPlan,
        from: String,
        to: String,
        destination: String,
        events: EventSender,
        summary: CallSummary,
    ) -> Self {
        Self { call_id, tenant, plan, from, to, destination, events, summary, at: Instant::now() }
    }
}

/// Parked calls by id.
#[derive(Debug, Default)]
pub struct ParkedCalls {
    map: DashMap<CallId, Parked>,
}

impl ParkedCalls {
    /// Empty.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }

    /// Park a call.
    pub fn park(&self, p: Parked) {
        self.map.insert(p.call_id, p);
    }

    /// Take a parked call (its outcome arrived).
    pub fn take(&self, id: CallId) -> Option<Parked> {
        self.map.remove(&id).map(|(_, p)| p)
    }

    /// Take the calls parked longer than `max_age`.
    pub fn sweep(&self, max_age: Duration) -> Vec<Parked> {
        let old: Vec<CallId> = self.map.iter().filter(|e| e.at.elapsed() >= max_age).map(|e| *e.key()).collect();
        old.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// Calls parked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is parked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
