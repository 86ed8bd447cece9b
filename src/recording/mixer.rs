//! The mixer thread: every [`PERIOD`] it drains every call's ring, places
//! each side's audio on the caller's timeline, and hands the stereo frames
//! that are due to the disk thread as one buffer per call.
//!
//! Invariants: it never blocks on the disk (it only sends to the disk
//! thread's channel), so a ring needs to hold one period of audio plus
//! scheduling delay, not a disk's stalls. Bytes handed over and not yet
//! written are counted in `in_flight`; above the budget a commit is sent as
//! silence of the same length (counted as dropped), so the file's timeline
//! never shifts. A recording whose writing stopped (a disk error) is still
//! drained, so its ring never fills, and nothing more is sent for it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::disk::ToDisk;
use super::{Kind, RecordingStatus, SLOT, Slot};

/// How often the rings are drained.
pub(super) const PERIOD: Duration = Duration::from_millis(50);

/// Caller audio kept uncommitted, in ms: bot audio queued behind the bot audio
/// before it is placed where that ends, which is normally the playback lead
/// (120 ms) ahead of the caller's position but falls behind it after a burst
/// of caller frames longer than the lead (network jitter); this much more is
/// still placed exactly.
const HOLDBACK_MS: u32 = 100;

/// A recording to start.
pub(super) struct NewRecording {
    pub rx: rtrb::Consumer<Slot>,
    pub path: PathBuf,
    pub rate: u32,
    pub status: Arc<RecordingStatus>,
}

/// One call's placement state.
struct Active {
    key: u64,
    rx: rtrb::Consumer<Slot>,
    status: Arc<RecordingStatus>,
    /// Frames handed to the disk thread.
    written: u64,
    /// Pending caller samples from `written` on.
    caller: VecDeque<i16>,
    /// Pending bot samples from `written` on.
    bot: VecDeque<i16>,
    ended: bool,
    holdback: usize,
}

impl Active {
    fn new(key: u64, n: NewRecording) -> Self {
        let ms = |ms: u32| (n.rate * ms / 1000) as usize;
        let period = PERIOD.as_millis() as u32;
        Active {
            key,
            rx: n.rx,
            status: n.status,
            written: 0,
            // Sized for what is pending in steady state: the holdback and a
            // period of caller audio; the bot's lead (120 ms by default) on top.
            caller: VecDeque::with_capacity(ms(HOLDBACK_MS + period) + SLOT),
            bot: VecDeque::with_capacity(ms(HOLDBACK_MS + period + 160) + SLOT),
            ended: false,
            holdback: ms(HOLDBACK_MS),
        }
    }

    fn apply(&mut self, s: &Slot) {
        let samples = &s.s[..s.n as usize];
        match s.kind {
            Kind::Caller => {
                let end = self.written + self.caller.len() as u64;
                if s.pos > end {
                    let gap = s.pos - end;
                    self.status.gap_samples.fetch_add(gap, Ordering::Relaxed);
                    self.caller.extend(std::iter::repeat_n(0, gap as usize));
                }
                let end = self.written + self.caller.len() as u64;
                let skip = ((end - s.pos.min(end)) as usize).min(samples.len());
                // A slice iterator: VecDeque copies it in one go.
                self.caller.extend(samples[skip..].iter());
            }
            Kind::Bot => {
                // Skip what was already committed (arrived too late to place); a
                // slot wholly in the committed past has nothing left to place.
                if s.pos + samples.len() as u64 <= self.written {
                    return;
                }
                let skip = self.written.saturating_sub(s.pos) as usize;
                let samples = &samples[skip..];
                let rel = (s.pos + skip as u64 - self.written) as usize;
                if self.bot.len() < rel + samples.len() {
                    self.bot.resize(rel + samples.len(), 0);
                }
                for (d, &v) in self.bot.range_mut(rel..rel + samples.len()).zip(samples) {
                    *d = v;
                }
            }
            Kind::Clear => {
                let rel = s.pos.saturating_sub(self.written) as usize;
                self.bot.truncate(rel);
            }
            Kind::End => self.ended = true,
        }
    }

    /// Take `n` frames from the pending channels and hand them to the disk
    /// (as audio, or as silence when the disk is too far behind).
    fn commit(&mut self, n: usize, disk: &Disk) {
        if n == 0 {
            return;
        }
        if self.bot.len() < n {
            self.bot.resize(n, 0);
        }
        if self.caller.len() < n {
            self.caller.resize(n, 0);
        }
        let bytes = n * 4;
        if self.status.is_stopped() {
            self.caller.drain(..n);
            self.bot.drain(..n);
        } else if disk.in_flight.load(Ordering::Acquire) + bytes > disk.budget {
            self.caller.drain(..n);
            self.bot.drain(..n);
            self.status.dropped(n.div_ceil(SLOT) as u64);
            disk.send(ToDisk::Silence { key: self.key, frames: n });
        } else {
            let mut out = vec![0u8; bytes];
            for ((f, l), r) in out.chunks_exact_mut(4).zip(self.caller.range(..n)).zip(self.bot.range(..n)) {
                f[..2].copy_from_slice(&l.to_le_bytes());
                f[2..].copy_from_slice(&r.to_le_bytes());
            }
            self.caller.drain(..n);
            self.bot.drain(..n);
            disk.in_flight.fetch_add(bytes, Ordering::AcqRel);
            disk.send(ToDisk::Audio { key: self.key, bytes: out });
        }
        self.written += n as u64;
        if !self.status.is_stopped() {
            self.status.written_samples.store(self.written, Ordering::Relaxed);
        }
    }

    /// Drain the ring and hand over what is due; returns whether the recording
    /// is finished (the disk thread has been told to close it).
    fn step(&mut self, disk: &Disk) -> bool {
        while let Ok(s) = self.rx.pop() {
            self.apply(&s);
        }
        if self.ended || self.rx.is_abandoned() && self.rx.is_empty() {
            let n = self.caller.len().max(self.bot.len());
            self.commit(n, disk);
            disk.send(ToDisk::Close { key: self.key });
            return true;
        }
        let n = self.caller.len().saturating_sub(self.holdback);
        self.commit(n, disk);
        false
    }
}

/// The mixer's handle on the disk thread.
struct Disk {
    tx: crossbeam_channel::Sender<ToDisk>,
    in_flight: Arc<AtomicUsize>,
    budget: usize,
}

impl Disk {
    fn send(&self, m: ToDisk) {
        // The disk thread outlives the mixer (it ends when this sender is gone).
        let _ = self.tx.send(m);
    }
}

/// The mixer's loop; returns once the service is gone and every recording is closed.
pub(super) fn run(
    rx: crossbeam_channel::Receiver<NewRecording>,
    to_disk: crossbeam_channel::Sender<ToDisk>,
    in_flight: Arc<AtomicUsize>,
    budget: usize,
) {
    let disk = Disk { tx: to_disk, in_flight, budget };
    let mut active: HashMap<u64, Active> = HashMap::new();
    let mut next = 0u64;
    let mut closed = false;
    let mut done = Vec::new();
    loop {
        loop {
            match rx.try_recv() {
                Ok(n) => {
                    disk.send(ToDisk::Open { key: next, path: n.path.clone(), rate: n.rate, status: n.status.clone() });
                    active.insert(next, Active::new(next, n));
                    next += 1;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        for (k, a) in active.iter_mut() {
            // One recording's bug must not stop every other call's recording:
            // a panic ends that recording (reported) and the mixer goes on.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.step(&disk)));
            match step {
                Ok(true) => done.push(*k),
                Ok(false) => {}
                Err(_) => {
                    metrics::counter!(crate::metrics::RECORDING_FAILED, "kind" => "writer_panic").increment(1);
                    tracing::error!("recording mixer panicked on one recording; it is stopped, others go on");
                    a.status.fail("internal error in the recording writer");
                    disk.send(ToDisk::Close { key: *k });
                    done.push(*k);
                }
            }
        }
        for k in done.drain(..) {
            active.remove(&k);
        }
        if closed && active.is_empty() {
            return;
        }
        std::thread::sleep(PERIOD);
    }
}
