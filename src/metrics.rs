//! Metric names, their descriptions, the Prometheus recorder, and the per-call
//! handle struct.
//!
//! Labels are low-cardinality only (`carrier`, `engine`, `kind`, `reason`),
//! never call ids or phone numbers. Handles are resolved once per call so the
//! per-frame cost is an atomic add.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Live calls.
pub const CALLS_ACTIVE: &str = "callbridge_calls_active";
/// Calls accepted since start.
pub const CALLS_TOTAL: &str = "callbridge_calls_total";
/// Calls refused (over capacity, shutting down).
pub const CALLS_REJECTED: &str = "callbridge_calls_rejected_total";
/// Outbound calls placed through `POST /v1/calls`, by outcome (`placed`,
/// `answered`, `machine`, `busy`, `no_answer`, `failed`, `canceled`, `missed`).
pub const OUTBOUND_OUTCOMES: &str = "callbridge_outbound_calls_total";
/// Calls ended, by reason.
pub const CALLS_ENDED: &str = "callbridge_calls_ended_total";
/// 20 ms caller frames processed.
pub const FRAMES_IN: &str = "callbridge_frames_in_total";
/// Bot audio frames sent to carriers.
pub const FRAMES_OUT: &str = "callbridge_frames_out_total";
/// Barge-ins.
pub const BARGE_INS: &str = "callbridge_barge_ins_total";
/// Frames dropped anywhere (queue full, stale response audio), by kind.
pub const DROPPED_FRAMES: &str = "callbridge_dropped_frames_total";
/// Protocol errors from carriers, by kind.
pub const PROTOCOL_ERRORS: &str = "callbridge_protocol_errors_total";
/// End of caller speech → first bot audio sent.
pub const RESPONSE_LATENCY: &str = "callbridge_response_latency_seconds";
/// Caller speech onset → `clear` sent.
pub const BARGE_IN_LATENCY: &str = "callbridge_barge_in_latency_seconds";
/// CPU time to process one inbound message and everything it caused.
pub const FRAME_PROCESSING: &str = "callbridge_frame_processing_seconds";
/// Caller turns.
pub const TURNS: &str = "callbridge_turns_total";
/// DTMF key presses.
pub const DTMF: &str = "callbridge_dtmf_total";
/// Callback events by type and outcome (delivered, dropped, rejected, dropped_queue_full).
pub const CALLBACK_EVENTS: &str = "callbridge_callback_events_total";
/// Failed callback attempts by kind (timeout, unreachable, http_5xx, ...).
pub const CALLBACK_FAILURES: &str = "callbridge_callback_failures_total";
/// Callback round trip, by event type.
pub const CALLBACK_LATENCY: &str = "callbridge_callback_latency_seconds";
/// Blocking callbacks (plan, tool) that fell back, by event type and kind.
pub const CALLBACK_FALLBACKS: &str = "callbridge_callback_fallbacks_total";
/// Messages to a network engine dropped because its lane was full.
pub const ENGINE_DROPPED: &str = "callbridge_engine_dropped_messages_total";
/// Network engine trouble by kind (connect_failed, dropped, reconnected, error, fatal_error, bad_message).
pub const ENGINE_ERRORS: &str = "callbridge_engine_errors_total";
/// Recording slots dropped because the writer fell behind.
pub const RECORDING_DROPPED: &str = "callbridge_recording_dropped_slots_total";
/// Recordings stopped by a disk error.
pub const RECORDING_FAILED: &str = "callbridge_recording_failures_total";
/// Call-store records dropped or failed.
pub const STORE_FAILED: &str = "callbridge_store_failures_total";
/// Engine asked (end of the caller's turn) → its first audio.
pub const ENGINE_FIRST_AUDIO: &str = "callbridge_engine_first_audio_seconds";
/// Failures during calls other than the engine's (tools, transfers), by source.
pub const CALL_ERRORS: &str = "callbridge_call_errors_total";
/// HTTP connections closed at accept because the connection limit was reached.
pub const CONNECTIONS_REFUSED: &str = "callbridge_connections_refused_total";
/// Webhooks and streams refused for failed authentication, by reason.
pub const AUTH_REJECTED: &str = "callbridge_auth_rejected_total";
/// Carrier webhooks by outcome (`accepted`, `duplicate`).
pub const CARRIER_WEBHOOKS: &str = "callbridge_carrier_webhooks_total";
/// Caller turns ended, by what decided (`by`: silence, model, max_wait).
pub const TURN_ENDS: &str = "callbridge_turn_ends_total";
/// Turn ends that were premature: the caller spoke again within the grace window.
pub const TURNS_RESUMED: &str = "callbridge_turns_resumed_total";
/// Runs of caller "speech" ignored as the bot's own echo.
pub const ECHO_IGNORED: &str = "callbridge_echo_ignored_total";
/// End-of-turn model questions, by outcome (`complete`, `incomplete`, `overloaded`, `late`, `failed`).
pub const TURN_MODEL_QUERIES: &str = "callbridge_turn_model_queries_total";
/// End-of-turn model: question asked → verdict (queue wait plus inference).
pub const TURN_MODEL_LATENCY: &str = "callbridge_turn_model_latency_seconds";

/// Answering a turn, by stage (`endpoint`, `stt_final`, `backend_first_text`,
/// `tts_first_audio`, `overhead`): cascaded engines.
pub const STAGE_LATENCY: &str = "callbridge_stage_latency_seconds";
/// An engine link's text message: queued by the call task → written to its socket.
pub const LINK_SEND_DELAY: &str = "callbridge_engine_link_send_delay_seconds";
/// Playback ran dry inside a response (the engine was slower than real time).
pub const PLAYBACK_UNDERRUNS: &str = "callbridge_playback_underruns_total";
/// Control requests routed to the node holding the call, by `result`.
pub const CLUSTER_ROUTED: &str = "callbridge_cluster_routed_requests_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder (once per process) and return its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Fine around 0.3–0.5 s (smart detector) and 0.8 s (the default silence
            // threshold): response latency is the decision point plus what we add.
            let latency = [
                0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.505, 0.51,
                0.52, 0.55, 0.6, 0.7, 0.8, 0.805, 0.81, 0.82, 0.85, 0.9, 1.0, 1.2, 1.5, 2.0, 5.0,
            ];
            let cpu = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1e-2];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(RESPONSE_LATENCY.into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BARGE_IN_LATENCY.into()), &latency))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(FRAME_PROCESSING.into()), &cpu))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TURN_MODEL_LATENCY.into()), &latency))
                .and_then(|b| {
                    let stage = [
                        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0,
                        1.5, 2.0, 5.0,
                    ];
                    b.set_buckets_for_metric(Matcher::Full(STAGE_LATENCY.into()), &stage)?
                        .set_buckets_for_metric(Matcher::Full(LINK_SEND_DELAY.into()), &stage)
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (embedding applications);
            // then our handle simply renders nothing of theirs.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Present from the first scrape, not only once something happened.
            calls_active().set(0.0);
            counter!(TURNS).increment(0);
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(CALLS_ACTIVE, "Calls in progress");
    describe_counter!(CALLS_TOTAL, "Calls accepted since start");
    describe_counter!(CLUSTER_ROUTED, "Control requests routed to the node holding the call, by result");
    describe_counter!(CALLS_REJECTED, "Calls refused (capacity or shutdown)");
    describe_counter!(CALLS_ENDED, "Calls ended, by reason");
    describe_counter!(OUTBOUND_OUTCOMES, "Outbound calls placed through the control API, by outcome");
    describe_counter!(FRAMES_IN, "20 ms caller audio frames processed");
    describe_counter!(FRAMES_OUT, "20 ms bot audio frames sent to carriers");
    describe_counter!(BARGE_INS, "Times the caller interrupted the bot");
    describe_counter!(DROPPED_FRAMES, "Audio frames dropped, by kind");
    describe_counter!(PROTOCOL_ERRORS, "Carrier protocol errors, by kind");
    describe_histogram!(RESPONSE_LATENCY, metrics::Unit::Seconds, "End of caller speech to first bot audio sent");
    describe_histogram!(STAGE_LATENCY, metrics::Unit::Seconds, "Answering a turn, by stage (cascaded engines)");
    describe_histogram!(LINK_SEND_DELAY, metrics::Unit::Seconds, "Engine link text message: queued to written");
    describe_counter!(PLAYBACK_UNDERRUNS, "Response audio ran dry before the response was complete");
    describe_histogram!(BARGE_IN_LATENCY, metrics::Unit::Seconds, "Caller speech onset to carrier clear sent");
    describe_histogram!(
        FRAME_PROCESSING,
        metrics::Unit::Seconds,
        "Time to process one inbound carrier message (sampled 1 in 8)"
    );
    describe_counter!(TURNS, "Caller turns detected");
    describe_counter!(DTMF, "DTMF digits received");
    describe_counter!(TURN_ENDS, "Caller turns ended, by what decided (silence, model, max_wait)");
    describe_counter!(TURNS_RESUMED, "Premature turn ends: the caller spoke again within the grace window");
    describe_counter!(ECHO_IGNORED, "Runs of caller speech ignored as the bot's own echo");
    describe_counter!(TURN_MODEL_QUERIES, "End-of-turn model questions, by outcome");
    describe_histogram!(
        TURN_MODEL_LATENCY,
        metrics::Unit::Seconds,
        "End-of-turn question to verdict (queue + inference)"
    );
    describe_counter!(CALLBACK_EVENTS, "Callback events by type and outcome");
    describe_counter!(CALLBACK_FAILURES, "Failed callback attempts by kind");
    describe_histogram!(CALLBACK_LATENCY, metrics::Unit::Seconds, "Callback request round trip");
    describe_counter!(CALLBACK_FALLBACKS, "Blocking callbacks that timed out or failed, so the fallback applied");
    describe_counter!(ENGINE_DROPPED, "Messages to a network engine dropped because its lane was full");
    describe_counter!(ENGINE_ERRORS, "Network engine failures, reconnects and error events, by kind");
    describe_counter!(RECORDING_DROPPED, "Recording slots (20 ms) dropped because the writer fell behind");
    describe_counter!(RECORDING_FAILED, "Recordings stopped by a disk error");
    describe_counter!(STORE_FAILED, "Call-store records dropped or failed");
    describe_counter!(CARRIER_WEBHOOKS, "Carrier webhooks received, by carrier and outcome (accepted, duplicate)");
    describe_counter!(AUTH_REJECTED, "Webhooks and streams refused for failed authentication");
    describe_histogram!(ENGINE_FIRST_AUDIO, metrics::Unit::Seconds, "End of caller turn to the engine's first audio");
    describe_counter!(CALL_ERRORS, "Failures during calls (tools, transfers), by source");
    describe_counter!(CONNECTIONS_REFUSED, "HTTP connections closed at accept (connection limit)");
}

/// Metric handles for one call, resolved once at call start.
#[derive(Clone)]
pub struct CallMetrics {
    /// frames in
    pub frames_in: Counter,
    /// frames out
    pub frames_out: Counter,
    /// barge-ins
    pub barge_ins: Counter,
    /// dropped: outbound queue full
    pub dropped_queue: Counter,
    /// dropped: stale response audio
    pub dropped_stale: Counter,
    /// response latency
    pub response_latency: Histogram,
    /// barge-in latency
    pub barge_in_latency: Histogram,
    /// per-message processing time
    pub frame_processing: Histogram,
    /// engine asked → first audio
    pub engine_first_audio: Histogram,
    /// turns
    pub turns: Counter,
    /// dtmf
    pub dtmf: Counter,
    carrier: &'static str,
}

impl CallMetrics {
    /// Handles for a call on `carrier` using `engine`.
    pub fn new(carrier: &'static str, engine: &'static str) -> Self {
        Self {
            frames_in: counter!(FRAMES_IN, "carrier" => carrier),
            frames_out: counter!(FRAMES_OUT, "carrier" => carrier),
            barge_ins: counter!(BARGE_INS, "carrier" => carrier, "engine" => engine),
            dropped_queue: counter!(DROPPED_FRAMES, "kind" => "queue_full"),
            dropped_stale: counter!(DROPPED_FRAMES, "kind" => "stale_response"),
            response_latency: histogram!(RESPONSE_LATENCY, "engine" => engine),
            barge_in_latency: histogram!(BARGE_IN_LATENCY, "engine" => engine),
            frame_processing: histogram!(FRAME_PROCESSING),
            engine_first_audio: histogram!(ENGINE_FIRST_AUDIO, "engine" => engine),
            turns: counter!(TURNS),
            dtmf: counter!(DTMF),
            carrier,
        }
    }

    /// Count a protocol error of `kind` (stable code).
    pub fn protocol_error(&self, kind: &'static str) {
        counter!(PROTOCOL_ERRORS, "carrier" => self.carrier, "kind" => kind).increment(1);
    }
}

/// Make a carrier's core metrics present from the first scrape, not only once
/// a call happened (called for every registered carrier at start).
pub fn announce_carrier(carrier: &'static str, engine: &'static str) {
    for name in [CALLS_TOTAL, FRAMES_IN, FRAMES_OUT] {
        counter!(name, "carrier" => carrier).increment(0);
    }
    counter!(BARGE_INS, "carrier" => carrier, "engine" => engine).increment(0);
}

/// Record a duration on a histogram in seconds.
pub fn observe(h: &Histogram, d: Duration) {
    h.record(d.as_secs_f64());
}

/// Live-call gauge.
pub fn calls_active() -> Gauge {
    gauge!(CALLS_ACTIVE)
}
