//! The generator's frame clock: one timer drives every call it owns.
//!
//! A carrier sends each call's audio every 20 ms, at a phase of its own. A
//! task and a timer per call would make the generator wake once per frame per
//! call; instead one ticker per generator thread wakes once a millisecond and
//! sends the frames of the calls whose phase falls in that millisecond's
//! slot (20 slots). A ticker that falls behind catches up slot by slot —
//! frames go out late, never skipped or bunched into one call — and records
//! how late each went out (its send lag), so a run knows when the generator,
//! not the server, was late.
//!
//! Invariants: every registered call gets exactly one `tick` per 20 ms slot
//! time until it says it is over; the histogram counts every frame sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Slots in a 20 ms frame period.
pub const SLOTS: usize = 20;
/// One slot.
pub const SLOT: Duration = Duration::from_millis(1);

/// Something the ticker drives.
pub trait Ticked: Send + Sync {
    /// Its slot (0..SLOTS).
    fn slot(&self) -> usize;
    /// Send this period's frame; `due` is when it should have gone out.
    /// Returns false once the call is over (it is then dropped).
    fn tick(&self, due: Instant, now: Instant) -> bool;
}

/// Send lag (time a frame went out after its slot began) in 0.1 ms buckets.
#[derive(Debug, Clone)]
pub struct LagHistogram {
    buckets: Vec<u64>,
    max_us: u64,
    count: u64,
}

/// Bucket width, µs.
const BUCKET_US: u64 = 100;
/// Lags beyond this land in the last bucket (the maximum is kept exactly).
const TOP_US: u64 = 1_000_000;

impl Default for LagHistogram {
    fn default() -> Self {
        Self { buckets: vec![0; (TOP_US / BUCKET_US) as usize + 1], max_us: 0, count: 0 }
    }
}

/// The lag summary a report carries.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LagSummary {
    /// Frames sent.
    pub frames: u64,
    /// Median, ms (bucket upper bound).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Frames sent 5 ms or more late.
    pub late_5ms: u64,
}

impl LagHistogram {
    /// Count one frame sent `lag` late.
    pub fn record(&mut self, lag: Duration) {
        let us = lag.as_micros().min(u64::MAX as u128) as u64;
        let i = (us / BUCKET_US).min(self.buckets.len() as u64 - 1) as usize;
        self.buckets[i] += 1;
        self.max_us = self.max_us.max(us);
        self.count += 1;
    }

    /// Add another ticker's counts.
    pub fn merge(&mut self, o: &LagHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.max_us = self.max_us.max(o.max_us);
        self.count += o.count;
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper = (i as u64 + 1) * BUCKET_US;
                return upper.min(self.max_us.max(BUCKET_US)) as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }

    /// Percentiles and the late count.
    pub fn summary(&self) -> LagSummary {
        let late = self.buckets[(5_000 / BUCKET_US) as usize..].iter().sum();
        LagSummary {
            frames: self.count,
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: self.max_us as f64 / 1000.0,
            late_5ms: late,
        }
    }
}

/// Register calls with a running ticker.
#[derive(Clone)]
pub struct TickerHandle {
    tx: mpsc::UnboundedSender<Arc<dyn Ticked>>,
}

impl TickerHandle {
    /// Start ticking `call` from its slot's next time.
    pub fn register(&self, call: Arc<dyn Ticked>) {
        let _ = self.tx.send(call);
    }
}

/// Run a ticker from `t0` until `stop` is set; returns its lag histogram.
pub fn spawn(t0: Instant, stop: Arc<AtomicBool>) -> (TickerHandle, tokio::task::JoinHandle<LagHistogram>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<dyn Ticked>>();
    let task = tokio::spawn(async move {
        let mut slots: Vec<Vec<Arc<dyn Ticked>>> = (0..SLOTS).map(|_| Vec::new()).collect();
        let mut lag = LagHistogram::default();
        let mut k: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep_until(t0 + SLOT * k).await;
            let now = Instant::now();
            while let Ok(c) = rx.try_recv() {
                slots[c.slot() % SLOTS].push(c);
            }
            // Every slot whose time has come, oldest first.
            while t0 + SLOT * k <= now {
                let due = t0 + SLOT * k;
                let slot = &mut slots[k as usize % SLOTS];
                slot.retain(|c| {
                    let live = c.tick(due, now);
                    if live {
                        lag.record(now - due);
                    }
                    live
                });
                k += 1;
            }
        }
        lag
    });
    (TickerHandle { tx }, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn lag_percentiles_come_from_the_buckets() {
        let mut h = LagHistogram::default();
        for _ in 0..98 {
            h.record(Duration::from_micros(250));
        }
        h.record(Duration::from_millis(7));
        h.record(Duration::from_millis(30));
        let s = h.summary();
        assert_eq!(s.frames, 100);
        assert_eq!(s.p50_ms, 0.3);
        assert_eq!(s.p99_ms, 7.1);
        assert_eq!(s.max_ms, 30.0);
        assert_eq!(s.late_5ms, 2);
        let mut m = LagHistogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.summary().frames, 200);
        assert_eq!(LagHistogram::default().summary().p99_ms, 0.0);
    }

    struct Counter {
        slot: usize,
        ticks: Mutex<Vec<Instant>>,
        until: usize,
    }

    impl Ticked for Counter {
        fn slot(&self) -> usize {
            self.slot
        }
        fn tick(&self, due: Instant, _now: Instant) -> bool {
            let mut t = self.ticks.lock().unwrap();
            t.push(due);
            t.len() < self.until
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_call_ticks_every_20_ms_at_its_own_phase_until_it_is_over() {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, task) = spawn(t0, stop.clone());
        let a = Arc::new(Counter { slot: 3, ticks: Mutex::new(Vec::new()), until: 5 });
        let b = Arc::new(Counter { slot: 17, ticks: Mutex::new(Vec::new()), until: 1000 });
        h.register(a.clone());
        h.register(b.clone());
        tokio::time::sleep(Duration::from_millis(205)).await;
        stop.store(true, Ordering::Relaxed);
        let lag = task.await.unwrap();
        let a: Vec<u128> = a.ticks.lock().unwrap().iter().map(|t| (*t - t0).as_millis()).collect();
        assert_eq!(a, vec![3, 23, 43, 63, 83], "five ticks, then over");
        let b: Vec<u128> = b.ticks.lock().unwrap().iter().map(|t| (*t - t0).as_millis()).collect();
        assert_eq!(b, (0..10).map(|i| 17 + 20 * i).collect::<Vec<_>>());
        // Every live tick was counted, none late in paused time.
        assert_eq!(lag.summary().frames, 4 + 10);
        assert_eq!(lag.summary().late_5ms, 0);
    }
}
