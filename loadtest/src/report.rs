//! The run's report: a terminal table, a JSON document and an HTML page with
//! plots (latency CDFs, latency and server CPU over time) as inline SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::procstat::ProcSample;
use crate::run::{Options, RunData, failures_by_kind};
use crate::stats::Summary;
use crate::ticker::LagSummary;

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Target.
    pub url: String,
    /// The callers' carrier protocol.
    pub carrier: &'static str,
    /// Concurrent calls requested.
    pub calls: u64,
    /// Ramp seconds.
    pub ramp_s: f64,
    /// Steady-state seconds.
    pub duration_s: f64,
    /// Scenario mix.
    pub mix: String,
    /// Connections made (hang-up scenarios reconnect).
    pub connections: usize,
    /// Caller turns spoken.
    pub turns: u64,
    /// End of caller speech → first non-silent bot audio, ms.
    pub response_latency_ms: Summary,
    /// Onset of caller speech during bot audio → clear, ms.
    pub barge_in_latency_ms: Summary,
    /// Response latency of turns that end at a complete sentence, ms.
    pub complete_response_latency_ms: Summary,
    /// Turns in which the bot started talking before the caller's last speech frame.
    pub premature_turns: u64,
    /// `clear`s nobody talked over the bot for (false barge-ins, e.g. on its own echo).
    pub false_clears: u64,
    /// TCP + WebSocket handshake, ms.
    pub connect_ms: Summary,
    /// Bot audio that arrived later than real time inside a response.
    pub underruns: u64,
    /// Total underrun gap, ms.
    pub underrun_total_ms: f64,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// Bot audio frames received.
    pub bot_frames: u64,
    /// Marks echoed.
    pub marks_echoed: u64,
    /// Per scenario: response and barge-in latency.
    pub by_scenario: BTreeMap<String, ScenarioStats>,
    /// Server samples, if a pid was given.
    pub server: Option<ServerStats>,
    /// The generator's own CPU over the steady state, % of one core (if it nears
    /// 100 %, the generator, not the server, limits the figures).
    pub generator_cpu_percent: Summary,
    /// The generator's own CPU samples.
    pub generator_samples: Vec<ProcSample>,
    /// How late the generator's ticker sent frames after their slot (if p99
    /// nears the 20 ms frame period, the generator, not the server, was late).
    pub generator_send_lag: LagSummary,
    /// (seconds since start, response latency ms)
    pub response_series: Vec<(f64, f64)>,
    /// (seconds since start, barge-in latency ms)
    pub barge_in_series: Vec<(f64, f64)>,
}

/// Per-scenario figures.
#[derive(Debug, Serialize)]
pub struct ScenarioStats {
    /// calls
    pub connections: usize,
    /// response latency
    pub response_latency_ms: Summary,
    /// barge-in latency
    pub barge_in_latency_ms: Summary,
}

/// Server resource use.
#[derive(Debug, Serialize)]
pub struct ServerStats {
    /// RSS before any call, KiB.
    pub idle_rss_kib: Option<u64>,
    /// Peak RSS, KiB.
    pub peak_rss_kib: u64,
    /// CPU % of one core over the steady state (after the ramp).
    pub steady_cpu_percent: Summary,
    /// Steady-state CPU per call, % of one core (median CPU / calls).
    pub cpu_percent_per_call: Option<f64>,
    /// (peak − idle RSS) / calls, KiB.
    pub rss_kib_per_call: Option<f64>,
    /// Raw samples.
    pub samples: Vec<ProcSample>,
}

impl Report {
    /// Build from outcomes.
    pub fn build(opts: &Options, data: RunData) -> Self {
        let RunData { outcomes, server: samples, idle_rss, generator, send_lag } = data;
        let outcomes = &outcomes[..];
        let mut resp = Vec::new();
        let mut barge = Vec::new();
        let mut by: BTreeMap<String, (usize, Vec<f64>, Vec<f64>)> = BTreeMap::new();
        let (mut underruns, mut under_ms, mut bot_frames, mut marks, mut turns) = (0u64, 0.0, 0u64, 0u64, 0u64);
        let (mut premature, mut false_clears, mut complete) = (0u64, 0u64, Vec::new());
        for o in outcomes {
            let e = by.entry(o.scenario.name().to_string()).or_default();
            e.0 += 1;
            for &(t, l) in &o.book.response_ms {
                resp.push(((o.started_ms + t) / 1000.0, l));
                e.1.push(l);
            }
            for &(t, l) in &o.book.barge_in_ms {
                barge.push(((o.started_ms + t) / 1000.0, l));
                e.2.push(l);
            }
            underruns += o.book.underruns as u64;
            under_ms += o.book.underrun_total_ms;
            bot_frames += o.book.bot_frames;
            marks += o.book.marks_echoed;
            turns += o.book.turns as u64;
            premature += o.book.premature as u64;
            false_clears += o.book.false_clears as u64;
            complete.extend(o.book.complete_response_ms.iter().map(|x| x.1));
        }
        resp.sort_by(|a, b| a.0.total_cmp(&b.0));
        barge.sort_by(|a, b| a.0.total_cmp(&b.0));
        let connect: Vec<f64> = outcomes.iter().filter_map(|o| o.connect_ms).collect();
        let ramp_s = opts.ramp.as_secs_f64();
        let server = (!samples.is_empty()).then(|| {
            let steady: Vec<f64> = samples.iter().filter(|s| s.t > ramp_s + 1.0).map(|s| s.cpu_percent).collect();
            let steady = Summary::of(&steady);
            let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
            let calls = opts.calls.max(1) as f64;
            ServerStats {
                idle_rss_kib: idle_rss,
                peak_rss_kib: peak,
                cpu_percent_per_call: steady.p50.map(|c| c / calls),
                rss_kib_per_call: idle_rss.map(|i| peak.saturating_sub(i) as f64 / calls),
                steady_cpu_percent: steady,
                samples,
            }
        });
        Self {
            url: opts.url.clone(),
            calls: opts.calls,
            carrier: match opts.carrier {
                crate::run::CarrierKind::Twilio => "twilio",
                crate::run::CarrierKind::Telnyx => "telnyx",
                crate::run::CarrierKind::Vonage => "vonage",
            },
            ramp_s,
            duration_s: opts.duration.as_secs_f64(),
            mix: opts.mix.0.iter().map(|(s, w)| format!("{s}={w}")).collect::<Vec<_>>().join(","),
            connections: outcomes.len(),
            turns,
            response_latency_ms: Summary::of(&resp.iter().map(|x| x.1).collect::<Vec<_>>()),
            barge_in_latency_ms: Summary::of(&barge.iter().map(|x| x.1).collect::<Vec<_>>()),
            complete_response_latency_ms: Summary::of(&complete),
            premature_turns: premature,
            false_clears,
            connect_ms: Summary::of(&connect),
            underruns,
            underrun_total_ms: under_ms,
            failures: failures_by_kind(outcomes),
            bot_frames,
            marks_echoed: marks,
            by_scenario: by
                .into_iter()
                .map(|(k, (n, r, b))| {
                    (
                        k,
                        ScenarioStats {
                            connections: n,
                            response_latency_ms: Summary::of(&r),
                            barge_in_latency_ms: Summary::of(&b),
                        },
                    )
                })
                .collect(),
            server,
            generator_cpu_percent: Summary::of(
                &generator
                    .iter()
                    .filter(|s| s.t > opts.ramp.as_secs_f64() + 1.0)
                    .map(|s| s.cpu_percent)
                    .collect::<Vec<_>>(),
            ),
            generator_samples: generator,
            generator_send_lag: send_lag,
            response_series: resp,
            barge_in_series: barge,
        }
    }

    /// Total failures.
    pub fn failure_count(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
        let row = |name: &str, s: &Summary| {
            format!("{:<26} {:>7} {:>9} {:>9} {:>9} {:>9}\n", name, s.n, f(s.p50), f(s.p95), f(s.p99), f(s.max))
        };
        let mut t = String::new();
        let _ = writeln!(
            t,
            "callbridge loadtest: {} {} calls ({}), ramp {:.0}s, steady {:.0}s, {} connections, {} turns",
            self.calls, self.carrier, self.mix, self.ramp_s, self.duration_s, self.connections, self.turns
        );
        let _ = writeln!(t, "{:<26} {:>7} {:>9} {:>9} {:>9} {:>9}", "metric (ms)", "n", "p50", "p95", "p99", "max");
        t.push_str(&row("response latency", &self.response_latency_ms));
        t.push_str(&row("barge-in latency", &self.barge_in_latency_ms));
        if self.complete_response_latency_ms.n > 0 && self.complete_response_latency_ms.n < self.response_latency_ms.n {
            t.push_str(&row("  complete-sentence turns", &self.complete_response_latency_ms));
        }
        t.push_str(&row("connect", &self.connect_ms));
        for (k, v) in &self.by_scenario {
            if v.response_latency_ms.n > 0 {
                t.push_str(&row(&format!("  {k}: response"), &v.response_latency_ms));
            }
            if v.barge_in_latency_ms.n > 0 {
                t.push_str(&row(&format!("  {k}: barge-in"), &v.barge_in_latency_ms));
            }
        }
        let _ = writeln!(
            t,
            "underruns: {} ({:.0} ms total)   bot frames: {}   marks echoed: {}",
            self.underruns, self.underrun_total_ms, self.bot_frames, self.marks_echoed
        );
        let _ = writeln!(
            t,
            "turns answered prematurely: {} of {}   false barge-ins (clears nobody asked for): {}",
            self.premature_turns, self.turns, self.false_clears
        );
        if self.failures.is_empty() {
            t.push_str("failures: none\n");
        } else {
            let _ = writeln!(t, "failures: {:?}", self.failures);
        }
        let lag = &self.generator_send_lag;
        let _ = writeln!(
            t,
            "generator: steady CPU p50 {}% (p95 {}%) of its core; send lag p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms, {} of {} frames ≥ 5 ms late",
            f(self.generator_cpu_percent.p50),
            f(self.generator_cpu_percent.p95),
            lag.p50_ms,
            lag.p99_ms,
            lag.p999_ms,
            lag.max_ms,
            lag.late_5ms,
            lag.frames
        );
        if let Some(s) = &self.server {
            let _ = writeln!(
                t,
                "server: steady CPU p50 {}% (p95 {}%), per call {}% of a core; RSS idle {} KiB, peak {} KiB, per call {} KiB",
                f(s.steady_cpu_percent.p50),
                f(s.steady_cpu_percent.p95),
                s.cpu_percent_per_call.map_or("-".into(), |v| format!("{v:.3}")),
                s.idle_rss_kib.map_or("-".into(), |v| v.to_string()),
                s.peak_rss_kib,
                f(s.rss_kib_per_call)
            );
        }
        t
    }

    /// Write `report.json` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.html"), self.html())?;
        Ok(())
    }

    /// The HTML page.
    pub fn html(&self) -> String {
        let mut h = String::from(
            "<!doctype html><meta charset=utf-8><title>callbridge loadtest</title><style>body{font-family:sans-serif;max-width:980px;margin:2em auto}pre{background:#f4f4f4;padding:1em}svg{background:#fff;border:1px solid #ccc;margin:.5em 0}</style>",
        );
        let _ = write!(h, "<h1>callbridge loadtest</h1><pre>{}</pre>", escape(&self.table()));
        let cdf = |data: &[(f64, f64)]| {
            let mut v: Vec<f64> = data.iter().map(|x| x.1).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let n = v.len().max(1) as f64;
            v.iter().enumerate().map(|(i, x)| (*x, (i + 1) as f64 / n)).collect::<Vec<_>>()
        };
        h.push_str("<h2>Latency CDFs</h2>");
        h.push_str(&svg_plot(
            "response latency (ms) — fraction of turns",
            &[("response", &cdf(&self.response_series), "#1f77b4")],
            true,
        ));
        h.push_str(&svg_plot(
            "barge-in latency (ms) — fraction of barge-ins",
            &[("barge-in", &cdf(&self.barge_in_series), "#d62728")],
            true,
        ));
        h.push_str("<h2>Latency over time</h2>");
        h.push_str(&svg_plot(
            "seconds since start — latency (ms)",
            &[("response", &self.response_series, "#1f77b4"), ("barge-in", &self.barge_in_series, "#d62728")],
            false,
        ));
        if let Some(s) = &self.server {
            let cpu: Vec<(f64, f64)> = s.samples.iter().map(|x| (x.t, x.cpu_percent)).collect();
            let rss: Vec<(f64, f64)> = s.samples.iter().map(|x| (x.t, x.rss_kib as f64 / 1024.0)).collect();
            h.push_str("<h2>Server</h2>");
            let gen_cpu: Vec<(f64, f64)> = self.generator_samples.iter().map(|x| (x.t, x.cpu_percent)).collect();
            h.push_str(&svg_plot(
                "seconds since start — CPU (% of one core)",
                &[("server", &cpu, "#2ca02c"), ("generator", &gen_cpu, "#ff7f0e")],
                true,
            ));
            h.push_str(&svg_plot("seconds since start — RSS (MiB)", &[("rss", &rss, "#9467bd")], true));
        }
        h
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One plotted series: name, points, colour.
type Series<'a> = (&'a str, &'a [(f64, f64)], &'a str);

/// A minimal line/scatter plot as SVG.
fn svg_plot(title: &str, series: &[Series<'_>], lines: bool) -> String {
    let (w, hgt, m) = (900.0, 300.0, 50.0);
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        return format!("<p>{}: no data</p>", escape(title));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.05 };
    let sx = |x: f64| m + (x - x0) / (x1 - x0) * (w - 2.0 * m);
    let sy = |y: f64| hgt - m + -(y / y1) * (hgt - 2.0 * m);
    let mut s = format!("<svg width='{w}' height='{hgt}' xmlns='http://www.w3.org/2000/svg'>");
    let _ = write!(s, "<text x='{m}' y='20' font-size='13'>{}</text>", escape(title));
    let _ = write!(s, "<line x1='{m}' y1='{}' x2='{}' y2='{}' stroke='#000'/>", hgt - m, w - m, hgt - m);
    let _ = write!(s, "<line x1='{m}' y1='{m}' x2='{m}' y2='{}' stroke='#000'/>", hgt - m);
    for i in 0..=4 {
        let xv = x0 + (x1 - x0) * i as f64 / 4.0;
        let yv = y1 * i as f64 / 4.0;
        let _ = write!(
            s,
            "<text x='{:.0}' y='{:.0}' font-size='11' text-anchor='middle'>{:.1}</text>",
            sx(xv),
            hgt - m + 16.0,
            xv
        );
        let _ = write!(
            s,
            "<text x='{:.0}' y='{:.0}' font-size='11' text-anchor='end'>{:.2}</text>",
            m - 4.0,
            sy(yv) + 4.0,
            yv
        );
    }
    for (k, (name, data, color)) in series.iter().enumerate() {
        if lines {
            let path: Vec<String> = data.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
            let _ =
                write!(s, "<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{}'/>", path.join(" "));
        } else {
            for &(x, y) in data.iter() {
                let _ = write!(s, "<circle cx='{:.1}' cy='{:.1}' r='1.5' fill='{color}'/>", sx(x), sy(y));
            }
        }
        let _ = write!(
            s,
            "<text x='{}' y='{}' font-size='12' fill='{color}'>{}</text>",
            w - m - 120.0,
            m + 14.0 * k as f64,
            escape(name)
        );
    }
    s.push_str("</svg>");
    s
}
