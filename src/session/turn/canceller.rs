//! A sample-domain echo canceller that can overrule the block-power echo
//! check when a real caller starts talking under the bot's echo.
//!
//! The block check ([`super::echo::EchoCheck`]) judges 5 ms powers, so a
//! caller whose first syllable is quieter than the echo under it is taken for
//! echo for a few frames, and barge-in starts counting late. Once the block
//! check has found an echo path, this canceller runs an NLMS filter
//! (3 blocks of taps around the path's lag) over what was played and
//! subtracts the predicted echo from what came in. Each run of played audio
//! starts from the single tap that best explains its first echo frame (least
//! squares over the taps), then on frames the block check calls echo it
//! learns; once it cancels well (residual ≤ −20 dB of the
//! input, smoothed), a frame whose residual is ≥ 6 dB above that learned
//! floor (and ≥ −17 dB of the input) carries something the echo cannot
//! explain, and the frame is not echo. A frame above the learned floor but
//! under −17 dB is not learned from, for up to `MAX_HELD` frames in a row
//! (double talk: a caller's quiet onset would otherwise fit the filter to
//! their voice and hide the louder frames after it).
//!
//! Invariants: it only ever turns an echo verdict into "not echo" (the block
//! check stays the guard against false barge-ins); it allocates once, when
//! the first path is found (calls without echo never pay for it); it runs at
//! ≤ 16 kHz only (browsers cancel their own echo; 48 kHz would cost 36× the
//! 8 kHz work); the seed costs 2 × taps × frame multiply-adds once per run
//! (≈ 38,000 at 8 kHz); nothing is done on frames the block check does not call echo.

/// Residual/input power below which the canceller counts as converged.
const CONVERGED: f32 = 0.01;
/// A frame is caller speech when its residual ratio is this many times the
/// learned one (6 dB).
const VETO: f32 = 4.0;
/// Whatever the learned floor, a residual below this share of the input
/// (−17 dB) is echo the filter has not quite caught.
const MIN_VETO: f32 = 0.02;
/// Nor is a residual below this power (rms 150, ≈ −47 dBFS) a caller.
const MIN_VETO_POWER: f32 = 150.0 * 150.0;
/// Echo frames learned before the canceller may overrule anything.
const MIN_LEARNED: u32 = 10;
/// Frames in a row a converged filter stops learning for when their residual
/// is above the veto ratio but under the floor (a caller may be starting to
/// talk: learning on them would fit the filter to the caller's voice and hide
/// the next frames); after that the echo path is taken to have changed.
const MAX_HELD: u32 = 10;
/// NLMS step size.
const MU: f32 = 0.5;
/// A residual below this power (≈ −60 dBFS) is never caller speech.
const QUIET: f32 = 10.0 * 10.0 * 10.0;
/// Highest caller rate it runs at.
pub const MAX_RATE: u32 = 16_000;

/// NLMS state: the played audio on the caller's timeline and the filter.
#[derive(Debug, Clone)]
pub struct Canceller {
    /// Played samples by caller-timeline position modulo the ring length.
    ring: Box<[f32]>,
    mask: u64,
    /// Played audio kept behind the caller's timeline: the longest delay,
    /// the taps and a frame, whatever the current lag.
    keep: u64,
    /// Caller samples received.
    now: u64,
    /// Positions before this have no played audio recorded (start-up).
    valid_from: u64,
    /// The newest caller frame.
    last: Box<[f32]>,
    last_len: usize,
    /// Delay of tap 0, in samples.
    base: u64,
    w: Box<[f32]>,
    /// Contiguous played audio for one frame's regressors.
    scratch: Box<[f32]>,
    /// Smoothed residual/input power ratio over learned frames.
    ratio: f32,
    learned: u32,
    /// Frames in a row not learned from (see [`MAX_HELD`]).
    held: u32,
}

impl Canceller {
    /// A canceller for blocks of `block` samples, frames up to `frame`, echo
    /// delays up to `max_delay` samples and audio placed up to `ahead` ahead.
    pub fn new(block: usize, frame: usize, max_delay: usize, ahead: usize, now: u64) -> Self {
        let taps = 3 * block;
        let keep = max_delay + 2 * taps + frame;
        let len = (keep + ahead).next_power_of_two();
        Self {
            ring: vec![0.0; len].into_boxed_slice(),
            mask: len as u64 - 1,
            keep: keep as u64,
            now,
            valid_from: now,
            last: vec![0.0; frame].into_boxed_slice(),
            last_len: 0,
            base: 0,
            w: vec![0.0; taps].into_boxed_slice(),
            scratch: vec![0.0; frame + taps].into_boxed_slice(),
            ratio: 1.0,
            learned: 0,
            held: 0,
        }
    }

    /// Centre the filter on an echo path of `lag_samples`; a lag more than a
    /// block away from the one learned starts learning again.
    pub fn set_path(&mut self, lag_samples: u64, block: usize) {
        let base = lag_samples.saturating_sub(block as u64);
        if self.learned > 0 && base.abs_diff(self.base) <= block as u64 {
            return;
        }
        if self.learned > 0 {
            self.w.fill(0.0);
            self.ratio = 1.0;
            self.learned = 0;
            self.held = 0;
        }
        self.base = base;
    }

    /// Played audio starts a new run, placed afresh: the filter is kept (it
    /// is a good start) but must converge again before it may overrule.
    pub fn new_run(&mut self) {
        self.ratio = 1.0;
        self.learned = 0;
        self.held = 0;
    }

    /// Bot audio that plays from caller-timeline position `at`.
    pub fn on_played(&mut self, at: u64, pcm: &[i16]) {
        let limit = self.now + self.ring.len() as u64 - self.keep;
        for (i, &s) in pcm.iter().enumerate() {
            let p = at + i as u64;
            if p >= limit {
                break; // further ahead than the ring holds
            }
            self.ring[(p & self.mask) as usize] = s as f32;
        }
    }

    /// The far end stopped playing at caller-timeline position `at` (a
    /// clear): audio placed from there on never plays.
    pub fn cut(&mut self, at: u64) {
        let limit = self.now + self.ring.len() as u64 - self.keep;
        for p in at.max(self.now)..limit {
            self.ring[(p & self.mask) as usize] = 0.0;
        }
    }

    /// The newest caller frame.
    pub fn on_caller(&mut self, pcm: &[i16]) {
        let n = pcm.len().min(self.last.len());
        for (d, &s) in self.last.iter_mut().zip(pcm) {
            *d = s as f32;
        }
        self.last_len = n;
        self.advance(pcm.len() as u64);
    }

    /// The caller's stream lost `n` samples: the timeline moves on without
    /// them, and the filter must show it still cancels before it overrules.
    pub fn skip(&mut self, n: u64) {
        self.advance(n);
        self.last_len = 0;
        self.new_run();
    }

    /// Move the caller's timeline on by `n` samples.
    fn advance(&mut self, n: u64) {
        // Slots falling out of the look-back are cleared for reuse ahead.
        let keep = self.keep;
        let from = self.now.saturating_sub(keep);
        self.now += n;
        let to = self.now.saturating_sub(keep).min(from + self.ring.len() as u64);
        for p in from..to {
            self.ring[(p & self.mask) as usize] = 0.0;
        }
    }

    /// Fill `scratch` with the played audio the newest frame's regressors use:
    /// `scratch[j]` is played(frame start − base − taps + 1 + j).
    fn gather(&mut self) -> bool {
        let n = self.last_len as u64;
        let taps = self.w.len() as u64;
        let Some(first) = (self.now - n).checked_sub(self.base + taps - 1) else { return false };
        if first < self.valid_from || n == 0 {
            return false;
        }
        for j in 0..(n + taps - 1) as usize {
            self.scratch[j] = self.ring[((first + j as u64) & self.mask) as usize];
        }
        true
    }

    /// Residual and input power of the newest frame under the current filter.
    fn residual(&self) -> (f32, f32) {
        let taps = self.w.len();
        let (mut res, mut inp) = (0f32, 0f32);
        for i in 0..self.last_len {
            let x = &self.scratch[i..i + taps];
            // w[k] weighs played(n − base − k): x is oldest first.
            let y: f32 = self.w.iter().rev().zip(x).map(|(w, x)| w * x).sum();
            let e = self.last[i] - y;
            res += e * e;
            inp += self.last[i] * self.last[i];
        }
        let n = self.last_len.max(1) as f32;
        (res / n, inp / n)
    }

    fn learn(&mut self) {
        let taps = self.w.len();
        for i in 0..self.last_len {
            let x = &self.scratch[i..i + taps];
            let y: f32 = self.w.iter().rev().zip(x).map(|(w, x)| w * x).sum();
            let e = self.last[i] - y;
            let norm: f32 = x.iter().map(|x| x * x).sum::<f32>() + taps as f32 * QUIET;
            let step = MU * e / norm;
            for (w, x) in self.w.iter_mut().rev().zip(x) {
                *w += step * x;
            }
        }
    }

    /// Start learning from the single tap that best explains the newest frame
    /// (least squares), when it explains it better than the filter held
    /// (`res`). An echo path's direct tap dominates it, and NLMS from a
    /// misplaced filter needs ≈ 30 frames of speech (its power sits in a few
    /// low frequencies) to cancel 20 dB, where this takes one frame. A new run
    /// or a skip moves the placement by a few samples, so the filter held is
    /// tried against a fresh seed each time.
    fn seed(&mut self, res: f32) -> bool {
        let taps = self.w.len();
        let n = self.last_len;
        let inp: f32 = self.last[..n].iter().map(|x| x * x).sum();
        // Tap k weighs scratch[i + taps − 1 − k] for caller sample i.
        let mut best: Option<(usize, f32, f32)> = None;
        for k in 0..taps {
            let x = &self.scratch[taps - 1 - k..taps - 1 - k + n];
            let (mut c, mut e) = (0f32, 0f32);
            for (&y, &x) in self.last[..n].iter().zip(x) {
                c += y * x;
                e += x * x;
            }
            if e <= 0.0 {
                continue;
            }
            let explained = c * c / e;
            if best.is_none_or(|(_, b, _)| explained > b) {
                best = Some((k, explained, c / e));
            }
        }
        let Some((k, explained, gain)) = best else { return false };
        if (inp - explained) / n.max(1) as f32 >= res {
            return false;
        }
        self.w.fill(0.0);
        self.w[k] = gain;
        true
    }

    /// The block check called the newest frame echo: is it? Learns from it
    /// when it is; `false` means the frame carries more than the echo.
    pub fn confirms_echo(&mut self) -> bool {
        if !self.gather() {
            return true;
        }
        let (mut res, inp) = self.residual();
        if inp <= 0.0 {
            return true;
        }
        if self.learned == 0 && self.seed(res) {
            res = self.residual().0;
        }
        let converged = self.learned >= MIN_LEARNED && self.ratio <= CONVERGED;
        if converged && res > (VETO * self.ratio).max(MIN_VETO) * inp && res > MIN_VETO_POWER {
            return false;
        }
        // The ratio before learning: what the veto compares against.
        let r = (res / inp).min(1.0);
        if converged && r > VETO * self.ratio && res > QUIET && self.held < MAX_HELD {
            // Double talk, perhaps: echo by the verdict, but not learned from.
            self.held += 1;
            return true;
        }
        self.held = 0;
        self.ratio = if self.learned == 0 { r } else { 0.8 * self.ratio + 0.2 * r };
        self.learned = self.learned.saturating_add(1);
        self.learn();
        true
    }

    /// Smoothed residual/input power ratio over learned frames.
    pub fn ratio(&self) -> f32 {
        self.ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = 40;
    const FRAME: usize = 160;

    /// Pseudo-random speech-band noise.
    fn noise(seed: u64, n: usize, amp: f32) -> Vec<i16> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (((x >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0 * amp) as i16
            })
            .collect()
    }

    /// Speech-like audio: noise through a one-pole low-pass, so its power
    /// sits in the low frequencies as a voice's does (white noise is the
    /// easy case for NLMS).
    fn colored(seed: u64, n: usize, amp: f32) -> Vec<i16> {
        let mut y = 0f32;
        noise(seed, n, amp)
            .into_iter()
            .map(|x| {
                y = 0.95 * y + 0.3 * x as f32;
                y.clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    #[test]
    fn a_speech_like_echo_is_cancelled_within_three_frames_of_each_run() {
        // NLMS alone took ≈ 30 frames of speech to reach −20 dB, so a caller
        // talking over a call's first replies was held as echo for frames.
        let bot = colored(1, 8000 * 3, 8000.0);
        let mut c = Canceller::new(BLOCK, FRAME, 80 * BLOCK, 64 * BLOCK, 0);
        c.set_path(1000, BLOCK);
        let first_echo = 1000 / FRAME + 1;
        for f in 0..bot.len() / FRAME {
            let s = f * FRAME;
            if f == 75 {
                c.new_run();
            }
            c.on_played(s as u64, &bot[s..s + FRAME]);
            // The second run plays 3 samples later than placed.
            let d = if f >= 75 { 1003 } else { 1000 };
            let heard: Vec<i16> =
                (s..s + FRAME).map(|i| i.checked_sub(d).map_or(0, |j| (bot[j] as f32 * 0.3) as i16)).collect();
            c.on_caller(&heard);
            assert!(c.confirms_echo());
            if f == first_echo + 2 || f == 75 + 2 {
                assert!(c.ratio() <= CONVERGED, "frame {f}: residual ratio {}", c.ratio());
            }
        }
    }

    /// Plays `bot` with an echo `delay` samples later at `gain`, plus
    /// `caller`; the block check is assumed to call every frame echo.
    /// Returns each frame's verdict.
    fn run(bot: &[i16], caller: &[i16], delay: usize, gain: f32) -> Vec<bool> {
        let mut c = Canceller::new(BLOCK, FRAME, 80 * BLOCK, 64 * BLOCK, 0);
        c.set_path(delay as u64, BLOCK);
        let mut out = vec![];
        for f in 0..bot.len() / FRAME {
            let s = f * FRAME;
            c.on_played(s as u64, &bot[s..s + FRAME]);
            let heard: Vec<i16> = (s..s + FRAME)
                .map(|i| {
                    let e = i.checked_sub(delay).map_or(0.0, |j| bot[j] as f32 * gain);
                    (e + caller.get(i).copied().unwrap_or(0) as f32) as i16
                })
                .collect();
            c.on_caller(&heard);
            out.push(c.confirms_echo());
        }
        out
    }

    #[test]
    fn a_pure_echo_is_learned_and_always_confirmed() {
        let bot = noise(1, 8000 * 3, 8000.0);
        let v = run(&bot, &[], 1000, 0.3);
        assert!(v.iter().all(|&e| e), "pure echo was overruled");
    }

    #[test]
    fn a_caller_10_db_under_a_learned_echo_is_not_echo() {
        let bot = noise(1, 8000 * 3, 8000.0);
        let mut caller = vec![0i16; 8000 * 2];
        caller.extend(noise(9, 8000, 8000.0 * 0.3 * 0.32));
        let v = run(&bot, &caller, 1000, 0.3);
        assert!(v[..100].iter().all(|&e| e), "the echo before the caller");
        assert!(v[100..].iter().all(|&e| !e), "the caller under the echo was taken for echo");
    }

    #[test]
    fn a_callers_quiet_onset_is_not_learned_so_their_louder_frames_are_heard() {
        // 8 frames 20 dB under the echo (between the learned floor and the
        // −17 dB veto floor), then 10 dB under: learning on the onset would
        // raise the learned floor past the louder frames' residual.
        let bot = noise(1, 8000 * 3, 8000.0);
        let echo_amp = 8000.0 * 0.3;
        let mut caller = vec![0i16; 8000 * 2];
        caller.extend(noise(9, 8 * FRAME, echo_amp * 0.1));
        caller.extend(noise(11, 8000 - 8 * FRAME, echo_amp * 0.32));
        let v = run(&bot, &caller, 1000, 0.3);
        assert!(v[..108].iter().all(|&e| e), "the echo and the quiet onset: {:?}", &v[95..110]);
        assert!(v[108..].iter().all(|&e| !e), "the louder caller was taken for echo: {:?}", &v[105..]);
    }

    #[test]
    fn a_caller_14_db_under_the_echo_is_heard_from_their_first_frame() {
        let bot = noise(1, 8000 * 3, 8000.0);
        let mut caller = vec![0i16; 8000 * 2];
        caller.extend(noise(9, 8000, 8000.0 * 0.3 * 0.2));
        let v = run(&bot, &caller, 1000, 0.3);
        assert!(v[..100].iter().all(|&e| e), "the echo before the caller");
        assert!(v[100..].iter().all(|&e| !e), "the caller 14 dB under was taken for echo: {:?}", &v[100..]);
    }

    #[test]
    fn a_residual_under_the_power_floor_is_never_a_caller() {
        // A caller 20 dB under a quiet echo (−30 dBFS): their residual share
        // is above the veto floor, their power under rms 150.
        let bot = noise(1, 8000 * 3, 2000.0);
        let mut caller = vec![0i16; 8000 * 2];
        caller.extend(noise(9, 8000, 2000.0 * 0.3 * 0.25));
        let v = run(&bot, &caller, 1000, 0.3);
        assert!(v.iter().all(|&e| e), "a residual under rms 150 overruled the echo verdict");
    }

    #[test]
    fn a_new_run_must_converge_again_before_it_overrules() {
        let bot = noise(1, 8000 * 3, 8000.0);
        let mut c = Canceller::new(BLOCK, FRAME, 80 * BLOCK, 64 * BLOCK, 0);
        c.set_path(1000, BLOCK);
        let gain = 0.3;
        let mut verdicts = vec![];
        for f in 0..bot.len() / FRAME {
            let s = f * FRAME;
            if f == 100 {
                c.new_run();
            }
            c.on_played(s as u64, &bot[s..s + FRAME]);
            // From frame 100 the far end plays 3 samples later than placed,
            // and a caller talks 10 dB under the echo from frame 100 on.
            let shift = if f >= 100 { 3 } else { 0 };
            let talk = noise(9 + f as u64, FRAME, 8000.0 * gain * 0.32);
            let heard: Vec<i16> = (s..s + FRAME)
                .map(|i| {
                    let e = i.checked_sub(1000 + shift).map_or(0.0, |j| bot[j] as f32 * gain);
                    (e + if f >= 100 { talk[i - s] as f32 } else { 0.0 }) as i16
                })
                .collect();
            c.on_caller(&heard);
            verdicts.push(c.confirms_echo());
        }
        assert!(verdicts[100..100 + MIN_LEARNED as usize].iter().all(|&e| e), "overruled before learning again");
    }

    #[test]
    fn an_echo_longer_than_the_filter_never_overrules_the_block_check() {
        // A reflection 40 ms after the direct path: the filter cannot cancel
        // it, so it never counts as converged and never says "not echo".
        let bot = noise(1, 8000 * 3, 8000.0);
        let mut c = Canceller::new(BLOCK, FRAME, 80 * BLOCK, 64 * BLOCK, 0);
        c.set_path(1000, BLOCK);
        for f in 0..bot.len() / FRAME {
            let s = f * FRAME;
            c.on_played(s as u64, &bot[s..s + FRAME]);
            let heard: Vec<i16> = (s..s + FRAME)
                .map(|i| {
                    let d = i.checked_sub(1000).map_or(0.0, |j| bot[j] as f32 * 0.3);
                    let r = i.checked_sub(1320).map_or(0.0, |j| bot[j] as f32 * 0.2);
                    (d + r) as i16
                })
                .collect();
            c.on_caller(&heard);
            assert!(c.confirms_echo(), "frame {f}: overruled with ratio {}", c.ratio());
        }
        assert!(c.ratio() > CONVERGED);
    }
}
