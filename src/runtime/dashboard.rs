//! The live dashboard's feed: what each call is doing now, and one summary a
//! second of what calls felt (response and barge-in latency, dropped frames,
//! underruns) and what the process costs (CPU, memory).
//!
//! - Each call task holds a [`CallFeed`]. It sets the call's [`CallState`]
//!   (one relaxed atomic store, read by the registry's listing) and sends a
//!   [`Sample`] per measured event (a turn, a response's first audio, a
//!   barge-in, a drop, an underrun) with `try_send` on a bounded channel:
//!   never blocks, never allocates (the tenant is an `Arc<str>` cloned at
//!   admission), and a full channel loses the sample, counted, never the call.
//! - One sampler task ([`Dashboard::run`]) wakes once a second, drains the
//!   channel into a [`Tick`] (server-wide and per tenant), samples the
//!   process from `/proc`, keeps the last [`HISTORY`] ticks for a page that
//!   opens late, and publishes the tick on a `watch` channel. Nothing here is
//!   on the per-frame path but the state store.
//!
//! Invariants: a tick's figures cover exactly the samples drained at it (no
//! sample is counted twice); latency percentiles are nearest-rank over that
//! second; per-tenant figures only ever contain that tenant's calls.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;

use crate::procstat::ProcReader;
use crate::runtime::registry::Registry;
use crate::session::Telemetry;

/// Seconds of ticks kept for a page that connects late.
pub const HISTORY: usize = 120;
/// Samples waiting for the sampler at most (then lost, counted).
const QUEUE: usize = 1 << 16;

/// What a live call is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Waiting for the caller, or hearing them.
    Listening,
    /// The caller's turn ended; the answer is being made.
    Thinking,
    /// The agent's audio is going out.
    Speaking,
}

impl CallState {
    /// Label for JSON and the page.
    pub fn label(self) -> &'static str {
        match self {
            Self::Listening => "listening",
            Self::Thinking => "thinking",
            Self::Speaking => "speaking",
        }
    }
}

/// A call's current state, shared by its task (writer) and the registry (readers).
#[derive(Debug, Default)]
pub struct LiveCall {
    state: AtomicU8,
}

impl LiveCall {
    /// A call that is listening.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Its state now.
    pub fn state(&self) -> CallState {
        match self.state.load(Ordering::Relaxed) {
            1 => CallState::Thinking,
            2 => CallState::Speaking,
            _ => CallState::Listening,
        }
    }

    fn set(&self, s: CallState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Turn,
    Response,
    BargeIn,
    Dropped,
    Underrun,
}

/// One measured event of one call.
#[derive(Debug, Clone)]
pub struct Sample {
    tenant: Option<Arc<str>>,
    kind: Kind,
    /// Microseconds (latencies) or a count (drops).
    value: u32,
}

/// One call's end of the feed.
#[derive(Debug)]
pub struct CallFeed {
    live: Arc<LiveCall>,
    tenant: Option<Arc<str>>,
    tx: Sender<Sample>,
    lost: Arc<AtomicU64>,
}

impl CallFeed {
    fn send(&self, kind: Kind, value: u32) {
        let s = Sample { tenant: self.tenant.clone(), kind, value };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(s) {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The session measured something (`engine_frame`: samples per 20 ms of
    /// engine audio, the unit of `QueueOverflow`).
    pub fn observe(&self, t: &Telemetry, engine_frame: usize) {
        let us = |d: Duration| d.as_micros().min(u32::MAX as u128) as u32;
        match t {
            // Counted at the start, as Prometheus does: a resumed turn ends twice.
            Telemetry::TurnStarted => {
                self.live.set(CallState::Listening);
                self.send(Kind::Turn, 1);
            }
            Telemetry::TurnResumed { .. } => self.live.set(CallState::Listening),
            Telemetry::TurnEnded { .. } => self.live.set(CallState::Thinking),
            Telemetry::ResponseLatency(d) => {
                self.live.set(CallState::Speaking);
                self.send(Kind::Response, us(*d));
            }
            Telemetry::BargeIn { latency, .. } => {
                self.live.set(CallState::Listening);
                self.send(Kind::BargeIn, us(*latency));
            }
            Telemetry::ResponseFinished { .. } => self.live.set(CallState::Listening),
            Telemetry::QueueOverflow(n) => self.dropped(n.div_ceil(engine_frame.max(1)) as u64),
            Telemetry::Underrun => self.send(Kind::Underrun, 1),
            _ => {}
        }
    }

    /// Agent audio went out (the greeting and `say` included).
    pub fn speaking(&self) {
        if self.live.state() != CallState::Speaking {
            self.live.set(CallState::Speaking);
        }
    }

    /// `n` frames of this call were dropped.
    pub fn dropped(&self, n: u64) {
        if n > 0 {
            self.send(Kind::Dropped, n.min(u32::MAX as u64) as u32);
        }
    }
}

/// Latency over one second.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub n: u32,
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// Largest, ms.
    pub max_ms: Option<f64>,
}

impl Latency {
    fn of(mut us: Vec<u32>) -> Self {
        if us.is_empty() {
            return Self::default();
        }
        us.sort_unstable();
        let rank = |q: f64| us[((q * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1] as f64 / 1000.0;
        Self { n: us.len() as u32, p50_ms: Some(rank(0.5)), p95_ms: Some(rank(0.95)), max_ms: Some(rank(1.0)) }
    }
}

/// One second of one scope (the server, or one tenant).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// Unix time of the tick, ms.
    pub t_ms: u64,
    /// Live calls at the tick.
    pub calls: u32,
    /// Caller turns that began.
    pub turns: u32,
    /// End of the caller's turn → first agent audio.
    pub response: Latency,
    /// Caller onset → agent audio stopped.
    pub barge_in: Latency,
    /// Frames dropped (queues full).
    pub dropped_frames: u64,
    /// Agent audio that ran dry mid-response.
    pub underruns: u64,
}

/// The process at a tick (server-wide, for the admin view only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Process {
    /// CPU over the last second, % of one core.
    pub cpu_percent: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
    /// Samples the feed lost since start (its queue was full).
    pub samples_lost: u64,
}

/// One second, every scope.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    /// The whole server.
    pub all: Second,
    /// Per tenant (only tenants with a live call or a sample this second).
    pub by_tenant: HashMap<Arc<str>, Second>,
    /// The process.
    pub process: Process,
}

impl Tick {
    /// The second seen by `tenant` (all zero if it had nothing).
    pub fn of_tenant(&self, tenant: &str) -> Second {
        self.by_tenant.get(tenant).cloned().unwrap_or_else(|| Second { t_ms: self.all.t_ms, ..Second::default() })
    }
}

#[derive(Default)]
struct Acc {
    turns: u32,
    response: Vec<u32>,
    barge_in: Vec<u32>,
    dropped: u64,
    underruns: u64,
}

impl Acc {
    fn add(&mut self, kind: Kind, v: u32) {
        match kind {
            Kind::Turn => self.turns += v,
            Kind::Response => self.response.push(v),
            Kind::BargeIn => self.barge_in.push(v),
            Kind::Dropped => self.dropped += v as u64,
            Kind::Underrun => self.underruns += v as u64,
        }
    }

    fn second(self, t_ms: u64, calls: u32) -> Second {
        Second {
            t_ms,
            calls,
            turns: self.turns,
            response: Latency::of(self.response),
            barge_in: Latency::of(self.barge_in),
            dropped_frames: self.dropped,
            underruns: self.underruns,
        }
    }
}

/// The server's dashboard feed.
#[derive(Debug)]
pub struct Dashboard {
    tx: Sender<Sample>,
    rx: Receiver<Sample>,
    lost: Arc<AtomicU64>,
    history: Mutex<VecDeque<Arc<Tick>>>,
    latest: tokio::sync::watch::Sender<Option<Arc<Tick>>>,
}

impl Dashboard {
    /// An empty feed.
    pub fn new() -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        Arc::new(Self {
            tx,
            rx,
            lost: Arc::default(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            latest: tokio::sync::watch::channel(None).0,
        })
    }

    /// The feed end of a call of `tenant` whose state is `live`.
    pub fn feed(&self, live: Arc<LiveCall>, tenant: Option<&str>) -> CallFeed {
        CallFeed { live, tenant: tenant.map(Arc::from), tx: self.tx.clone(), lost: self.lost.clone() }
    }

    /// Drain what arrived into one tick at `t_ms`, with `registry`'s live
    /// calls counted and `process` as sampled.
    pub fn tick(&self, registry: &Registry, t_ms: u64, process: Process) -> Arc<Tick> {
        let mut all = Acc::default();
        let mut by: HashMap<Arc<str>, Acc> = HashMap::new();
        // Only what is there now: samples sent during the drain wait for the next tick.
        for s in self.rx.try_iter().take(self.rx.len()) {
            all.add(s.kind, s.value);
            if let Some(t) = s.tenant {
                by.entry(t).or_default().add(s.kind, s.value);
            }
        }
        let mut calls: HashMap<Arc<str>, u32> = HashMap::new();
        let mut total = 0u32;
        registry.for_each_live(|d, _| {
            total += 1;
            if let Some(t) = d.tenant.as_deref() {
                match calls.get_mut(t) {
                    Some(n) => *n += 1,
                    None => {
                        calls.insert(Arc::from(t), 1);
                    }
                }
            }
        });
        for t in calls.keys() {
            by.entry(t.clone()).or_default();
        }
        let by_tenant = by
            .into_iter()
            .map(|(t, acc)| {
                let n = calls.get(&t).copied().unwrap_or(0);
                (t, acc.second(t_ms, n))
            })
            .collect();
        let process = Process { samples_lost: self.lost.load(Ordering::Relaxed), ..process };
        let tick = Arc::new(Tick { all: all.second(t_ms, total), by_tenant, process });
        {
            let mut h = self.history.lock().expect("dashboard history");
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(tick.clone());
        }
        self.latest.send_replace(Some(tick.clone()));
        tick
    }

    /// The kept ticks (oldest first) and a receiver of the next ones.
    pub fn subscribe(&self) -> (Vec<Arc<Tick>>, tokio::sync::watch::Receiver<Option<Arc<Tick>>>) {
        let rx = self.latest.subscribe();
        let h = self.history.lock().expect("dashboard history").iter().cloned().collect();
        (h, rx)
    }

    /// Tick once a second until the task is aborted.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>) {
        let mut proc = ProcReader::new(std::process::id());
        let started = std::time::Instant::now();
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let sampled = proc.sample(started.elapsed().as_secs_f64());
            let process = sampled
                .map(|p| Process { cpu_percent: p.cpu_percent, rss_mib: p.rss_kib as f64 / 1024.0, samples_lost: 0 })
                .unwrap_or_default();
            let t_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            self.tick(&registry, t_ms, process);
        }
    }
}

#[cfg(test)]
mod tests;
