//! The loadtest's WebRTC mode: concurrent browser calls, each a real WebRTC
//! peer (`callbridge_testkit::webrtc_peer`: ICE, DTLS, SRTP, Opus, the
//! `webrtc` crate) signalling over `POST /webrtc/offer`, as a browser would.
//!
//! Each call: wait for the greeting, barge into it after `barge_after` of
//! agent audio (barge-in latency: the caller's speech onset → the agent's
//! last loud packet before its first silence of [`STOP_GAP`]), let the
//! caller's turn end (response latency: the caller's last speech frame sent →
//! the agent's first loud packet, as the Twilio mode measures it; an agent
//! still talking then is a failure, `agent_still_speaking`), let that answer
//! play to the end, talk again into the quiet line (a second response), and
//! repeat; with no time left for a cycle the caller keeps the line open in
//! silence until the run ends, so every call is live through the measured
//! window; then it hangs up (`DELETE`) and closes.
//!
//! The caller clips are decoded, resampled to 48 kHz and Opus-encoded once;
//! each call sends the same packets (no encoding per call). Each call paces
//! itself with its own 20 ms timer, so the generator costs more per call
//! than the Twilio mode's shared ticker: its own CPU is reported next to the
//! server's, to show which side was the limit.
//!
//! Loopback only, bounded in time: the run ends `ramp + duration` after it
//! starts, and every peer is closed before it returns.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};
use bytes::Bytes;
use callbridge::audio::g711;
use callbridge::audio::resample::Resampler;
use callbridge::procstat::ProcReader;
use callbridge_testkit::webrtc_peer::{FRAME, WebRtcPeer};
use serde::Serialize;
use tokio::time::{MissedTickBehavior, interval};

use crate::clip::Clip;
use crate::stats::Summary;

/// RMS (full scale 32768) above which an agent packet counts as voice.
const LOUD: f32 = 300.0;
/// The agent counts as done speaking after this long without a loud packet.
const QUIET: Duration = Duration::from_millis(600);
/// A silence this long ends the agent's utterance (barge-in latency).
const STOP_GAP: Duration = Duration::from_millis(200);
/// Time a conversation cycle needs at most (barge-in, answer, talk, answer).
const CYCLE: Duration = Duration::from_secs(6);

/// What a WebRTC run needs.
#[derive(Debug, Clone)]
pub struct WebRtcOptions {
    /// `http://127.0.0.1:PORT` (loopback only).
    pub base: String,
    /// Concurrent calls.
    pub calls: u64,
    /// Calls start evenly over this long.
    pub ramp: Duration,
    /// Steady state after the ramp.
    pub duration: Duration,
    /// Barge into the agent after this much of its audio.
    pub barge_after: Duration,
    /// Server process to sample (CPU, RSS).
    pub server_pid: Option<u32>,
    /// Caller clips.
    pub clips: Arc<Vec<Clip>>,
}

/// The caller's clips as a browser sends them, and a packet of silence.
#[derive(Debug)]
struct Voice {
    clips: Vec<OpusClip>,
    silence: Bytes,
}

/// A clip as a browser sends it.
#[derive(Debug)]
struct OpusClip {
    packets: Vec<Bytes>,
    speech_start: usize,
    speech_end: usize,
}

fn browser_encoder() -> anyhow::Result<Encoder> {
    let mut enc = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
    enc.set_bitrate(Bitrate::BitsPerSecond(32_000))?;
    enc.set_inband_fec(true)?;
    Ok(enc)
}

/// Each clip from its own encoder (its packets are decoded in sequence).
fn encode_clips(clips: &[Clip]) -> anyhow::Result<Voice> {
    let mut packet = vec![0u8; 1275];
    let len = browser_encoder()?.encode(&[0i16; FRAME], &mut packet)?;
    let silence = Bytes::copy_from_slice(&packet[..len]);
    let mut out = Vec::new();
    for c in clips {
        let enc = browser_encoder()?;
        let mut up = Resampler::new(8000, 48000, 160)?;
        let mut pcm8 = [0i16; 160];
        let mut pcm48 = vec![0i16; up.output_len(160)];
        let mut packets = Vec::with_capacity(c.frames.len());
        for f in &c.frames {
            g711::ulaw_decode(f, &mut pcm8);
            let n = up.process(&pcm8, &mut pcm48);
            anyhow::ensure!(n == FRAME, "resampler gave {n} samples for 20 ms");
            let len = enc.encode(&pcm48[..FRAME], &mut packet)?;
            packets.push(Bytes::copy_from_slice(&packet[..len]));
        }
        out.push(OpusClip { packets, speech_start: c.speech_start, speech_end: c.speech_end });
    }
    Ok(Voice { clips: out, silence })
}

/// What one call measured.
#[derive(Debug, Default)]
struct CallResult {
    connected: bool,
    response_ms: Vec<f64>,
    barge_in_ms: Vec<f64>,
    failure: Option<String>,
}

/// The run's results.
#[derive(Debug, Clone, Serialize)]
pub struct WebRtcReport {
    /// Calls placed.
    pub calls: u64,
    /// Calls whose media came up.
    pub connected: u64,
    /// Calls still live (connected, not failed) when the run ended: the
    /// divisor of the per-call figures.
    pub live_at_end: u64,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// End of the caller's speech → the agent's first loud packet, ms.
    pub response_latency_ms: Summary,
    /// The caller's speech onset over the agent → its last loud packet, ms.
    pub barge_in_latency_ms: Summary,
    /// Server CPU over the steady state (% of one core): mean and peak.
    pub server_cpu_mean: Option<f64>,
    /// Peak of the server's CPU samples.
    pub server_cpu_peak: Option<f64>,
    /// Server RSS before the first call and at the end of the steady state, KiB.
    pub server_rss_kib: Option<(u64, u64)>,
    /// The generator's own CPU over the steady state (% of one core).
    pub generator_cpu_mean: Option<f64>,
}

impl WebRtcReport {
    /// Server CPU per call, % of one core.
    pub fn cpu_per_call(&self) -> Option<f64> {
        Some(self.server_cpu_mean? / self.live_at_end.max(1) as f64)
    }

    /// Server memory per call, KiB.
    pub fn rss_per_call_kib(&self) -> Option<f64> {
        let (a, b) = self.server_rss_kib?;
        Some(b.saturating_sub(a) as f64 / self.live_at_end.max(1) as f64)
    }

    /// A one-row Markdown table.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
        let f3 = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
        let failures: u64 = self.failures.values().sum();
        format!(
            "| carrier | calls | connected | response p50 | response p99 | barge-in p50 | barge-in p95 | failures | server CPU | CPU %/call | RSS KiB/call | generator CPU |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n\
             | WebRTC | {} | {} | {} | {} | {} | {} | {} | {} % | {} | {} | {} % |\n\
             failures: {:?}; samples: {} responses, {} barge-ins\n",
            self.calls,
            self.connected,
            f(self.response_latency_ms.p50),
            f(self.response_latency_ms.p99),
            f(self.barge_in_latency_ms.p50),
            f(self.barge_in_latency_ms.p95),
            failures,
            f(self.server_cpu_mean),
            f3(self.cpu_per_call()),
            f(self.rss_per_call_kib()),
            f(self.generator_cpu_mean),
            self.failures,
            self.response_latency_ms.n,
            self.barge_in_latency_ms.n,
        )
    }
}

/// Whether `base` is a loopback HTTP URL.
pub fn check_loopback(base: &str) -> anyhow::Result<()> {
    let u = url::Url::parse(base)?;
    let host = u.host_str().unwrap_or("");
    anyhow::ensure!(
        u.scheme() == "http" && (host == "127.0.0.1" || host == "localhost" || host == "[::1]"),
        "the loadtest only targets http:// on loopback, not {base}"
    );
    Ok(())
}

/// Run the calls; every peer is closed before this returns.
pub async fn run(opts: WebRtcOptions) -> anyhow::Result<WebRtcReport> {
    check_loopback(&opts.base)?;
    let clips = Arc::new(encode_clips(&opts.clips)?);
    anyhow::ensure!(!clips.clips.is_empty(), "no caller clips");
    let started = Instant::now();
    let end = started + opts.ramp + opts.duration;
    // Measured: from a little after the last call started to a second before
    // any hangs up (every call stays live until `end`).
    let steady = started + opts.ramp + Duration::from_secs(3).min(opts.duration / 4);
    let sampler = tokio::spawn(sample(opts.server_pid, steady, end.checked_sub(Duration::from_secs(1)).unwrap_or(end)));
    let mut calls = Vec::new();
    for i in 0..opts.calls {
        let at = started + opts.ramp.mul_f64(i as f64 / opts.calls.max(1) as f64);
        let (base, clips, barge_after) = (opts.base.clone(), clips.clone(), opts.barge_after);
        calls.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            one_call(&base, &clips, i as usize, barge_after, end).await
        }));
    }
    let mut results = Vec::new();
    for c in calls {
        results.push(
            c.await.unwrap_or_else(|e| CallResult { failure: Some(format!("panic: {e}")), ..Default::default() }),
        );
    }
    let samples = sampler.await.unwrap_or_default();
    let mut failures = BTreeMap::new();
    for r in &results {
        if let Some(f) = &r.failure {
            *failures.entry(f.clone()).or_insert(0) += 1;
        }
    }
    let all = |f: fn(&CallResult) -> &Vec<f64>| results.iter().flat_map(|r| f(r).iter().copied()).collect::<Vec<_>>();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Ok(WebRtcReport {
        calls: opts.calls,
        connected: results.iter().filter(|r| r.connected).count() as u64,
        live_at_end: results.iter().filter(|r| r.connected && r.failure.is_none()).count() as u64,
        failures,
        response_latency_ms: Summary::of(&all(|r| &r.response_ms)),
        barge_in_latency_ms: Summary::of(&all(|r| &r.barge_in_ms)),
        server_cpu_mean: mean(&samples.server_cpu),
        server_cpu_peak: samples.server_cpu.iter().copied().reduce(f64::max),
        server_rss_kib: samples.server_rss.first().copied().zip(samples.server_rss_steady),
        generator_cpu_mean: mean(&samples.own_cpu),
    })
}

#[derive(Debug, Default)]
struct Samples {
    server_cpu: Vec<f64>,
    /// The first value is before any call.
    server_rss: Vec<u64>,
    server_rss_steady: Option<u64>,
    own_cpu: Vec<f64>,
}

/// CPU and RSS once a second; CPU counted over the steady state only.
async fn sample(server: Option<u32>, steady: Instant, end: Instant) -> Samples {
    let t0 = Instant::now();
    let mut srv = server.map(ProcReader::new);
    let mut own = ProcReader::new(std::process::id());
    let mut s = Samples::default();
    if let Some((_, rss)) = srv.as_ref().and_then(|r| r.read()) {
        s.server_rss.push(rss);
    }
    let mut tick = interval(Duration::from_secs(1));
    while Instant::now() < end {
        tick.tick().await;
        let t = t0.elapsed().as_secs_f64();
        let now = Instant::now();
        if let Some(p) = srv.as_mut().and_then(|r| r.sample(t)) {
            s.server_rss.push(p.rss_kib);
            if now >= steady {
                s.server_cpu.push(p.cpu_percent);
                s.server_rss_steady = Some(p.rss_kib);
            }
        }
        if let Some(p) = own.sample(t)
            && now >= steady
        {
            s.own_cpu.push(p.cpu_percent);
        }
    }
    s
}

/// One browser call to its end.
async fn one_call(base: &str, voice: &Voice, n: usize, barge_after: Duration, end: Instant) -> CallResult {
    let mut r = CallResult::default();
    let mut peer = match WebRtcPeer::call(base, "from=loadtest", None).await {
        Ok(p) => p,
        Err(e) => {
            r.failure = Some(match e {
                callbridge_testkit::webrtc_peer::PeerError::Refused { status, .. } => format!("offer_refused_{status}"),
                _ => "offer_failed".into(),
            });
            return r;
        }
    };
    if !peer.connected(Duration::from_secs(10)).await {
        r.failure = Some("not_connected".into());
        peer.close().await;
        return r;
    }
    r.connected = true;
    if let Err(kind) = converse(&mut peer, voice, n, barge_after, end, &mut r).await {
        r.failure = Some(kind.into());
    }
    let _ = peer.hang_up().await;
    peer.close().await;
    r
}

async fn converse(
    peer: &mut WebRtcPeer,
    voice: &Voice,
    n: usize,
    barge_after: Duration,
    end: Instant,
    r: &mut CallResult,
) -> Result<(), &'static str> {
    let mut tick = interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let (clips, quiet) = (&voice.clips, &voice.silence);
    let mut turn = n;
    // The greeting, first.
    let t0 = Instant::now();
    let spoke = wait_for(peer, &mut tick, quiet, Duration::from_secs(5), |p| {
        p.loudness_since(t0, LOUD).first_loud.is_some_and(|f| f.elapsed() >= barge_after)
    })
    .await?;
    if !spoke {
        return Err("no_greeting");
    }
    while Instant::now() + CYCLE < end {
        // Barge into the agent, then let the turn end.
        let clip = &clips[turn % clips.len()];
        turn += 1;
        let (onset, speech_end) = play(peer, &mut tick, clip).await?;
        // No loud packet after the onset: the agent had paused already (not a measurement).
        if let Some(stopped) = peer.voice_stopped(onset, LOUD, STOP_GAP) {
            r.barge_in_ms.push(stopped.duration_since(onset).as_secs_f64() * 1000.0);
        }
        let answered = response(peer, &mut tick, quiet, speech_end).await?;
        r.response_ms.push(answered);
        // Let the answer play out, then talk into the quiet line.
        let done = wait_for(peer, &mut tick, quiet, Duration::from_secs(20), |p| {
            p.loudness_since(Instant::now() - QUIET, LOUD).loud == 0
        })
        .await?;
        if !done {
            return Err("agent_never_quiet");
        }
        if Instant::now() + CYCLE >= end {
            break;
        }
        let clip = &clips[turn % clips.len()];
        turn += 1;
        let (_, speech_end) = play(peer, &mut tick, clip).await?;
        let answered = response(peer, &mut tick, quiet, speech_end).await?;
        r.response_ms.push(answered);
        // The answer plays for `barge_after`: the next cycle barges into it.
        let from = Instant::now();
        let _ = wait_for(peer, &mut tick, quiet, Duration::from_secs(5), |p| {
            p.loudness_since(from, LOUD).first_loud.is_some_and(|f| f.elapsed() >= barge_after)
        })
        .await?;
    }
    // Keep the line open until the run ends: every call is live while measured.
    let left = end.saturating_duration_since(Instant::now());
    wait_for(peer, &mut tick, quiet, left, |_| false).await?;
    Ok(())
}

/// Send silence until `done` (checked each frame) or `within` passes.
async fn wait_for(
    peer: &mut WebRtcPeer,
    tick: &mut tokio::time::Interval,
    quiet: &Bytes,
    within: Duration,
    done: impl Fn(&WebRtcPeer) -> bool,
) -> Result<bool, &'static str> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        tick.tick().await;
        peer.send_packet(quiet).await.map_err(|_| "send_failed")?;
        if done(peer) {
            return Ok(true);
        }
        if peer.ended() {
            return Err("connection_ended");
        }
    }
    Ok(false)
}

/// Play a clip; when its speech began (its first speech frame sent) and
/// ended (its last speech frame sent).
async fn play(
    peer: &mut WebRtcPeer,
    tick: &mut tokio::time::Interval,
    clip: &OpusClip,
) -> Result<(Instant, Instant), &'static str> {
    let mut onset = Instant::now();
    let mut speech_end = onset;
    for (i, p) in clip.packets.iter().enumerate().take(clip.speech_end + 1) {
        tick.tick().await;
        if i == clip.speech_start {
            onset = Instant::now();
        }
        if i == clip.speech_end {
            speech_end = Instant::now();
        }
        peer.send_packet(p).await.map_err(|_| "send_failed")?;
    }
    Ok((onset, speech_end))
}

/// Silence after the caller's speech until the agent answers; the latency,
/// ms. The agent must have been quiet since before the caller's speech
/// ended (else its "answer" is the audio a barge-in failed to stop).
async fn response(
    peer: &mut WebRtcPeer,
    tick: &mut tokio::time::Interval,
    quiet: &Bytes,
    speech_end: Instant,
) -> Result<f64, &'static str> {
    if peer.loudness_since(speech_end - STOP_GAP, LOUD).loud > 0 {
        return Err("agent_still_speaking");
    }
    let answered = wait_for(peer, tick, quiet, Duration::from_secs(5), |p| {
        p.loudness_since(speech_end, LOUD).first_loud.is_some()
    })
    .await?;
    if !answered {
        return Err("no_response");
    }
    let first = peer.loudness_since(speech_end, LOUD).first_loud.expect("answered");
    Ok(first.duration_since(speech_end).as_secs_f64() * 1000.0)
}
