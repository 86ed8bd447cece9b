//! The load run: N concurrent simulated Twilio calls over real WebSockets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use callbridge_testkit::twilio_peer::TwilioPeer;
use tokio::time::Instant;

use crate::caller::{CallSpec, run_call, slot_of};
use crate::clip::Clip;
use crate::peer::Peer;
use crate::procstat::{ProcReader, ProcSample};
use crate::scenario::{Mix, Scenario};
use crate::script::{CallBook, Script, ScriptTiming};
use crate::ticker::{LagHistogram, LagSummary, TickerHandle};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ws://127.0.0.1:PORT/twilio/stream`
    pub url: String,
    /// Concurrent calls.
    pub calls: u64,
    /// Calls start evenly over this long.
    pub ramp: Duration,
    /// Steady state after the ramp.
    pub duration: Duration,
    /// Scenario mix.
    pub mix: Mix,
    /// Server process to sample (CPU, RSS).
    pub server_pid: Option<u32>,
    /// Caller clips.
    pub clips: Arc<Vec<Clip>>,
    /// Behaviour timing.
    pub timing: ScriptTiming,
    /// Show a progress bar.
    pub progress: bool,
    /// Which carrier's stream protocol the callers speak.
    pub carrier: CarrierKind,
    /// Place Twilio calls through the voice webhook first.
    pub webhook: Option<Webhook>,
    /// Stop placing calls after this many in all (re-calling scenarios:
    /// `short`, `hangup-mid-reply`); the run ends when the last one does.
    pub total_calls: Option<u64>,
    /// Frame tickers (one per generator thread).
    pub tickers: usize,
}

/// A Twilio voice webhook to place calls through (so they reach a number's backend).
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `http://127.0.0.1:PORT/twilio/voice`
    pub url: String,
    /// The number called.
    pub to: String,
    /// Shared HTTP client.
    pub http: reqwest::Client,
}

impl Webhook {
    /// POST the voice webhook as Twilio would (unsigned); the stream token from the TwiML.
    async fn place(&self, p: &TwilioPeer) -> Option<String> {
        let form = [
            ("AccountSid", p.account_sid.as_str()),
            ("CallSid", p.call_sid.as_str()),
            ("From", "+15550100000"),
            ("To", self.to.as_str()),
            ("CallStatus", "ringing"),
        ];
        let req = self.http.post(&self.url).form(&form).send();
        let twiml = tokio::time::timeout(Duration::from_secs(10), async { req.await.ok()?.text().await.ok() })
            .await
            .ok()
            .flatten()?;
        let i = twiml.find(r#"name="cb_token" value=""#)? + 23;
        twiml.get(i..i + 64).map(str::to_string)
    }
}

/// The carrier the simulated callers come through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CarrierKind {
    /// Twilio Media Streams (`/twilio/stream`).
    #[default]
    Twilio,
    /// Telnyx media streaming (`/telnyx/stream`; frames carry `chunk` numbers).
    Telnyx,
    /// Vonage WebSockets (`/vonage/stream`; binary 16 kHz PCM frames).
    Vonage,
}

impl std::str::FromStr for CarrierKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "twilio" => Ok(CarrierKind::Twilio),
            "telnyx" => Ok(CarrierKind::Telnyx),
            "vonage" => Ok(CarrierKind::Vonage),
            other => Err(format!("unknown carrier {other:?} (twilio, telnyx or vonage)")),
        }
    }
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    /// calls connected now
    pub active: AtomicU64,
    /// turns spoken
    pub turns: AtomicU64,
    /// failures
    pub failures: AtomicU64,
    /// calls placed so far (for `total_calls`)
    pub placed: AtomicU64,
}

/// What one call (connection) produced.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// Scenario.
    pub scenario: Scenario,
    /// ms since the run began at which this call connected.
    pub started_ms: f64,
    /// TCP + WebSocket handshake time.
    pub connect_ms: Option<f64>,
    /// Measurements (times in ms since `started_ms`).
    pub book: CallBook,
    /// Protocol errors seen in server messages.
    pub protocol_errors: u32,
}

/// Only loopback targets: a load test never leaves the machine.
pub fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url.strip_prefix("ws://").context("--url must be ws://127.0.0.1:PORT/… (loopback only)")?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let ok = host == "localhost" || host == "[::1]" || host.starts_with("127.");
    if !ok {
        bail!("refusing to load {host:?}: loadtest targets loopback addresses only");
    }
    Ok(())
}

/// Run the load; returns every call's outcome and the server samples.
pub async fn run(opts: Options) -> anyhow::Result<RunData> {
    check_loopback(&opts.url)?;
    if opts.clips.is_empty() {
        bail!("no caller clips");
    }
    let t0 = Instant::now();
    let t_end = t0 + opts.ramp + opts.duration;
    let live = Arc::new(Live::default());
    // Idle baseline of the server before any call.
    let mut reader = opts.server_pid.map(ProcReader::new);
    let idle_rss = reader.as_ref().and_then(|r| r.read()).map(|(_, rss)| rss);
    if let Some(r) = &mut reader {
        r.sample(0.0);
    }
    // The generator watches itself too: a saturated generator measures itself.
    let mut me = ProcReader::new(std::process::id());
    me.sample(0.0);
    let mut generator = Vec::new();
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new((opts.ramp + opts.duration).as_secs());
        b.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let stop = Arc::new(AtomicBool::new(false));
    let tickers: Vec<_> = (0..opts.tickers.max(1)).map(|_| crate::ticker::spawn(t0, stop.clone())).collect();
    let mut handles = Vec::with_capacity(opts.calls as usize);
    for i in 0..opts.calls {
        // Spread calls over the ramp and over the 20 ms frame phase, as real
        // calls are: evenly spaced starts would put every call's frames in the
        // same instant (bursts no carrier produces).
        let phase = Duration::from_micros(i.wrapping_mul(7_919) % 20_000);
        let start = t0 + opts.ramp.mul_f64(i as f64 / opts.calls.max(1) as f64) + phase;
        let o = opts.clone();
        let live = live.clone();
        let ticker = tickers[i as usize % tickers.len()].0.clone();
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            call_loop(i, slot_of(phase), o, t0, t_end, live, ticker).await
        }));
    }
    // Sample the server once a second while the calls run.
    let mut samples = Vec::new();
    let mut sec = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    while Instant::now() < t_end && !handles.iter().all(|h| h.is_finished()) {
        sec.tick().await;
        let t = (Instant::now() - t0).as_secs_f64();
        if let Some(r) = &mut reader
            && let Some(s) = r.sample(t)
        {
            samples.push(s);
        }
        if let Some(s) = me.sample(t) {
            generator.push(s);
        }
        if let Some(b) = &bar {
            b.set_position(t as u64);
            let cpu = samples.last().map(|s| format!(" server cpu {:.0}%", s.cpu_percent)).unwrap_or_default();
            b.set_message(format!(
                "calls {} turns {} failures {}{}",
                live.active.load(Ordering::Relaxed),
                live.turns.load(Ordering::Relaxed),
                live.failures.load(Ordering::Relaxed),
                cpu
            ));
        }
    }
    let mut outcomes = Vec::new();
    for h in handles {
        if let Ok(Ok(mut v)) = tokio::time::timeout(Duration::from_secs(15), h).await {
            outcomes.append(&mut v);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut lag = LagHistogram::default();
    for (_, t) in tickers {
        if let Ok(h) = t.await {
            lag.merge(&h);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(RunData { outcomes, server: samples, idle_rss, generator, send_lag: lag.summary() })
}

/// Everything a run collected.
#[derive(Debug)]
pub struct RunData {
    /// Per connection.
    pub outcomes: Vec<CallOutcome>,
    /// Server samples (with `server_pid`).
    pub server: Vec<ProcSample>,
    /// Server RSS before the first call.
    pub idle_rss: Option<u64>,
    /// The generator's own CPU samples.
    pub generator: Vec<ProcSample>,
    /// How late the generator sent its frames.
    pub send_lag: LagSummary,
}

/// One simulated caller slot: calls (and calls again after a hang-up) until
/// `t_end`, or until the run has placed `total_calls`.
async fn call_loop(
    i: u64,
    slot: usize,
    o: Options,
    t0: Instant,
    t_end: Instant,
    live: Arc<Live>,
    ticker: TickerHandle,
) -> Vec<CallOutcome> {
    let scenario = o.mix.pick(i);
    let mut out = Vec::new();
    let mut attempt = 0u64;
    while Instant::now() + Duration::from_millis(500) < t_end {
        if o.total_calls.is_some_and(|n| live.placed.fetch_add(1, Ordering::Relaxed) >= n) {
            break;
        }
        let id = i * 100_000 + attempt;
        attempt += 1;
        let outcome = one_call(id, scenario, slot, &o, t0, t_end, &live, &ticker).await;
        let again = matches!(scenario, Scenario::HangupMidReply | Scenario::Short) && outcome.connect_ms.is_some();
        out.push(outcome);
        if !again {
            break;
        }
    }
    out
}

/// One call: placed through the webhook when the run has one, then streamed.
#[allow(clippy::too_many_arguments)]
async fn one_call(
    id: u64,
    scenario: Scenario,
    slot: usize,
    o: &Options,
    t0: Instant,
    t_end: Instant,
    live: &Arc<Live>,
    ticker: &TickerHandle,
) -> CallOutcome {
    let started = Instant::now();
    let peer = Peer::new(o.carrier, id);
    let mut script = Script::new(scenario, o.clips.clone(), id as usize, o.timing);
    let mut routed = None;
    if let (Some(w), Some(p)) = (&o.webhook, peer.twilio()) {
        match w.place(p).await {
            Some(token) => routed = Some((token, w.to.clone())),
            None => {
                script.book.failures.push("webhook");
                live.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let spec = CallSpec { url: o.url.clone(), peer, script, slot, routed, started, t_end };
    let r = run_call(spec, ticker, live.clone(), id).await;
    CallOutcome {
        scenario,
        started_ms: (started - t0).as_secs_f64() * 1000.0,
        connect_ms: r.connect_ms,
        book: r.book,
        protocol_errors: r.protocol_errors,
    }
}

/// Failures by kind over all calls.
pub fn failures_by_kind(outcomes: &[CallOutcome]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        for f in &o.book.failures {
            *m.entry(f.to_string()).or_insert(0) += 1;
        }
        if o.protocol_errors > 0 {
            *m.entry("protocol_error".to_string()).or_insert(0) += o.protocol_errors as u64;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert!(check_loopback("ws://127.0.0.1:8080/twilio/stream").is_ok());
        assert!(check_loopback("ws://localhost:8080/twilio/stream").is_ok());
        assert!(check_loopback("ws://[::1]:8080/x").is_ok());
        assert!(check_loopback("ws://10.0.0.1:8080/x").is_err());
        assert!(check_loopback("ws://example.com/x").is_err());
        assert!(check_loopback("wss://127.0.0.1/x").is_err());
    }
}
