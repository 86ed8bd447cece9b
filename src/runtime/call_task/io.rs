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
use crate::callback::client::{CallbackClient, ReplyBody, Target};
use crate::callback::delivery::EventSender;
use crate::carrier::{CarrierError, WireOut};
use crate::contract::Envelope;
use crate::engine::LinkMsg;
use crate::ids::CallId;
use crate::metrics::CallMetrics;
use crate::recording::Recorder;
use crate::runtime::engine_link::{LinkLanes, SendError};
use crate::session::{Output, RecordOp, Reply, ReplyFailure, Request, RequestId};

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
    pub direction: &'static str,
    pub answered_by: String,
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
        summary.direction = self.direction.into();
        summary.answered_by = self.answered_by.clone();
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
    in_flight: Vec<(RequestId, tokio::task::JoinHandle<()>)>,
    /// Where a backend's reply may transfer the call.
    pub transfers: Option<Transfers>,
    /// How the call was routed.
    pub route: Option<RouteInfo>,
    /// Where the control API transferred the call, if it did.
    pub transfer_to: Option<String>,
    /// The end-of-turn model's workers and this call's smart settings.
    pub turn_pool: Option<(std::sync::Arc<crate::runtime::turn_pool::TurnPool>, crate::session::turn::SmartConfig)>,
    /// The call's end of the live dashboard.
    pub feed: Option<crate::runtime::dashboard::CallFeed>,
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
            transfers: None,
            route: None,
            transfer_to: None,
            turn_pool: None,
            feed: None,
        }
    }

    /// Abort blocking requests still in flight (the call is over).
    pub(super) fn abort_requests(&mut self) {
        for (_, h) in self.in_flight.drain(..) {
            h.abort();
        }
    }

    /// Abandon request `id` (dropping its connection tells the backend).
    fn cancel_request(&mut self, id: RequestId) {
        if let Some(i) = self.in_flight.iter().position(|(r, _)| *r == id) {
            self.in_flight.swap_remove(i).1.abort();
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
        self.in_flight.retain(|(_, h)| !h.is_finished());
        if kind == "turn.user" {
            self.in_flight.push((id, tokio::spawn(turn_reply(client, target, env, budget, tx, id))));
            return;
        }
        self.in_flight.push((
            id,
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = client.post(&target, &env, budget).await.map_err(|e| {
                    metrics::counter!(crate::metrics::CALLBACK_FALLBACKS, "type" => kind, "kind" => e.kind())
                        .increment(1);
                    ReplyFailure { kind: e.kind(), message: e.to_string() }
                });
                crate::metrics::observe(
                    &metrics::histogram!(crate::metrics::CALLBACK_LATENCY, "type" => kind),
                    started.elapsed(),
                );
                let _ = tx.send(super::Answer::Backend(Reply { id, result })).await;
            }),
        ));
    }

    /// A backend's reply said to transfer: within the number's allowed
    /// destinations, through the carrier's call control, as the control API does.
    fn transfer(&mut self, to: String) {
        let refuse = |why: &str| {
            metrics::counter!(crate::metrics::CALL_ERRORS, "source" => "transfer_refused").increment(1);
            warn!(call = %self.id, reason = why, "the backend's transfer action was not carried out");
        };
        let Some(t) = &self.transfers else { return refuse("this carrier cannot transfer calls") };
        let target = match crate::destination::TransferTarget::parse(&to) {
            Ok(t) => t,
            Err(_) => return refuse("not a number or SIP URI"),
        };
        let allowed =
            self.route.as_ref().and_then(|r| r.tenant.as_ref()).is_some_and(|t| t.destinations().allows(&target));
        if !allowed {
            return refuse("destination not in the number's transfer_allow");
        }
        let (control, registry, id) = (t.control.clone(), t.registry.clone(), self.id);
        tokio::spawn(async move {
            let Some(h) = registry.get(id) else { return };
            let Some(d) = h.details.clone() else { return };
            match control.transfer(id, &d, &target).await {
                Ok(()) => {
                    let cmd = crate::runtime::registry::CallControl::Transferring { to: target.as_str().to_string() };
                    let _ = h.control.send(cmd).await;
                }
                Err(e) => {
                    metrics::counter!(crate::metrics::CALL_ERRORS, "source" => "transfer").increment(1);
                    warn!(call = %id, error = %e, "the backend's transfer failed");
                }
            }
        });
    }
}

/// What a call needs to carry out a transfer its backend asked for.
pub(super) struct Transfers {
    pub control: std::sync::Arc<dyn crate::api::carrier_control::CarrierControl>,
    pub registry: std::sync::Arc<crate::runtime::registry::Registry>,
}

/// Longest a streamed reply may keep its connection open.
const MAX_STREAMED_REPLY: Duration = Duration::from_secs(120);

/// POST a `turn.user` and hand its reply back: whole, or line by line as a
/// streamed reply arrives (`reply_delta` parts as deltas, the last line's
/// `action` with the final answer).
async fn turn_reply(
    client: CallbackClient,
    target: Target,
    env: Envelope,
    budget: Duration,
    tx: mpsc::Sender<super::Answer>,
    id: RequestId,
) {
    let started = std::time::Instant::now();
    let fail = |e: crate::callback::client::CallbackError| {
        metrics::counter!(crate::metrics::CALLBACK_FALLBACKS, "type" => "turn.user", "kind" => e.kind()).increment(1);
        ReplyFailure { kind: e.kind(), message: e.to_string() }
    };
    let result = match client.post_streaming(&target, &env, budget).await {
        Ok(ReplyBody::Whole(v)) => {
            let _ = tx.send(super::Answer::Timing(id, started.elapsed())).await;
            Ok(v)
        }
        Ok(ReplyBody::Lines(mut lines)) => {
            let mut timed = false;
            let mut last = serde_json::Value::Null;
            let mut failed = None;
            let deadline = tokio::time::Instant::now() + MAX_STREAMED_REPLY;
            loop {
                let line = match tokio::time::timeout_at(deadline, lines.next()).await {
                    Ok(Some(Ok(v))) => v,
                    Ok(Some(Err(e))) => {
                        failed = Some(fail(e));
                        break;
                    }
                    Ok(None) => break,
                    Err(_) => break, // long enough: what came is the reply
                };
                let delta = line.get("reply_delta").or(line.get("reply")).and_then(|d| d.as_str()).unwrap_or("");
                if !delta.is_empty() && !std::mem::replace(&mut timed, true) {
                    let _ = tx.send(super::Answer::Timing(id, started.elapsed())).await;
                }
                if !delta.is_empty() && tx.send(super::Answer::Delta(id, delta.to_string())).await.is_err() {
                    return;
                }
                if let Some(a) = line.get("action").filter(|a| !a.is_null()) {
                    last = serde_json::json!({"action": a});
                }
            }
            match failed {
                Some(f) => Err(f),
                None => Ok(last),
            }
        }
        Err(e) => Err(fail(e)),
    };
    crate::metrics::observe(
        &metrics::histogram!(crate::metrics::CALLBACK_LATENCY, "type" => "turn.user"),
        started.elapsed(),
    );
    let _ = tx.send(super::Answer::Backend(Reply { id, result })).await;
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
            Output::Telemetry(t) => {
                if let Some(f) = &self.feed {
                    f.observe(&t, self.engine_frame);
                }
                telemetry::record(&self.metrics, self.id, self.engine_frame, t)
            }
            Output::Event(e) => {
                self.events.send(e);
            }
            Output::Request(r) => self.request(r),
            Output::CancelRequest(id) => self.cancel_request(id),
            Output::Transfer(to) => self.transfer(to),
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
        if let Some(f) = &self.feed {
            f.speaking();
        }
    }

    fn frames_dropped(&mut self, n: u64) {
        self.metrics.dropped_queue.increment(n);
        if let Some(f) = &self.feed {
            f.dropped(n);
        }
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
