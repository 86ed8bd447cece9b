//! Control requests for a call another node holds. The node that took the
//! request finds the owner in the call view, publishes the request on the
//! owner's channel `node:{owner}:control` and waits (within
//! `cluster.route_timeout_ms`) for the owner's answer on its own
//! `node:{self}:reply`, matched by request id. The owner runs it exactly as
//! a request it took itself and answers with the status and body it would
//! have given.
//!
//! Failure is explicit: no subscriber on the owner's channel (the node is
//! gone) → [`RouteError::OwnerGone`]; no answer in time → [`RouteError::Timeout`];
//! Redis down → [`RouteError::Unavailable`]. The tenant was authenticated by
//! the node that took the request; the owner checks the call is that tenant's.

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{Cluster, ClusterError};
use crate::ids::CallId;

/// A control request routed to the node holding the call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Matches the reply to the waiting request.
    pub id: u64,
    /// The node waiting for the answer.
    pub reply_to: String,
    /// The authenticated tenant's id.
    pub tenant: String,
    /// Its number (the owner finds the tenant by it and checks the id).
    pub number: String,
    /// The call.
    pub call: String,
    /// What to do (the API layer's own JSON).
    pub op: serde_json::Value,
}

/// The owner's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// HTTP status the owner gave.
    pub status: u16,
    /// Body the owner gave.
    pub body: serde_json::Value,
}

impl Reply {
    /// The owner could not take the request (its queue is full).
    pub fn busy(id: u64) -> Self {
        Self {
            id,
            status: 503,
            body: serde_json::json!({"error": "busy", "message": "the node holding the call is overloaded"}),
        }
    }
}

/// Why a request could not be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No live node holds the call (for this tenant).
    #[error("no such call")]
    NotFound,
    /// The call view names a node that no longer listens.
    #[error("the node holding the call is gone")]
    OwnerGone,
    /// The owner did not answer within the budget.
    #[error("the node holding the call did not answer in time")]
    Timeout,
    /// Redis is unreachable: the cluster cannot route.
    #[error("cluster unavailable: {0}")]
    Unavailable(ClusterError),
}

impl Cluster {
    /// Send `op` for `call` (of `tenant`) to the node holding it and wait up
    /// to `budget` for its answer.
    pub async fn route(
        &self,
        tenant: &str,
        number: &str,
        call: CallId,
        op: serde_json::Value,
        budget: std::time::Duration,
    ) -> Result<Reply, RouteError> {
        if !self.subscribed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RouteError::Unavailable(ClusterError::Redis("not subscribed".into())));
        }
        let owner = match self.find_call(call).await {
            Ok(Some(c)) if c.tenant == tenant && c.node != self.node => c.node,
            Ok(_) => return Err(RouteError::NotFound),
            Err(e) => return Err(RouteError::Unavailable(e)),
        };
        let id = self.next_request.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = Request {
            id,
            reply_to: self.node.clone(),
            tenant: tenant.into(),
            number: number.into(),
            call: call.to_string(),
            op,
        };
        let (tx, rx) = oneshot::channel();
        self.replies.insert(id, tx);
        let sent = self
            .publish(&self.key(&format!("node:{owner}:control")), &serde_json::to_vec(&req).expect("serializes"))
            .await;
        let result = match sent {
            Ok(0) => Err(RouteError::OwnerGone),
            Ok(_) => match tokio::time::timeout(budget, rx).await {
                Ok(Ok(r)) => Ok(r),
                // The subscription dropped while waiting.
                Ok(Err(_)) => Err(RouteError::Unavailable(ClusterError::Redis("subscription lost".into()))),
                Err(_) => Err(RouteError::Timeout),
            },
            Err(e) => Err(RouteError::Unavailable(e)),
        };
        self.replies.remove(&id);
        metrics::counter!(crate::metrics::CLUSTER_ROUTED, "result" => match &result {
            Ok(_) => "answered",
            Err(RouteError::NotFound) => "not_found",
            Err(RouteError::OwnerGone) => "owner_gone",
            Err(RouteError::Timeout) => "timeout",
            Err(RouteError::Unavailable(_)) => "unavailable",
        })
        .increment(1);
        result
    }

    /// Answer a routed request.
    pub async fn reply(&self, to_node: &str, reply: &Reply) -> Result<(), ClusterError> {
        self.publish(&self.key(&format!("node:{to_node}:reply")), &serde_json::to_vec(reply).expect("serializes"))
            .await
            .map(|_| ())
    }
}
