//! `loadtest --url ws://127.0.0.1:8080/twilio/stream --calls 1000 --ramp 10s --duration 60s --scenario barge-in`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use loadtest::report::Report;
use loadtest::run::{Options, run};
use loadtest::scenario::Mix;
use loadtest::script::ScriptTiming;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Carrier media-stream load generator for callbridge: Twilio, Telnyx or Vonage (loopback targets only)"
)]
struct Cli {
    /// Stream URL (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/twilio/stream")]
    url: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    calls: u64,
    /// Start calls evenly over this long (e.g. 10s).
    #[arg(long, default_value = "5s", value_parser = parse_dur)]
    ramp: Duration,
    /// Steady state after the ramp (e.g. 60s).
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    duration: Duration,
    /// Scenario or weighted mix: talk, barge-in, silence, dtmf, hangup-mid-reply, short; e.g. `talk=3,barge-in=1`.
    #[arg(long, default_value = "talk")]
    scenario: Mix,
    /// Server pid: sample its CPU and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Folder with the caller WAVs.
    #[arg(long, default_value = "fixtures/audio")]
    fixtures: PathBuf,
    /// Caller clips to use (comma-separated file names in --fixtures); default: all four caller clips.
    #[arg(long, value_delimiter = ',')]
    clips: Vec<String>,
    /// Play a fixture set of caller turns instead: `human` or `paused` (from
    /// `fixtures/turns/<set>/turns.json`), or a folder holding a turns.json.
    #[arg(long, conflicts_with = "clips")]
    fixture_set: Option<String>,
    /// Speakerphone: the bot's played audio leaks back into the caller's stream this many dB down (e.g. -20).
    #[arg(long, allow_hyphen_values = true)]
    echo_db: Option<f32>,
    /// … this long after it played (ms).
    #[arg(long, default_value_t = 120)]
    echo_delay_ms: u64,
    /// Where report.json and report.html go.
    #[arg(long, default_value = "reports/latest")]
    report_dir: PathBuf,
    /// Barge-in scenario: interrupt after this much bot audio (ms).
    #[arg(long, default_value_t = 1000)]
    barge_after_ms: u64,
    /// Generator threads (tokio workers), each with its own frame ticker.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The callers' carrier protocol: twilio, telnyx or vonage (point --url at
    /// its stream path), or webrtc (browser calls through `POST /webrtc/offer`
    /// on --url's host; each caller barges in and talks, see `loadtest::webrtc`).
    #[arg(long, default_value = "twilio")]
    carrier: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Twilio only: place each call through this voice webhook first (loopback,
    /// unsigned: a development server), then stream with the token it answers;
    /// calls then reach a registered number's backend (`--to`).
    #[arg(long)]
    webhook: Option<String>,
    /// The number called through `--webhook`.
    #[arg(long, default_value = "+15550100001")]
    to: String,
    /// Place at most this many calls in all (with `short` or `hangup-mid-reply`,
    /// which call again after each hang-up); the run ends early once they are done.
    #[arg(long)]
    total_calls: Option<u64>,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err("duration must be within 0..=1h".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Checked before the clips load: a wrong name fails at once.
    let carrier: Option<loadtest::run::CarrierKind> = match cli.carrier.as_str() {
        "webrtc" => None,
        other => Some(other.parse().map_err(|e: String| anyhow::anyhow!("--carrier: {e}, or webrtc"))?),
    };
    let clips = if let Some(set) = &cli.fixture_set {
        let dir = if std::path::Path::new(set).join("turns.json").is_file() {
            PathBuf::from(set)
        } else {
            PathBuf::from("fixtures/turns").join(set)
        };
        loadtest::clip::load_fixture_set(&dir).with_context(|| format!("loading fixture set {set}"))?
    } else if cli.clips.is_empty() {
        loadtest::clip::load_caller_clips(&cli.fixtures).context("loading caller clips")?
    } else {
        cli.clips
            .iter()
            .map(|n| loadtest::clip::Clip::load(&cli.fixtures.join(n)))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let Some(carrier) = carrier else {
        return webrtc(cli, clips);
    };
    let opts = Options {
        url: cli.url,
        calls: cli.calls,
        ramp: cli.ramp,
        duration: cli.duration,
        mix: cli.scenario,
        server_pid: cli.server_pid,
        clips: Arc::new(clips),
        timing: ScriptTiming {
            barge_after_ms: cli.barge_after_ms as f64,
            echo_db: cli.echo_db,
            echo_delay_ms: cli.echo_delay_ms as f64,
            ..ScriptTiming::default()
        },
        progress: !cli.quiet,
        carrier,
        webhook: cli.webhook.map(|url| loadtest::run::Webhook { url, to: cli.to, http: reqwest::Client::new() }),
        total_calls: cli.total_calls,
        tickers: cli.threads,
    };
    if opts.webhook.is_some() && opts.carrier != loadtest::run::CarrierKind::Twilio {
        anyhow::bail!("--webhook places Twilio calls only");
    }
    let rt = runtime(cli.threads)?;
    let data = rt.block_on(run(opts.clone()))?;
    let report = Report::build(&opts, data);
    print!("{}", report.table());
    report.write(&cli.report_dir)?;
    println!("reports: {}/report.json, {}/report.html", cli.report_dir.display(), cli.report_dir.display());
    Ok(())
}

/// `--carrier webrtc`: browser calls against `--url`'s host.
fn webrtc(cli: Cli, clips: Vec<loadtest::clip::Clip>) -> anyhow::Result<()> {
    // The host of --url (a stream URL or the server's base), over HTTP.
    let u = url::Url::parse(&cli.url).context("--url")?;
    let host = u.host_str().context("--url: no host")?;
    let port = u.port_or_known_default().context("--url: no port")?;
    let scheme = if u.scheme() == "wss" || u.scheme() == "https" { "https" } else { "http" };
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    let opts = loadtest::webrtc::WebRtcOptions {
        base: format!("{scheme}://{host}:{port}"),
        calls: cli.calls,
        ramp: cli.ramp,
        duration: cli.duration,
        barge_after: Duration::from_millis(cli.barge_after_ms),
        server_pid: cli.server_pid,
        clips: Arc::new(clips),
    };
    let rt = runtime(cli.threads)?;
    let report = rt.block_on(loadtest::webrtc::run(opts))?;
    print!("{}", report.table());
    std::fs::create_dir_all(&cli.report_dir)?;
    let path = cli.report_dir.join("webrtc.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    println!("report: {}", path.display());
    Ok(())
}

/// The generator's runtime: one thread, or `threads` workers.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
}
