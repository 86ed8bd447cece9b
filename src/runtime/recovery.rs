//! Recovery at start-up: calls a previous process left open when it died
//! without draining (`kill -9`, a crash, power loss).
//!
//! A graceful stop ends every call (`call.ended` reason `shutdown`); a process
//! that dies leaves call rows with no end in the store, recordings whose
//! header was last rewritten `recording.header_update_ms` before the end, and
//! backends that never heard the call was over. At the next start, before the
//! listeners take calls, each such call is ended as `interrupted`: its row is
//! closed, and the backend that owned it (if it still owns the number) gets
//! its one `call.ended` — the conversation as far as it was stored, the
//! recording's length as its header says, and `recording_loss` saying what
//! the crash cost — numbered after the last event stored for it.
//!
//! The SQLite store is one node's: two processes must not share its file
//! (every call of the other would look unfinished). A PostgreSQL shared by a
//! cluster marks each call with the node that ran it, and a node recovers
//! only its own: a node that restarts keeps its `cluster.node_id` (a random
//! default one leaves its calls unfinished). Store reads block: this runs on
//! a blocking thread.

use std::time::{Duration, SystemTime};

use crate::callback::client::Target;
use crate::callback::delivery::EventSender;
use crate::callstore::{CallRow, CallStore};
use crate::contract::{CallSummary, Event};
use crate::runtime::call_task::CallContext;
use crate::tenant::NumberStore;

/// The `call.ended` reason for a call its process died under.
pub const REASON: &str = "interrupted";

/// What the recording lost, for a recorded call ended by recovery.
const RECORDING_LOSS: &str =
    "the server stopped without ending the call: the recording holds the audio up to its last header update";

/// End every call the store holds open; returns how many. Deliveries run on
/// the current runtime (shutdown waits for them like any call's).
pub fn recover(ctx: &CallContext, tenants: &NumberStore) -> usize {
    let Some(store) = &ctx.store else { return 0 };
    let rows = match store.unfinished() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "recovery: could not read the call store");
            return 0;
        }
    };
    for row in &rows {
        end_one(ctx, store, tenants, row);
    }
    if !rows.is_empty() {
        tracing::warn!(calls = rows.len(), "recovery: calls left open by the previous process ended as interrupted");
        metrics::counter!(crate::metrics::CALLS_ENDED, "reason" => REASON).increment(rows.len() as u64);
    }
    rows.len()
}

fn end_one(ctx: &CallContext, store: &CallStore, tenants: &NumberStore, row: &CallRow) {
    let recorded = row.recording.as_deref().map(recording_ms);
    let loss = recorded.map(|_| row.recording_loss.clone().unwrap_or_else(|| RECORDING_LOSS.to_string()));
    // The backend that owned the call, if it still owns its number (whoever
    // registered it since must not hear of the old owner's calls).
    let owner = row
        .tenant
        .as_deref()
        .and_then(|id| [&row.to, &row.from].into_iter().filter_map(|n| tenants.get(n)).find(|t| t.id == id));
    let Some(tenant) = owner else {
        store.ended(&row.call_id, REASON, loss);
        return;
    };
    let stored = store.events(&row.call_id).unwrap_or_default();
    let last_seq = stored.iter().filter_map(|e| e["seq"].as_u64()).max().unwrap_or(0);
    let conversation: Vec<serde_json::Value> = stored
        .into_iter()
        .filter(|e| e["type"] != "call.ended")
        .map(|mut e| {
            if let Some(m) = e.as_object_mut() {
                for k in ["call_id", "seq", "timestamp"] {
                    m.remove(k);
                }
            }
            e
        })
        .collect();
    let count = |kind: &str| conversation.iter().filter(|e| e["type"] == kind).count() as u32;
    let started = SystemTime::UNIX_EPOCH + Duration::from_millis(row.started_at.max(0) as u64);
    let now = SystemTime::now();
    let summary = CallSummary {
        reason: REASON.into(),
        from: row.from.clone(),
        to: row.to.clone(),
        started_at: crate::contract::rfc3339(started),
        ended_at: crate::contract::rfc3339(now),
        duration_ms: now.duration_since(started).unwrap_or_default().as_millis() as u64,
        transcript: crate::contract::plain_transcript(&conversation),
        user_turns: count("turn.user"),
        agent_turns: count("turn.agent"),
        barge_ins: count("barge_in"),
        recording_url: recorded.map(|_| crate::callstore::recording_url(&ctx.public_http, &row.call_id)),
        recording_duration_ms: recorded.flatten(),
        recording_loss: loss.clone(),
        conversation,
        ..Default::default()
    };
    let target = Target { url: tenant.callback_url.clone(), secret: tenant.secret.clone() };
    let mut events =
        EventSender::spawn(ctx.client.clone(), target, ctx.delivery, &row.call_id, last_seq, &ctx.deliveries)
            .with_store(Some(store.clone()));
    events.send(Event::CallEnded(summary));
    store.ended(&row.call_id, REASON, loss);
}

/// The recording's length as its header says (`None`: unreadable).
fn recording_ms(path: &str) -> Option<u64> {
    let r = hound::WavReader::open(path).ok()?;
    let spec = r.spec();
    Some(r.duration() as u64 * 1000 / spec.sample_rate.max(1) as u64)
}
