//! Voice activity detection behind one type.
//!
//! [`VoiceDetector`] runs a cheap energy gate on every frame (mean square against
//! an adaptive noise floor, ≈50 ns) and only when the frame is above the floor
//! asks the configured model: libfvad, the WebRTC GMM detector (default, ≈2 µs per
//! 20 ms frame at 8 kHz, no resampling needed), or the energy decision alone. A
//! hangover keeps short dips inside words from splitting speech.
//!
//! Invariants: one decision per 10/20/30 ms frame at the configured rate; no
//! allocation after construction; `Send` so a session can own it in a tokio task.

use fvad_send::{Mode, SendVad};
use serde::{Deserialize, Serialize};

/// Which model decides once the energy gate has opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VadKind {
    /// libfvad (WebRTC VAD), GMM based.
    #[default]
    Webrtc,
    /// Energy gate only (cheapest; fooled by loud noise).
    Energy,
}

/// libfvad aggressiveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VadAggressiveness {
    /// mode 0
    Quality,
    /// mode 1
    LowBitrate,
    /// mode 2
    #[default]
    Aggressive,
    /// mode 3
    VeryAggressive,
}

/// Tuning for [`VoiceDetector`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VadConfig {
    /// The detector behind the gate.
    pub kind: VadKind,
    /// libfvad mode.
    pub aggressiveness: VadAggressiveness,
    /// Frames at least this many dB above the noise floor open the gate.
    pub gate_margin_db: f32,
    /// Frames quieter than this (dBFS) are never speech.
    pub min_level_dbfs: f32,
    /// Frames of speech kept after the detector says silence (bridges dips).
    pub hangover_frames: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            kind: VadKind::Webrtc,
            aggressiveness: VadAggressiveness::Aggressive,
            gate_margin_db: 6.0,
            min_level_dbfs: -55.0,
            hangover_frames: 0,
        }
    }
}

/// Errors building a detector.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    /// libfvad refused the rate.
    #[error("vad: {0}")]
    Fvad(#[from] fvad_send::FvadError),
}

/// One frame's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadDecision {
    /// Speech (after hangover).
    pub speech: bool,
    /// Frame level in dBFS (mean square).
    pub level_dbfs: f32,
}

/// Frames per block of the minimum-statistics noise floor.
const FLOOR_BLOCK_FRAMES: u32 = 12;
/// Blocks in the floor window (12 × 8 × 20 ms ≈ 2 s).
const FLOOR_BLOCKS: usize = 8;

/// Energy gate against a noise floor tracked by minimum statistics: the floor is
/// the quietest frame of the last ≈2 s. Speech always has short dips, so the
/// floor stays at the line noise, yet a noisier line is learned within 2 s.
#[derive(Debug, Clone)]
pub struct EnergyGate {
    margin_db: f32,
    min_db: f32,
    blocks: [f32; FLOOR_BLOCKS],
    block: usize,
    in_block: u32,
}

impl EnergyGate {
    /// A gate opening `margin_db` above the tracked floor and never below `min_db`.
    pub fn new(margin_db: f32, min_db: f32) -> Self {
        // Until a window of audio has been seen, assume the quietest line we
        // accept: a call that opens with speech must not learn it as the floor.
        Self { margin_db, min_db, blocks: [min_db; FLOOR_BLOCKS], block: 0, in_block: 0 }
    }

    /// Level of a frame in dBFS (−100 for digital silence).
    #[inline]
    pub fn level_dbfs(frame: &[i16]) -> f32 {
        if frame.is_empty() {
            return -100.0;
        }
        let mut acc: i64 = 0;
        for &s in frame {
            acc += (s as i64) * (s as i64);
        }
        let ms = acc as f32 / frame.len() as f32 / (32768.0 * 32768.0);
        if ms <= 1e-10 { -100.0 } else { 10.0 * ms.log10() }
    }

    /// Whether the frame is above the floor; updates the floor.
    #[inline]
    pub fn update(&mut self, level_db: f32) -> bool {
        let b = &mut self.blocks[self.block];
        *b = b.min(level_db);
        self.in_block += 1;
        let floor = self.floor_dbfs();
        if self.in_block == FLOOR_BLOCK_FRAMES {
            self.in_block = 0;
            self.block = (self.block + 1) % FLOOR_BLOCKS;
            self.blocks[self.block] = f32::INFINITY;
        }
        level_db > self.min_db && level_db > floor + self.margin_db
    }

    /// Start the floor window from a measured level (end of warm-up), never
    /// below what the gate accepts anyway.
    pub fn seed_floor(&mut self, level_db: f32) {
        self.blocks = [level_db.max(self.min_db - 45.0); FLOOR_BLOCKS];
    }

    /// The tracked noise floor (dBFS).
    pub fn floor_dbfs(&self) -> f32 {
        self.blocks.iter().copied().fold(f32::INFINITY, f32::min)
    }
}

enum Model {
    Webrtc(Box<SendVad>),
    Energy,
}

/// Gated voice activity detector for one audio stream.
pub struct VoiceDetector {
    gate: EnergyGate,
    model: Model,
    hangover: u32,
    hang_left: u32,
    model_runs: u64,
    frames: u32,
    warmup_min: f32,
}

/// Frames at the start of a stream during which the gate and the model adapt
/// and no speech is reported (libfvad calls the first ≈80 ms of line noise
/// speech before its noise model settles).
pub const WARMUP_FRAMES: u32 = 5;

impl std::fmt::Debug for VoiceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceDetector").field("gate", &self.gate).field("model_runs", &self.model_runs).finish()
    }
}

impl VoiceDetector {
    /// A detector for `rate` Hz audio.
    pub fn new(cfg: &VadConfig, rate: u32) -> Result<Self, VadError> {
        let model = match cfg.kind {
            VadKind::Webrtc => {
                let mode = match cfg.aggressiveness {
                    VadAggressiveness::Quality => Mode::Quality,
                    VadAggressiveness::LowBitrate => Mode::LowBitrate,
                    VadAggressiveness::Aggressive => Mode::Aggressive,
                    VadAggressiveness::VeryAggressive => Mode::VeryAggressive,
                };
                Model::Webrtc(Box::new(SendVad::new(rate, mode)?))
            }
            VadKind::Energy => Model::Energy,
        };
        Ok(Self {
            gate: EnergyGate::new(cfg.gate_margin_db, cfg.min_level_dbfs),
            model,
            hangover: cfg.hangover_frames,
            hang_left: 0,
            model_runs: 0,
            frames: 0,
            warmup_min: f32::INFINITY,
        })
    }

    /// Classify one frame (10/20/30 ms).
    #[inline]
    pub fn process(&mut self, frame: &[i16]) -> VadDecision {
        let level = EnergyGate::level_dbfs(frame);
        let open = self.gate.update(level);
        let raw = open
            && match &mut self.model {
                Model::Energy => true,
                Model::Webrtc(v) => {
                    self.model_runs += 1;
                    // A wrong frame length is a caller bug; treat as non-speech.
                    v.is_speech(frame).unwrap_or(false)
                }
            };
        if self.frames < WARMUP_FRAMES {
            self.frames += 1;
            self.warmup_min = self.warmup_min.min(level);
            if self.frames == WARMUP_FRAMES {
                self.gate.seed_floor(self.warmup_min);
            }
            return VadDecision { speech: false, level_dbfs: level };
        }
        let speech = if raw {
            self.hang_left = self.hangover;
            true
        } else if self.hang_left > 0 {
            self.hang_left -= 1;
            true
        } else {
            false
        };
        VadDecision { speech, level_dbfs: level }
    }

    /// How many frames reached the model (the rest were gated out).
    pub fn model_runs(&self) -> u64 {
        self.model_runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::wav::read_wav_mono_i16;

    fn classify(path: &str, cfg: &VadConfig) -> Vec<bool> {
        let (rate, samples) = read_wav_mono_i16(std::fs::read(path).unwrap().as_slice()).unwrap();
        let mut v = VoiceDetector::new(cfg, rate).unwrap();
        samples.chunks_exact(rate as usize / 50).map(|f| v.process(f).speech).collect()
    }

    /// Ground truth from the clean clips: speech spans the first to the last
    /// frame above −45 dBFS (the clips are digital silence around the speech).
    fn check_boundaries(path: &str, cfg: &VadConfig) {
        let (_, samples) = read_wav_mono_i16(std::fs::read(path).unwrap().as_slice()).unwrap();
        let levels: Vec<f32> = samples.chunks_exact(160).map(EnergyGate::level_dbfs).collect();
        let t_first = levels.iter().position(|&l| l > -45.0).unwrap();
        let t_last = levels.iter().rposition(|&l| l > -45.0).unwrap();
        let frames = classify(path, cfg);
        let first = frames.iter().position(|&s| s).expect("speech found");
        let last = frames.iter().rposition(|&s| s).unwrap();
        assert!(first.abs_diff(t_first) <= 2, "{path}: onset at frame {first}, truth {t_first}");
        let hang = cfg.hangover_frames as usize;
        assert!(last.abs_diff(t_last + hang) <= 3, "{path}: offset frame {last}, truth {t_last} + hangover {hang}");
        // No speech frames well outside the truth.
        assert!(frames[..t_first.saturating_sub(2)].iter().all(|s| !s));
        assert!(frames[(t_last + hang + 4).min(frames.len())..].iter().all(|s| !s));
    }

    #[test]
    fn finds_speech_boundaries_in_fixtures() {
        let cfg = VadConfig::default();
        check_boundaries("fixtures/audio/caller_leak_8k.wav", &cfg);
        check_boundaries("fixtures/audio/caller_short_8k.wav", &cfg);
        check_boundaries("fixtures/audio/caller_address_8k.wav", &cfg);
    }

    #[test]
    fn silence_and_line_noise_are_not_speech() {
        for kind in [VadKind::Webrtc, VadKind::Energy] {
            let cfg = VadConfig { kind, ..VadConfig::default() };
            assert!(classify("fixtures/audio/silence_2s_8k.wav", &cfg).iter().all(|s| !s));
            let noise = classify("fixtures/audio/noise_2s_8k.wav", &cfg);
            let n = noise.iter().filter(|&&s| s).count();
            let longest = noise.split(|s| !s).map(<[bool]>::len).max().unwrap_or(0);
            // Isolated blips are tolerable; a run long enough to start a turn
            // (3 frames = turn.min_speech_ms) is not.
            let max = if kind == VadKind::Webrtc { 5 } else { 15 };
            assert!(n <= max && longest < 3, "{kind:?}: {n} noise frames called speech, longest run {longest}");
        }
    }

    #[test]
    fn gate_skips_the_model_on_silence() {
        let (_, samples) =
            read_wav_mono_i16(std::fs::read("fixtures/audio/silence_2s_8k.wav").unwrap().as_slice()).unwrap();
        let mut v = VoiceDetector::new(&VadConfig::default(), 8000).unwrap();
        for f in samples.chunks_exact(160) {
            v.process(f);
        }
        assert_eq!(v.model_runs(), 0);
    }

    /// Frame accuracy against labels from the clean clip (speech = frame above
    /// −45 dBFS in the clean audio), for the clean clips and the noisy line.
    fn accuracy(clean: &str, heard: &str, cfg: &VadConfig) -> f64 {
        let (_, c) = read_wav_mono_i16(std::fs::read(clean).unwrap().as_slice()).unwrap();
        let labels: Vec<bool> = c.chunks_exact(160).map(|f| EnergyGate::level_dbfs(f) > -45.0).collect();
        let got = classify(heard, cfg);
        let n = labels.len().min(got.len());
        // Skip the warm-up frames, which are never speech by design.
        let hits = (WARMUP_FRAMES as usize..n).filter(|&i| labels[i] == got[i]).count();
        hits as f64 / (n - WARMUP_FRAMES as usize) as f64
    }

    #[test]
    fn frame_accuracy_on_clean_and_noisy_speech() {
        let cfg = VadConfig::default();
        let mut clean = vec![];
        for clip in ["caller_leak_8k", "caller_address_8k", "caller_emergency_8k", "caller_short_8k"] {
            let p = format!("fixtures/audio/{clip}.wav");
            clean.push(accuracy(&p, &p, &cfg));
        }
        let mean = clean.iter().sum::<f64>() / clean.len() as f64;
        let noisy = accuracy("fixtures/audio/caller_leak_8k.wav", "fixtures/audio/caller_leak_noisy_8k.wav", &cfg);
        println!("frame accuracy: clean {clean:.3?} (mean {mean:.3}), noisy line {noisy:.3}");
        assert!(mean >= 0.9, "clean accuracy {mean:.3}");
        assert!(noisy >= 0.8, "noisy accuracy {noisy:.3}");
    }

    #[test]
    fn noisy_line_still_detects_speech() {
        let frames = classify("fixtures/audio/caller_leak_noisy_8k.wav", &VadConfig::default());
        let speech = frames.iter().filter(|&&s| s).count();
        assert!(speech > frames.len() / 2, "only {speech}/{} frames speech", frames.len());
    }
}
