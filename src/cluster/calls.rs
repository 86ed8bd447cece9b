//! The cluster's view of live calls. Every heartbeat a node writes each of
//! its live calls as `call:{id}` (JSON: owner node, tenant, carrier, from, to,
//! started, state) with a TTL of `cluster.call_ttl_ms`, and scores it in the
//! tenant's sorted set `calls:{tenant}` with the same expiry; calls that
//! ended since the last beat are deleted. A node that dies simply stops
//! beating: its calls drop out of the view within the TTL.
//!
//! The same beat pushes on the expiry of the admission leases of the calls
//! the node runs or holds routes for ([`super::admission`]), and removes the
//! leases of the calls that ended.
//!
//! One pipelined round trip per heartbeat per node, whatever the number of
//! calls (4 commands per live call with a tenant, 4 per ended call).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Cluster, ClusterError, unix_ms};
use crate::ids::CallId;
use crate::runtime::registry::Registry;

/// One live call as the cluster sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteCall {
    /// Our id.
    pub call_id: String,
    /// The node holding it.
    pub node: String,
    /// Owner's tenant id.
    pub tenant: String,
    /// Caller.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Carrier label.
    pub carrier: String,
    /// The carrier's id of the call.
    pub carrier_call_id: String,
    /// Engine label.
    pub engine: String,
    /// Unix ms.
    pub started_at_ms: u64,
    /// `listening`, `thinking`, `speaking` at the last beat.
    pub state: String,
}

impl RemoteCall {
    /// The control API's JSON for it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "call_id": self.call_id,
            "from": self.from,
            "to": self.to,
            "carrier": self.carrier,
            "carrier_call_id": self.carrier_call_id,
            "engine": self.engine,
            "started_at_ms": self.started_at_ms,
            "duration_ms": unix_ms().saturating_sub(self.started_at_ms),
            "state": self.state,
            "node": self.node,
        })
    }
}

/// What the last heartbeat wrote: calls (and their tenants) to delete once
/// they end.
#[derive(Debug, Default)]
pub struct Beats {
    last: HashSet<(CallId, String)>,
}

impl Cluster {
    /// Write this node's live calls, delete the ones that ended.
    pub async fn beat(&self, registry: &Registry, beats: &mut Beats) -> Result<usize, ClusterError> {
        let ttl = self.call_ttl.as_millis() as u64;
        let expires = unix_ms() + ttl;
        let mut now = HashSet::with_capacity(beats.last.len());
        let mut p = redis::pipe();
        // Admission leases follow the calls: the ones this node runs, and the
        // ones it took at a webhook whose stream has not come yet.
        let slots = self.key("slots");
        let mut leased = HashSet::new();
        let admission = self.admission;
        // A call running here is (re)added: after Redis lost it (a restart, an
        // outage past the TTL) it counts again. A route this node only holds is
        // pushed on if still there (`XX`): another node may run, and end, it.
        let mut lease = |p: &mut redis::Pipeline, id: CallId, tenant: Option<&str>, running: bool| {
            if !admission || !leased.insert(id) {
                return;
            }
            let only_if_there = if running { None } else { Some("XX") };
            p.cmd("ZADD").arg(&slots).arg(only_if_there).arg(expires).arg(id.to_string()).ignore();
            if let Some(t) = tenant {
                p.cmd("ZADD")
                    .arg(self.key(&format!("slots:{t}")))
                    .arg(only_if_there)
                    .arg(expires)
                    .arg(id.to_string())
                    .ignore();
            }
        };
        let live = registry.live_calls(None);
        for (id, d, _) in &live {
            lease(&mut p, *id, d.tenant.as_deref(), true);
        }
        for e in self.leases.iter() {
            lease(&mut p, *e.key(), e.value().as_deref(), false);
        }
        for (id, d, state) in live {
            let Some(tenant) = d.tenant.clone() else { continue };
            let call = RemoteCall {
                call_id: id.to_string(),
                node: self.node.clone(),
                tenant: tenant.clone(),
                from: d.from.clone(),
                to: d.to.clone(),
                carrier: d.carrier.into(),
                carrier_call_id: d.carrier_call_id.clone(),
                engine: d.engine.into(),
                started_at_ms: d.started_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_millis() as u64),
                state: state.label().into(),
            };
            let json = serde_json::to_vec(&call).expect("serializes");
            p.cmd("SET").arg(self.key(&format!("call:{id}"))).arg(json).arg("PX").arg(ttl).ignore();
            p.cmd("ZADD").arg(self.key(&format!("calls:{tenant}"))).arg(expires).arg(id.to_string()).ignore();
            now.insert((id, tenant));
        }
        for (id, tenant) in beats.last.difference(&now) {
            self.remember_data(&mut p, *id);
            self.remember_ended(&mut p, *id, tenant);
            p.cmd("DEL").arg(self.key(&format!("call:{id}"))).ignore();
            p.cmd("ZREM").arg(self.key(&format!("calls:{tenant}"))).arg(id.to_string()).ignore();
            // Its admission lease ends with it, whichever node took it.
            if self.admission && !self.leases.contains_key(id) {
                p.cmd("ZREM").arg(&slots).arg(id.to_string()).ignore();
                p.cmd("ZREM").arg(self.key(&format!("slots:{tenant}"))).arg(id.to_string()).ignore();
            }
        }
        let live = now.len();
        // A node's liveness, and where the others reach its call data.
        p.cmd("SET").arg(self.key(&format!("node:{}", self.node))).arg(&self.advertise_url).arg("PX").arg(ttl).ignore();
        self.run(async move |c| p.query_async::<()>(c).await).await?;
        beats.last = now;
        Ok(live)
    }

    /// Remove every call this node wrote (a draining node leaves nothing behind).
    pub async fn forget_calls(&self, beats: &mut Beats) -> Result<(), ClusterError> {
        let mut p = redis::pipe();
        for (id, tenant) in beats.last.drain() {
            self.remember_data(&mut p, id);
            self.remember_ended(&mut p, id, &tenant);
            p.cmd("DEL").arg(self.key(&format!("call:{id}"))).ignore();
            p.cmd("ZREM").arg(self.key(&format!("calls:{tenant}"))).arg(id.to_string()).ignore();
            p.cmd("ZREM").arg(self.key("slots")).arg(id.to_string()).ignore();
            p.cmd("ZREM").arg(self.key(&format!("slots:{tenant}"))).arg(id.to_string()).ignore();
        }
        // Leases of routes whose stream never came here.
        for e in self.leases.iter() {
            p.cmd("ZREM").arg(self.key("slots")).arg(e.key().to_string()).ignore();
            if let Some(t) = e.value() {
                p.cmd("ZREM").arg(self.key(&format!("slots:{t}"))).arg(e.key().to_string()).ignore();
            }
        }
        p.cmd("DEL").arg(self.key(&format!("node:{}", self.node))).ignore();
        self.run(async move |c| p.query_async::<()>(c).await).await
    }

    /// Note that this node keeps the data of ended call `id`.
    fn remember_data(&self, p: &mut redis::Pipeline, id: CallId) {
        // The store's retention, or 30 days when it keeps calls for ever: the
        // key must not outlive every use.
        let ttl = self.data_ttl.unwrap_or(std::time::Duration::from_secs(30 * 86_400));
        p.cmd("SET").arg(self.key(&format!("data:{id}"))).arg(&self.node).arg("EX").arg(ttl.as_secs()).ignore();
    }

    /// Call `id` of `tenant` has ended: control requests for it on any node
    /// answer 410 `call_ended` for as long as its own node would.
    fn remember_ended(&self, p: &mut redis::Pipeline, id: CallId, tenant: &str) {
        let ttl = crate::runtime::registry::ENDED_MEMORY.as_secs();
        p.cmd("SET").arg(self.key(&format!("ended:{id}"))).arg(tenant).arg("EX").arg(ttl).ignore();
    }

    /// Whether call `id` of `tenant` ended in the last
    /// [`crate::runtime::registry::ENDED_MEMORY`], on whichever node.
    pub async fn ended_recently(&self, id: CallId, tenant: &str) -> Result<bool, ClusterError> {
        let key = self.key(&format!("ended:{id}"));
        let who: Option<String> = self.run(async move |c| redis::cmd("GET").arg(key).query_async(c).await).await?;
        Ok(who.as_deref() == Some(tenant))
    }

    /// The node keeping ended call `id`'s data, and where to reach it ("" if
    /// it is down or advertises no address; `None` if no other node has it).
    pub async fn data_node(&self, id: CallId) -> Result<Option<(String, String)>, ClusterError> {
        let key = self.key(&format!("data:{id}"));
        let node: Option<String> = self.run(async move |c| redis::cmd("GET").arg(key).query_async(c).await).await?;
        let Some(node) = node.filter(|n| *n != self.node) else { return Ok(None) };
        let key = self.key(&format!("node:{node}"));
        // A node that is down has no `node:` key: "" (unreachable), not unknown.
        let url: Option<String> = self.run(async move |c| redis::cmd("GET").arg(key).query_async(c).await).await?;
        Ok(Some((node, url.unwrap_or_default())))
    }

    /// The tenant's live calls on other nodes.
    pub async fn remote_calls(&self, tenant: &str) -> Result<Vec<RemoteCall>, ClusterError> {
        let set = self.key(&format!("calls:{tenant}"));
        let now = unix_ms();
        let ids: Vec<String> = self
            .run(async move |c| {
                let (ids,): (Vec<String>,) = redis::pipe()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&set)
                    .arg("-inf")
                    .arg(now)
                    .ignore()
                    .cmd("ZRANGEBYSCORE")
                    .arg(&set)
                    .arg(now)
                    .arg("+inf")
                    .query_async(c)
                    .await?;
                Ok(ids)
            })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(&format!("call:{id}"))).collect();
        let vals: Vec<Option<Vec<u8>>> =
            self.run(async move |c| redis::cmd("MGET").arg(keys).query_async(c).await).await?;
        Ok(vals
            .into_iter()
            .flatten()
            .filter_map(|j| serde_json::from_slice::<RemoteCall>(&j).ok())
            .filter(|c| c.tenant == tenant && c.node != self.node)
            .collect())
    }

    /// The cluster's entry for call `id`, if a live node holds it.
    pub async fn find_call(&self, id: CallId) -> Result<Option<RemoteCall>, ClusterError> {
        let key = self.key(&format!("call:{id}"));
        let json: Option<Vec<u8>> = self.run(async move |c| redis::cmd("GET").arg(key).query_async(c).await).await?;
        json.map(|j| serde_json::from_slice(&j).map_err(|e| ClusterError::Data(e.to_string()))).transpose()
    }
}

/// Beat every `cluster.heartbeat_ms` until `stop` turns true, then remove
/// this node's calls from the view (a drained node leaves nothing behind).
pub async fn heartbeat(
    c: std::sync::Arc<Cluster>,
    registry: std::sync::Arc<Registry>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut beats = Beats::default();
    let mut tick = tokio::time::interval(c.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        match c.beat(&registry, &mut beats).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("cluster: heartbeat back");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "cluster: heartbeat failed; this node's calls drop out of the cluster view until Redis is back");
            }
            Err(_) => {}
        }
    }
    if let Err(e) = c.forget_calls(&mut beats).await {
        warn!(error = %e, "cluster: this node's calls not removed from the view; they expire with their TTL");
    }
}
