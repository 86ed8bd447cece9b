//! Is this "caller speech" the bot's own voice coming back? An echo-likelihood
//! check against what the session sent, for callers on speakerphones.
//!
//! The session knows each bot frame it released and where on the caller's
//! timeline it plays (release time plus what the far end holds). Echo is that
//! audio again, attenuated and delayed by the echo path (network, jitter
//! buffer, room: 40–300 ms on real calls). So per 5 ms block the check keeps
//! the power of what was played and of what came in, and finds the echo path:
//! the lag (up to `max_delay_ms`) and power gain (`0 ≤ g ≤ 0.25`: an echo
//! comes back at least 6 dB quieter than it was played, and a later path
//! keeps the first one's gain within 6 dB) for which `in ≈ g · played(t − lag)` over the last
//! 200 ms leaves at most `max_residual` of the power unexplained. With a path,
//! a caller frame the VAD calls speech is echo when the path — its gain held
//! fixed — explains both the last `window_ms` and the newest frame. A caller
//! talking over the bot adds power a fixed-gain echo cannot explain, so their
//! first frame already fails.
//!
//! Cost: nothing per frame but four block powers each way; on speech frames
//! inside the echo window, 3 lags × 12 blocks, and every tenth such frame (or
//! with no path yet) a search of 80 lags × 40 blocks. No allocation after
//! construction; the two rings are 3 KiB by default and nothing when the
//! check is off.

use serde::{Deserialize, Serialize};

use super::canceller::Canceller;

/// Echo check tuning (`[turn.echo]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EchoConfig {
    /// Compare caller speech with the bot's played audio before it counts.
    pub check: bool,
    /// Longest echo path delay searched.
    pub max_delay_ms: u32,
    /// Audio the fit looks at.
    pub window_ms: u32,
    /// Largest share of the window's power the echo may leave unexplained.
    pub max_residual: f32,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self { check: true, max_delay_ms: 400, window_ms: 60, max_residual: 0.3 }
    }
}

impl EchoConfig {
    /// Reject settings that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if !(20..=1000).contains(&self.max_delay_ms) {
            return Err("turn.echo.max_delay_ms must be within 20..=1000".into());
        }
        if !(20..=200).contains(&self.window_ms) {
            return Err("turn.echo.window_ms must be within 20..=200".into());
        }
        if !(0.0..=1.0).contains(&self.max_residual) {
            return Err("turn.echo.max_residual must be within 0..=1".into());
        }
        Ok(())
    }
}

const BLOCK_MS: u32 = 5;
/// Received audio the echo path is searched over (200 ms).
const SEARCH_BLOCKS: usize = 40;
/// While frames are echo, the path is searched again this often (frames).
const RESEARCH_FRAMES: u32 = 10;
/// Largest echo power gain (−6 dB): an echo comes back quieter than it was
/// played (speakerphones measure −10 dB and below).
const MAX_GAIN: f64 = 0.25;
/// A new path may differ from the one it replaces by at most this much gain
/// (×4 = 6 dB): the echo path of a call is physically stable.
const GAIN_DRIFT: f64 = 4.0;
/// Frames the path may fail in a row (the caller talking) before it is
/// searched for from scratch.
const MAX_MISSES: u32 = 25;

/// The echo path: received ≈ gain × played(t − lag), in block powers.
#[derive(Debug, Clone, Copy)]
struct Path {
    lag: u64,
    gain: f64,
    misses: u32,
}
/// Blocks of the far end's buffer (320 ms) the rings keep beyond the search
/// span and the longest delay: played audio is placed that far ahead.
const AHEAD_BLOCKS: usize = 64;

fn similar(a: f64, b: f64) -> bool {
    a <= b * GAIN_DRIFT && a * GAIN_DRIFT >= b
}

/// Block powers of the played and the received audio on the caller's timeline.
#[derive(Debug, Clone)]
pub struct EchoCheck {
    enabled: bool,
    block: usize,
    max_lag: usize,
    window: usize,
    max_residual: f32,
    /// Ring length in blocks − 1: the search span, the window, the longest
    /// delay and the far end's buffer, rounded up to a power of two (256
    /// blocks, 2 KiB + 1 KiB by default; nothing when the check is off).
    mask: u64,
    /// (block number mod 2³², power) of bot audio placed on the caller's
    /// timeline, by block number modulo the ring length (the tag wraps after 248 days).
    played: Box<[(u32, f32)]>,
    /// Power of received blocks, by block number modulo the ring length.
    heard: Box<[f32]>,
    /// Caller samples received so far.
    caller_samples: u64,
    /// Last block that holds bot audio.
    last_played: Option<u64>,
    /// Power of a partial caller block carried to the next frame.
    partial: (f64, usize),
    path: Option<Path>,
    /// The last search's path, waiting for a second search to agree.
    candidate: Option<Path>,
    since_search: u32,
    /// Caller frame length in samples.
    frame: usize,
    /// Whether the sample-domain canceller may run (rate ≤ 16 kHz).
    cancel: bool,
    /// Made when the first echo path is found: calls without echo never pay.
    canceller: Option<Box<Canceller>>,
    /// Where the last released bot frame ends on the caller's timeline.
    played_end: Option<u64>,
}

impl EchoCheck {
    /// A check for caller audio at `rate`.
    pub fn new(cfg: &EchoConfig, rate: u32) -> Self {
        let block = (rate * BLOCK_MS / 1000).max(1) as usize;
        let window = (cfg.window_ms / BLOCK_MS).max(2) as usize;
        let max_lag = (cfg.max_delay_ms / BLOCK_MS) as usize;
        let ring = if cfg.check { (max_lag + SEARCH_BLOCKS + window + AHEAD_BLOCKS).next_power_of_two() } else { 0 };
        Self {
            enabled: cfg.check,
            block,
            max_lag,
            window,
            max_residual: cfg.max_residual,
            mask: ring.saturating_sub(1) as u64,
            played: vec![(u32::MAX, 0.0); ring].into_boxed_slice(),
            heard: vec![0.0; ring].into_boxed_slice(),
            caller_samples: 0,
            last_played: None,
            partial: (0.0, 0),
            path: None,
            candidate: None,
            since_search: 0,
            frame: (rate / 50) as usize,
            cancel: rate <= super::canceller::MAX_RATE,
            canceller: None,
            played_end: None,
        }
    }

    /// Caller audio arrived (any length).
    pub fn on_caller(&mut self, pcm: &[i16]) {
        if !self.enabled {
            return;
        }
        let (mut acc, mut n) = self.partial;
        for &s in pcm {
            acc += (s as f64) * (s as f64);
            n += 1;
            if n == self.block {
                let b = self.caller_samples / self.block as u64;
                self.heard[(b & self.mask) as usize] = (acc / n as f64) as f32;
                self.caller_samples += n as u64;
                acc = 0.0;
                n = 0;
            }
        }
        self.partial = (acc, n);
        if let Some(c) = &mut self.canceller {
            c.on_caller(pcm);
        }
    }

    /// The caller's stream lost `n` samples on the way (a gap in the
    /// carrier's timestamps): the timeline moves on as the far end's clock
    /// did, or everything played from then on would be placed early by the
    /// gap. The lost blocks are taken to be what the echo path predicts: not
    /// heard, they neither confirm nor contradict it.
    pub fn skip(&mut self, n: u64) {
        if !self.enabled || n == 0 {
            return;
        }
        let block = self.block as u64;
        let blocks = (n + block / 2) / block;
        let first = self.caller_samples / block;
        let end = first + blocks;
        for b in end.saturating_sub(self.mask + 1).max(first)..end {
            let predicted = self.path.filter(|p| b >= p.lag).map_or(0.0, |p| p.gain * self.played_at(b - p.lag) as f64);
            self.heard[(b & self.mask) as usize] = predicted as f32;
        }
        self.caller_samples += blocks * block;
        if let Some(c) = &mut self.canceller {
            c.skip(blocks * block);
        }
    }

    /// Bot audio released now that plays `ahead` samples after the caller
    /// audio received so far; `continues` when the far end still holds
    /// earlier bot audio to play before it.
    pub fn on_played(&mut self, ahead: u64, pcm: &[i16], continues: bool) {
        if !self.enabled {
            return;
        }
        let estimate = self.caller_samples + self.partial.1 as u64 + ahead;
        // The far end plays its buffer without gaps, on the same clock it
        // captures the caller with: a frame released while the previous one
        // is still due plays right after it. The estimate from arrival times
        // jitters with the network (by a whole frame when a caller frame
        // arrives just before or just after the release, by the whole stall
        // when the caller's stream stalls), which would smear the echo path;
        // only a frame released into an empty far-end buffer that is more than
        // a frame off (an underrun, a new reply, the first after a clear)
        // starts a new run.
        let (start, new_run) = match self.played_end {
            Some(end) if continues || estimate.abs_diff(end) <= pcm.len() as u64 => (end, false),
            _ => (estimate, true),
        };
        self.played_end = Some(start + pcm.len() as u64);
        if let Some(c) = &mut self.canceller {
            if new_run {
                // A new run's estimate is only as good as one arrival time:
                // the filter learned on the last run may be a few samples
                // off for this one, and must show it still cancels first.
                c.new_run();
            }
            c.on_played(start, pcm);
        }
        let first = start / self.block as u64;
        for (i, chunk) in pcm.chunks(self.block).enumerate() {
            let p = chunk.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / chunk.len().max(1) as f64;
            let b = first + i as u64;
            let slot = &mut self.played[(b & self.mask) as usize];
            // Two releases can touch one block (unaligned starts): add them.
            let tag = b as u32;
            *slot = if slot.0 == tag { (tag, slot.1 + p as f32) } else { (tag, p as f32) };
            self.last_played = Some(self.last_played.map_or(b, |l| l.max(b)));
        }
    }

    /// The far end stopped playing (a clear) `ahead` samples after the
    /// caller audio received so far: bot audio placed from there on never
    /// plays, so it is forgotten (it would keep the check active and feed
    /// the canceller a reference nobody heard), and the next release starts
    /// a new run.
    pub fn cut(&mut self, ahead: u64) {
        if !self.enabled {
            return;
        }
        let at = self.caller_samples + self.partial.1 as u64 + ahead;
        // A block the far end began to play stays.
        let first = at.div_ceil(self.block as u64);
        if let Some(last) = self.last_played.filter(|&l| l >= first) {
            for b in first..=last {
                let slot = &mut self.played[(b & self.mask) as usize];
                if slot.0 == b as u32 {
                    *slot = (u32::MAX, 0.0);
                }
            }
            // It played up to the cut.
            self.last_played = first.checked_sub(1);
        }
        self.played_end = None;
        if let Some(c) = &mut self.canceller {
            c.cut(first * self.block as u64);
        }
    }

    fn played_at(&self, b: u64) -> f32 {
        let (tag, p) = self.played[(b & self.mask) as usize];
        if tag == b as u32 { p } else { 0.0 }
    }

    /// Whether bot audio played recently enough to be echoing now.
    pub fn active(&self) -> bool {
        let now = self.caller_samples / self.block as u64;
        self.enabled && self.last_played.is_some_and(|l| l + self.max_lag as u64 + 1 >= now)
    }

    /// Whether the newest caller frame (`frame` samples, already passed to
    /// [`EchoCheck::on_caller`]) is explained by the bot's played audio.
    ///
    /// First the echo path is found: the lag and gain that explain the last
    /// `SEARCH_MS` of received audio from the played audio (searched over every
    /// lag when there is no path yet, and every `RESEARCH_FRAMES` frames while
    /// frames are echo). Then a frame is echo if that path, its gain held
    /// fixed (±1 block of lag), explains both the last `window_ms` and the
    /// newest frame. A caller talking adds power the fixed-gain echo cannot
    /// explain, so their first frame fails.
    ///
    /// When the block powers call a frame echo and a path is held, the
    /// sample-domain [`Canceller`] has the last word: a caller starting to
    /// talk under the echo leaves a residual the echo cannot explain.
    pub fn explains(&mut self, frame: usize) -> bool {
        if !self.explains_blocks(frame) {
            return false;
        }
        let Some(path) = self.path.filter(|_| self.cancel) else { return true };
        let (block, total) = (self.block, self.caller_samples + self.partial.1 as u64);
        let max_delay = self.max_lag * block;
        let c = self
            .canceller
            .get_or_insert_with(|| Box::new(Canceller::new(block, self.frame, max_delay, AHEAD_BLOCKS * block, total)));
        c.set_path(path.lag * block as u64, block);
        c.confirms_echo()
    }

    fn explains_blocks(&mut self, frame: usize) -> bool {
        if !self.active() {
            return false;
        }
        let end = self.caller_samples / self.block as u64;
        if end < self.window as u64 {
            return false;
        }
        let newest = (frame / self.block).clamp(1, self.window) as u64;
        self.since_search += 1;
        if let Some(p) = self.path
            && self.since_search < RESEARCH_FRAMES
            && self.fits(p, end, newest)
        {
            return true;
        }
        // No path, a refresh is due, or the path failed: search again.
        self.since_search = 0;
        // A first path must fit tightly: with dozens of lags to choose from, a
        // caller's onset can line up with one of the bot's word onsets and fit
        // loosely. Replacing a path keeps its gain (within 6 dB).
        let need = self.max_residual as f64 / if self.path.is_some() { 2.0 } else { 3.0 };
        let found = self
            .search(end.saturating_sub(SEARCH_BLOCKS as u64), end)
            .filter(|(_, _, residual)| *residual <= need)
            .filter(|(_, gain, _)| self.path.is_none_or(|p| p.misses > MAX_MISSES || similar(*gain, p.gain)))
            .map(|(lag, gain, _)| Path { lag, gain, misses: 0 });
        // A path is taken only when two searches in a row agree on it: a
        // caller's speech rarely keeps matching the played audio.
        let confirmed = match (found, self.candidate) {
            (Some(f), Some(c)) if f.lag.abs_diff(c.lag) <= 1 && similar(f.gain, c.gain) => Some(f),
            _ => None,
        };
        self.candidate = found;
        if let Some(p) = confirmed
            && self.fits(p, end, newest)
        {
            self.path = Some(p);
            return true;
        }
        if let Some(p) = self.path
            && self.fits(p, end, newest)
        {
            return true;
        }
        if let Some(p) = &mut self.path {
            p.misses += 1;
            if p.misses > 2 * MAX_MISSES {
                self.path = None;
            }
        }
        false
    }

    /// Whether `path`, its gain fixed (±1 block of lag), explains the last
    /// window and its newest `newest` blocks.
    fn fits(&self, path: Path, end: u64, newest: u64) -> bool {
        let w = self.window as u64;
        let heard = |b: u64| self.heard[(b & self.mask) as usize] as f64;
        let (mut rr, mut rr_new) = (0f64, 0f64);
        for b in end - w..end {
            rr += heard(b) * heard(b);
            if b >= end - newest {
                rr_new += heard(b) * heard(b);
            }
        }
        if rr <= 0.0 {
            return false;
        }
        let max = self.max_residual as f64;
        (path.lag.saturating_sub(1)..=path.lag + 1).any(|lag| {
            let (mut res, mut res_new) = (0f64, 0f64);
            for b in end - w..end {
                let e = if b >= lag { self.played_at(b - lag) as f64 } else { 0.0 };
                let d = heard(b) - path.gain * e;
                res += d * d;
                if b >= end - newest {
                    res_new += d * d;
                }
            }
            res <= max * rr && res_new <= max * rr_new
        })
    }

    /// The (lag, gain, residual share) that best explains blocks `from..to`.
    fn search(&self, from: u64, to: u64) -> Option<(u64, f64, f64)> {
        let heard = |b: u64| self.heard[(b & self.mask) as usize] as f64;
        let rr: f64 = (from..to).map(|b| heard(b) * heard(b)).sum();
        if rr <= 0.0 {
            return None;
        }
        let mut best: Option<(u64, f64, f64)> = None;
        for lag in 0..=self.max_lag as u64 {
            let (mut ee, mut re) = (0f64, 0f64);
            for b in from.max(lag)..to {
                let e = self.played_at(b - lag) as f64;
                ee += e * e;
                re += heard(b) * e;
            }
            if ee <= 0.0 {
                continue;
            }
            // Louder than any echo could be at this lag: not the echo path.
            if re > MAX_GAIN * ee {
                continue;
            }
            let g = (re / ee).max(0.0);
            let share = (rr - 2.0 * g * re + g * g * ee).max(0.0) / rr;
            if best.is_none_or(|(_, _, s)| share < s) {
                best = Some((lag, g, share));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;
    const FRAME: usize = 160;

    /// A deterministic speech-like signal: a buzz whose level follows
    /// syllables (100–250 ms) and jitters every 5 ms, as speech does.
    fn voice(seed: u64, n: usize, level: f32) -> Vec<i16> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut rnd = move || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 40) as f32 / (1u64 << 24) as f32
        };
        let (mut syllable, mut left, mut jitter) = (0.0f32, 0usize, 1.0f32);
        let f0 = 110.0 + 60.0 * (seed % 3) as f32;
        (0..n)
            .map(|i| {
                if left == 0 {
                    left = (800.0 + 1200.0 * rnd()) as usize;
                    syllable = if rnd() < 0.2 { 0.02 } else { 0.3 + 0.7 * rnd() };
                }
                left -= 1;
                if i % 40 == 0 {
                    jitter = 0.5 + rnd();
                }
                let ph = (i as f32) * 2.0 * std::f32::consts::PI * f0 / RATE as f32;
                (level * 32767.0 * syllable * jitter * (ph.sin() + 0.5 * (2.0 * ph).sin() + 0.3 * (3.0 * ph).sin())
                    / 1.8) as i16
            })
            .collect()
    }

    fn db(x: &[f32]) -> f32 {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32 / (32768.0 * 32768.0);
        10.0 * ms.max(1e-12).log10()
    }

    /// One caller frame's verdict with the levels of what it carried.
    struct Judged {
        echo: bool,
        caller_db: f32,
        echo_db: f32,
    }

    /// Plays `bot` frame by frame (released one frame ahead) and feeds back
    /// `caller + g·bot(t − delay)`.
    fn run(bot: &[i16], caller: &[i16], delay_ms: u32, echo_db: f32) -> Vec<Judged> {
        let mut c = EchoCheck::new(&EchoConfig::default(), RATE);
        let d = (delay_ms * RATE / 1000) as usize;
        let g = 10f32.powf(echo_db / 20.0);
        let n = bot.len().max(caller.len());
        let mut out = Vec::new();
        for f in 0..n / FRAME {
            let s = f * FRAME;
            if s + FRAME <= bot.len() {
                c.on_played(FRAME as u64, &bot[s..s + FRAME], true);
            }
            // The frame released at f plays at f+1: echo of sample j arrives at j + FRAME + d.
            let e: Vec<f32> = (s..s + FRAME)
                .map(|i| i.checked_sub(FRAME + d).and_then(|j| bot.get(j)).map_or(0.0, |&v| v as f32 * g))
                .collect();
            let v: Vec<f32> = (s..s + FRAME).map(|i| caller.get(i).map_or(0.0, |&v| v as f32)).collect();
            let frame: Vec<i16> = e.iter().zip(&v).map(|(a, b)| (a + b).clamp(-32768.0, 32767.0) as i16).collect();
            c.on_caller(&frame);
            let j = Judged { echo: c.explains(FRAME), caller_db: db(&v), echo_db: db(&e) };
            out.push(j);
        }
        out
    }

    #[test]
    fn pure_echo_is_explained_at_every_delay_and_level() {
        let bot = voice(1, RATE as usize * 3, 0.3);
        for delay in [40, 120, 300] {
            for db in [-10.0, -20.0, -30.0] {
                // Frames with audible echo (a VAD could call them speech).
                let v = run(&bot, &[], delay, db);
                let audible: Vec<&Judged> = v.iter().filter(|j| j.echo_db > -55.0).collect();
                let missed = audible.iter().filter(|j| !j.echo).count();
                assert!(audible.len() > 50, "delay {delay}: echo too quiet to test");
                assert!(missed * 50 <= audible.len(), "delay {delay} echo {db} dB: {missed}/{} missed", audible.len());
            }
        }
    }

    #[test]
    fn a_caller_talking_over_the_bot_is_not_echo() {
        let bot = voice(1, RATE as usize * 3, 0.3);
        let mut caller = vec![0i16; RATE as usize];
        caller.extend(voice(7, RATE as usize * 2, 0.3));
        for delay in [40, 120, 300] {
            for db in [-10.0, -20.0] {
                let v = run(&bot, &caller, delay, db);
                // Frames where the caller is the louder voice on the line.
                let talking: Vec<&Judged> =
                    v.iter().filter(|j| j.caller_db > j.echo_db + 6.0 && j.caller_db > -45.0).collect();
                let fooled = talking.iter().filter(|j| j.echo).count();
                assert!(talking.len() > 40);
                assert!(fooled * 50 <= talking.len(), "delay {delay} echo {db} dB: {fooled}/{} frames", talking.len());
                // The echo before the caller started was recognised.
                let before = &v[(delay as usize / 20 + 20)..RATE as usize / FRAME];
                assert!(before.iter().filter(|j| j.echo_db > -55.0).all(|j| j.echo), "delay {delay} echo {db}");
            }
        }
    }

    #[test]
    fn a_reverberant_echo_path_with_line_noise_is_still_echo() {
        // Speakerphone-like: direct path plus room reflections over 40 ms, and
        // line noise at −60 dBFS.
        let bot = voice(1, RATE as usize * 3, 0.3);
        let taps: [(usize, f32); 5] = [(0, 1.0), (40, 0.6), (96, 0.4), (200, 0.25), (320, 0.15)];
        for (delay, db) in [(40usize, -10.0f32), (120, -20.0), (300, -10.0)] {
            let g = 10f32.powf(db / 20.0) / 1.4;
            let d = delay * 8;
            let mut c = EchoCheck::new(&EchoConfig::default(), RATE);
            let mut noise = 12345u64;
            let (mut audible, mut missed) = (0, 0);
            for f in 0..bot.len() / FRAME {
                let s = f * FRAME;
                c.on_played(FRAME as u64, &bot[s..s + FRAME], true);
                let frame: Vec<i16> = (s..s + FRAME)
                    .map(|i| {
                        let e: f32 = taps
                            .iter()
                            .filter_map(|&(t, a)| i.checked_sub(FRAME + d + t).map(|j| a * bot[j] as f32))
                            .sum();
                        noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let n = ((noise >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 66.0;
                        (g * e + n) as i16
                    })
                    .collect();
                c.on_caller(&frame);
                let echo = c.explains(FRAME);
                if crate::audio::vad::EnergyGate::level_dbfs(&frame) > -50.0 {
                    audible += 1;
                    missed += usize::from(!echo);
                }
            }
            assert!(audible > 50);
            assert!(missed * 20 <= audible, "delay {delay} ms, {db} dB: {missed}/{audible} echo frames missed");
        }
    }

    #[test]
    fn nothing_is_echo_when_the_bot_was_silent() {
        let caller = voice(3, RATE as usize * 2, 0.3);
        assert!(run(&[], &caller, 120, -10.0).iter().all(|j| !j.echo));
    }

    #[test]
    fn a_clear_forgets_the_bot_audio_placed_after_it() {
        let cfg = EchoConfig::default();
        let mut c = EchoCheck::new(&cfg, RATE);
        let bot = voice(1, 12 * FRAME, 0.3);
        // 12 frames (240 ms) released at once, queued at the far end.
        for f in 0..12 {
            c.on_played((f * FRAME) as u64, &bot[f * FRAME..(f + 1) * FRAME], f > 0);
        }
        let silence = [0i16; FRAME];
        for _ in 0..2 {
            c.on_caller(&silence);
        }
        c.cut(0);
        assert!(c.active(), "what played before the clear still echoes");
        // Inactive once the longest echo delay has passed since the clear,
        // not since the end of the 240 ms that never played.
        let frames = (cfg.max_delay_ms / 20 + 1) as usize;
        for _ in 0..frames {
            c.on_caller(&silence);
        }
        assert!(!c.active(), "audio cut by the clear still counts as played");
        // The next release starts a new run where the caller's timeline is.
        c.on_played(FRAME as u64, &bot[..FRAME], false);
        assert_eq!(c.played_end, Some(c.caller_samples + 2 * FRAME as u64));
    }
}
