//! The call task's [`CallIo`]: where a live call's outputs go in the server —
//! the carrier connection's queue, the engine's link lanes, the ordered event
//! delivery, blocking callback requests (one task each, answered through a
//! channel), the recording ring, metrics and logs.
//!
//! Nothing here waits: every hand-off is a `try_send` or a push into a
//! bounded buffer, and what does not fit is dropped and counted.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::telemetry;
use crate::call::CallIo;
use crate::callback::client::{CallbackClient, Target};
use crate::callback::delivery::EventSender;
use crate::carrier::{CarrierError, WireOut};
use crate::contract::Envelope;
use crate::engine::LinkMsg;
use crate::ids::CallId;
use crate::metrics::CallMetrics;
use crate::recording::Recorder;
use crate::runtime::engine_link::{LinkLanes, SendError};
use crate::session::{Output, RecordOp, Reply, ReplyFailure, Request};

/// How blocking requests reach the backend.
pub(super) struct Requests {
    pub client: CallbackClient,
    pub target: Option<Target>,
    pub budget: Duration,
    pub replies: mpsc::Sender<super::Answer>,
}

/// What the call was routed with (kept for a transfer's outcome).
#[derive(Debug, Clone)]
pub(super) struct RouteInfo {
    pub tenant: Option<std::sync::Arc<crate::tenant::Tenant>>,
    pub plan: crate::contract::CallPlan,
    pub from: String,
    pub to: String,
    pub carrier_call_id: String,
    pub engine: &'static str,
    pub received_at: std::time::SystemTime,
    pub answered_at: std::time::SystemTime,
}

impl RouteInfo {
    /// Fill the report's who/when/what fields.
    pub fn fill(&self, summary: &mut crate::contract::CallSummary, carrier: &'static str) {
        use crate::contract::rfc3339;
        summary.carrier = carrier.into();
        summary.carrier_call_id = self.carrier_call_id.clone();
        summary.from = self.from.clone();
        summary.to = self.to.clone();
        summary.started_at = rfc3339(self.received_at);
        summary.answered_at = rfc3339(self.answered_at);
        summary.ended_at = rfc3339(std::time::SystemTime::now());
        summary.engine = self.engine.into();
    }
}

/// Outputs of one live call in the server.
pub(super) struct ShellIo {
    pub id: CallId,
    pub carrier: &'static str,
    pub wire: WireOut,
    pub lanes: LinkLanes,
    pub events: EventSender,
    pub metrics: CallMetrics,
    pub recorder: Option<Recorder>,
    pub requests: Requests,
    /// Samples per 20 ms of engine audio (drops are counted in frames).
    pub engine_frame: usize,
    logged_errors: u32,
    /// Blocking requests in flight (aborted when the call ends, so nothing
    /// of the call reaches the backend after its `call.ended`).
    in_flight: Vec<tokio::task::JoinHandle<()>>,
    /// How the call was routed.
    pub route: Option<RouteInfo>,
    /// Where the control API transferred the call, if it did.
    pub transfer_to: Option<String>,
    /// The end-of-turn model's workers and this call's smart settings.
    pub turn_pool: Option<(std::sync::Arc<crate::runtime::turn_pool::TurnPool>, crate::session::turn::SmartConfig)>,
}

impl ShellIo {
    pub(super) fn new(
        id: CallId,
        carrier: &'static str,
        wire: WireOut,
        metrics: CallMetrics,
        requests: Requests,
    ) -> Self {
        Self {
            id,
            carrier,
            wire,
            lanes: LinkLanes::default(),
            events: EventSender::disabled(&id.to_string()),
            metrics,
            recorder: None,
            requests,
            engine_frame: 160,
            logged_errors: 0,
            in_flight: Vec::new(),
            route: None,
            transfer_to: None,
            turn_pool: None,
        }
    }

    /// Abort blocking requests still in flight (the call is over).
    pub(super) fn abort_requests(&mut self) {
        for h in self.in_flight.drain(..) {
            h.abort();
        }
    }

    fn request(&mut self, r: Request) {
        let seq = self.events.next_seq();
        let env = Envelope::new(&self.id.to_string(), seq, SystemTime::now(), r.event);
        self.events.store_envelope(&env);
        let kind = env.event.kind();
        let Some(target) = self.requests.target.clone() else {
            let _ = self.requests.replies.try_send(super::Answer::Backend(Reply {
                id: r.id,
                result: Err(ReplyFailure { kind: "no_backend", message: "no backend for this call".into() }),
            }));
            return;
        };
        let (client, budget, tx, id) =
            (self.requests.client.clone(), self.requests.budget, self.requests.replies.clone(), r.id);
        self.in_flight.retain(|h| !h.is_finished());
        self.in_flight.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = client.post(&target, &env, budget).await.map_err(|e| {
                metrics::counter!(crate::metrics::CALLBACK_FALLBACKS, "type" => kind, "kind" => e.kind()).increment(1);
                ReplyFailure { kind: e.kind(), message: e.to_string() }
            });
            crate::metrics::observe(
                &metrics::histogram!(crate::metrics::CALLBACK_LATENCY, "type" => kind),
                started.elapsed(),
            );
            let _ = tx.send(super::Answer::Backend(Reply { id, result })).await;
        }));
    }
}

impl ShellIo {
    /// Hand a pause candidate to the model's workers; the verdict comes back
    /// through the answers channel (or `None` at once if there is no pool).
    fn ask_turn(&mut self, q: crate::session::TurnQuery) {
        let id = q.id;
        let tx = self.requests.replies.clone();
        let Some((pool, smart)) = &self.turn_pool else {
            let _ = tx.try_send(super::Answer::Turn { id, p: None });
            return;
        };
        let deadline = Duration::from_millis(smart.deadline_ms as u64);
        pool.ask(
            q,
            deadline,
            smart.threshold,
            Box::new(move |p| {
                // The call may be gone; a full channel means the verdict is moot.
                let _ = tx.try_send(super::Answer::Turn { id, p });
            }),
        );
    }
}

impl CallIo for ShellIo {
    fn wire(&mut self) -> &mut WireOut {
        &mut self.wire
    }

    fn link(&mut self, link: usize, msg: LinkMsg) {
        if let Err(SendError::Full) = self.lanes.send(link, msg) {
            metrics::counter!(crate::metrics::ENGINE_DROPPED).increment(1);
        }
    }

    fn output(&mut self, out: Output<'_>) {
        match out {
            Output::Telemetry(t) => telemetry::record(&self.metrics, self.id, self.engine_frame, t),
            Output::Event(e) => {
                self.events.send(e);
            }
            Output::Request(r) => self.request(r),
            Output::TurnQuery(q) => self.ask_turn(q),
            Output::Note(kind, body) => self.events.record(kind, body),
            Output::Incident(i) => telemetry::incident(self.id, &i),
            Output::Record(op) => {
                if let Some(rec) = &mut self.recorder {
                    match op {
                        RecordOp::Caller { pcm } => rec.caller(pcm),
                        RecordOp::Bot { pcm, pos } => rec.bot(pcm, pos),
                        RecordOp::Clear { pos } => rec.clear(pos),
                    }
                }
            }
            Output::ToCarrier(_) | Output::ToEngine(_) | Output::End(_) => {}
        }
    }

    fn frames_in(&mut self, n: u64) {
        self.metrics.frames_in.increment(n);
    }

    fn frames_out(&mut self, n: u64) {
        self.metrics.frames_out.increment(n);
    }

    fn frames_dropped(&mut self, n: u64) {
        self.metrics.dropped_queue.increment(n);
    }

    fn protocol_error(&mut self, code: &'static str, error: &CarrierError) {
        self.metrics.protocol_error(code);
        if self.logged_errors < 5 {
            self.logged_errors += 1;
            if code == "partial_frame" {
                debug!(call = %self.id, carrier = self.carrier, "payload is not whole 20 ms frames (re-framed)");
            } else {
                warn!(call = %self.id, carrier = self.carrier, kind = code, error = %error, "carrier protocol error");
            }
        }
    }
}
