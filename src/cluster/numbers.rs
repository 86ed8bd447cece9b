//! The shared number registry: numbers registered over the API live in the
//! Redis hash `numbers` (number → tenant JSON, token as its SHA-256 hash);
//! each node keeps its in-memory index ([`NumberStore`]) fresh from the
//! `numbers` channel, which carries the number that changed.
//!
//! Registration is atomic cluster-wide (`HSETNX`: one node wins a number). A
//! node resyncs every number whenever its subscription (re)connects, so a
//! change announced while it was cut off is not missed. Numbers declared in
//! a node's config file stay local to it (every node reads the same file).

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Cluster, ClusterError};
use crate::tenant::{NumberStore, Source, Tenant};

/// How long an erasure is remembered for nodes that were away, ms.
const ERASED_KEPT_MS: u64 = 30 * 86_400_000;

/// Erase `tenant`'s calls from this node's store (off the runtime's threads).
pub async fn erase_here(calls: &crate::callstore::CallStore, tenant: String) {
    let st = calls.clone();
    let t = tenant.clone();
    match tokio::task::spawn_blocking(move || st.delete_tenant(&t)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => {
            tracing::info!(calls_erased = n, tenant = %tenant, "cluster: a deleted number's call data erased here")
        }
        Ok(Err(e)) => {
            warn!(error = %e, tenant = %tenant, "cluster: call data of a deleted number not erased; retried on reconnect")
        }
        Err(_) => warn!(tenant = %tenant, "cluster: call data of a deleted number not erased"),
    }
}

/// A tenant as the cluster stores it.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    id: String,
    number: String,
    callback_url: String,
    secret: String,
    token_hash: String,
    created_at: u64,
    #[serde(default)]
    transfer_allow: Vec<String>,
    #[serde(default)]
    carrier: String,
}

impl From<&Tenant> for Stored {
    fn from(t: &Tenant) -> Self {
        Self {
            id: t.id.clone(),
            number: t.number.clone(),
            callback_url: t.callback_url.clone(),
            secret: t.secret.clone(),
            token_hash: t.token_hash.clone(),
            created_at: t.created_at,
            transfer_allow: t.transfer_allow.clone(),
            carrier: t.carrier.clone(),
        }
    }
}

impl From<Stored> for Tenant {
    fn from(s: Stored) -> Self {
        Tenant {
            id: s.id,
            number: s.number,
            callback_url: s.callback_url,
            secret: s.secret,
            token_hash: s.token_hash,
            created_at: s.created_at,
            source: Source::Api,
            transfer_allow: s.transfer_allow,
            carrier: s.carrier,
        }
    }
}

fn parse(json: &[u8]) -> Result<Tenant, ClusterError> {
    serde_json::from_slice::<Stored>(json).map(Tenant::from).map_err(|e| ClusterError::Data(e.to_string()))
}

impl Cluster {
    /// Store `t` if no node has its number yet; `false` if one has.
    pub async fn create_number(&self, t: &Tenant) -> Result<bool, ClusterError> {
        let json = serde_json::to_vec(&Stored::from(t)).expect("serializes");
        let (key, field) = (self.key("numbers"), t.number.clone());
        let created =
            self.run(async move |c| redis::cmd("HSETNX").arg(key).arg(field).arg(json).query_async(c).await).await?;
        if created {
            self.announce(&t.number).await;
        }
        Ok(created)
    }

    /// Remove `number`; whether the cluster held it.
    pub async fn delete_number(&self, number: &str) -> Result<bool, ClusterError> {
        let (key, field) = (self.key("numbers"), number.to_string());
        let n: usize = self.run(async move |c| redis::cmd("HDEL").arg(key).arg(field).query_async(c).await).await?;
        if n > 0 {
            self.announce(number).await;
        }
        Ok(n > 0)
    }

    /// Tell every node to erase `tenant`'s call data (its number was
    /// deleted): kept in the sorted set `erased` for 30 days, so a node that
    /// is down now erases its part when it reconnects, and announced on the
    /// `erased` channel.
    pub async fn erase_tenant(&self, tenant: &str) -> Result<(), ClusterError> {
        let (key, ch, id) = (self.key("erased"), self.key("erased"), tenant.to_string());
        let now = super::unix_ms();
        self.run(async move |c| {
            redis::pipe()
                .cmd("ZADD")
                .arg(&key)
                .arg(now)
                .arg(&id)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now.saturating_sub(ERASED_KEPT_MS))
                .ignore()
                .cmd("PUBLISH")
                .arg(&ch)
                .arg(&id)
                .ignore()
                .query_async::<()>(c)
                .await
        })
        .await
    }

    /// Tenants erased in the last 30 days.
    pub async fn erased_tenants(&self) -> Result<Vec<String>, ClusterError> {
        let key = self.key("erased");
        self.run(async move |c| redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(c).await).await
    }

    /// Tell every node `number` changed (best effort: a node that misses it
    /// resyncs on its next subscription).
    async fn announce(&self, number: &str) {
        if let Err(e) = self.publish(&self.key("numbers"), number.as_bytes()).await {
            warn!(error = %e, "cluster: number change not announced; nodes pick it up on resync");
        }
    }

    /// Every number the cluster holds.
    pub async fn all_numbers(&self) -> Result<Vec<Tenant>, ClusterError> {
        let key = self.key("numbers");
        let all: Vec<(String, Vec<u8>)> =
            self.run(async move |c| redis::cmd("HGETALL").arg(key).query_async(c).await).await?;
        let mut out = Vec::with_capacity(all.len());
        for (number, json) in all {
            match parse(&json) {
                Ok(t) if t.number == number => out.push(t),
                Ok(_) | Err(_) => warn!(number = %number, "cluster: unreadable number entry skipped"),
            }
        }
        Ok(out)
    }

    /// The cluster's entry for `number`.
    pub async fn get_number(&self, number: &str) -> Result<Option<Tenant>, ClusterError> {
        let (key, field) = (self.key("numbers"), number.to_string());
        let json: Option<Vec<u8>> =
            self.run(async move |c| redis::cmd("HGET").arg(key).arg(field).query_async(c).await).await?;
        json.map(|j| parse(&j)).transpose()
    }
}

/// Move the numbers `store` loaded from its own database (registered before
/// this node joined a cluster) into the cluster, unless a node has them
/// already, and drop them from the database: Redis is their home from now on,
/// and a number deleted elsewhere must not come back when this node restarts.
/// Runs once per process, before the first resync.
pub async fn seed(c: &Cluster, store: &std::sync::Arc<NumberStore>) -> Result<(), ClusterError> {
    let local = store.api_tenants();
    if local.is_empty() {
        return Ok(());
    }
    let key = c.key("numbers");
    let entries: Vec<(String, Vec<u8>)> = local
        .iter()
        .map(|t| (t.number.clone(), serde_json::to_vec(&Stored::from(&**t)).expect("serializes")))
        .collect();
    let created: Vec<bool> = c
        .run(async move |conn| {
            let mut p = redis::pipe();
            for (n, j) in &entries {
                p.cmd("HSETNX").arg(&key).arg(n).arg(j);
            }
            p.query_async(conn).await
        })
        .await?;
    let numbers: Vec<String> = local.iter().map(|t| t.number.clone()).collect();
    tracing::info!(
        moved = created.iter().filter(|c| **c).count(),
        already_there = created.iter().filter(|c| !**c).count(),
        "cluster: numbers from the local database moved to the cluster"
    );
    let st = store.clone();
    match tokio::task::spawn_blocking(move || st.forget_stored(&numbers)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "cluster: moved numbers not removed from the local database"),
        Err(_) => warn!("cluster: moved numbers not removed from the local database"),
    }
    Ok(())
}

/// Make the index's API numbers exactly the cluster's.
pub async fn resync(c: &Cluster, store: &std::sync::Arc<NumberStore>) -> Result<(), ClusterError> {
    let mut all = c.all_numbers().await?;
    if all.is_empty() && !store.api_tenants().is_empty() {
        // Redis came back without any number (a restart without persistence, a
        // flush): restore this node's copy rather than forget every tenant. A
        // number deleted while this node was cut off may come back with it.
        warn!(numbers = store.api_tenants().len(), "cluster: Redis holds no numbers; restoring this node's copy");
        seed(c, store).await?;
        all = c.all_numbers().await?;
    }
    let changed = store.replace_shared(all);
    if changed > 0 {
        tracing::info!(changed, numbers = store.len(), "cluster: numbers synced");
    }
    Ok(())
}

/// Apply the cluster's current entry for `number` to `store`.
pub async fn refresh(c: &Cluster, store: &NumberStore, number: &str) {
    match c.get_number(number).await {
        Ok(Some(t)) => {
            store.insert_shared(t);
        }
        Ok(None) => {
            store.remove_shared(number);
        }
        Err(e) => warn!(number = %number, error = %e, "cluster: number change not applied; next resync will"),
    }
}
