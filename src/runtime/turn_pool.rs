//! The end-of-turn model's workers: a few OS threads, each with its own
//! loaded smart-turn model, fed through one bounded queue.
//!
//! Call tasks never wait on it: [`TurnPool::ask`] is a `try_send`, and a full
//! queue is answered "overloaded" at once (the session then falls back to its
//! silence rule). A question still queued past its deadline is answered
//! "late" without running the model, so an overloaded pool sheds work instead
//! of answering everything too late. Inference (≈ 100 ms each) never runs on
//! a tokio thread.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing::{info, warn};

use crate::config::TurnModelConfig;
use crate::metrics::TURN_MODEL_QUERIES;
use crate::session::TurnQuery;
use crate::smart_turn::{ModelError, SmartTurnModel};

/// Where a verdict goes: P(complete), or `None` if there is none in time.
pub type Answer = Box<dyn FnOnce(Option<f32>) + Send>;

struct Job {
    query: TurnQuery,
    asked: Instant,
    deadline: Duration,
    answer: Answer,
    threshold: f32,
}

/// Handle to the workers; dropping the last one stops them.
pub struct TurnPool {
    tx: Sender<Job>,
}

impl std::fmt::Debug for TurnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnPool").field("queued", &self.tx.len()).finish()
    }
}

impl TurnPool {
    /// Load the model once per worker (failing fast if a file is missing or
    /// the runtime cannot load) and start the threads.
    pub fn start(cfg: &TurnModelConfig) -> Result<Arc<Self>, ModelError> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(cfg.queue.max(1));
        let runtime = Path::new(&cfg.runtime);
        let model = Path::new(&cfg.model);
        let started = Instant::now();
        for n in 0..cfg.workers.max(1) {
            let m = SmartTurnModel::load(runtime, model)?;
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("turn-model-{n}"))
                .spawn(move || work(m, rx))
                .map_err(|e| ModelError::Runtime(format!("cannot start a worker thread: {e}")))?;
        }
        info!(
            workers = cfg.workers,
            queue = cfg.queue,
            load_ms = started.elapsed().as_millis() as u64,
            "end-of-turn model loaded"
        );
        Ok(Arc::new(Self { tx }))
    }

    /// Ask about `query`; `answer` is called exactly once, from a worker (or
    /// right here if the queue is full). `threshold` only labels the metric.
    pub fn ask(&self, query: TurnQuery, deadline: Duration, threshold: f32, answer: Answer) {
        let job = Job { query, asked: Instant::now(), deadline, answer, threshold };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                metrics::counter!(TURN_MODEL_QUERIES, "outcome" => "overloaded").increment(1);
                (job.answer)(None);
            }
            Err(TrySendError::Disconnected(job)) => {
                metrics::counter!(TURN_MODEL_QUERIES, "outcome" => "failed").increment(1);
                (job.answer)(None);
            }
        }
    }
}

/// Run the calling worker thread under `SCHED_IDLE` on Linux: it only gets
/// CPU no call needs. A worker is an ordinary thread otherwise, and the
/// scheduler shares a core fairly between it and the call loop: at 1,000
/// calls on one core that starved the call path (116,022 underruns). Idle,
/// a question that cannot be answered before its deadline is answered
/// "late" and the silence rule decides, which is what the deadline is for.
fn yield_to_calls() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle) {
            warn!(error = ?e, "cannot lower the end-of-turn model's priority; it competes with calls for CPU");
        }
    }
}

fn work(mut model: SmartTurnModel, rx: Receiver<Job>) {
    yield_to_calls();
    let mut failures = 0u32;
    while let Ok(job) = rx.recv() {
        if job.asked.elapsed() >= job.deadline {
            metrics::counter!(TURN_MODEL_QUERIES, "outcome" => "late").increment(1);
            (job.answer)(None);
            continue;
        }
        match model.predict(&job.query.audio, job.query.rate) {
            Ok(p) => {
                let outcome = if p >= job.threshold { "complete" } else { "incomplete" };
                metrics::counter!(TURN_MODEL_QUERIES, "outcome" => outcome).increment(1);
                crate::metrics::observe(&metrics::histogram!(crate::metrics::TURN_MODEL_LATENCY), job.asked.elapsed());
                (job.answer)(Some(p));
            }
            Err(e) => {
                metrics::counter!(TURN_MODEL_QUERIES, "outcome" => "failed").increment(1);
                if failures < 5 {
                    warn!(error = %e, "end-of-turn model failed; the silence rule decides");
                }
                failures += 1;
                (job.answer)(None);
            }
        }
    }
}
