//! Turn-taking: when the caller's turn starts and ends, from per-frame VAD.
//!
//! A turn starts after `min_speech_ms` of continuous speech and ends after
//! `endpoint_silence_ms` of continuous non-speech. The detector only counts;
//! it never reads a clock (frame times come in as arguments).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Turn-taking and barge-in thresholds (`[turn]` in config).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Silence that ends the caller's turn.
    pub endpoint_silence_ms: u32,
    /// Speech needed to start a turn while the bot is silent.
    pub min_speech_ms: u32,
    /// Speech needed to interrupt the bot while it plays.
    pub barge_in_min_speech_ms: u32,
    /// After the bot starts a response, this long it cannot be interrupted.
    pub barge_in_protect_ms: u32,
    /// While the bot plays, caller frames quieter than this (dBFS) do not count
    /// toward a barge-in (echo of the bot's own voice on the line).
    pub echo_guard_dbfs: f32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            endpoint_silence_ms: 500,
            min_speech_ms: 60,
            barge_in_min_speech_ms: 60,
            barge_in_protect_ms: 150,
            echo_guard_dbfs: -40.0,
        }
    }
}

/// What one frame changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// Nothing changed.
    None,
    /// The caller's turn ended; their last speech frame arrived at `speech_end`.
    Ended {
        /// arrival of the last speech frame
        speech_end: Instant,
    },
}

/// Per-call speech run bookkeeping.
#[derive(Debug, Clone)]
pub struct TurnDetector {
    endpoint: Duration,
    /// Continuous speech so far and when it began.
    run: Duration,
    run_start: Option<Instant>,
    /// Continuous speech loud enough to pass the echo guard.
    loud_run: Duration,
    /// Continuous non-speech so far.
    silence: Duration,
    last_speech: Option<Instant>,
    in_turn: bool,
}

impl TurnDetector {
    /// A detector ending turns after `endpoint` of silence.
    pub fn new(endpoint: Duration) -> Self {
        Self {
            endpoint,
            run: Duration::ZERO,
            run_start: None,
            loud_run: Duration::ZERO,
            silence: Duration::ZERO,
            last_speech: None,
            in_turn: false,
        }
    }

    /// Account one frame of `dur` arriving at `now`.
    pub fn on_frame(&mut self, now: Instant, dur: Duration, speech: bool, loud: bool) -> TurnEvent {
        if speech {
            if self.run_start.is_none() {
                self.run_start = Some(now);
            }
            self.run += dur;
            if loud {
                self.loud_run += dur;
            }
            self.silence = Duration::ZERO;
            self.last_speech = Some(now);
            TurnEvent::None
        } else {
            self.run = Duration::ZERO;
            self.run_start = None;
            self.loud_run = Duration::ZERO;
            self.silence += dur;
            if self.in_turn && self.silence >= self.endpoint {
                self.in_turn = false;
                TurnEvent::Ended { speech_end: self.last_speech.unwrap_or(now) }
            } else {
                TurnEvent::None
            }
        }
    }

    /// Mark the turn as started (the session decided, by threshold or barge-in).
    pub fn start_turn(&mut self) {
        self.in_turn = true;
    }

    /// Whether the caller holds the turn.
    pub fn in_turn(&self) -> bool {
        self.in_turn
    }

    /// Current continuous speech.
    pub fn speech_run(&self) -> Duration {
        self.run
    }

    /// Current continuous speech above the echo guard.
    pub fn loud_run(&self) -> Duration {
        self.loud_run
    }

    /// When the current speech run began.
    pub fn run_start(&self) -> Option<Instant> {
        self.run_start
    }

    /// When the caller's turn would end if no more speech comes.
    pub fn endpoint_deadline(&self) -> Option<Instant> {
        if self.in_turn { self.last_speech.map(|t| t + self.endpoint) } else { None }
    }

    /// Force the end of a turn whose audio stopped arriving (a timer fired past
    /// the endpoint deadline with no frames).
    pub fn expire(&mut self, now: Instant) -> TurnEvent {
        match self.endpoint_deadline() {
            Some(d) if now >= d => {
                self.in_turn = false;
                self.run = Duration::ZERO;
                self.run_start = None;
                self.loud_run = Duration::ZERO;
                TurnEvent::Ended { speech_end: self.last_speech.unwrap_or(now) }
            }
            _ => TurnEvent::None,
        }
    }
}

/// Barge-in policy: a pure function of the caller's speech, the bot's playback
/// and the thresholds.
pub fn should_barge_in(cfg: &TurnConfig, loud_run: Duration, bot_playing_for: Duration) -> bool {
    loud_run >= Duration::from_millis(cfg.barge_in_min_speech_ms as u64)
        && bot_playing_for >= Duration::from_millis(cfg.barge_in_protect_ms as u64)
}

/// Whether a speech run is long enough to start a turn while the bot is silent.
pub fn should_start_turn(cfg: &TurnConfig, run: Duration) -> bool {
    run >= Duration::from_millis(cfg.min_speech_ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Duration = Duration::from_millis(20);

    #[test]
    fn endpoint_fires_exactly_at_threshold() {
        let t0 = Instant::now();
        let mut d = TurnDetector::new(Duration::from_millis(100));
        let mut t = t0;
        for _ in 0..5 {
            t += F;
            assert_eq!(d.on_frame(t, F, true, true), TurnEvent::None);
        }
        d.start_turn();
        let last = t;
        for i in 0..4 {
            t += F;
            assert_eq!(d.on_frame(t, F, false, false), TurnEvent::None, "frame {i}");
        }
        t += F;
        assert_eq!(d.on_frame(t, F, false, false), TurnEvent::Ended { speech_end: last });
        assert!(!d.in_turn());
    }

    #[test]
    fn barge_in_policy_both_sides_of_thresholds() {
        let cfg = TurnConfig { barge_in_min_speech_ms: 60, barge_in_protect_ms: 150, ..TurnConfig::default() };
        let ms = Duration::from_millis;
        assert!(!should_barge_in(&cfg, ms(40), ms(1000)));
        assert!(should_barge_in(&cfg, ms(60), ms(1000)));
        assert!(!should_barge_in(&cfg, ms(100), ms(140)));
        assert!(should_barge_in(&cfg, ms(100), ms(150)));
        assert!(!should_start_turn(&cfg, ms(40)));
        assert!(should_start_turn(&cfg, ms(60)));
    }

    #[test]
    fn expire_ends_a_turn_without_frames() {
        let t0 = Instant::now();
        let mut d = TurnDetector::new(Duration::from_millis(100));
        d.on_frame(t0, F, true, true);
        d.start_turn();
        assert_eq!(d.endpoint_deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(d.expire(t0 + Duration::from_millis(99)), TurnEvent::None);
        assert_eq!(d.expire(t0 + Duration::from_millis(100)), TurnEvent::Ended { speech_end: t0 });
    }
}
