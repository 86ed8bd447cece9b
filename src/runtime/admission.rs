//! Between a carrier's webhook and its media stream: what the webhook decided
//! about a call (our id, tenant, plan) and the single-use token it handed the
//! carrier, kept by (carrier, carrier call id) until the stream starts and
//! claims it with that token. Entries nobody claims expire.
//!
//! Tokens are random, never derived from the call id, and a route is taken at
//! most once: a replayed `start` (same call id, same token) finds nothing.
//!
//! In cluster mode each route is also shared through Redis, so its stream may
//! connect to another node ([`crate::cluster::pending`]); [`PendingCalls::claim_shared`]
//! settles who owns it before the stream claims it here.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use subtle::ConstantTimeEq;

use crate::cluster::Cluster;
use crate::cluster::pending::Owned;
use crate::contract::CallPlan;
use crate::ids::CallId;
use crate::tenant::Tenant;

/// How a call is handled, decided at the webhook.
#[derive(Debug)]
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
    /// The call's reserved slot (released when the last holder drops it).
    pub slot: Option<Arc<crate::runtime::capacity::Slot>>,
    /// A call coming back from a failed transfer: its event stream goes on.
    pub resume: Option<crate::callback::delivery::EventSender>,
    /// The call's event stream, when it began before the media stream
    /// (`call.status` `ringing`); the call task carries it on.
    pub early: Option<crate::callback::delivery::EventSender>,
    /// The carrier the call came through ("" until known).
    pub carrier: &'static str,
    /// The carrier's id of the call.
    pub carrier_call_id: String,
    /// When the call reached us.
    pub received_at: std::time::SystemTime,
    /// `outbound` for a call we placed ("" inbound).
    pub direction: &'static str,
    /// Who answered an outbound call (the carrier's machine detection), if it said.
    pub answered_by: String,
    /// A live copy of the call's events (a browser call's page).
    pub tap: Option<tokio::sync::mpsc::Sender<Arc<str>>>,
}

impl Route {
    /// A route for a stream no webhook announced (local development only).
    pub fn unannounced(call_id: CallId, from: &str, to: &str) -> Self {
        Self {
            call_id,
            tenant: None,
            plan: CallPlan::default(),
            plan_failed: false,
            from: from.into(),
            to: to.into(),
            seq_used: 0,
            slot: None,
            resume: None,
            early: None,
            carrier: "",
            carrier_call_id: String::new(),
            received_at: std::time::SystemTime::now(),
            direction: "",
            answered_by: String::new(),
            tap: None,
        }
    }
}

/// Why a stream could not claim a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// No route waits for this call (never announced, expired, or already claimed).
    Unknown,
    /// A route waits but the token does not match.
    BadToken,
}

impl ClaimError {
    /// Stable code for metrics and logs.
    pub fn code(self) -> &'static str {
        match self {
            ClaimError::Unknown => "no_pending_call",
            ClaimError::BadToken => "bad_stream_token",
        }
    }
}

struct Waiting {
    route: Route,
    token: String,
    at: Instant,
    /// A copy went to Redis (the cluster may know it).
    shared: bool,
}

/// Routes waiting for their stream.
#[derive(Default)]
pub struct PendingCalls {
    map: DashMap<(&'static str, String), Waiting>,
    cluster: OnceLock<(Arc<Cluster>, Duration, Arc<crate::tenant::NumberStore>)>,
}

/// A route the sweep found expired, and whether the cluster knew it.
#[derive(Debug)]
pub struct Expired {
    /// The route.
    pub route: Route,
    /// Carrier, carrier call id, token: set when a copy was shared.
    pub shared: Option<(&'static str, String, String)>,
}

impl std::fmt::Debug for PendingCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCalls").field("waiting", &self.map.len()).finish()
    }
}

impl PendingCalls {
    /// Empty.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Share every route from now on through `cluster`, each for `ttl`
    /// (browser calls stay local: their media comes to the node that answered
    /// the offer).
    pub fn share_through(&self, cluster: Arc<Cluster>, ttl: Duration, tenants: Arc<crate::tenant::NumberStore>) {
        let _ = self.cluster.set((cluster, ttl, tenants));
    }

    /// Keep `route` for the stream of `carrier_call_id` on `carrier`; returns
    /// the single-use token the stream must present.
    pub fn insert(&self, carrier: &'static str, carrier_call_id: &str, route: Route) -> String {
        let token = crate::signature::random_hex();
        // Browser calls' media comes to the node that answered the offer; a call
        // back from a failed transfer carries its event stream, which cannot travel.
        let shared = self.cluster.get().is_some() && carrier != "webrtc" && route.resume.is_none();
        if shared && let Some((c, ttl, _)) = self.cluster.get() {
            let (c, ttl, json) = (c.clone(), *ttl, c.portable(&route));
            let (id, tok) = (carrier_call_id.to_string(), token.clone());
            tokio::spawn(async move {
                if let Err(e) = c.share_route(carrier, &id, &tok, json, ttl).await {
                    tracing::warn!(error = %e, "cluster: route not shared; its stream must come to this node");
                }
            });
        }
        self.map.insert(
            (carrier, carrier_call_id.to_string()),
            Waiting { route, token: token.clone(), at: Instant::now(), shared },
        );
        token
    }

    /// Settle, before the stream of `carrier_call_id` claims its route here,
    /// which node owns it: a route this node keeps is made its own in Redis
    /// (and dropped if another node took it first); one another node's webhook
    /// shared is brought here under `token`. Without a cluster: nothing to do.
    pub async fn claim_shared(&self, carrier: &'static str, carrier_call_id: &str, token: &str) {
        let Some((c, _, tenants)) = self.cluster.get() else { return };
        let key = (carrier, carrier_call_id.to_string());
        let local = self.map.get(&key).map(|w| (w.shared, bool::from(w.token.as_bytes().ct_eq(token.as_bytes()))));
        match local {
            // Ours: the tombstone we leave makes a copy still on its way (or a
            // replay on another node) find nothing.
            Some((true, true)) => {
                if c.own_route(carrier, carrier_call_id, token).await == Owned::Lost {
                    tracing::warn!(carrier, "cluster: the route was already taken on another node; refused here");
                    self.forget_taken(carrier, carrier_call_id);
                }
            }
            Some((false, true)) => {}
            // Not this node's webhook, or a webhook the carrier retried on another node.
            Some((_, false)) | None => {
                // Its copy may be a moment behind the carrier.
                for attempt in 0..2 {
                    match c.take_route(carrier, carrier_call_id, token, tenants).await {
                        Ok(Some(route)) => {
                            self.map.insert(
                                key,
                                Waiting { route, token: token.to_string(), at: Instant::now(), shared: false },
                            );
                            return;
                        }
                        Ok(None) if attempt == 0 && local.is_none() => {
                            tokio::time::sleep(Duration::from_millis(150)).await
                        }
                        Ok(None) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster: shared route not taken");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Another node took the stream of a route this node kept: drop it
    /// without a word (that node reports the call) and leave it the call's
    /// cluster lease.
    pub fn forget_taken(&self, carrier: &str, carrier_call_id: &str) {
        let Some(key) = self.map.iter().map(|e| e.key().clone()).find(|(c, id)| *c == carrier && id == carrier_call_id)
        else {
            return;
        };
        if let Some((_, w)) = self.map.remove(&key)
            && let Some(slot) = &w.route.slot
        {
            slot.disarm_lease();
        }
    }

    /// Claim the route of `carrier_call_id` with `token` (once; a wrong token
    /// leaves the route for the real stream).
    pub fn claim(&self, carrier: &'static str, carrier_call_id: &str, token: &str) -> Result<Route, ClaimError> {
        let key = (carrier, carrier_call_id.to_string());
        let removed = self.map.remove_if(&key, |_, w| bool::from(w.token.as_bytes().ct_eq(token.as_bytes())));
        match removed {
            Some((_, w)) => Ok(w.route),
            None if self.map.contains_key(&key) => Err(ClaimError::BadToken),
            None => Err(ClaimError::Unknown),
        }
    }

    /// Whether a route waits for `carrier_call_id`.
    pub fn contains(&self, carrier: &'static str, carrier_call_id: &str) -> bool {
        self.map.contains_key(&(carrier, carrier_call_id.to_string()))
    }

    /// Take the route of `carrier_call_id` whatever its token (the call will
    /// not come: the carrier said so).
    pub fn take(&self, carrier: &'static str, carrier_call_id: &str) -> Option<Route> {
        self.map.remove(&(carrier, carrier_call_id.to_string())).map(|(_, w)| w.route)
    }

    /// Drop routes older than `max_age`; returns them (their calls never
    /// arrived: the caller hung up first, or the stream failed).
    pub fn sweep(&self, max_age: Duration) -> Vec<Route> {
        self.sweep_expired(max_age).into_iter().map(|e| e.route).collect()
    }

    /// [`Self::sweep`], saying which routes the cluster knew (another node may
    /// have taken their stream: [`Self::settle_expired`]).
    pub fn sweep_expired(&self, max_age: Duration) -> Vec<Expired> {
        let old: Vec<_> = self.map.iter().filter(|e| e.at.elapsed() >= max_age).map(|e| e.key().clone()).collect();
        old.into_iter()
            .filter_map(|k| self.map.remove(&k))
            .map(|((carrier, id), w)| Expired {
                shared: w.shared.then(|| (carrier, id, w.token.clone())),
                route: w.route,
            })
            .collect()
    }

    /// Whether an expired route is still this node's to report (`false`:
    /// another node took its stream and reports the call).
    pub async fn settle_expired(&self, e: &Expired) -> bool {
        match (&e.shared, self.cluster.get()) {
            // Redis down: the route is ours to report (Unknown below would wait for nothing).
            (Some(_), Some((c, _, _))) if !c.is_subscribed() => true,
            (Some((carrier, id, token)), Some((c, _, _))) => {
                let lost = c.own_route(carrier, id, token).await == Owned::Lost;
                if lost && let Some(slot) = &e.route.slot {
                    // The call runs on the node that took it; so does its cluster lease.
                    slot.disarm_lease();
                }
                !lost
            }
            _ => true,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_claimed_once_with_its_token_and_a_wrong_token_leaves_it() {
        let p = PendingCalls::new();
        let tok = p.insert("fake", "CA1", Route::unannounced(CallId(1), "+1", "+2"));
        assert_eq!(tok.len(), 64);
        assert_eq!(p.claim("fake", "CA1", "nope").unwrap_err(), ClaimError::BadToken);
        assert_eq!(p.claim("telnyx", "CA1", &tok).unwrap_err(), ClaimError::Unknown, "carriers are separate");
        assert_eq!(p.claim("fake", "CA1", &tok).unwrap().call_id, CallId(1));
        assert_eq!(p.claim("fake", "CA1", &tok).unwrap_err(), ClaimError::Unknown, "a replay finds nothing");
        let tok2 = p.insert("fake", "CA2", Route::unannounced(CallId(2), "+1", "+2"));
        assert_ne!(tok, tok2, "tokens are random");
        assert!(p.sweep(Duration::ZERO).len() == 1 && p.is_empty());
    }
}
