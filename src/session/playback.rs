//! Outbound playback: the queue of response audio, real-time release through the
//! pacer, playback markers, and the "heard up to" position of every response.
//!
//! Invariants: audio is released in whole carrier frames (the last frame of a
//! response is padded with silence); every chunk carries its `ResponseId`, and an
//! interruption removes every queued chunk of the interrupted responses; the
//! heard position of a response never exceeds what was sent and never falls
//! below what a carrier mark confirmed. No allocation per frame: the queue holds
//! shared chunks and frames are assembled in preallocated buffers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::audio::pacer::Pacer;
use crate::audio::resample::{ResampleError, Resampler};
use crate::engine::AudioChunk;
use crate::ids::{MarkId, ResponseId};

/// Playback settings (`[playback]` in config).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlaybackConfig {
    /// Audio kept buffered at the carrier ahead of real time.
    pub lead_ms: u32,
    /// A playback marker is sent after at least this much audio.
    pub mark_interval_ms: u32,
    /// Response audio queued beyond this is dropped (and counted).
    pub max_queued_ms: u32,
    /// 20 ms frames per outbound message. Two (40 ms) halves the messages, and
    /// the syscalls and parsing on both ends, at no cost in latency: the lead
    /// still bounds what the carrier holds.
    pub frames_per_message: u32,
}

impl Default for PlaybackConfig {
    fn default() -> Self {
        Self { lead_ms: 120, mark_interval_ms: 500, max_queued_ms: 120_000, frames_per_message: 2 }
    }
}

#[derive(Debug, Clone)]
struct Resp {
    id: ResponseId,
    done: bool,
    first_release: Option<Instant>,
    /// `pacer.released()` when this response's first frame went out.
    released_base: u64,
    /// Carrier samples sent for this response.
    sent: u64,
    /// Carrier samples confirmed played by a mark echo.
    confirmed: u64,
    since_mark: u64,
    /// Ran dry mid-response (counted once per dry spell).
    starved: bool,
}

impl Resp {
    fn new(id: ResponseId) -> Self {
        Self {
            id,
            done: false,
            first_release: None,
            released_base: 0,
            sent: 0,
            confirmed: 0,
            since_mark: 0,
            starved: false,
        }
    }
}

/// A response cut short by an interruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted {
    /// The response.
    pub response: ResponseId,
    /// What the caller heard of it.
    pub heard_ms: u32,
    /// What was sent of it.
    pub sent_ms: u32,
    /// Whether the engine was still producing it.
    pub was_generating: bool,
    /// When its first audio was released (None: nothing was sent).
    pub started: Option<Instant>,
}

/// What releasing one frame produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// The response the frame belongs to.
    pub response: ResponseId,
    /// First frame of that response.
    pub first: bool,
}

/// Outbound audio state of one call.
#[derive(Debug)]
pub struct Playback {
    rate: u32,
    frame: usize,
    engine_frame: usize,
    resampler: Option<Resampler>,
    scratch: Box<[i16]>,
    frame_buf: Box<[i16]>,
    queue: VecDeque<AudioChunk>,
    queued: usize,
    max_queued: usize,
    responses: VecDeque<Resp>,
    pacer: Pacer,
    marks: VecDeque<(MarkId, ResponseId, u64)>,
    next_mark: u64,
    mark_interval: u64,
    issue_marks: bool,
    due_mark: Option<MarkId>,
    retired: VecDeque<Interrupted>,
    last_play_at: Option<Instant>,
    /// A response ran dry since the last [`Playback::take_underrun`].
    underrun: bool,
}

impl Playback {
    /// Playback to a carrier at `rate` Hz of engine audio at `engine_rate` Hz;
    /// `marks` if the carrier echoes playback markers (none are issued otherwise).
    pub fn new(cfg: &PlaybackConfig, rate: u32, engine_rate: u32, marks: bool) -> Result<Self, ResampleError> {
        let per = cfg.frames_per_message.clamp(1, 10) as usize;
        let frame = crate::audio::frame_samples(rate) * per;
        let engine_frame = crate::audio::frame_samples(engine_rate) * per;
        let resampler = if engine_rate == rate { None } else { Some(Resampler::new(engine_rate, rate, engine_frame)?) };
        Ok(Self {
            rate,
            frame,
            engine_frame,
            resampler,
            scratch: vec![0; engine_frame].into_boxed_slice(),
            frame_buf: vec![0; frame].into_boxed_slice(),
            queue: VecDeque::with_capacity(16),
            queued: 0,
            max_queued: (cfg.max_queued_ms as u64 * engine_rate as u64 / 1000) as usize,
            responses: VecDeque::with_capacity(4),
            pacer: Pacer::new(rate, frame, Duration::from_millis(cfg.lead_ms as u64)),
            marks: VecDeque::with_capacity(16),
            next_mark: 0,
            mark_interval: cfg.mark_interval_ms as u64 * rate as u64 / 1000,
            issue_marks: marks,
            due_mark: None,
            retired: VecDeque::with_capacity(4),
            last_play_at: None,
            underrun: false,
        })
    }

    fn samples_ms(&self, n: u64) -> u32 {
        (n * 1000 / self.rate as u64) as u32
    }

    /// A response began.
    pub fn start_response(&mut self, id: ResponseId) {
        if !self.responses.iter().any(|r| r.id == id) {
            self.responses.push_back(Resp::new(id));
        }
    }

    /// Whether `id` is a response being played or queued.
    pub fn knows(&self, id: ResponseId) -> bool {
        self.responses.iter().any(|r| r.id == id)
    }

    /// Queue response audio. Returns the samples dropped for lack of room.
    pub fn push(&mut self, chunk: AudioChunk) -> usize {
        if chunk.is_empty() {
            return 0;
        }
        if !self.knows(chunk.response) {
            self.start_response(chunk.response);
        }
        if self.queued + chunk.len() > self.max_queued {
            return chunk.len();
        }
        self.queued += chunk.len();
        self.queue.push_back(chunk);
        0
    }

    /// The engine finished producing `id`.
    pub fn finish(&mut self, id: ResponseId) {
        if let Some(r) = self.responses.iter_mut().find(|r| r.id == id) {
            r.done = true;
        }
    }

    /// Whether the bot is audible or about to be: audio at the far end or queued.
    pub fn is_playing(&self, now: Instant) -> bool {
        self.pacer.is_playing(now) || self.queued > 0
    }

    /// Audio believed buffered at the carrier at `now`.
    pub fn buffered(&self, now: Instant) -> Duration {
        self.pacer.buffered(now)
    }

    /// Whether the carrier is holding audio (a `clear` would drop something).
    pub fn carrier_buffered(&self, now: Instant) -> bool {
        self.pacer.is_playing(now)
    }

    /// Whether a response is queued, playing or still being generated.
    pub fn has_live_response(&self) -> bool {
        !self.responses.is_empty()
    }

    /// How long the current response has been audible.
    pub fn playing_for(&self, now: Instant) -> Duration {
        self.responses
            .front()
            .and_then(|r| r.first_release)
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or(Duration::ZERO)
    }

    /// Samples of the front response available to release right now.
    fn available_for(&self, id: ResponseId) -> usize {
        self.queue.iter().take_while(|c| c.response == id).map(|c| c.len()).sum()
    }

    /// Release one frame if the pacer allows and audio is ready; the frame is
    /// then in [`Playback::frame`]. Also retires finished responses.
    pub fn release(&mut self, now: Instant) -> Option<Released> {
        loop {
            let front = self.responses.front()?;
            let id = front.id;
            let done = front.done;
            let avail = self.available_for(id);
            if avail == 0 {
                if done {
                    // Finished: its end mark was issued with its last frame.
                    let r = self.responses.pop_front().expect("front exists");
                    let sent_ms = self.samples_ms(r.sent);
                    self.retired.push_back(Interrupted {
                        response: r.id,
                        heard_ms: sent_ms,
                        sent_ms,
                        was_generating: false,
                        started: r.first_release,
                    });
                    continue;
                }
                self.check_starved(now);
                return None;
            }
            if avail < self.engine_frame && !done {
                self.check_starved(now);
                return None;
            }
            if !self.pacer.can_release(now) {
                return None;
            }
            // Assemble one engine frame, padding the tail of a finished response.
            let mut filled = 0;
            while filled < self.engine_frame {
                let Some(c) = self.queue.front_mut() else {
                    break;
                };
                if c.response != id {
                    break;
                }
                let take = (self.engine_frame - filled).min(c.len());
                self.scratch[filled..filled + take].copy_from_slice(&c.samples[c.start..c.start + take]);
                c.start += take;
                filled += take;
                if c.is_empty() {
                    self.queue.pop_front();
                }
            }
            self.queued -= filled;
            self.scratch[filled..].fill(0);
            match &mut self.resampler {
                Some(r) => {
                    r.process(&self.scratch, &mut self.frame_buf);
                }
                None => self.frame_buf.copy_from_slice(&self.scratch),
            }
            let released_before = self.pacer.released();
            // The carrier plays this frame after what it still holds.
            self.last_play_at = Some(now + self.pacer.buffered(now));
            self.pacer.release(now, self.frame);
            let r = self.responses.front_mut().expect("front exists");
            let first = r.first_release.is_none();
            if first {
                r.first_release = Some(now);
                r.released_base = released_before;
            }
            r.sent += self.frame as u64;
            r.since_mark += self.frame as u64;
            r.starved = false;
            let finished = r.done && self.queue.front().is_none_or(|c| c.response != id);
            if self.issue_marks && (r.since_mark >= self.mark_interval || finished) {
                r.since_mark = 0;
                let mark = MarkId(self.next_mark);
                self.next_mark += 1;
                self.marks.push_back((mark, id, r.sent));
                self.due_mark = Some(mark);
            }
            return Some(Released { response: id, first });
        }
    }

    /// The front response is waiting for more streamed audio; if the far end
    /// has nothing left of it either, the caller hears a gap.
    fn check_starved(&mut self, now: Instant) {
        let buffered = self.pacer.buffered(now);
        if let Some(r) = self.responses.front_mut()
            && r.first_release.is_some()
            && !r.starved
            && buffered.is_zero()
        {
            r.starved = true;
            self.underrun = true;
        }
    }

    /// The response playing (or next to play), if any.
    pub fn front_response(&self) -> Option<ResponseId> {
        self.responses.front().map(|r| r.id)
    }

    /// Whether a response ran dry mid-way since the last call (the engine
    /// is slower than real time).
    pub fn take_underrun(&mut self) -> bool {
        std::mem::take(&mut self.underrun)
    }

    /// The frame produced by the last successful [`Playback::release`].
    pub fn frame(&self) -> &[i16] {
        &self.frame_buf
    }

    /// A marker to send right after the frame just released.
    pub fn take_due_mark(&mut self) -> Option<MarkId> {
        self.due_mark.take()
    }

    /// When the next frame must be released at the latest, if one is waiting
    /// (frames also go out earlier, whenever the session is polled and the pacer
    /// allows).
    pub fn next_release(&self, now: Instant) -> Option<Instant> {
        let front = self.responses.front()?;
        let avail = self.available_for(front.id);
        if avail >= self.engine_frame || (front.done && avail > 0) {
            Some(self.pacer.release_deadline(now))
        } else if front.done && avail == 0 {
            Some(now) // retire it
        } else {
            None
        }
    }

    /// A mark came back: playback reached it (or it was cleared; cleared marks
    /// were forgotten at the interruption, so they are not found here).
    pub fn on_mark(&mut self, mark: MarkId) -> bool {
        let Some(pos) = self.marks.iter().position(|(m, _, _)| *m == mark) else {
            return false;
        };
        // Marks echo in order: earlier ones are implied.
        for (_, resp, at) in self.marks.drain(..=pos) {
            if let Some(r) = self.responses.iter_mut().find(|r| r.id == resp) {
                r.confirmed = r.confirmed.max(at);
            }
        }
        true
    }

    /// Heard position of the front response at `now`.
    pub fn heard_ms(&self, now: Instant) -> u32 {
        match self.responses.front() {
            Some(r) if r.first_release.is_some() => {
                let played = self.pacer.played(now).saturating_sub(r.released_base);
                self.samples_ms(played.clamp(r.confirmed, r.sent))
            }
            _ => 0,
        }
    }

    /// Interrupt everything: forget queued audio and pending marks, treat the
    /// carrier's buffer as dropped, and report what each response reached.
    /// Returns the interrupted responses (front first) into `out`.
    pub fn interrupt(&mut self, now: Instant, out: &mut Vec<Interrupted>) {
        let heard_front = self.heard_ms(now);
        self.pacer.clear(now);
        self.queue.clear();
        self.queued = 0;
        self.marks.clear();
        self.due_mark = None;
        for (i, r) in self.responses.drain(..).enumerate() {
            let sent_ms = (r.sent * 1000 / self.rate as u64) as u32;
            out.push(Interrupted {
                response: r.id,
                heard_ms: if i == 0 { heard_front } else { 0 },
                sent_ms,
                was_generating: !r.done,
                started: r.first_release,
            });
        }
        if let Some(r) = &mut self.resampler {
            r.reset();
        }
    }

    /// Marks sent and not yet echoed.
    /// When the carrier will start playing the last released frame.
    pub fn last_play_at(&self) -> Option<Instant> {
        self.last_play_at
    }

    /// A response whose audio was all released since the last call (in order).
    pub fn take_retired(&mut self) -> Option<Interrupted> {
        self.retired.pop_front()
    }

    pub fn pending_marks(&self) -> usize {
        self.marks.len()
    }

    /// Samples of response audio waiting to be released (engine rate).
    pub fn queued_samples(&self) -> usize {
        self.queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const MS: Duration = Duration::from_millis(1);

    /// One 20 ms frame per message, as the accounting tests count.
    fn one() -> PlaybackConfig {
        PlaybackConfig { frames_per_message: 1, ..PlaybackConfig::default() }
    }

    #[test]
    fn two_frames_per_message_release_40_ms_at_a_time_within_the_lead() {
        let mut p = Playback::new(&PlaybackConfig::default(), 8000, 8000, true).unwrap();
        let t0 = Instant::now();
        p.push(chunk(1, 8000, 1));
        p.finish(ResponseId(1));
        let mut n = 0;
        while p.release(t0).is_some() {
            assert_eq!(p.frame().len(), 320);
            n += 1;
        }
        assert_eq!(n, 3, "120 ms lead = three 40 ms messages");
        assert!(p.release(t0 + 39 * MS).is_none());
        assert!(p.release(t0 + 40 * MS).is_some());
    }

    fn chunk(id: u32, n: usize, v: i16) -> AudioChunk {
        AudioChunk::whole(ResponseId(id), Arc::from(vec![v; n]))
    }

    #[test]
    fn releases_whole_frames_and_pads_the_tail() {
        let mut p = Playback::new(&one(), 8000, 8000, true).unwrap();
        let t0 = Instant::now();
        p.start_response(ResponseId(1));
        p.push(chunk(1, 400, 7));
        assert_eq!(p.release(t0), Some(Released { response: ResponseId(1), first: true }));
        assert_eq!(p.release(t0), Some(Released { response: ResponseId(1), first: false }));
        // 80 samples left and the engine is still talking: wait for a full frame.
        assert_eq!(p.release(t0), None);
        assert_eq!(p.next_release(t0), None);
        p.finish(ResponseId(1));
        assert!(p.release(t0).is_some());
        assert_eq!(&p.frame()[..80], &[7; 80][..]);
        assert_eq!(&p.frame()[80..], &[0; 80][..]);
        assert!(p.take_due_mark().is_some(), "end of response is marked");
        assert_eq!(p.release(t0), None);
        assert!(!p.has_live_response());
        assert!(p.is_playing(t0 + Duration::from_millis(59)));
        assert!(!p.is_playing(t0 + Duration::from_millis(60)));
    }

    #[test]
    fn interrupt_reports_heard_position_from_pacer_and_marks() {
        let cfg = PlaybackConfig { lead_ms: 60, mark_interval_ms: 100, ..one() };
        let mut p = Playback::new(&cfg, 8000, 8000, true).unwrap();
        let t0 = Instant::now();
        p.start_response(ResponseId(1));
        p.push(chunk(1, 8000, 1));
        p.finish(ResponseId(1));
        let mut t = t0;
        let mut marks = vec![];
        while t < t0 + 300 * MS {
            while p.release(t).is_some() {
                if let Some(m) = p.take_due_mark() {
                    marks.push(m);
                }
            }
            t += 10 * MS;
        }
        assert!(!marks.is_empty());
        // At 300 ms the pacer believes 300 ms were played; 340 ms were sent (lead 60,
        // released while at most 40 ms were buffered).
        assert_eq!(p.heard_ms(t0 + 300 * MS), 300);
        let mut out = vec![];
        p.interrupt(t0 + 300 * MS, &mut out);
        assert_eq!(
            out,
            vec![Interrupted {
                response: ResponseId(1),
                heard_ms: 300,
                sent_ms: 340,
                was_generating: false,
                started: Some(t0)
            }]
        );
        assert!(!p.is_playing(t0 + 300 * MS));
        assert_eq!(p.release(t0 + 301 * MS), None);
        // Echoes of marks issued before the interruption are not ours any more.
        assert!(!p.on_mark(marks[0]));
    }

    #[test]
    fn mark_confirmation_floors_the_heard_position() {
        let cfg = PlaybackConfig { lead_ms: 1000, mark_interval_ms: 100, ..one() };
        let mut p = Playback::new(&cfg, 8000, 8000, true).unwrap();
        let t0 = Instant::now();
        p.push(chunk(1, 1600, 1));
        let mut marks = vec![];
        while p.release(t0).is_some() {
            marks.extend(p.take_due_mark());
        }
        // Everything (200 ms) was sent at t0; by the pacer nothing has played yet.
        assert_eq!(p.heard_ms(t0), 0);
        assert!(p.on_mark(marks[0]));
        assert_eq!(p.heard_ms(t0), 100);
    }

    #[test]
    fn queue_limit_drops_and_counts() {
        let cfg = PlaybackConfig { max_queued_ms: 100, ..one() };
        let mut p = Playback::new(&cfg, 8000, 8000, true).unwrap();
        assert_eq!(p.push(chunk(1, 800, 1)), 0);
        assert_eq!(p.push(chunk(1, 160, 1)), 160);
    }

    #[test]
    fn engine_audio_at_24k_is_resampled_to_carrier_frames() {
        let mut p = Playback::new(&one(), 8000, 24000, true).unwrap();
        let t0 = Instant::now();
        p.push(chunk(1, 480 * 2, 3000));
        p.finish(ResponseId(1));
        assert!(p.release(t0).is_some());
        assert_eq!(p.frame().len(), 160);
        assert!(p.release(t0).is_some());
        // settled DC level survives resampling
        assert!((p.frame()[100] - 3000).abs() < 30, "{}", p.frame()[100]);
    }
}
