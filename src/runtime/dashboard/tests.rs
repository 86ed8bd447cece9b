use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::ids::CallId;
use crate::ids::ResponseId;
use crate::runtime::registry::{CallDetails, CallHandle};
use crate::session::turn::EndedBy;

fn details(tenant: Option<&str>) -> CallDetails {
    CallDetails {
        tenant: tenant.map(str::to_string),
        from: "+15550000001".into(),
        to: "+15550000002".into(),
        carrier: "twilio",
        carrier_call_id: "CA1".into(),
        carrier_ids: Vec::new(),
        engine: "local",
        started_at: SystemTime::now(),
    }
}

fn barge_in(ms: u64) -> Telemetry {
    Telemetry::BargeIn {
        latency: Duration::from_millis(ms),
        heard_ms: 0,
        response: ResponseId(1),
        onset: Instant::now(),
    }
}

#[test]
fn a_call_walks_through_its_states() {
    let d = Dashboard::new();
    let live = LiveCall::new();
    let f = d.feed(live.clone(), None);
    assert_eq!(live.state(), CallState::Listening);
    let now = Instant::now();
    f.observe(&Telemetry::TurnEnded { start: now, end: now, by: EndedBy::Silence }, 160);
    assert_eq!(live.state(), CallState::Thinking);
    f.observe(&Telemetry::ResponseLatency(Duration::from_millis(510)), 160);
    assert_eq!(live.state(), CallState::Speaking);
    f.observe(&barge_in(60), 160);
    assert_eq!(live.state(), CallState::Listening, "a barge-in stops the agent");
    f.speaking();
    assert_eq!(live.state(), CallState::Speaking, "agent audio going out (a greeting) is speaking");
    f.observe(
        &Telemetry::ResponseFinished {
            response: ResponseId(2),
            started: now,
            sent_ms: 1000,
            heard_ms: 1000,
            interrupted: false,
        },
        160,
    );
    assert_eq!(live.state(), CallState::Listening);
}

#[test]
fn a_tick_summarises_each_tenant_apart_and_the_server_as_a_whole() {
    let d = Dashboard::new();
    let reg = Registry::new();
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let mut calls = Vec::new();
    for (i, tenant) in [Some("A"), Some("A"), Some("B"), None].into_iter().enumerate() {
        let live = LiveCall::new();
        let mut g = reg.register(
            CallId(i as u128 + 1),
            CallHandle { control: tx.clone(), carrier: "twilio", details: None, live },
        );
        g.admit(CallId(i as u128 + 10), details(tenant));
        calls.push((d.feed(g.live().clone(), tenant), g));
    }
    // Tenant A: responses 500, 520 and 900 ms, one barge-in; B: one response and two dropped frames.
    for ms in [500, 520, 900] {
        calls[0].0.observe(&Telemetry::ResponseLatency(Duration::from_millis(ms)), 160);
    }
    calls[1].0.observe(&barge_in(61), 160);
    calls[2].0.observe(&Telemetry::ResponseLatency(Duration::from_millis(700)), 160);
    calls[2].0.observe(&Telemetry::QueueOverflow(320), 160); // samples: two frames
    calls[2].0.observe(&Telemetry::TurnStarted, 160);
    calls[3].0.observe(&Telemetry::Underrun, 160);
    let t = d.tick(&reg, 1000, Process::default());
    assert_eq!(t.all.calls, 4);
    assert_eq!(t.all.response.n, 4);
    assert_eq!(t.all.response.p50_ms, Some(520.0));
    assert_eq!(t.all.response.max_ms, Some(900.0));
    assert_eq!((t.all.dropped_frames, t.all.underruns), (2, 1));
    let a = t.of_tenant("A");
    assert_eq!((a.calls, a.response.n, a.response.p50_ms, a.response.p95_ms), (2, 3, Some(520.0), Some(900.0)));
    assert_eq!((a.barge_in.n, a.barge_in.p95_ms, a.dropped_frames), (1, Some(61.0), 0));
    let b = t.of_tenant("B");
    assert_eq!((b.calls, b.response.n, b.dropped_frames, b.underruns, b.turns), (1, 1, 2, 0, 1));
    assert_eq!(t.of_tenant("C"), Second { t_ms: 1000, ..Second::default() }, "a stranger sees nothing");
    // The next tick starts afresh: nothing is counted twice.
    let t2 = d.tick(&reg, 2000, Process::default());
    assert_eq!((t2.all.response.n, t2.all.barge_in.n, t2.all.dropped_frames), (0, 0, 0));
    assert_eq!(t2.of_tenant("A").calls, 2);
    drop(calls);
    let t3 = d.tick(&reg, 3000, Process::default());
    assert_eq!(t3.all.calls, 0);
    assert!(t3.by_tenant.is_empty(), "ended calls leave no tenant behind");
    let (history, rx) = d.subscribe();
    assert_eq!(history.iter().map(|t| t.all.t_ms).collect::<Vec<_>>(), vec![1000, 2000, 3000]);
    assert_eq!(rx.borrow().as_ref().map(|t| t.all.t_ms), Some(3000));
}

#[test]
fn a_full_queue_loses_samples_counted_and_never_blocks() {
    let d = Dashboard::new();
    let f = d.feed(LiveCall::new(), None);
    for _ in 0..QUEUE + 10 {
        f.observe(&Telemetry::Underrun, 160);
    }
    let t = d.tick(&Registry::new(), 0, Process::default());
    assert_eq!(t.all.underruns, QUEUE as u64);
    assert_eq!(t.process.samples_lost, 10);
}

#[test]
fn history_keeps_the_last_two_minutes() {
    let d = Dashboard::new();
    let reg = Registry::new();
    for s in 0..HISTORY as u64 + 5 {
        d.tick(&reg, s * 1000, Process::default());
    }
    let (h, _) = d.subscribe();
    assert_eq!(h.len(), HISTORY);
    assert_eq!(h[0].all.t_ms, 5000);
}
