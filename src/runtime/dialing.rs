//! Outbound calls between `POST /v1/calls` and their answer: what was decided
//! for the call (its route: tenant, plan, reserved slots) and how to treat a
//! machine, kept by our call id until the carrier reports the outcome — the
//! callee answered (the route moves on to wait for the media stream, like an
//! inbound call's), or the line was busy, nobody answered, the call failed.
//!
//! Invariants: an entry is taken at most once, so exactly one outcome is
//! reported per call; an entry the carrier never reports on expires (swept
//! by the server's upkeep and reported `failed`); the carrier's call id, once
//! known, must match the one the carrier's webhook names.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::ids::CallId;
use crate::runtime::admission::Route;

/// What to do when a machine answers (`machine_detection` of `POST /v1/calls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineDetection {
    /// No detection: whoever answers hears the agent at once.
    #[default]
    Off,
    /// A machine (or fax) answers: hang up (`call.ended` reason `machine`).
    Hangup,
    /// Wait for the end of the machine's greeting (the beep), then run the
    /// plan: the agent leaves a message. A human is answered at once.
    LeaveMessage,
}

/// The carrier's verdict on who answered, in our words: `human`, `machine`,
/// `fax` or `unknown` (Twilio's `AnsweredBy`: `machine_start`,
/// `machine_end_beep`, … are all `machine`).
pub fn answered_by(carrier_word: &str) -> &'static str {
    match carrier_word {
        "human" => "human",
        w if w.starts_with("machine") => "machine",
        "fax" => "fax",
        _ => "unknown",
    }
}

/// An outbound call the carrier is dialling.
#[derive(Debug)]
pub struct Dialing {
    /// The call's route (slot and outbound slot reserved, plan decided).
    pub route: Route,
    /// Machine handling.
    pub machine: MachineDetection,
    /// When it was placed.
    pub at: Instant,
}

/// Outbound calls not yet answered.
#[derive(Debug, Default)]
pub struct DialingCalls {
    map: DashMap<CallId, Dialing>,
}

impl DialingCalls {
    /// Empty.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }

    /// Keep `route` while its call is dialled.
    pub fn insert(&self, route: Route, machine: MachineDetection) {
        self.map.insert(route.call_id, Dialing { route, machine, at: Instant::now() });
    }

    /// Record the carrier's id of call `id` (known once the carrier accepted it).
    pub fn set_carrier_call_id(&self, id: CallId, carrier_call_id: &str) {
        if let Some(mut d) = self.map.get_mut(&id) {
            d.route.carrier_call_id = carrier_call_id.to_string();
        }
    }

    /// Take call `id` if the carrier's webhook names the same carrier call
    /// (an entry whose carrier id is not known yet matches any, and learns it).
    pub fn take(&self, id: CallId, carrier_call_id: &str) -> Option<Dialing> {
        let (_, mut d) = self
            .map
            .remove_if(&id, |_, d| d.route.carrier_call_id.is_empty() || d.route.carrier_call_id == carrier_call_id)?;
        if d.route.carrier_call_id.is_empty() {
            d.route.carrier_call_id = carrier_call_id.to_string();
        }
        Some(d)
    }

    /// Run `f` on call `id` while it is dialled, if it is.
    pub fn with<R>(&self, id: CallId, f: impl FnOnce(&mut Dialing) -> R) -> Option<R> {
        self.map.get_mut(&id).map(|mut d| f(&mut d))
    }

    /// Take call `id` whatever the carrier said (placing it failed).
    pub fn remove(&self, id: CallId) -> Option<Dialing> {
        self.map.remove(&id).map(|(_, d)| d)
    }

    /// Calls dialled by tenant `tenant` (for listing): id, callee, carrier,
    /// the carrier's id, when placed.
    pub fn of_tenant(&self, tenant: &str) -> Vec<(CallId, String, &'static str, String, std::time::SystemTime)> {
        self.map
            .iter()
            .filter(|e| e.route.tenant.as_ref().is_some_and(|t| t.id == tenant))
            .map(|e| {
                let r = &e.route;
                (*e.key(), r.to.clone(), r.carrier, r.carrier_call_id.clone(), r.received_at)
            })
            .collect()
    }

    /// Drop entries older than `max_age` (the carrier never reported); returns them.
    pub fn sweep(&self, max_age: Duration) -> Vec<Dialing> {
        let old: Vec<CallId> = self.map.iter().filter(|e| e.at.elapsed() >= max_age).map(|e| *e.key()).collect();
        old.into_iter().filter_map(|k| self.map.remove(&k)).map(|(_, d)| d).collect()
    }

    /// Calls being dialled.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_taken_once_and_only_for_the_same_carrier_call() {
        let d = DialingCalls::new();
        d.insert(Route::unannounced(CallId(7), "+1", "+2"), MachineDetection::Hangup);
        d.set_carrier_call_id(CallId(7), "CA1");
        assert!(d.take(CallId(7), "CA2").is_none(), "another carrier call");
        let got = d.take(CallId(7), "CA1").expect("same call");
        assert_eq!((got.route.carrier_call_id.as_str(), got.machine), ("CA1", MachineDetection::Hangup));
        assert!(d.take(CallId(7), "CA1").is_none(), "taken once");
        // Before the carrier's id is known, the first report names it.
        d.insert(Route::unannounced(CallId(8), "+1", "+2"), MachineDetection::Off);
        assert_eq!(d.take(CallId(8), "CA9").unwrap().route.carrier_call_id, "CA9");
        d.insert(Route::unannounced(CallId(9), "+1", "+2"), MachineDetection::Off);
        assert_eq!(d.sweep(Duration::ZERO).len(), 1);
        assert!(d.is_empty());
    }

    #[test]
    fn carriers_words_for_who_answered() {
        for (w, ours) in [
            ("human", "human"),
            ("machine_start", "machine"),
            ("machine_end_beep", "machine"),
            ("machine_end_silence", "machine"),
            ("fax", "fax"),
            ("unknown", "unknown"),
            ("", "unknown"),
        ] {
            assert_eq!(answered_by(w), ours, "{w}");
        }
    }
}
