//! The registry of live calls: call id → a bounded control sender and the
//! call's public details (who it belongs to, who is talking).
//!
//! It holds no call state (each call task owns its own); only what lets the rest
//! of the server reach a call. A [`Registration`] guard removes the entry and
//! lowers the active-calls gauge when the call task ends, however it ends, and
//! remembers the call as recently ended for a while so the control API can say
//! "ended" (410) rather than "unknown" (404).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::ids::CallId;
use crate::runtime::dashboard::{CallState, LiveCall};
use crate::session::{ControlCommand, Say};

/// A command from outside a call to its task.
#[derive(Debug)]
pub enum CallControl {
    /// Handled by the session (hang up, interrupt, shutdown, transferred).
    Session(ControlCommand),
    /// Speak: a clip (PCM at 8 kHz) or text (engines that speak text).
    Say {
        /// what to say
        what: Say,
        /// stop what the bot is saying first
        interrupt: bool,
        /// the caller may talk over it (false: barge-in waits until it ends)
        interruptible: bool,
        /// the outcome
        reply: oneshot::Sender<Result<(), crate::call::SayError>>,
    },
    /// The carrier is moving the call to `to`: its stream's end is a
    /// transfer, whose outcome the carrier reports later.
    Transferring {
        /// destination
        to: String,
    },
}

/// What the control API may show about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallDetails {
    /// Owning tenant (its number), if any.
    pub tenant: Option<String>,
    /// Caller.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Carrier label.
    pub carrier: &'static str,
    /// The carrier's id of the call.
    pub carrier_call_id: String,
    /// The carrier's other ids (account, leg, …).
    pub carrier_ids: Vec<(&'static str, String)>,
    /// Engine answering.
    pub engine: &'static str,
    /// When the stream started.
    pub started_at: SystemTime,
}

/// How to reach one live call.
#[derive(Debug, Clone)]
pub struct CallHandle {
    /// Bounded control lane into the call task.
    pub control: mpsc::Sender<CallControl>,
    /// Carrier label.
    pub carrier: &'static str,
    /// Known once the stream started (and was admitted).
    pub details: Option<Arc<CallDetails>>,
    /// What the call is doing (set by its task).
    pub live: Arc<LiveCall>,
}

/// How long ended calls are remembered.
pub const ENDED_MEMORY: Duration = Duration::from_secs(600);

/// Live calls.
#[derive(Debug, Default)]
pub struct Registry {
    calls: DashMap<CallId, CallHandle>,
    /// Tenants' calls that ended, and when (a call without a tenant has
    /// nobody to answer 410 to, so it is not kept).
    ended: DashMap<CallId, (String, Instant)>,
    emptied: Notify,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Add a call; it is removed when the returned guard drops.
    pub fn register(self: &Arc<Self>, id: CallId, handle: CallHandle) -> Registration {
        let live = handle.live.clone();
        self.calls.insert(id, handle);
        crate::metrics::calls_active().increment(1.0);
        Registration { registry: self.clone(), id, live }
    }

    /// Number of live calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is live.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Handle of one call.
    pub fn get(&self, id: CallId) -> Option<CallHandle> {
        self.calls.get(&id).map(|h| h.clone())
    }

    /// Every admitted call's details and state, in no order.
    pub fn for_each_live(&self, mut f: impl FnMut(&CallDetails, CallState)) {
        for e in self.calls.iter() {
            if let Some(d) = &e.details {
                f(d, e.live.state());
            }
        }
    }

    /// Admitted calls of `tenant` (all calls for `None`), oldest first.
    pub fn live_calls(&self, tenant: Option<&str>) -> Vec<(CallId, Arc<CallDetails>, CallState)> {
        let mut v: Vec<_> = self
            .calls
            .iter()
            .filter_map(|e| {
                let d = e.details.as_ref()?;
                (tenant.is_none() || d.tenant.as_deref() == tenant).then(|| (*e.key(), d.clone(), e.live.state()))
            })
            .collect();
        v.sort_by_key(|(_, d, _)| d.started_at);
        v
    }

    /// Whether `id` ended recently and belonged to `tenant`.
    pub fn ended_recently(&self, id: CallId, tenant: &str) -> bool {
        self.ended.get(&id).is_some_and(|e| e.0 == tenant)
    }

    /// Forget ended calls older than the memory window.
    pub fn sweep_ended(&self) {
        self.ended.retain(|_, (_, at)| at.elapsed() < ENDED_MEMORY);
    }

    /// Send `cmd` to every live call (best effort: a full lane is skipped).
    pub fn broadcast(&self, cmd: ControlCommand) -> usize {
        let senders: Vec<_> = self.calls.iter().map(|e| e.control.clone()).collect();
        senders.iter().filter(|s| s.try_send(CallControl::Session(cmd.clone())).is_ok()).count()
    }

    /// Wait until no call is live.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.emptied.notified();
            if self.calls.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

/// Removes its call from the registry on drop.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    id: CallId,
    live: Arc<LiveCall>,
}

impl Registration {
    /// The registered call.
    pub fn id(&self) -> CallId {
        self.id
    }

    /// The call's live state (its task sets it).
    pub fn live(&self) -> &Arc<LiveCall> {
        &self.live
    }

    /// Re-key the call (its id was assigned by the webhook) and publish its details.
    pub fn admit(&mut self, id: CallId, details: CallDetails) {
        if let Some((_, mut h)) = self.registry.calls.remove(&self.id) {
            h.details = Some(Arc::new(details));
            self.registry.calls.insert(id, h);
        }
        self.id = id;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some((_, h)) = self.registry.calls.remove(&self.id)
            && let Some(tenant) = h.details.as_ref().and_then(|d| d.tenant.clone())
        {
            self.registry.ended.insert(self.id, (tenant, Instant::now()));
        }
        crate::metrics::calls_active().decrement(1.0);
        if self.registry.calls.is_empty() {
            self.registry.emptied.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(tenant: &str) -> CallDetails {
        CallDetails {
            tenant: Some(tenant.into()),
            from: "+1".into(),
            to: tenant.into(),
            carrier: "fake",
            carrier_call_id: "CA1".into(),
            carrier_ids: Vec::new(),
            engine: "local",
            started_at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn guard_removes_and_wait_empty_returns() {
        let r = Registry::new();
        let (tx, mut rx) = mpsc::channel(1);
        let g =
            r.register(CallId(1), CallHandle { control: tx, carrier: "fake", details: None, live: LiveCall::new() });
        assert_eq!(r.len(), 1);
        assert_eq!(r.broadcast(ControlCommand::Shutdown), 1);
        assert!(matches!(rx.recv().await, Some(CallControl::Session(ControlCommand::Shutdown))));
        let r2 = r.clone();
        let waiter = tokio::spawn(async move { r2.wait_empty().await });
        drop(g);
        waiter.await.unwrap();
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn admitted_calls_are_listed_per_tenant_and_remembered_when_ended() {
        let r = Registry::new();
        let (tx, _rx) = mpsc::channel(1);
        let mut g = r.register(
            CallId(1),
            CallHandle { control: tx.clone(), carrier: "fake", details: None, live: LiveCall::new() },
        );
        let _other =
            r.register(CallId(2), CallHandle { control: tx, carrier: "fake", details: None, live: LiveCall::new() });
        assert!(r.live_calls(Some("+15550001111")).is_empty());
        g.admit(CallId(9), details("+15550001111"));
        assert!(r.get(CallId(1)).is_none());
        assert_eq!(r.live_calls(Some("+15550001111")).len(), 1);
        assert!(r.live_calls(Some("+15550002222")).is_empty());
        drop(g);
        assert!(r.ended_recently(CallId(9), "+15550001111"));
        assert!(!r.ended_recently(CallId(9), "+15550002222"));
        assert_eq!(r.len(), 1);
        assert_eq!(r.ended.len(), 1);
    }

    #[tokio::test]
    async fn a_call_without_a_tenant_is_not_remembered_once_ended() {
        // Nobody can ask for it (410 needs the tenant's token), so keeping it
        // would only grow the map by every embedded-default call for 10 minutes.
        let r = Registry::new();
        let (tx, _rx) = mpsc::channel(1);
        let mut g =
            r.register(CallId(1), CallHandle { control: tx, carrier: "fake", details: None, live: LiveCall::new() });
        g.admit(CallId(7), CallDetails { tenant: None, ..details("+15550001111") });
        drop(g);
        assert!(r.is_empty());
        assert_eq!(r.ended.len(), 0);
    }
}
