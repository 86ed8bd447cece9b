//! Real-time pacing of outbound audio and accounting of what has been played.
//!
//! The far end (carrier) plays what we send at real time from the moment it
//! arrives. The pacer models that playout buffer with one number, the instant at
//! which it runs dry (`drain_at`). A frame may be released while the far end holds
//! less than `lead` of audio, so it never starves yet a barge-in has at most
//! `lead` of audio to flush. From the same model it answers "how much has been
//! played by `now`", which is the heard position used for truncation.
//!
//! Invariants: times are injected; audio is counted in samples (exact), never in
//! wall-clock; released ≥ played at all times; after [`Pacer::clear`] nothing
//! buffered at the far end counts as played.

use std::time::{Duration, Instant};

/// Outbound playout model for one stream.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u32,
    lead: Duration,
    frame: Duration,
    /// Samples released to the far end so far (minus what a clear discarded).
    released: u64,
    /// When the far end's buffer runs dry, if it holds anything.
    drain_at: Option<Instant>,
}

impl Pacer {
    /// A pacer for `rate` Hz audio released in frames of `frame_samples`,
    /// keeping at most `lead` buffered at the far end.
    pub fn new(rate: u32, frame_samples: usize, lead: Duration) -> Self {
        let frame = Duration::from_nanos(frame_samples as u64 * 1_000_000_000 / rate as u64);
        Self { rate, lead: lead.max(frame), frame, released: 0, drain_at: None }
    }

    /// The lead the pacer keeps.
    pub fn lead(&self) -> Duration {
        self.lead
    }

    fn samples_to_dur(&self, n: u64) -> Duration {
        Duration::from_nanos(n * 1_000_000_000 / self.rate as u64)
    }

    fn dur_to_samples(&self, d: Duration) -> u64 {
        (d.as_nanos() * self.rate as u128 / 1_000_000_000) as u64
    }

    /// Audio still buffered at the far end at `now`.
    pub fn buffered(&self, now: Instant) -> Duration {
        match self.drain_at {
            Some(t) if t > now => t - now,
            _ => Duration::ZERO,
        }
    }

    /// Whether the far end is (believed to be) playing audio at `now`.
    pub fn is_playing(&self, now: Instant) -> bool {
        !self.buffered(now).is_zero()
    }

    /// Whether a frame may be released at `now` without the far end holding
    /// more than `lead`.
    pub fn can_release(&self, now: Instant) -> bool {
        self.buffered(now) + self.frame <= self.lead
    }

    /// When the next frame may be released (`now` if it may go already).
    pub fn next_release(&self, now: Instant) -> Instant {
        match self.drain_at {
            Some(t) if t + self.frame > now + self.lead => t + self.frame - self.lead,
            _ => now,
        }
    }

    /// The latest instant the next frame may wait for: half the spare lead
    /// after [`Pacer::next_release`]. Releasing between the two never starves the
    /// far end, so the caller can piggyback outbound frames on inbound ones (one
    /// wake-up and one write per 20 ms instead of two) and keep a timer only as
    /// the fallback.
    pub fn release_deadline(&self, now: Instant) -> Instant {
        let slack = self.lead.saturating_sub(self.frame) / 2;
        match self.drain_at {
            Some(t) if t + self.frame > now + self.lead => t + self.frame - self.lead + slack,
            _ => now,
        }
    }

    /// Record that `samples` were sent at `now`.
    pub fn release(&mut self, now: Instant, samples: usize) {
        let start = match self.drain_at {
            Some(t) if t > now => t,
            _ => now,
        };
        self.drain_at = Some(start + self.samples_to_dur(samples as u64));
        self.released += samples as u64;
    }

    /// Samples released so far.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Samples played by the far end at `now` (released minus still buffered).
    pub fn played(&self, now: Instant) -> u64 {
        let buffered = self.dur_to_samples(self.buffered(now));
        self.released.saturating_sub(buffered)
    }

    /// The far end dropped its buffer (carrier `clear`) at `now`: whatever was
    /// buffered is not played. Returns the samples played up to now.
    pub fn clear(&mut self, now: Instant) -> u64 {
        let played = self.played(now);
        self.released = played;
        self.drain_at = None;
        played
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn releases_up_to_lead_then_at_real_time() {
        let t0 = Instant::now();
        let mut p = Pacer::new(8000, 160, 60 * MS);
        let mut sent = 0;
        // At t0, frames go out until 60 ms are buffered: 3 frames.
        while p.can_release(t0) {
            p.release(t0, 160);
            sent += 1;
        }
        assert_eq!(sent, 3);
        assert_eq!(p.buffered(t0), 60 * MS);
        // The next one may go once a frame has played, and not a moment before.
        assert_eq!(p.next_release(t0), t0 + 20 * MS);
        assert!(!p.can_release(t0 + 19 * MS));
        assert!(p.can_release(t0 + 20 * MS));
        p.release(t0 + 20 * MS, 160);
        assert_eq!(p.next_release(t0 + 20 * MS), t0 + 40 * MS);
        // Fallback deadline: half of the 40 ms spare lead later; 20 ms still buffered then.
        assert_eq!(p.release_deadline(t0 + 20 * MS), t0 + 60 * MS);
        assert_eq!(p.buffered(t0 + 60 * MS), 20 * MS);
    }

    #[test]
    fn played_tracks_real_time_and_clear_discards_buffer() {
        let t0 = Instant::now();
        let mut p = Pacer::new(8000, 160, 100 * MS);
        for _ in 0..5 {
            p.release(t0, 160);
        }
        assert_eq!(p.played(t0), 0);
        assert_eq!(p.played(t0 + 30 * MS), 240);
        assert_eq!(p.played(t0 + 500 * MS), 800);
        assert!(p.is_playing(t0 + 99 * MS));
        assert!(!p.is_playing(t0 + 100 * MS));
        let played = p.clear(t0 + 45 * MS);
        assert_eq!(played, 360);
        assert_eq!(p.released(), 360);
        assert!(!p.is_playing(t0 + 46 * MS));
        // After an underrun the next frame starts from now, not from the past.
        p.release(t0 + 200 * MS, 160);
        assert_eq!(p.played(t0 + 210 * MS), 360 + 80);
    }
}
