//! Routes between a webhook and its stream, shared so the stream may connect
//! to any node. The node that took the webhook keeps the route locally (it
//! holds what does not travel: the reserved slot, the early event stream)
//! and writes its portable part to `pending:{carrier}:{call}:{token hash}`
//! with a TTL a little longer than `server.stream_wait_ms`.
//!
//! Whoever first replaces the copy with a tombstone owns the route, which
//! keeps the stream token single-use across the cluster: a stream arriving
//! on another node swaps in `taken` (`SET … XX GET`: only the right token
//! names the key) and tells the webhook's node, which drops its own copy
//! without a word; the webhook's node, claiming locally (or sweeping an
//! unclaimed route), swaps in `owned` (`SET … GET`, made even if its copy
//! is still on its way, which then finds the key and is not written: `NX`)
//! and refuses if it finds `taken`. With Redis down a node falls back to its
//! own routes.

use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError};
use crate::contract::CallPlan;
use crate::ids::CallId;
use crate::runtime::admission::Route;
use crate::signature::sha256_hex;
use crate::tenant::NumberStore;

/// The part of a [`Route`] that travels.
#[derive(Debug, Serialize, Deserialize)]
struct Portable {
    call_id: String,
    tenant_id: Option<String>,
    tenant_number: Option<String>,
    plan: CallPlan,
    plan_failed: bool,
    from: String,
    to: String,
    seq_used: u64,
    carrier_call_id: String,
    received_at_ms: u64,
    direction: String,
    answered_by: String,
    node: String,
}

/// What owning a shared route came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Owned {
    /// This node deleted the key: the route is its own.
    Won,
    /// Another node took it first.
    Lost,
    /// Redis did not answer: decide locally.
    Unknown,
}

/// Tombstones: the route was taken by a stream on another node / by this one.
const TAKEN: &[u8] = b"taken";
const OWNED: &[u8] = b"owned";

fn key(c: &Cluster, carrier: &str, carrier_call_id: &str, token: &str) -> String {
    c.key(&format!("pending:{carrier}:{carrier_call_id}:{}", &sha256_hex(token.as_bytes())[..32]))
}

impl Cluster {
    /// The portable part of `route`, ready for [`Self::share_route`].
    pub fn portable(&self, route: &Route) -> Vec<u8> {
        let p = Portable {
            call_id: route.call_id.to_string(),
            tenant_id: route.tenant.as_ref().map(|t| t.id.clone()),
            tenant_number: route.tenant.as_ref().map(|t| t.number.clone()),
            plan: route.plan.clone(),
            plan_failed: route.plan_failed,
            from: route.from.clone(),
            to: route.to.clone(),
            // `ringing` used one more sequence number on the early stream.
            seq_used: route.seq_used + u64::from(route.early.is_some()),
            carrier_call_id: route.carrier_call_id.clone(),
            received_at_ms: crate::callstore::unix_ms(route.received_at) as u64,
            direction: route.direction.into(),
            answered_by: route.answered_by.clone(),
            node: self.node.clone(),
        };
        serde_json::to_vec(&p).expect("serializes")
    }

    /// Share a route kept locally with `token` (its [`Self::portable`] part) for `ttl`.
    pub async fn share_route(
        &self,
        carrier: &str,
        carrier_call_id: &str,
        token: &str,
        portable: Vec<u8>,
        ttl: std::time::Duration,
    ) -> Result<(), ClusterError> {
        let k = key(self, carrier, carrier_call_id, token);
        let ms = ttl.as_millis() as u64;
        self.run(async move |c| {
            redis::cmd("SET").arg(k).arg(portable).arg("NX").arg("PX").arg(ms).query_async::<()>(c).await
        })
        .await
    }

    /// Take the shared route a stream claims with `token`, if a node shared
    /// one. The route's tenant must still own the number here.
    pub async fn take_route(
        &self,
        carrier: &'static str,
        carrier_call_id: &str,
        token: &str,
        tenants: &NumberStore,
    ) -> Result<Option<Route>, ClusterError> {
        let k = key(self, carrier, carrier_call_id, token);
        let ms = self.call_ttl.as_millis() as u64 * 4;
        let json: Option<Vec<u8>> = self
            .run(async move |c| {
                redis::cmd("SET").arg(k).arg(TAKEN).arg("XX").arg("GET").arg("PX").arg(ms).query_async(c).await
            })
            .await?;
        let Some(json) = json.filter(|j| j != TAKEN && j != OWNED) else { return Ok(None) };
        let p: Portable = serde_json::from_slice(&json).map_err(|e| ClusterError::Data(e.to_string()))?;
        let call_id: CallId = p.call_id.parse().map_err(|_| ClusterError::Data("call id".into()))?;
        let tenant = match (&p.tenant_id, &p.tenant_number) {
            (Some(id), Some(number)) => match tenants.get(number) {
                Some(t) if &t.id == id => Some(t),
                // Re-registered or deleted since the webhook: the call is not this tenant's.
                _ => return Err(ClusterError::Data("the route's number changed owner".into())),
            },
            _ => None,
        };
        let mut r = Route::unannounced(call_id, &p.from, &p.to);
        r.tenant = tenant;
        r.plan = p.plan;
        r.plan_failed = p.plan_failed;
        r.seq_used = p.seq_used;
        r.carrier = carrier;
        r.carrier_call_id = p.carrier_call_id;
        r.received_at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(p.received_at_ms);
        r.direction = if p.direction == "outbound" { "outbound" } else { "" };
        r.answered_by = p.answered_by;
        tracing::info!(call = %call_id, from_node = %p.node, "cluster: stream took a route another node's webhook decided");
        // The webhook's node drops its copy now (not at its sweep): its slot, its lease.
        let notice = format!("{carrier}\n{carrier_call_id}");
        if let Err(e) = self.publish(&self.key(&format!("node:{}:taken", p.node)), notice.as_bytes()).await {
            tracing::warn!(error = %e, "cluster: the webhook's node not told; it drops the route at its sweep");
        }
        Ok(Some(r))
    }

    /// Make the shared copy of a local route this node's (see the module doc).
    pub async fn own_route(&self, carrier: &str, carrier_call_id: &str, token: &str) -> Owned {
        let k = key(self, carrier, carrier_call_id, token);
        let ms = self.call_ttl.as_millis() as u64 * 4;
        let old: Result<Option<Vec<u8>>, _> = self
            .run(async move |c| redis::cmd("SET").arg(k).arg(OWNED).arg("GET").arg("PX").arg(ms).query_async(c).await)
            .await;
        match old {
            Ok(Some(v)) if v == TAKEN => Owned::Lost,
            Ok(_) => Owned::Won,
            Err(_) => Owned::Unknown,
        }
    }
}
