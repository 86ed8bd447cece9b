//! Cluster-wide concurrent-call limits: `cluster.max_calls` across all nodes,
//! and `limits.max_calls_per_tenant` per tenant across all nodes. A call's
//! place is a lease — its call id in the sorted sets `slots` and
//! `slots:{tenant}`, scored with an expiry — taken atomically by one Lua
//! script (expired leases purged, both counts checked, both added) where the
//! call is first seen, beside the node's own [`crate::runtime::capacity`].
//!
//! Leases follow the call, not the node that took the webhook: every
//! heartbeat, the node running a call (or still holding its route) pushes
//! the expiry on; the call's end removes it (its [`Lease`] dropping, or the
//! next heartbeat of the node that ran it). A dead node's leases expire
//! within `cluster.call_ttl_ms`. With Redis unreachable a node admits on
//! its own limits alone (and says so in its log).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Cluster, ClusterError, unix_ms};
use crate::ids::CallId;
use crate::runtime::capacity::Full;

/// Purge expired leases, check both counts, add the lease to both sets.
/// KEYS: slots, slots:{tenant} (absent: no tenant). ARGV: now, expiry,
/// member, cluster max (0 = none), tenant max (0 = none).
/// Returns 0 (taken), 1 (cluster full), 2 (tenant full).
const RESERVE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local max, per = tonumber(ARGV[4]), tonumber(ARGV[5])
if max > 0 and redis.call('ZCARD', KEYS[1]) >= max then return 1 end
if KEYS[2] then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  if per > 0 and redis.call('ZCARD', KEYS[2]) >= per then return 2 end
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 0
";

/// A call's place under the cluster's limits; released when dropped, unless
/// disarmed (another node took the call over).
pub struct Lease {
    cluster: Arc<Cluster>,
    call: CallId,
    tenant: Option<String>,
    armed: AtomicBool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("call", &self.call).finish()
    }
}

impl Lease {
    /// Leave the lease to the node that now runs the call.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Release);
        self.cluster.leases.remove(&self.call);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        self.cluster.leases.remove(&self.call);
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (c, call, tenant) = (self.cluster.clone(), self.call, self.tenant.take());
        rt.spawn(async move {
            // Best effort: a lease not removed here expires with its TTL.
            let _ = c.release(call, tenant.as_deref()).await;
        });
    }
}

impl Cluster {
    /// Take a cluster-wide place for `call` of `tenant` under `max` calls in
    /// all (0 = no limit) and `per_tenant` per tenant (0 = no limit).
    /// `Ok(None)`: Redis did not answer, the node decides alone.
    pub async fn reserve(
        self: &Arc<Self>,
        call: CallId,
        tenant: Option<&str>,
        max: usize,
        per_tenant: usize,
    ) -> Result<Option<Lease>, Full> {
        if max == 0 && per_tenant == 0 {
            return Ok(None);
        }
        let now = unix_ms();
        let expiry = now + self.call_ttl.as_millis() as u64;
        let mut keys = vec![self.key("slots")];
        if let Some(t) = tenant {
            keys.push(self.key(&format!("slots:{t}")));
        }
        let member = call.to_string();
        let res: Result<u8, ClusterError> = self
            .run(async move |c| {
                let script = redis::Script::new(RESERVE);
                let mut inv = script.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(now).arg(expiry).arg(&member).arg(max).arg(per_tenant);
                inv.invoke_async(c).await
            })
            .await;
        match res {
            Ok(0) => {
                self.leases.insert(call, tenant.map(str::to_string));
                Ok(Some(Lease {
                    cluster: self.clone(),
                    call,
                    tenant: tenant.map(str::to_string),
                    armed: AtomicBool::new(true),
                }))
            }
            Ok(1) => Err(Full::Cluster),
            Ok(_) => Err(Full::Tenant),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: admission by this node's limits alone (Redis unreachable)");
                Ok(None)
            }
        }
    }

    /// Give `call`'s place back.
    pub async fn release(&self, call: CallId, tenant: Option<&str>) -> Result<(), ClusterError> {
        let mut p = redis::pipe();
        p.cmd("ZREM").arg(self.key("slots")).arg(call.to_string()).ignore();
        if let Some(t) = tenant {
            p.cmd("ZREM").arg(self.key(&format!("slots:{t}"))).arg(call.to_string()).ignore();
        }
        self.run(async move |c| p.query_async::<()>(c).await).await
    }
}
