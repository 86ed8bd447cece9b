//! Time limits a plan may set on a call: a maximum duration, and a silence
//! timeout (nobody said anything — caller or bot — for that long). Either
//! one closes the call politely: the session plays a goodbye line, then hangs
//! up once it has had time to play. Sans-IO: driven by the session's `now`.
//!
//! Invariants: limits count from the moment the stream started; anything
//! happening (the caller speaking, the bot playing, a response awaited) resets
//! the silence clock; once closing, the call ends at the closing deadline
//! whatever happens in between.

use std::time::{Duration, Instant};

use super::HangupReason;

/// Extra time after the goodbye line's length before hanging up (the
/// carrier's buffer and the playback lead).
const AFTER_GOODBYE: Duration = Duration::from_millis(700);

/// What the limits want done now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LimitEvent {
    /// Nothing.
    None,
    /// A limit was reached: say goodbye (then [`TimeLimits::closing`] runs).
    Close(HangupReason),
    /// The goodbye had its time: hang up.
    End(HangupReason),
}

/// A call's time limits.
#[derive(Debug, Clone)]
pub(super) struct TimeLimits {
    max_duration: Option<Duration>,
    silence_timeout: Option<Duration>,
    started: Option<Instant>,
    last_activity: Option<Instant>,
    closing: Option<(HangupReason, Instant)>,
}

impl TimeLimits {
    pub(super) fn new(max_duration: Option<Duration>, silence_timeout: Option<Duration>) -> Self {
        Self { max_duration, silence_timeout, started: None, last_activity: None, closing: None }
    }

    /// The stream started.
    pub(super) fn start(&mut self, now: Instant) {
        self.started = Some(now);
        self.last_activity = Some(now);
    }

    /// Something happened on the call (speech either way, a response awaited).
    pub(super) fn activity(&mut self, now: Instant) {
        if self.last_activity.is_none_or(|t| t < now) {
            self.last_activity = Some(now);
        }
    }

    /// The goodbye started playing at `now` and lasts `len`.
    pub(super) fn closing(&mut self, reason: HangupReason, now: Instant, len: Duration) {
        self.closing = Some((reason, now + len + AFTER_GOODBYE));
    }

    fn quiet_since(&self, last_play: Option<Instant>) -> Option<Instant> {
        match (self.last_activity, last_play) {
            (Some(a), Some(p)) => Some(a.max(p)),
            (a, p) => a.or(p),
        }
    }

    /// When [`TimeLimits::check`] next has something to say.
    pub(super) fn deadline(&self, last_play: Option<Instant>) -> Option<Instant> {
        if let Some((_, at)) = self.closing {
            return Some(at);
        }
        let max = self.max_duration.zip(self.started).map(|(d, s)| s + d);
        let quiet = self.silence_timeout.zip(self.quiet_since(last_play)).map(|(d, q)| q + d);
        [max, quiet].into_iter().flatten().min()
    }

    /// At `now`, with `busy` (someone speaking or a response awaited) and the
    /// bot's last played frame at `last_play`.
    pub(super) fn check(&mut self, now: Instant, busy: bool, last_play: Option<Instant>) -> LimitEvent {
        if let Some((reason, at)) = self.closing {
            return if now >= at { LimitEvent::End(reason) } else { LimitEvent::None };
        }
        if self.started.is_none() {
            return LimitEvent::None;
        }
        if busy {
            self.activity(now);
        }
        if let (Some(d), Some(s)) = (self.max_duration, self.started)
            && now >= s + d
        {
            return LimitEvent::Close(HangupReason::MaxDuration);
        }
        if let (Some(d), Some(q)) = (self.silence_timeout, self.quiet_since(last_play))
            && !busy
            && now >= q + d
        {
            return LimitEvent::Close(HangupReason::SilenceTimeout);
        }
        LimitEvent::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_duration_closes_then_ends_after_the_goodbye() {
        let t0 = Instant::now();
        let mut l = TimeLimits::new(Some(Duration::from_secs(60)), None);
        assert_eq!(l.check(t0, false, None), LimitEvent::None, "not started");
        l.start(t0);
        assert_eq!(l.deadline(None), Some(t0 + Duration::from_secs(60)));
        assert_eq!(l.check(t0 + Duration::from_secs(59), true, None), LimitEvent::None);
        let at = t0 + Duration::from_secs(60);
        assert_eq!(l.check(at, true, None), LimitEvent::Close(HangupReason::MaxDuration), "even mid-speech");
        l.closing(HangupReason::MaxDuration, at, Duration::from_secs(3));
        assert_eq!(l.check(at + Duration::from_secs(3), false, None), LimitEvent::None);
        assert_eq!(l.check(at + Duration::from_millis(3700), false, None), LimitEvent::End(HangupReason::MaxDuration));
    }

    #[test]
    fn silence_counts_from_the_last_sound_either_way() {
        let t0 = Instant::now();
        let s = Duration::from_secs(10);
        let mut l = TimeLimits::new(None, Some(s));
        l.start(t0);
        // The bot played until t0 + 4 s: quiet from then on.
        let play = Some(t0 + Duration::from_secs(4));
        assert_eq!(l.deadline(play), Some(t0 + Duration::from_secs(14)));
        assert_eq!(l.check(t0 + Duration::from_secs(13), false, play), LimitEvent::None);
        // The caller speaks at 13 s (busy): the clock restarts.
        assert_eq!(l.check(t0 + Duration::from_secs(13), true, play), LimitEvent::None);
        assert_eq!(l.check(t0 + Duration::from_secs(22), false, play), LimitEvent::None);
        assert_eq!(l.check(t0 + Duration::from_secs(23), false, play), LimitEvent::Close(HangupReason::SilenceTimeout));
        // Busy never times out for silence.
        let mut l = TimeLimits::new(None, Some(s));
        l.start(t0);
        assert_eq!(l.check(t0 + Duration::from_secs(30), true, None), LimitEvent::None);
    }
}
