//! The Whisper log-mel front end that smart-turn v3 was trained on, ported
//! exactly (pipecat 1.14 `_whisper_features.py`, itself transformers'
//! `WhisperFeatureExtractor` with `do_normalize=True`).
//!
//! Input: the caller's turn at 16 kHz. The last 8 s are kept (or zeros padded
//! at the *start*), the waveform is normalised to zero mean and unit variance
//! (padding included), then a centred STFT (n_fft 400, hop 160, periodic Hann,
//! reflect padding), power spectrum, 80 Slaney mel filters over 0–8 kHz,
//! `log10(max(·, 1e-10))`, the last frame dropped, clamped to `max − 8` and
//! scaled `(x + 4) / 4`. Output: `[80][800]` f32, mel-major.
//!
//! Runs on the turn workers, never on a call task (≈ 5 ms per window). All
//! buffers live in [`LogMel`] and are reused between windows.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Sample rate the model expects.
pub const RATE: u32 = 16_000;
/// Samples in the model's window (8 s).
pub const WINDOW: usize = 128_000;
/// Mel bands.
pub const MELS: usize = 80;
/// Frames kept.
pub const FRAMES: usize = 800;
const N_FFT: usize = 400;
const HOP: usize = 160;
const BINS: usize = N_FFT / 2 + 1;
const PAD: usize = N_FFT / 2;

/// Reusable front end.
pub struct LogMel {
    fft: Arc<dyn RealToComplex<f64>>,
    hann: [f64; N_FFT],
    /// Sparse mel filters: per band, first bin and weights.
    filters: Vec<(usize, Vec<f64>)>,
    padded: Vec<f64>,
    frame: Vec<f64>,
    spectrum: Vec<realfft::num_complex::Complex<f64>>,
    scratch: Vec<realfft::num_complex::Complex<f64>>,
    power: Vec<f64>,
    logmel: Vec<f64>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel").finish_non_exhaustive()
    }
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

fn hz_to_mel(f: f64) -> f64 {
    if f < 1000.0 { 3.0 * f / 200.0 } else { 15.0 + (f / 1000.0).ln() * 27.0 / 6.4f64.ln() }
}

fn mel_to_hz(m: f64) -> f64 {
    if m < 15.0 { 200.0 * m / 3.0 } else { 1000.0 * ((m - 15.0) * 6.4f64.ln() / 27.0).exp() }
}

/// Slaney-scale, Slaney-normalised triangular filters, `[MELS][BINS]`.
pub fn mel_filters() -> Vec<[f64; BINS]> {
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(8000.0));
    let edges: Vec<f64> = (0..MELS + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (MELS + 1) as f64)).collect();
    (0..MELS)
        .map(|m| {
            let mut row = [0f64; BINS];
            let norm = 2.0 / (edges[m + 2] - edges[m]);
            for (k, w) in row.iter_mut().enumerate() {
                let f = 40.0 * k as f64;
                let up = (f - edges[m]) / (edges[m + 1] - edges[m]);
                let down = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1]);
                *w = up.min(down).max(0.0) * norm;
            }
            row
        })
        .collect()
}

impl LogMel {
    /// Plan the FFT and build the filters.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let mut hann = [0f64; N_FFT];
        for (k, h) in hann.iter_mut().enumerate() {
            *h = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / N_FFT as f64).cos();
        }
        let filters = mel_filters()
            .into_iter()
            .map(|row| {
                let first = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w > 0.0).unwrap_or(0);
                (first, row[first..=last].to_vec())
            })
            .collect();
        Self {
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            hann,
            filters,
            padded: vec![0.0; WINDOW + 2 * PAD],
            frame: vec![0.0; N_FFT],
            power: vec![0.0; BINS],
            logmel: vec![0.0; MELS * FRAMES],
        }
    }

    /// Features of `audio` (16 kHz, i16) into `out` (`MELS * FRAMES`, mel-major).
    pub fn compute(&mut self, audio: &[i16], out: &mut [f32]) {
        assert_eq!(out.len(), MELS * FRAMES, "feature buffer size");
        let audio = &audio[audio.len().saturating_sub(WINDOW)..];
        let pad = WINDOW - audio.len();
        // Mean and population variance over the whole window, zeros included.
        let (mut sum, mut sq) = (0f64, 0f64);
        for &s in audio {
            let x = s as f64 / 32768.0;
            sum += x;
            sq += x * x;
        }
        let mean = sum / WINDOW as f64;
        let var = (sq / WINDOW as f64 - mean * mean).max(0.0);
        let scale = 1.0 / (var + 1e-7).sqrt();
        let x = &mut self.padded[PAD..PAD + WINDOW];
        // pipecat normalises in f32; the rest of its pipeline is f64.
        let zero = (-mean * scale) as f32 as f64;
        x[..pad].fill(zero);
        for (d, &s) in x[pad..].iter_mut().zip(audio) {
            *d = ((s as f64 / 32768.0 - mean) * scale) as f32 as f64;
        }
        // Reflect padding without repeating the edge sample.
        for i in 0..PAD {
            self.padded[i] = self.padded[2 * PAD - i];
            self.padded[PAD + WINDOW + i] = self.padded[PAD + WINDOW - 2 - i];
        }
        let mut max = f64::NEG_INFINITY;
        for t in 0..FRAMES {
            let src = &self.padded[t * HOP..t * HOP + N_FFT];
            for ((d, &s), &h) in self.frame.iter_mut().zip(src).zip(&self.hann) {
                *d = s * h;
            }
            // Lengths are fixed by construction; the FFT cannot fail.
            let _ = self.fft.process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch);
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (m, (first, w)) in self.filters.iter().enumerate() {
                let e: f64 = w.iter().zip(&self.power[*first..]).map(|(a, b)| a * b).sum();
                let l = e.max(1e-10).log10();
                self.logmel[m * FRAMES + t] = l;
                max = max.max(l);
            }
        }
        let floor = max - 8.0;
        for (o, &v) in out.iter_mut().zip(&self.logmel) {
            *o = ((v.max(floor) + 4.0) / 4.0) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_filters_match_the_reference_peak() {
        let f = mel_filters();
        let max = f.iter().flat_map(|r| r.iter()).cloned().fold(0f64, f64::max);
        assert!((max - 0.025880685).abs() < 1e-8, "{max}");
        // Every band has weight somewhere; band edges increase.
        assert!(f.iter().all(|r| r.iter().any(|&w| w > 0.0)));
    }

    #[test]
    fn silence_gives_the_floor_everywhere() {
        let mut lm = LogMel::new();
        let mut out = vec![0f32; MELS * FRAMES];
        lm.compute(&[0i16; 16000], &mut out);
        let first = out[0];
        assert!(out.iter().all(|&v| (v - first).abs() < 1e-6));
    }
}
