//! How many calls the server (and each tenant) may have at once, reserved
//! atomically where a call is first seen — the carrier's webhook — so a call
//! that cannot be served is answered "busy" by the carrier instead of
//! connecting to silence, and two webhooks racing for the last slot cannot
//! both win.
//!
//! A [`Slot`] is the reservation: it travels with the call (the webhook's
//! route, then the call task) and frees itself when dropped, however the call
//! ends or if its stream never comes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `server.max_calls` reached.
    Server,
    /// The tenant's `limits.max_calls_per_tenant` reached.
    Tenant,
    /// `cluster.max_calls` reached across the cluster.
    Cluster,
}

impl Full {
    /// Stable code for metrics.
    pub fn code(self) -> &'static str {
        match self {
            Full::Server => "at_capacity",
            Full::Tenant => "tenant_limit",
            Full::Cluster => "cluster_at_capacity",
        }
    }
}

/// Concurrent-call limits.
#[derive(Debug)]
pub struct Capacity {
    max: usize,
    per_tenant: usize,
    live: AtomicUsize,
    tenants: DashMap<String, usize>,
}

/// One reserved call slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    cap: Arc<Capacity>,
    tenant: Option<String>,
    /// Another reservation held as long as this one (an outbound call's
    /// place under the tenant's outbound limit).
    linked: Option<Box<Slot>>,
    /// The call's place under the cluster's limits (cluster mode).
    lease: Option<crate::cluster::admission::Lease>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.cap.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(t) = &self.tenant {
            // Remove the entry when it reaches zero so the map does not grow with tenants.
            self.cap.tenants.remove_if_mut(t, |_, n| {
                *n -= 1;
                *n == 0
            });
        }
    }
}

impl Slot {
    /// This slot, also holding `other` until it is released.
    pub fn holding(mut self, other: Slot) -> Slot {
        self.linked = Some(Box::new(other));
        self
    }

    /// This slot, also holding the call's cluster-wide `lease`.
    pub fn with_lease(mut self, lease: Option<crate::cluster::admission::Lease>) -> Slot {
        self.lease = lease;
        self
    }

    /// Another node runs the call now: its cluster lease is that node's to end.
    pub fn disarm_lease(&self) {
        if let Some(l) = &self.lease {
            l.disarm();
        }
    }
}

impl Capacity {
    /// At most `max` calls, and `per_tenant` per tenant (0 = no per-tenant limit).
    pub fn new(max: usize, per_tenant: usize) -> Arc<Self> {
        Arc::new(Self { max, per_tenant, live: AtomicUsize::new(0), tenants: DashMap::new() })
    }

    /// Reserve a slot for a call of `tenant` (none: the embedded default).
    pub fn try_reserve(self: &Arc<Self>, tenant: Option<&str>) -> Result<Slot, Full> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .map_err(|_| Full::Server)?;
        let server_only = Slot { cap: self.clone(), tenant: None, linked: None, lease: None };
        let Some(t) = tenant else { return Ok(server_only) };
        if self.per_tenant > 0 {
            let mut n = self.tenants.entry(t.to_string()).or_insert(0);
            if *n >= self.per_tenant {
                drop(n);
                return Err(Full::Tenant); // `server_only` drops: the server slot is released
            }
            *n += 1;
        } else {
            *self.tenants.entry(t.to_string()).or_insert(0) += 1;
        }
        std::mem::forget(server_only);
        Ok(Slot { cap: self.clone(), tenant: Some(t.to_string()), linked: None, lease: None })
    }

    /// Calls holding a slot.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Calls of `tenant` holding a slot.
    pub fn of_tenant(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |n| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reserved_atomically_limited_per_tenant_and_released_on_drop() {
        let c = Capacity::new(3, 2);
        let a1 = c.try_reserve(Some("A")).unwrap();
        let a2 = c.try_reserve(Some("A")).unwrap();
        assert_eq!(c.try_reserve(Some("A")).unwrap_err(), Full::Tenant);
        assert_eq!(c.live(), 2, "a refused tenant reservation gives its server slot back");
        let b = c.try_reserve(Some("B")).unwrap();
        assert_eq!(c.try_reserve(None).unwrap_err(), Full::Server);
        drop(a1);
        assert_eq!(c.of_tenant("A"), 1);
        let d = c.try_reserve(None).unwrap();
        drop((a2, b, d));
        assert_eq!((c.live(), c.of_tenant("A"), c.tenants.len()), (0, 0, 0), "nothing left behind");
        // A slot holding another (an outbound call's) releases both.
        let out = Capacity::new(usize::MAX, 1);
        let s = c.try_reserve(Some("A")).unwrap().holding(out.try_reserve(Some("A")).unwrap());
        assert_eq!(out.try_reserve(Some("A")).unwrap_err(), Full::Tenant);
        drop(s);
        assert_eq!((c.live(), out.live(), out.of_tenant("A")), (0, 0, 0));
    }

    #[test]
    fn racing_reservations_never_exceed_the_limit() {
        let c = Capacity::new(100, 0);
        let held: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..50).filter_map(|_| c.try_reserve(Some("T")).ok()).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 100, "exactly the limit was granted");
        assert_eq!(c.live(), 100);
        drop(held);
        assert_eq!(c.live(), 0);
    }
}
