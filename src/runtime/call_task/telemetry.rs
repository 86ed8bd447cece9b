//! The session's measurements and incidents as metrics and logs. Labels stay
//! low-cardinality (carrier, engine, kind): never call ids or numbers.

use tracing::{debug, warn};

use crate::ids::CallId;
use crate::metrics::{CallMetrics, observe};
use crate::session::{Incident, Telemetry};

/// Record one measurement.
pub(super) fn record(metrics: &CallMetrics, id: CallId, engine_frame: usize, t: Telemetry) {
    match t {
        Telemetry::TurnStarted => metrics.turns.increment(1),
        Telemetry::TurnEnded { by, .. } => {
            metrics::counter!(crate::metrics::TURN_ENDS, "by" => by.label()).increment(1)
        }
        Telemetry::TurnResumed { by, after } => {
            metrics::counter!(crate::metrics::TURNS_RESUMED, "by" => by.label()).increment(1);
            debug!(call = %id, by = by.label(), after_ms = after.as_millis() as u64, "caller resumed after end of turn");
        }
        Telemetry::EchoIgnored => metrics::counter!(crate::metrics::ECHO_IGNORED).increment(1),
        Telemetry::ResponseFinished { .. } => {}
        Telemetry::ResponseLatency(d) => observe(&metrics.response_latency, d),
        Telemetry::EngineFirstAudio(d) => observe(&metrics.engine_first_audio, d),
        Telemetry::BargeIn { latency, heard_ms, .. } => {
            metrics.barge_ins.increment(1);
            observe(&metrics.barge_in_latency, latency);
            debug!(call = %id, latency_ms = latency.as_millis() as u64, heard_ms, "barge-in");
        }
        Telemetry::StaleAudioDropped(n) => metrics.dropped_stale.increment(n.div_ceil(engine_frame.max(1)) as u64),
        Telemetry::QueueOverflow(n) => metrics.dropped_queue.increment(n.div_ceil(engine_frame.max(1)) as u64),
        Telemetry::Dtmf(_) => metrics.dtmf.increment(1),
        Telemetry::Underrun => metrics::counter!(crate::metrics::PLAYBACK_UNDERRUNS).increment(1),
        Telemetry::Stage { stage, latency } => {
            observe(&metrics::histogram!(crate::metrics::STAGE_LATENCY, "stage" => stage), latency)
        }
    }
}

/// Count and log an incident.
pub(super) fn incident(id: CallId, i: &Incident) {
    match i.source {
        "engine" => metrics::counter!(crate::metrics::ENGINE_ERRORS, "kind" => i.kind).increment(1),
        _ => metrics::counter!(crate::metrics::CALL_ERRORS, "source" => i.source).increment(1),
    }
    if i.kind == "fatal_error" {
        warn!(call = %id, source = i.source, code = %i.code, message = %i.message, "fatal error; ending the call");
    } else {
        warn!(call = %id, source = i.source, kind = i.kind, code = %i.code, message = %i.message, "call incident");
    }
}
