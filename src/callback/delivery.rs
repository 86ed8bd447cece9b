//! Non-blocking event delivery: per call, one bounded queue and one task that
//! POSTs events in order, retrying with backoff.
//!
//! The call task only ever `try_send`s (never awaits), so a slow or dead
//! backend cannot delay audio: when the queue is full the event is dropped,
//! counted and logged. An event whose attempts run out is dropped the same
//! way, and the next one goes on (order is kept, liveness too). One slot is
//! always kept for `call.ended`, so it is never the event dropped. The task
//! ends when the call's sender is dropped and the queue is drained; the
//! server's [`Deliveries`] knows how many are still running (shutdown waits
//! for them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::client::{CallbackClient, CallbackError, Target};
use crate::contract::{Envelope, Event};

/// Retry and queue settings (from `[callbacks]`).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryConfig {
    /// Per-attempt deadline.
    pub attempt_timeout: Duration,
    /// Attempts per event, first included.
    pub max_attempts: u32,
    /// Wait before the second attempt (doubles, at most 8×).
    pub backoff: Duration,
    /// Queue bound.
    pub max_queued: usize,
}

impl DeliveryConfig {
    /// From the config section.
    pub fn from_config(c: &crate::config::CallbacksConfig) -> Self {
        Self {
            attempt_timeout: Duration::from_millis(c.event_timeout_ms),
            max_attempts: c.max_attempts,
            backoff: Duration::from_millis(c.retry_backoff_ms),
            max_queued: c.max_queued_events,
        }
    }
}

/// The delivery tasks still running, for shutdown to wait on.
#[derive(Debug, Default)]
pub struct Deliveries {
    active: AtomicU64,
    idle: tokio::sync::Notify,
}

impl Deliveries {
    /// A new, empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Tasks still delivering.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    /// Wait until every delivery task has finished (or `within` passed).
    pub async fn wait_idle(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.idle.notified();
            if self.active() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.active() == 0;
            }
        }
    }
}

struct Running(Arc<Deliveries>);

/// A delivery running outside a call's event stream (shutdown waits for it
/// while this guard lives).
pub struct DeliveryGuard(#[allow(dead_code)] Running);

impl Deliveries {
    /// Count one more delivery until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> DeliveryGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        DeliveryGuard(Running(self.clone()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The call task's end of a call's event stream.
#[derive(Debug)]
pub struct EventSender {
    call_id: String,
    seq: u64,
    tx: Option<mpsc::Sender<Envelope>>,
    dropped: Arc<AtomicU64>,
    store: Option<crate::callstore::CallStore>,
    /// Every event of the call so far (without envelope fields), for `call.ended`.
    /// The conversation as JSON text, one event each: a `serde_json::Value`
    /// per event held 2–3 times the memory over a long call (heaptrack, BENCHMARKS §8).
    log: Vec<Box<str>>,
    /// A live copy of every event as envelope JSON (the `/phone` page's feed);
    /// never waits: a full tap loses the event, not the call.
    tap: Option<mpsc::Sender<Arc<str>>>,
}

impl EventSender {
    /// A sender that goes nowhere (calls without a callback). Sequence numbers
    /// still advance so the transcript is numbered the same way.
    pub fn disabled(call_id: &str) -> Self {
        Self {
            call_id: call_id.into(),
            seq: 0,
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            store: None,
            log: Vec::new(),
            tap: None,
        }
    }

    /// Start delivering `call_id`'s events to `target`. `first_seq` is the
    /// sequence number already used (1 after a blocking `call.started`).
    pub fn spawn(
        client: CallbackClient,
        target: Target,
        cfg: DeliveryConfig,
        call_id: &str,
        first_seq: u64,
        deliveries: &Arc<Deliveries>,
    ) -> Self {
        // One more than the bound: the last slot is `call.ended`'s.
        let (tx, rx) = mpsc::channel(cfg.max_queued.max(1) + 1);
        let dropped = Arc::new(AtomicU64::new(0));
        deliveries.active.fetch_add(1, Ordering::AcqRel);
        let running = Running(deliveries.clone());
        let counted = dropped.clone();
        tokio::spawn(async move {
            let _running = running;
            deliver(client, target, cfg, rx, counted).await
        });
        Self { call_id: call_id.into(), seq: first_seq, tx: Some(tx), dropped, store: None, log: Vec::new(), tap: None }
    }

    /// Also keep every event in the call store (the transcript).
    pub fn with_store(mut self, store: Option<crate::callstore::CallStore>) -> Self {
        self.store = store;
        self
    }

    /// Also copy every event, as envelope JSON, to `tap`.
    pub fn set_tap(&mut self, tap: mpsc::Sender<Arc<str>>) {
        self.tap = Some(tap);
    }

    /// Whether events go anywhere (a callback, the store or a tap).
    pub fn active(&self) -> bool {
        self.tx.is_some() || self.store.is_some() || self.tap.is_some()
    }

    /// Keep a record in the transcript only (not a callback event), e.g. a
    /// tool's result. It takes no sequence number of its own (callbacks stay
    /// gap-free): it is stored under the latest one, after that event.
    pub fn record(&mut self, kind: &str, body: serde_json::Value) {
        let mut entry = serde_json::json!({"type": kind});
        if let (Some(m), serde_json::Value::Object(b)) = (entry.as_object_mut(), body.clone()) {
            m.extend(b);
        }
        self.log.push(entry.to_string().into_boxed_str());
        if let Some(st) = &self.store {
            let seq = self.seq;
            let mut v = serde_json::json!({"type": kind, "call_id": self.call_id, "seq": seq,
                "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string()});
            if let (Some(m), serde_json::Value::Object(b)) = (v.as_object_mut(), body) {
                m.extend(b);
            }
            st.event(&self.call_id, seq, kind, v.to_string());
        }
    }

    /// The conversation so far: every event (and transcript-only record) of the
    /// call, in order, without envelope fields.
    pub fn take_log(&mut self) -> Vec<serde_json::Value> {
        std::mem::take(&mut self.log).iter().filter_map(|e| serde_json::from_str(e).ok()).collect()
    }

    fn log_event(&mut self, event: &Event) {
        if let Ok(text) = serde_json::to_string(event) {
            self.log.push(text.into_boxed_str());
        }
    }

    /// Store a blocking request's envelope (it was sent elsewhere).
    pub fn store_envelope(&mut self, env: &Envelope) {
        self.log_event(&env.event);
        if let Some(st) = &self.store {
            st.event(&self.call_id, env.seq, env.event.kind(), serde_json::to_string(env).expect("events serialize"));
        }
    }

    /// Whether events go anywhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Reserve the next sequence number (for a blocking request sent elsewhere).
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The call id events carry.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Queue `event` (never waits). Returns false if it was dropped.
    pub fn send(&mut self, event: Event) -> bool {
        if !self.active() {
            return false;
        }
        let kind = event.kind();
        let seq = self.next_seq();
        let env = Envelope::new(&self.call_id, seq, SystemTime::now(), event);
        if matches!(env.event, Event::CallEnded(_)) {
            // Its own body carries the conversation; do not log it into itself.
            if let Some(st) = &self.store {
                st.event(&self.call_id, env.seq, env.event.kind(), serde_json::to_string(&env).expect("serializes"));
            }
        } else {
            self.store_envelope(&env);
        }
        if let Some(tap) = &self.tap
            && let Ok(text) = serde_json::to_string(&env)
        {
            let _ = tap.try_send(Arc::from(text));
        }
        let Some(tx) = self.tx.as_ref() else { return true };
        let last = matches!(env.event, Event::CallEnded(_));
        // The reserved slot is `call.ended`'s alone.
        let sent = if !last && tx.capacity() <= 1 { Err(()) } else { tx.try_send(env).map_err(|_| ()) };
        match sent {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::CALLBACK_EVENTS, "type" => kind, "outcome" => "dropped_queue_full")
                    .increment(1);
                warn!(call = %self.call_id, event = kind, seq, "callback queue full; event dropped");
                false
            }
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn deliver(
    client: CallbackClient,
    target: Target,
    cfg: DeliveryConfig,
    mut rx: mpsc::Receiver<Envelope>,
    dropped: Arc<AtomicU64>,
) {
    while let Some(env) = rx.recv().await {
        let kind = env.event.kind();
        let body = serde_json::to_vec(&env).expect("events serialize");
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let started = std::time::Instant::now();
            match client.post_raw(&target, body.clone(), cfg.attempt_timeout).await {
                Ok(_) => {
                    crate::metrics::observe(
                        &metrics::histogram!(crate::metrics::CALLBACK_LATENCY, "type" => kind),
                        started.elapsed(),
                    );
                    break Ok(());
                }
                Err(e) => {
                    metrics::counter!(crate::metrics::CALLBACK_FAILURES, "kind" => e.kind()).increment(1);
                    if !e.retryable() || attempt >= cfg.max_attempts {
                        break Err(e);
                    }
                    debug!(call = %env.call_id, seq = env.seq, attempt, error = %e, "callback failed; retrying");
                    let factor = 1u32 << (attempt - 1).min(3);
                    tokio::time::sleep(cfg.backoff * factor).await;
                }
            }
        };
        match outcome {
            Ok(()) => metrics::counter!(crate::metrics::CALLBACK_EVENTS, "type" => kind, "outcome" => "delivered")
                .increment(1),
            Err(e) => {
                dropped.fetch_add(1, Ordering::Relaxed);
                let outcome =
                    if matches!(e, CallbackError::Status(_)) && !e.retryable() { "rejected" } else { "dropped" };
                metrics::counter!(crate::metrics::CALLBACK_EVENTS, "type" => kind, "outcome" => outcome).increment(1);
                warn!(call = %env.call_id, seq = env.seq, event = kind, attempts = attempt, error = %e, "callback event dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::CallSummary;

    #[tokio::test]
    async fn a_full_queue_drops_events_but_never_call_ended() {
        let client = CallbackClient::new(1024, crate::netguard::NetPolicy::default());
        // A target that is never reachable: nothing drains the queue.
        let target = Target { url: "http://192.0.2.1:9/never".into(), secret: "s".into() };
        let cfg = DeliveryConfig {
            attempt_timeout: Duration::from_secs(60),
            max_attempts: 1,
            backoff: Duration::from_millis(1),
            max_queued: 4,
        };
        let deliveries = Deliveries::new();
        let mut ev = EventSender::spawn(client, target, cfg, "call_1", 1, &deliveries);
        let sent: Vec<bool> = (0..10).map(|i| ev.send(Event::Dtmf { digit: "1".into(), at_ms: i })).collect();
        assert!(sent.iter().filter(|&&s| !s).count() >= 5, "the bounded queue drops: {sent:?}");
        assert!(ev.send(Event::CallEnded(CallSummary::default())), "call.ended always has its slot");
        assert_eq!(deliveries.active(), 1);
    }
}
