//! Rational-ratio polyphase FIR resampler for telephony rates (8/16/24/48 kHz).
//!
//! Why hand-written: PERFORMANCE.md measured rubato's default sinc at 30–67 µs per
//! 20 ms frame with ≈16 ms delay and ≈135 KiB per instance, and rubato's FFT
//! resampler at 1.5–3.3 µs with 2.5–10 ms delay and 20–28 KiB. This windowed-sinc
//! polyphase FIR does the same job in ≈1–4 µs per frame with ≈1.5 ms delay and a
//! few KiB of state (see `benches/frame.rs`), which is what lets a thousand calls
//! share one core.
//!
//! Design: the prototype low-pass filter (Kaiser-windowed sinc, cutoff just under
//! the lower Nyquist) runs at `L × input rate`; it is split into `L` phases stored
//! time-reversed so every output sample is one contiguous dot product over the
//! input history. State between calls is only the last `taps_per_phase − 1` input
//! samples and the fractional position.
//!
//! Invariants: [`Resampler::process`] never allocates; it accepts up to the
//! `max_input` given at construction; output length is exact and deterministic
//! (`ceil`-free bookkeeping in integer high-rate units), so a stream of 20 ms
//! frames yields exactly 20 ms frames at the new rate.

use std::time::Duration;

/// Errors building a resampler.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResampleError {
    /// A rate that is zero or whose ratio to the other is not a small rational.
    #[error("unsupported resampling ratio {from} Hz -> {to} Hz")]
    UnsupportedRatio {
        /// input rate
        from: u32,
        /// output rate
        to: u32,
    },
}

/// Taps per polyphase branch. 24 gives ≈1.5 ms delay and a transition band of
/// ≈±12 % of the lower Nyquist, ample for telephone speech (passband to 3.4 kHz).
const TAPS_PER_PHASE: usize = 24;
/// Kaiser window shape (≈ 70 dB stopband attenuation).
const KAISER_BETA: f64 = 7.0;

/// A streaming resampler from one fixed rate to another.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    up: usize,
    down: usize,
    /// Taps per output sample (per phase).
    taps: usize,
    /// `up` phases × `taps` coefficients, each phase reversed in time.
    coeffs: Box<[f32]>,
    /// `taps - 1` history samples followed by room for `max_input` new ones.
    work: Box<[f32]>,
    /// Position of the next output in high-rate units, relative to the first new
    /// input sample of the next call.
    next_hi: usize,
    max_input: usize,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Zeroth-order modified Bessel function of the first kind (series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..50 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
    }
    sum
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz accepting up to `max_input` samples
    /// per call. Equal rates give a pass-through copy.
    pub fn new(from: u32, to: u32, max_input: usize) -> Result<Self, ResampleError> {
        if from == 0 || to == 0 {
            return Err(ResampleError::UnsupportedRatio { from, to });
        }
        let g = gcd(from, to);
        let (up, down) = ((to / g) as usize, (from / g) as usize);
        if up > 32 || down > 32 {
            return Err(ResampleError::UnsupportedRatio { from, to });
        }
        let (taps, coeffs) = if up == 1 && down == 1 { (1, vec![1.0f32].into_boxed_slice()) } else { design(up, down) };
        Ok(Self {
            from,
            to,
            up,
            down,
            taps,
            coeffs,
            work: vec![0.0; taps - 1 + max_input].into_boxed_slice(),
            next_hi: 0,
            max_input,
        })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Group delay the filter adds (half the prototype length at the high rate).
    pub fn delay(&self) -> Duration {
        if self.up == 1 && self.down == 1 {
            return Duration::ZERO;
        }
        let proto_len = self.taps * self.up;
        let hi_rate = self.from as f64 * self.up as f64;
        Duration::from_secs_f64((proto_len - 1) as f64 / 2.0 / hi_rate)
    }

    /// Bytes of per-instance state (coefficients plus history/work buffer).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + (self.coeffs.len() + self.work.len()) * 4
    }

    /// Number of output samples the next `process` call yields for `n` inputs.
    pub fn output_len(&self, n: usize) -> usize {
        let end = n * self.up;
        if self.next_hi >= end { 0 } else { (end - self.next_hi).div_ceil(self.down) }
    }

    /// Forget history (start of a new stream).
    pub fn reset(&mut self) {
        self.work.iter_mut().for_each(|s| *s = 0.0);
        self.next_hi = 0;
    }

    /// Resample `input` into `output`; returns the number of samples written.
    ///
    /// Panics if `input` is longer than `max_input` or `output` shorter than
    /// [`Resampler::output_len`] — both are programming errors, since frame sizes
    /// are fixed per call.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> usize {
        assert!(input.len() <= self.max_input, "resampler input exceeds max_input");
        if self.up == 1 && self.down == 1 {
            output[..input.len()].copy_from_slice(input);
            return input.len();
        }
        let hist = self.taps - 1;
        for (w, &s) in self.work[hist..hist + input.len()].iter_mut().zip(input) {
            *w = s as f32;
        }
        let n_in = input.len();
        let end = n_in * self.up;
        let mut produced = 0;
        let mut hi = self.next_hi;
        let taps = self.taps;
        while hi < end {
            let idx = hi / self.up; // newest input sample index used
            let phase = hi % self.up;
            let c = &self.coeffs[phase * taps..(phase + 1) * taps];
            // work[idx .. idx + taps] covers inputs idx-(taps-1) ..= idx.
            let x = &self.work[idx..idx + taps];
            output[produced] = to_i16(dot(c, x));
            produced += 1;
            hi += self.down;
        }
        self.next_hi = hi - end;
        // keep the last `hist` inputs as history.
        self.work.copy_within(n_in..n_in + hist, 0);
        produced
    }
}

/// Dot product of two equal-length slices whose length is a multiple of
/// [`LANES`]. Eight independent accumulators let the compiler use SIMD (float
/// addition is not reassociated otherwise).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ac, _) = a.as_chunks::<LANES>();
    let (bc, _) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum()
}

/// SIMD lane count the tap count is padded to.
const LANES: usize = 8;

#[inline]
fn to_i16(x: f32) -> i16 {
    // `as` saturates; adding ±0.5 rounds half away from zero without a libm call.
    (x + 0.5f32.copysign(x)) as i16
}

/// Design the polyphase branches for L = `up`, M = `down`.
fn design(up: usize, down: usize) -> (usize, Box<[f32]>) {
    let taps = TAPS_PER_PHASE * down.max(up) / up;
    // Pad each phase to whole SIMD lanes; the padding taps are zero.
    let taps = taps.max(TAPS_PER_PHASE).div_ceil(LANES) * LANES;
    let n = taps * up;
    // Cutoff relative to the high rate: half of the lower of the two rates, a little
    // inside Nyquist so the transition band straddles it.
    let fc = 0.5 / up.max(down) as f64 * 0.92;
    let mid = (n - 1) as f64 / 2.0;
    let i0b = bessel_i0(KAISER_BETA);
    let mut proto = vec![0.0f64; n];
    for (i, p) in proto.iter_mut().enumerate() {
        let t = i as f64 - mid;
        let sinc =
            if t == 0.0 { 2.0 * fc } else { (2.0 * std::f64::consts::PI * fc * t).sin() / (std::f64::consts::PI * t) };
        let r = 2.0 * i as f64 / (n - 1) as f64 - 1.0;
        let w = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0b;
        *p = sinc * w;
    }
    // Normalize so each phase has DC gain 1 (sum of all taps = up).
    let sum: f64 = proto.iter().sum();
    let scale = up as f64 / sum;
    let mut coeffs = vec![0.0f32; n];
    for phase in 0..up {
        for k in 0..taps {
            // output at high-rate index hi uses proto[phase + k*up] * x[idx - k];
            // stored reversed so index (taps-1-k) lines up with work[idx + taps-1-k].
            coeffs[phase * taps + (taps - 1 - k)] = (proto[phase + k * up] * scale) as f32;
        }
    }
    (taps, coeffs.into_boxed_slice())
}

/// A whole clip converted from `from` Hz to `to` Hz (shared unchanged when
/// the rates match, or when no converter exists for the pair). For prompts and
/// `say` audio, not for the per-frame path.
pub fn resample_clip(clip: &std::sync::Arc<[i16]>, from: u32, to: u32) -> std::sync::Arc<[i16]> {
    if from == to {
        return clip.clone();
    }
    let block = (from / 50) as usize;
    let Ok(mut r) = Resampler::new(from, to, block) else { return clip.clone() };
    let mut out = Vec::with_capacity(clip.len() * to as usize / from as usize + 8);
    let mut buf = vec![0i16; (to / 50) as usize + 8];
    for chunk in clip.chunks(block) {
        let n = r.process(chunk, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n).map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16).collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn run(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let frame = from as usize / 50;
        let mut r = Resampler::new(from, to, frame).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0i16; to as usize / 50 + 2];
        for chunk in input.chunks(frame) {
            let n = r.process(chunk, &mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn every_telephony_ratio_gives_exact_frame_sizes() {
        let rates = [8000, 16000, 24000, 48000];
        for &from in &rates {
            for &to in &rates {
                let frame = from as usize / 50;
                let mut r = Resampler::new(from, to, frame).unwrap();
                let mut buf = vec![0i16; to as usize / 50 + 2];
                for _ in 0..10 {
                    let input = vec![0i16; frame];
                    assert_eq!(r.output_len(frame), to as usize / 50, "{from}->{to}");
                    assert_eq!(r.process(&input, &mut buf), to as usize / 50, "{from}->{to}");
                }
            }
        }
    }

    #[test]
    fn passband_tone_keeps_level_and_stopband_is_rejected() {
        for (from, to) in [
            (8000, 16000),
            (16000, 8000),
            (8000, 24000),
            (24000, 8000),
            (8000, 48000),
            (48000, 8000),
            (16000, 24000),
            (24000, 16000),
        ] {
            let low = from.min(to) as f64;
            let input = sine(from, 1000.0, from as usize, 10000.0);
            let out = run(from, to, &input);
            // skip the filter's warm-up
            let settled = &out[out.len() / 4..];
            let ratio = rms(settled) / rms(&input[input.len() / 4..]);
            assert!((ratio - 1.0).abs() < 0.02, "{from}->{to}: 1 kHz gain {ratio}");
            if from > to {
                // a tone above the output Nyquist must be rejected on the way down
                let alias_tone = low * 0.5 + low * 0.2;
                let input = sine(from, alias_tone, from as usize, 10000.0);
                let out = run(from, to, &input);
                let db = 20.0 * (rms(&out[out.len() / 4..]) / 7071.0).log10();
                assert!(db < -50.0, "{from}->{to}: alias at {alias_tone} Hz only {db:.1} dB down");
            }
        }
    }

    #[test]
    fn delay_is_small_and_reported() {
        for (from, to) in [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (8000, 48000), (48000, 8000)] {
            let r = Resampler::new(from, to, 960).unwrap();
            assert!(r.delay() < Duration::from_millis(2), "{from}->{to} delay {:?}", r.delay());
            assert!(r.state_bytes() < 8 * 1024, "{from}->{to} state {}", r.state_bytes());
        }
        // Measured delay of an impulse matches the reported delay (8k -> 16k).
        let mut r = Resampler::new(8000, 16000, 160).unwrap();
        let mut input = vec![0i16; 160];
        input[10] = 10000;
        let mut out = vec![0i16; 320];
        r.process(&input, &mut out);
        let peak = out.iter().enumerate().max_by_key(|(_, s)| s.abs()).unwrap().0;
        let expected = 20.0 + r.delay().as_secs_f64() * 16000.0;
        assert!((peak as f64 - expected).abs() <= 1.0, "peak at {peak}, expected ≈{expected}");
    }

    #[test]
    fn equal_rates_pass_through_and_bad_ratios_error() {
        let mut r = Resampler::new(8000, 8000, 160).unwrap();
        let mut out = [0i16; 160];
        let input: Vec<i16> = (0..160).map(|i| i as i16).collect();
        assert_eq!(r.process(&input, &mut out), 160);
        assert_eq!(&out[..], &input[..]);
        assert!(Resampler::new(0, 8000, 160).is_err());
        assert!(Resampler::new(8000, 44101, 160).is_err());
    }
}
