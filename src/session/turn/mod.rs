//! Turn-taking: when the caller's turn starts and ends, from per-frame VAD,
//! the pause so far and, with the `smart` detector, an end-of-turn model's
//! verdicts.
//!
//! A turn starts after `min_speech_ms` of continuous speech. How it ends
//! depends on [`Detector`]:
//! * `silence` — after `endpoint_silence_ms` of continuous non-speech.
//! * `smart` — at pause candidates (`smart.candidate_ms`, then every
//!   `smart.recheck_ms`) the detector asks the model ([`TurnEvent::Ask`]); a
//!   verdict ≥ `smart.threshold` on `smart.confirmations` consecutive
//!   candidates ends the turn, and `smart.max_wait_ms` ends it regardless.
//!   Without a verdict in time (no model, overloaded workers, late answer) it
//!   falls back to the silence rule.
//!
//! The detector only counts; it never reads a clock (frame times come in as
//! arguments) and allocates nothing.

pub mod canceller;
pub mod echo;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How the end of a caller's turn is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// A fixed silence threshold (`endpoint_silence_ms`).
    #[default]
    Silence,
    /// Pause candidates judged by the smart-turn model, the silence rule as
    /// fallback, `smart.max_wait_ms` as the longest wait.
    Smart,
}

/// The `smart` detector's thresholds (`[turn.smart]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmartConfig {
    /// Pause that makes the first candidate (the model is asked).
    pub candidate_ms: u32,
    /// Later candidates in the same pause, this far apart.
    pub recheck_ms: u32,
    /// P(complete) at or above this counts as "complete".
    pub threshold: f32,
    /// Consecutive "complete" verdicts needed in one pause.
    pub confirmations: u32,
    /// Longest pause before the turn ends whatever the model says.
    pub max_wait_ms: u32,
    /// A verdict later than this after its question is ignored.
    pub deadline_ms: u32,
}

impl Default for SmartConfig {
    fn default() -> Self {
        Self {
            candidate_ms: 200,
            recheck_ms: 300,
            threshold: 0.5,
            confirmations: 2,
            max_wait_ms: 1400,
            deadline_ms: 400,
        }
    }
}

/// Turn-taking and barge-in thresholds (`[turn]` in config).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// How a turn's end is decided.
    pub detector: Detector,
    /// Silence that ends the caller's turn (`silence`; the fallback of `smart`).
    pub endpoint_silence_ms: u32,
    /// The `smart` detector.
    pub smart: SmartConfig,
    /// Speech needed to start a turn while the bot is silent.
    pub min_speech_ms: u32,
    /// Speech needed to interrupt the bot while it plays.
    pub barge_in_min_speech_ms: u32,
    /// After the bot starts a response, this long it cannot be interrupted.
    pub barge_in_protect_ms: u32,
    /// A caller who speaks again within this long of the end of their turn
    /// was not done: the bot yields at once (no protection window).
    pub resume_grace_ms: u32,
    /// While the bot plays, caller frames quieter than this (dBFS) do not count
    /// toward a barge-in.
    pub echo_guard_dbfs: f32,
    /// Echo of the bot's own audio: compared with what was sent.
    pub echo: echo::EchoConfig,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            detector: Detector::Silence,
            endpoint_silence_ms: 800,
            smart: SmartConfig::default(),
            min_speech_ms: 60,
            barge_in_min_speech_ms: 60,
            barge_in_protect_ms: 150,
            resume_grace_ms: 1500,
            echo_guard_dbfs: -40.0,
            echo: echo::EchoConfig::default(),
        }
    }
}

impl TurnConfig {
    /// Reject settings that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if !(100..=5000).contains(&self.endpoint_silence_ms) {
            return Err("turn.endpoint_silence_ms must be within 100..=5000".into());
        }
        let s = &self.smart;
        if !(60..=2000).contains(&s.candidate_ms) {
            return Err("turn.smart.candidate_ms must be within 60..=2000".into());
        }
        if !(60..=2000).contains(&s.recheck_ms) {
            return Err("turn.smart.recheck_ms must be within 60..=2000".into());
        }
        if !(s.candidate_ms..=5000).contains(&s.max_wait_ms) {
            return Err("turn.smart.max_wait_ms must be within candidate_ms..=5000".into());
        }
        if !(0.0..=1.0).contains(&s.threshold) {
            return Err("turn.smart.threshold must be within 0..=1".into());
        }
        if !(1..=5).contains(&s.confirmations) {
            return Err("turn.smart.confirmations must be within 1..=5".into());
        }
        if !(20..=2000).contains(&s.deadline_ms) {
            return Err("turn.smart.deadline_ms must be within 20..=2000".into());
        }
        self.echo.validate()
    }
}

/// What one frame (or verdict, or timer) changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// Nothing changed.
    None,
    /// The caller's turn ended; their last speech frame arrived at `speech_end`.
    Ended {
        /// arrival of the last speech frame
        speech_end: Instant,
        /// what decided it
        by: EndedBy,
    },
    /// Ask the end-of-turn model about the turn so far (pause candidate `id`).
    Ask {
        /// answer with [`TurnDetector::on_verdict`] quoting this
        id: u32,
    },
}

/// What ended a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The silence threshold (the `silence` detector, or `smart` without a verdict).
    Silence,
    /// The model's verdicts.
    Model,
    /// `smart.max_wait_ms`.
    MaxWait,
}

impl EndedBy {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            EndedBy::Silence => "silence",
            EndedBy::Model => "model",
            EndedBy::MaxWait => "max_wait",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Query {
    id: u32,
    deadline: Instant,
}

/// Per-call speech run and pause bookkeeping.
#[derive(Debug, Clone)]
pub struct TurnDetector {
    detector: Detector,
    endpoint: Duration,
    candidate: Duration,
    recheck: Duration,
    max_wait: Duration,
    deadline: Duration,
    threshold: f32,
    confirmations: u32,
    /// Continuous speech so far and when it began.
    run: Duration,
    run_start: Option<Instant>,
    /// Continuous speech loud enough to pass the echo guard.
    loud_run: Duration,
    /// Continuous non-speech so far.
    silence: Duration,
    last_speech: Option<Instant>,
    /// Arrival of the last frame of any kind.
    last_frame: Option<Instant>,
    in_turn: bool,
    /// Smart: the question in flight, the next candidate, verdicts so far.
    query: Option<Query>,
    next_id: u32,
    next_candidate: Duration,
    agreed: u32,
    /// Smart: a question of this pause went unanswered; the silence rule decides.
    fallback: bool,
}

impl TurnDetector {
    /// A detector for `cfg`.
    pub fn new(cfg: &TurnConfig) -> Self {
        let ms = |v: u32| Duration::from_millis(v as u64);
        Self {
            detector: cfg.detector,
            endpoint: ms(cfg.endpoint_silence_ms),
            candidate: ms(cfg.smart.candidate_ms),
            recheck: ms(cfg.smart.recheck_ms),
            max_wait: ms(cfg.smart.max_wait_ms),
            deadline: ms(cfg.smart.deadline_ms),
            threshold: cfg.smart.threshold,
            confirmations: cfg.smart.confirmations.max(1),
            run: Duration::ZERO,
            run_start: None,
            loud_run: Duration::ZERO,
            silence: Duration::ZERO,
            last_speech: None,
            last_frame: None,
            in_turn: false,
            query: None,
            next_id: 0,
            next_candidate: ms(cfg.smart.candidate_ms),
            agreed: 0,
            fallback: false,
        }
    }

    /// A silence-only detector ending turns after `endpoint`.
    pub fn silence(endpoint: Duration) -> Self {
        let cfg = TurnConfig { endpoint_silence_ms: endpoint.as_millis() as u32, ..TurnConfig::default() };
        Self::new(&cfg)
    }

    /// Account one frame of `dur` arriving at `now`.
    pub fn on_frame(&mut self, now: Instant, dur: Duration, speech: bool, loud: bool) -> TurnEvent {
        self.last_frame = Some(now);
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
            self.reset_pause();
            return TurnEvent::None;
        }
        self.run = Duration::ZERO;
        self.run_start = None;
        self.loud_run = Duration::ZERO;
        self.silence += dur;
        if !self.in_turn {
            return TurnEvent::None;
        }
        self.decide(now, self.silence)
    }

    fn reset_pause(&mut self) {
        self.query = None;
        self.next_candidate = self.candidate;
        self.agreed = 0;
        self.fallback = false;
    }

    /// The pause-length rules (for a pause of `silence`), and when to ask.
    fn decide(&mut self, now: Instant, silence: Duration) -> TurnEvent {
        if let Some(q) = self.query
            && now >= q.deadline
        {
            self.query = None;
            self.fallback = true;
        }
        let silence_rule = silence >= self.endpoint;
        match self.detector {
            Detector::Silence if silence_rule => self.end(now, EndedBy::Silence),
            Detector::Silence => TurnEvent::None,
            Detector::Smart if silence >= self.max_wait => self.end(now, EndedBy::MaxWait),
            Detector::Smart if self.fallback && silence_rule => self.end(now, EndedBy::Silence),
            Detector::Smart if self.query.is_none() && !self.fallback && silence >= self.next_candidate => {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1);
                self.query = Some(Query { id, deadline: now + self.deadline });
                self.next_candidate = silence + self.recheck;
                TurnEvent::Ask { id }
            }
            Detector::Smart => TurnEvent::None,
        }
    }

    fn end(&mut self, now: Instant, by: EndedBy) -> TurnEvent {
        self.in_turn = false;
        self.reset_pause();
        TurnEvent::Ended { speech_end: self.last_speech.unwrap_or(now), by }
    }

    /// The model's answer to [`TurnEvent::Ask`] `id`: P(turn complete), or
    /// `None` when it could not answer (overloaded, failed).
    pub fn on_verdict(&mut self, now: Instant, id: u32, p: Option<f32>) -> TurnEvent {
        match self.query {
            Some(q) if q.id == id && self.in_turn => {
                self.query = None;
                match p {
                    Some(p) if p >= self.threshold => {
                        self.agreed += 1;
                        if self.agreed >= self.confirmations {
                            return self.end(now, EndedBy::Model);
                        }
                    }
                    Some(_) => self.agreed = 0,
                    None => self.fallback = true,
                }
                self.decide(now, self.silence)
            }
            _ => TurnEvent::None,
        }
    }

    /// Mark the turn as started (the session decided, by threshold or barge-in).
    pub fn start_turn(&mut self) {
        self.in_turn = true;
        self.reset_pause();
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

    /// The pause so far.
    pub fn pause(&self) -> Duration {
        self.silence
    }

    /// When the detector next needs a look if no frame comes: the end of the
    /// pause by its rules, or the deadline of the question in flight.
    pub fn endpoint_deadline(&self) -> Option<Instant> {
        if !self.in_turn {
            return None;
        }
        let last = self.last_speech?;
        let rule = match self.detector {
            Detector::Silence => self.endpoint,
            Detector::Smart if self.fallback => self.endpoint.min(self.max_wait),
            Detector::Smart if self.query.is_none() => self.next_candidate.min(self.max_wait),
            Detector::Smart => self.max_wait,
        };
        let end = last + rule;
        Some(self.query.map_or(end, |q| q.deadline.min(end)))
    }

    /// A timer fired: end a turn whose audio stopped arriving past its
    /// deadline, or drop an unanswered question. While frames still arrive
    /// (one came within the last two frame times) they decide, not the clock.
    pub fn expire(&mut self, now: Instant) -> TurnEvent {
        let Some(last) = self.last_speech else { return TurnEvent::None };
        if !self.in_turn {
            return TurnEvent::None;
        }
        if self.last_frame.is_some_and(|f| now < f + 2 * crate::audio::FRAME) {
            // Only an unanswered question can expire between frames.
            if let Some(q) = self.query
                && now >= q.deadline
            {
                self.query = None;
                self.fallback = true;
            }
            return TurnEvent::None;
        }
        // Frames count the pause; without frames, the clock does (never both).
        let silence = self.silence.max(now.saturating_duration_since(last));
        let ev = self.decide(now, silence);
        if let TurnEvent::Ended { .. } = ev {
            self.run = Duration::ZERO;
            self.run_start = None;
            self.loud_run = Duration::ZERO;
        }
        ev
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
        let mut d = TurnDetector::silence(Duration::from_millis(100));
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
        assert_eq!(d.on_frame(t, F, false, false), TurnEvent::Ended { speech_end: last, by: EndedBy::Silence });
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
        let mut d = TurnDetector::silence(Duration::from_millis(100));
        d.on_frame(t0, F, true, true);
        d.start_turn();
        assert_eq!(d.endpoint_deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(d.expire(t0 + Duration::from_millis(99)), TurnEvent::None);
        assert_eq!(
            d.expire(t0 + Duration::from_millis(100)),
            TurnEvent::Ended { speech_end: t0, by: EndedBy::Silence }
        );
    }

    fn smart(cfg: SmartConfig) -> TurnDetector {
        TurnDetector::new(&TurnConfig { detector: Detector::Smart, smart: cfg, ..TurnConfig::default() })
    }

    /// Speech, then `n` silent frames; returns the events of the silent frames.
    fn pause(d: &mut TurnDetector, t: &mut Instant, n: usize) -> Vec<(usize, TurnEvent)> {
        *t += F;
        d.on_frame(*t, F, true, true);
        d.start_turn();
        let mut evs = Vec::new();
        for i in 1..=n {
            *t += F;
            let ev = d.on_frame(*t, F, false, false);
            if ev != TurnEvent::None {
                evs.push((i, ev));
            }
        }
        evs
    }

    #[test]
    fn smart_asks_at_the_candidate_and_ends_on_a_complete_verdict() {
        let mut d = smart(SmartConfig { candidate_ms: 200, confirmations: 1, ..SmartConfig::default() });
        let mut t = Instant::now();
        let evs = pause(&mut d, &mut t, 10);
        assert_eq!(evs, vec![(10, TurnEvent::Ask { id: 0 })], "asked at exactly 200 ms, not before");
        // A verdict below the threshold keeps listening.
        let mut d2 = d.clone();
        assert_eq!(d2.on_verdict(t, 0, Some(0.49)), TurnEvent::None);
        assert!(d2.in_turn());
        // At the threshold: the turn ends, speech_end = the last speech frame.
        let ev = d.on_verdict(t + Duration::from_millis(100), 0, Some(0.5));
        assert!(matches!(ev, TurnEvent::Ended { by: EndedBy::Model, .. }), "{ev:?}");
        assert!(!d.in_turn());
    }

    #[test]
    fn smart_rechecks_and_needs_consecutive_confirmations() {
        let cfg = SmartConfig { candidate_ms: 200, recheck_ms: 300, confirmations: 2, ..SmartConfig::default() };
        let mut d = smart(cfg);
        let mut t = Instant::now();
        assert_eq!(pause(&mut d, &mut t, 10), vec![(10, TurnEvent::Ask { id: 0 })]);
        assert_eq!(d.on_verdict(t, 0, Some(0.9)), TurnEvent::None, "one of two");
        // Next candidate at 200 + 300 = 500 ms (frame 25).
        let mut asked = None;
        for i in 11..=25 {
            t += F;
            if let TurnEvent::Ask { id } = d.on_frame(t, F, false, false) {
                asked = Some((i, id));
            }
        }
        assert_eq!(asked, Some((25, 1)));
        assert!(matches!(d.on_verdict(t, 1, Some(0.8)), TurnEvent::Ended { by: EndedBy::Model, .. }));
        // A "no" in between resets the count.
        let mut d = smart(cfg_two());
        let mut t = Instant::now();
        pause(&mut d, &mut t, 10);
        d.on_verdict(t, 0, Some(0.9));
        for _ in 0..15 {
            t += F;
            d.on_frame(t, F, false, false);
        }
        assert_eq!(d.on_verdict(t, 1, Some(0.1)), TurnEvent::None);
        assert!(d.in_turn());
    }

    fn cfg_two() -> SmartConfig {
        SmartConfig { candidate_ms: 200, recheck_ms: 300, confirmations: 2, ..SmartConfig::default() }
    }

    #[test]
    fn smart_max_wait_ends_the_turn_whatever_the_model_says() {
        let mut d = smart(SmartConfig { max_wait_ms: 1000, confirmations: 1, ..SmartConfig::default() });
        let mut t = Instant::now();
        let mut ended = None;
        t += F;
        d.on_frame(t, F, true, true);
        d.start_turn();
        for i in 1..=60 {
            t += F;
            match d.on_frame(t, F, false, false) {
                TurnEvent::Ask { id } => {
                    d.on_verdict(t, id, Some(0.1));
                }
                TurnEvent::Ended { by, .. } => {
                    ended = Some((i, by));
                    break;
                }
                TurnEvent::None => {}
            }
        }
        assert_eq!(ended, Some((50, EndedBy::MaxWait)), "at exactly 1000 ms");
    }

    #[test]
    fn smart_falls_back_to_silence_without_a_verdict() {
        // No answer within the deadline: the silence rule (800 ms) decides.
        let mut d =
            smart(SmartConfig { deadline_ms: 300, max_wait_ms: 1400, confirmations: 1, ..SmartConfig::default() });
        let mut t = Instant::now();
        let evs = pause(&mut d, &mut t, 40);
        assert_eq!(evs[0], (10, TurnEvent::Ask { id: 0 }));
        assert!(matches!(evs[1], (40, TurnEvent::Ended { by: EndedBy::Silence, .. })), "{evs:?}");
        // A late verdict is ignored.
        assert_eq!(d.on_verdict(t, 0, Some(0.99)), TurnEvent::None);
        // The pool said "cannot answer": same fallback, no wait for the deadline.
        let mut d = smart(SmartConfig { confirmations: 1, ..SmartConfig::default() });
        let mut t = Instant::now();
        pause(&mut d, &mut t, 10);
        assert_eq!(d.on_verdict(t, 0, None), TurnEvent::None);
        let evs = pause_more(&mut d, &mut t, 30);
        assert!(matches!(evs.as_slice(), [(30, TurnEvent::Ended { by: EndedBy::Silence, .. })]), "{evs:?}");
    }

    fn pause_more(d: &mut TurnDetector, t: &mut Instant, n: usize) -> Vec<(usize, TurnEvent)> {
        let mut evs = Vec::new();
        for i in 1..=n {
            *t += F;
            let ev = d.on_frame(*t, F, false, false);
            if ev != TurnEvent::None {
                evs.push((i, ev));
            }
        }
        evs
    }

    #[test]
    fn smart_speech_makes_the_question_stale() {
        let mut d = smart(SmartConfig { confirmations: 1, ..SmartConfig::default() });
        let mut t = Instant::now();
        pause(&mut d, &mut t, 10);
        t += F;
        d.on_frame(t, F, true, true);
        assert_eq!(d.on_verdict(t, 0, Some(0.99)), TurnEvent::None, "the caller went on");
        assert!(d.in_turn());
        // The next pause asks again with a new id.
        let evs = pause_more(&mut d, &mut t, 10);
        assert_eq!(evs, vec![(10, TurnEvent::Ask { id: 1 })]);
    }

    #[test]
    fn smart_timer_path_without_frames() {
        let mut d = smart(SmartConfig { deadline_ms: 300, confirmations: 1, ..SmartConfig::default() });
        let t0 = Instant::now();
        d.on_frame(t0, F, true, true);
        d.start_turn();
        // Audio stops arriving. The timer asks at the candidate, then the
        // question expires and the silence rule ends the turn at 800 ms.
        assert_eq!(d.endpoint_deadline(), Some(t0 + Duration::from_millis(200)));
        // Within two frame times of the last frame, frames decide, not the clock.
        assert_eq!(d.expire(t0 + Duration::from_millis(39)), TurnEvent::None);
        assert_eq!(d.expire(t0 + Duration::from_millis(200)), TurnEvent::Ask { id: 0 });
        assert_eq!(d.endpoint_deadline(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(d.expire(t0 + Duration::from_millis(500)), TurnEvent::None);
        assert_eq!(d.endpoint_deadline(), Some(t0 + Duration::from_millis(800)));
        assert!(matches!(d.expire(t0 + Duration::from_millis(800)), TurnEvent::Ended { by: EndedBy::Silence, .. }));
    }
}
