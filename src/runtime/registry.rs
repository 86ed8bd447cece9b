//! The registry of live calls: call id → a bounded control sender.
//!
//! It holds no call state (each call task owns its own); only what lets the rest
//! of the server reach a call. A [`Registration`] guard removes the entry and
//! lowers the active-calls gauge when the call task ends, however it ends.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};

use crate::ids::CallId;
use crate::session::ControlCommand;

/// How to reach one live call.
#[derive(Debug, Clone)]
pub struct CallHandle {
    /// Bounded control lane into the call task.
    pub control: mpsc::Sender<ControlCommand>,
    /// Carrier label.
    pub carrier: &'static str,
    /// Carrier call id (e.g. Twilio CallSid), once known.
    pub carrier_call_id: Option<String>,
}

/// Live calls.
#[derive(Debug, Default)]
pub struct Registry {
    calls: DashMap<CallId, CallHandle>,
    emptied: Notify,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Add a call; it is removed when the returned guard drops.
    pub fn register(self: &Arc<Self>, id: CallId, handle: CallHandle) -> Registration {
        self.calls.insert(id, handle);
        crate::metrics::calls_active().increment(1.0);
        Registration { registry: self.clone(), id }
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

    /// Update the carrier call id of a live call.
    pub fn set_carrier_call_id(&self, id: CallId, carrier_id: String) {
        if let Some(mut h) = self.calls.get_mut(&id) {
            h.carrier_call_id = Some(carrier_id);
        }
    }

    /// Send `cmd` to every live call (best effort: a full lane is skipped).
    pub fn broadcast(&self, cmd: ControlCommand) -> usize {
        let senders: Vec<_> = self.calls.iter().map(|e| e.control.clone()).collect();
        senders.iter().filter(|s| s.try_send(cmd.clone()).is_ok()).count()
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
}

impl Registration {
    /// The registered call.
    pub fn id(&self) -> CallId {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.calls.remove(&self.id);
        crate::metrics::calls_active().decrement(1.0);
        if self.registry.calls.is_empty() {
            self.registry.emptied.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn guard_removes_and_wait_empty_returns() {
        let r = Registry::new();
        let (tx, mut rx) = mpsc::channel(1);
        let g = r.register(CallId(1), CallHandle { control: tx, carrier: "twilio", carrier_call_id: None });
        assert_eq!(r.len(), 1);
        assert_eq!(r.broadcast(ControlCommand::Shutdown), 1);
        assert_eq!(rx.recv().await, Some(ControlCommand::Shutdown));
        let r2 = r.clone();
        let waiter = tokio::spawn(async move { r2.wait_empty().await });
        drop(g);
        waiter.await.unwrap();
        assert!(r.is_empty());
    }
}
