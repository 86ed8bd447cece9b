//! Turn-taking on recorded callers, in virtual time: play one caller turn (a
//! WAV) into the real call loop, then silence, and see when the session
//! decided the turn was over.
//!
//! A decision before the caller's last sound is **premature** (the bot would
//! have answered inside a mid-turn pause). The response time is the first
//! decision after the last sound, measured from that last sound (the last
//! 20 ms frame above −45 dBFS, the loadtest's definition). The end-of-turn
//! model, if any, is a [`Classifier`] whose verdicts arrive after a fixed
//! virtual latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::audio::vad::EnergyGate;
use callbridge::engine::local::LocalClips;
use callbridge::session::{SessionConfig, Telemetry};

use crate::harness::{Classifier, Harness, silence};

/// One caller turn's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    /// End-of-turn decisions before the caller's last sound.
    pub premature: u32,
    /// Last sound → the first decision after it (None: never decided).
    pub response: Option<Duration>,
    /// Questions asked of the model.
    pub questions: usize,
    /// For each premature decision, the caller's pause it fell in (last
    /// sound before → first sound after).
    pub premature_pauses: Vec<Duration>,
}

/// Frames louder than this are the caller's sound.
pub const SOUND_DBFS: f32 = -45.0;

/// Play `pcm` (8 kHz) as one caller turn, then `tail` of silence.
pub fn play_turn(
    cfg: SessionConfig,
    pcm: &[i16],
    classifier: Option<(Classifier, Duration)>,
    tail: Duration,
) -> TurnOutcome {
    // A short reply so the bot is quiet again by the next pause.
    let clips = LocalClips { greeting: None, reply: Arc::from(vec![800i16; 8 * 200]) };
    let mut h = Harness::new(cfg, clips);
    if let Some((f, latency)) = classifier {
        h.set_classifier(f, latency);
    }
    let mut last_sound: Option<Instant> = None;
    let mut sounds = Vec::new();
    for f in pcm.chunks_exact(160) {
        h.frame(f);
        if EnergyGate::level_dbfs(f) > SOUND_DBFS {
            last_sound = Some(h.now);
            sounds.push(h.now);
        }
    }
    for _ in 0..tail.as_millis() / 20 {
        h.frame(&silence());
    }
    let end = last_sound.unwrap_or(h.t0);
    let decisions: Vec<Instant> =
        h.io.telemetry.iter().filter(|(_, t)| matches!(t, Telemetry::TurnEnded { .. })).map(|(at, _)| *at).collect();
    let premature_pauses = decisions
        .iter()
        .filter(|&&at| at < end)
        .filter_map(|&at| {
            let before = sounds.iter().rev().find(|&&s| s <= at)?;
            let after = sounds.iter().find(|&&s| s > at)?;
            Some(*after - *before - Duration::from_millis(20))
        })
        .collect();
    TurnOutcome {
        premature_pauses,
        premature: decisions.iter().filter(|&&at| at < end).count() as u32,
        response: decisions.iter().find(|&&at| at >= end).map(|&at| at - end),
        questions: h.io.turn_queries.len(),
    }
}

/// Read an 8 kHz mono 16-bit WAV.
pub fn read_8k(path: &std::path::Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (rate, pcm) = callbridge::audio::wav::read_wav_mono_i16(&bytes).expect("a mono 16-bit WAV");
    assert_eq!(rate, 8000, "{}: fixtures for turns are 8 kHz", path.display());
    pcm
}

/// Percentile (nearest rank) of durations.
pub fn percentile(v: &[Duration], p: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}
