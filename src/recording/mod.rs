//! Dual-channel call recording, off the hot path.
//!
//! Each recorded call task owns a [`Recorder`]: the producer end of a
//! lock-free SPSC ring (`rtrb`) of fixed-size [`Slot`]s. Pushing never blocks
//! and never allocates; a full ring drops the slot and counts it. Two threads
//! serve every recording of the server:
//! - the mixer ([`mixer`]) drains every ring each 50 ms, aligns the two
//!   channels and turns what is due into stereo 16-bit frames (left: caller,
//!   right: bot) at the call's rate; it never touches the disk, so the rings
//!   only need to cover its period, not a disk's stalls;
//! - the disk thread ([`disk`]) appends those frames to each call's WAV file.
//!   What it has not written yet waits in memory shared by all recordings
//!   (`recording.max_buffered_mb`); past that, audio is replaced by silence of
//!   the same length, so the file stays aligned and the loss is counted.
//!
//! Alignment: positions are samples since the stream started, decided by the
//! session ([`crate::session::record`]): caller audio sequentially as it
//! arrived (the carrier's clock), bot audio where the carrier will *play* it,
//! and a `clear` cuts everything scheduled from its position on, so a barge-in
//! shows as bot audio stopping where the caller heard it stop. The mixer
//! commits audio a little behind the caller's position (bot audio released
//! after a burst of caller frames may be placed slightly in the past).
//!
//! Durability: the WAV header is rewritten every `header_update_ms` and at the
//! end, so after a crash or `kill -9` the file opens and holds the audio up to
//! the last update. A disk error (full, permissions) stops that recording only;
//! the call goes on and its report says what was lost. Files are created
//! owner-only (0600) in an owner-only folder.

mod disk;
mod mixer;

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ids::CallId;

/// Samples per slot (20 ms at 8 kHz; longer frames span several slots).
pub const SLOT: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Caller,
    Bot,
    Clear,
    End,
}

/// One ring entry: up to [`SLOT`] samples of one channel at a position.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    kind: Kind,
    pos: u64,
    n: u16,
    s: [i16; SLOT],
}

/// What a recording lost, shared between the call and the writer threads.
#[derive(Debug, Default)]
pub struct RecordingStatus {
    /// Slots dropped because the ring was full, or audio replaced by silence
    /// because the disk was behind (counted in 20 ms slots too).
    pub dropped_slots: AtomicU64,
    /// Samples (per channel) handed to the file.
    pub written_samples: AtomicU64,
    /// Samples of caller audio missing (filled with silence) in the file.
    pub gap_samples: AtomicU64,
    /// The first disk error; writing stopped there.
    pub disk_error: Mutex<Option<String>>,
    /// The writer finished the file.
    pub finished: AtomicBool,
    /// Writing stopped (an error): nothing more goes to the file.
    stopped: AtomicBool,
}

impl RecordingStatus {
    /// A short account for the call report: `None` if nothing was lost.
    pub fn loss(&self) -> Option<String> {
        let dropped = self.dropped_slots.load(Ordering::Relaxed);
        let err = self.disk_error.lock().expect("status lock").clone();
        match (dropped, err) {
            (0, None) => None,
            (d, None) => Some(format!("{d} slots of 20 ms dropped (writer behind)")),
            (_, Some(e)) => Some(format!("recording stopped: {e}")),
        }
    }

    /// Stop the recording at its first error (the file keeps its last good header).
    fn fail(&self, e: impl std::fmt::Display) {
        let mut err = self.disk_error.lock().expect("status lock");
        if err.is_none() {
            *err = Some(e.to_string());
            metrics::counter!(crate::metrics::RECORDING_FAILED).increment(1);
            tracing::warn!(error = %e, "recording failed; the call continues unrecorded");
        }
        self.stopped.store(true, Ordering::Release);
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn dropped(&self, slots: u64) {
        self.dropped_slots.fetch_add(slots, Ordering::Relaxed);
        metrics::counter!(crate::metrics::RECORDING_DROPPED).increment(slots);
    }
}

/// The call task's end of a recording.
pub struct Recorder {
    tx: rtrb::Producer<Slot>,
    caller_pos: u64,
    status: Arc<RecordingStatus>,
    /// Where the file is.
    pub path: PathBuf,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("path", &self.path).finish()
    }
}

impl Recorder {
    /// Samples recorded so far on the caller's timeline (the recording's length).
    pub fn samples(&self) -> u64 {
        self.caller_pos
    }

    fn push(&mut self, kind: Kind, pos: u64, pcm: &[i16]) {
        let mut pos = pos;
        let mut chunks = pcm.chunks(SLOT);
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let mut slot = Slot { kind, pos, n: chunk.len() as u16, s: [0; SLOT] };
            slot.s[..chunk.len()].copy_from_slice(chunk);
            if self.tx.push(slot).is_err() {
                self.status.dropped(1);
            }
            pos += chunk.len() as u64;
            if chunk.len() < SLOT || chunks.len() == 0 {
                break;
            }
        }
    }

    /// Caller audio, in arrival order.
    pub fn caller(&mut self, pcm: &[i16]) {
        let pos = self.caller_pos;
        self.caller_pos += pcm.len() as u64;
        self.push(Kind::Caller, pos, pcm);
    }

    /// Bot audio the carrier plays from caller-timeline position `pos` on
    /// (placed by the session, [`crate::session::record`]).
    pub fn bot(&mut self, pcm: &[i16], pos: u64) {
        self.push(Kind::Bot, pos, pcm);
    }

    /// The carrier dropped the bot audio scheduled from `pos` on.
    pub fn clear(&mut self, pos: u64) {
        self.push(Kind::Clear, pos, &[]);
    }

    /// What was lost so far.
    pub fn status(&self) -> &Arc<RecordingStatus> {
        &self.status
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Never wait here (this runs on the call task): if the ring is full the
        // mixer still sees the producer abandoned once it has drained the ring.
        let _ = self.tx.push(Slot { kind: Kind::End, pos: 0, n: 0, s: [0; SLOT] });
    }
}

/// Something a WAV can be written to (a file; tests inject failing ones).
pub trait Sink: Write + Seek + Send {}
impl<T: Write + Seek + Send> Sink for T {}

/// Opens the sink for a path.
pub type SinkFactory = Arc<dyn Fn(&Path) -> std::io::Result<Box<dyn Sink>> + Send + Sync>;

/// The file itself, unbuffered: the mixer hands over 50 ms of audio at a time,
/// one `write` each, and a per-call buffer would cost 16 KiB a call.
fn file_sink(path: &Path) -> std::io::Result<Box<dyn Sink>> {
    if let Some(dir) = path.parent() {
        crate::tenant::create_private_dir(dir)?;
    }
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f: File = o.open(path)?;
    Ok(Box::new(f))
}

/// Starts recordings and runs the mixer and disk threads.
#[derive(Clone)]
pub struct RecordingService {
    dir: PathBuf,
    ring_slots: usize,
    tx: crossbeam_channel::Sender<mixer::NewRecording>,
    /// Recordings not yet finished by the disk thread.
    live: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RecordingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingService").field("dir", &self.dir).finish()
    }
}

/// How a [`RecordingService`] buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// 20 ms slots per call between the call task and the mixer (at least 8).
    pub ring_slots: usize,
    /// Audio the disk has not written yet, for all recordings together.
    pub max_buffered_bytes: usize,
    /// How often each WAV header is rewritten.
    pub header_update: Duration,
}

impl RecordingService {
    /// Recordings in `dir` (created owner-only with the first file).
    pub fn start(dir: &Path, buffering: Buffering) -> std::io::Result<Self> {
        Self::start_with(dir, buffering, Arc::new(file_sink))
    }

    /// [`Self::start`] with another sink (fault injection in tests).
    pub fn start_with(dir: &Path, buffering: Buffering, sinks: SinkFactory) -> std::io::Result<Self> {
        // The folder is made with the first file; a folder that cannot be made is
        // reported per call (the call still goes on).
        let (tx, rx) = crossbeam_channel::unbounded();
        let (to_disk, from_mixer) = crossbeam_channel::unbounded();
        let live = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (l, f) = (live.clone(), in_flight.clone());
        let budget = buffering.max_buffered_bytes;
        std::thread::Builder::new()
            .name("recording-mixer".into())
            .spawn(move || mixer::run(rx, to_disk, in_flight, budget))?;
        let header_update = buffering.header_update;
        std::thread::Builder::new()
            .name("recording-disk".into())
            .spawn(move || disk::run(from_mixer, f, header_update, sinks, l))?;
        Ok(Self { dir: dir.to_path_buf(), ring_slots: buffering.ring_slots.max(8), tx, live })
    }

    /// Recordings the writer has not finished yet.
    pub fn unfinished(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Wait (up to `within`) until every recording whose call ended is
    /// finished: its last audio written and its header final. For shutdown.
    pub async fn finish(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.unfinished() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// The file of `id`.
    pub fn path_of(&self, id: CallId) -> PathBuf {
        self.dir.join(format!("{id}.wav"))
    }

    /// Start recording call `id` at `rate`.
    pub fn begin(&self, id: CallId, rate: u32) -> Recorder {
        // `rate` goes to the writer (the WAV header); the recorder counts samples.
        // A slot holds 20 ms at 8 kHz: a faster call needs more of them.
        let (ptx, prx) = rtrb::RingBuffer::new(self.ring_slots * (rate as usize).div_ceil(8000).max(1));
        let status = Arc::new(RecordingStatus::default());
        let path = self.path_of(id);
        self.live.fetch_add(1, Ordering::AcqRel);
        let new = mixer::NewRecording { rx: prx, path: path.clone(), rate, status: status.clone() };
        if self.tx.send(new).is_err() {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        Recorder { tx: ptx, caller_pos: 0, status, path }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn buffering(ring_slots: usize, header_ms: u64) -> Buffering {
        Buffering { ring_slots, max_buffered_bytes: 8 << 20, header_update: Duration::from_millis(header_ms) }
    }

    /// A FAKE disk: it keeps what it was given (in `shared`), fills up after
    /// `limit` bytes, and once it holds `stall.0` bytes stalls one write for
    /// `stall.1` (a disk busy writing back).
    struct FakeDisk {
        inner: std::io::Cursor<Vec<u8>>,
        limit: usize,
        stall: Option<(usize, Duration)>,
        shared: Arc<Mutex<Vec<u8>>>,
    }

    impl FakeDisk {
        /// A sink factory making such disks, and what they were given.
        fn factory(limit: usize, stall: Option<(usize, Duration)>) -> (SinkFactory, Arc<Mutex<Vec<u8>>>) {
            let shared = Arc::new(Mutex::new(Vec::new()));
            let s2 = shared.clone();
            let factory: SinkFactory = Arc::new(move |_p: &Path| {
                let inner = std::io::Cursor::new(Vec::new());
                Ok(Box::new(FakeDisk { inner, limit, stall, shared: s2.clone() }) as Box<dyn Sink>)
            });
            (factory, shared)
        }
    }

    impl Write for FakeDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some((after, pause)) = self.stall
                && self.inner.get_ref().len() >= after
            {
                self.stall = None;
                std::thread::sleep(pause);
            }
            let pos = self.inner.position() as usize;
            if pos + buf.len() > self.limit {
                return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device"));
            }
            let n = self.inner.write(buf)?;
            *self.shared.lock().unwrap() = self.inner.get_ref().clone();
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for FakeDisk {
        fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    fn wait_finished(st: &RecordingStatus) {
        let t = Instant::now();
        while !st.finished.load(Ordering::Acquire) {
            assert!(t.elapsed() < Duration::from_secs(5), "writer did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn channels_align_and_a_clear_cuts_the_bot_where_it_was_heard() {
        let dir = std::env::temp_dir().join(format!("cb-rec-{}", crate::signature::random_hex()));
        let svc = RecordingService::start(&dir, buffering(256, 50)).unwrap();
        let mut r = svc.begin(CallId(7), 8000);
        let path = r.path.clone();
        // 1 s of caller audio (value 1); bot audio from 200 ms in 40 ms messages
        // (value 2), placed back to back (the session's clock); cleared at
        // 500 ms, while the bot's audio runs to 520 ms.
        let mut clock = crate::session::record::RecordClock::default();
        for i in 0..50u64 {
            if (10..=24).contains(&i) && i % 2 == 0 {
                let pos = clock.bot(320, i != 10);
                r.bot(&[2; 320], pos);
            }
            if i == 25 {
                r.clear(clock.clear());
            }
            clock.caller(160);
            r.caller(&[1; 160]);
        }
        let st = r.status().clone();
        drop(r);
        wait_finished(&st);
        let mut rd = hound::WavReader::open(&path).unwrap();
        assert_eq!((rd.spec().channels, rd.spec().sample_rate), (2, 8000));
        let s: Vec<i16> = rd.samples::<i16>().map(Result::unwrap).collect();
        let (left, right): (Vec<i16>, Vec<i16>) = s.chunks(2).map(|f| (f[0], f[1])).unzip();
        assert_eq!(left.len(), 8000);
        assert!(left.iter().all(|&v| v == 1));
        let first = right.iter().position(|&v| v == 2).unwrap();
        let last = right.iter().rposition(|&v| v == 2).unwrap();
        assert_eq!((first, last + 1), (1600, 4000), "bot from 200 ms to the clear at 500 ms");
        assert!(st.loss().is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o077, 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_disk_stops_the_recording_but_not_the_call_and_the_file_stays_valid() {
        let (factory, shared) = FakeDisk::factory(44 + 4 * 4000, None);
        let svc = RecordingService::start_with(Path::new("/nonexistent-unused"), buffering(64, 30), factory).unwrap();
        let mut r = svc.begin(CallId(8), 8000);
        // 2 s of audio, fed in real time; the "disk" holds 0.5 s. (Faster than
        // real time, a writer thread scheduled late could meet the full disk
        // before its first header update with data, and the fake disk refuses
        // a write whole: the file would be valid but empty.)
        for _ in 0..100 {
            r.caller(&[3; 160]); // never blocks, whatever the disk does
            std::thread::sleep(Duration::from_millis(20));
        }
        let st = r.status().clone();
        drop(r);
        wait_finished(&st);
        let loss = st.loss().expect("the loss is reported");
        assert!(loss.contains("no space left"), "{loss}");
        let bytes = shared.lock().unwrap().clone();
        let rd = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("what exists is a valid WAV");
        let n = rd.len() / 2;
        assert!(n > 0 && n <= 4000, "holds audio up to the last header update ({n} frames)");
    }

    #[test]
    fn a_bot_slot_wholly_in_the_committed_past_is_dropped_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("cb-rec-{}", crate::signature::random_hex()));
        let svc = RecordingService::start(&dir, buffering(256, 30)).unwrap();
        let mut r = svc.begin(CallId(21), 8000);
        for _ in 0..50 {
            r.caller(&[1; 160]);
        }
        // Let the writer commit most of that second.
        let t = Instant::now();
        while r.status().written_samples.load(Ordering::Relaxed) < 4000 {
            assert!(t.elapsed() < Duration::from_secs(5), "writer did not commit");
            std::thread::sleep(Duration::from_millis(10));
        }
        r.bot(&[2; 320], 0); // far behind what is on disk already
        let st = r.status().clone();
        drop(r);
        wait_finished(&st);
        assert!(st.loss().is_none(), "{:?}", st.loss());
        // The writer is alive: another recording still completes.
        let mut r2 = svc.begin(CallId(22), 8000);
        r2.caller(&[3; 160]);
        let st2 = r2.status().clone();
        drop(r2);
        wait_finished(&st2);
        assert_eq!(svc.unfinished(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A sink whose first write panics (a bug below the writer), and whose
    /// later writes fail (so no destructor panics while unwinding).
    struct Panics(bool);
    impl Write for Panics {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            if !self.0 {
                self.0 = true;
                panic!("injected bug");
            }
            Err(std::io::Error::other("broken"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Panics {
        fn seek(&mut self, _: std::io::SeekFrom) -> std::io::Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn a_panic_in_one_recording_stops_it_alone_and_is_reported() {
        let dir = std::env::temp_dir().join(format!("cb-rec-{}", crate::signature::random_hex()));
        let good_dir = dir.clone();
        let factory: SinkFactory = Arc::new(move |p: &Path| {
            if p.file_name().is_some_and(|n| n.to_string_lossy().contains("00000000000000000000000000000031")) {
                Ok(Box::new(Panics(false)) as Box<dyn Sink>)
            } else {
                file_sink(&good_dir.join(p.file_name().unwrap()))
            }
        });
        let svc = RecordingService::start_with(&dir, buffering(64, 30), factory).unwrap();
        let mut bad = svc.begin(CallId(0x31), 8000);
        let mut good = svc.begin(CallId(0x32), 8000);
        for _ in 0..20 {
            bad.caller(&[1; 160]);
            good.caller(&[1; 160]);
        }
        let (sb, sg) = (bad.status().clone(), good.status().clone());
        drop((bad, good));
        wait_finished(&sb);
        wait_finished(&sg);
        assert!(sb.loss().is_some_and(|l| l.contains("internal error")), "{:?}", sb.loss());
        assert!(sg.loss().is_none(), "the other recording is untouched");
        let rd = hound::WavReader::open(svc.path_of(CallId(0x32))).unwrap();
        assert_eq!(rd.len() / 2, 20 * 160);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Records `secs` of caller audio (value 5) and bot audio (value 6) at
    /// `rate`, in real time, onto a disk that stalls for 800 ms after 0.25 s;
    /// returns the status and the file's frames.
    fn record_through_a_stall(rate: u32, budget: usize, secs: usize) -> (Arc<RecordingStatus>, Vec<(i16, i16)>) {
        // 0.25 s of stereo frames, then one write stalls for 800 ms.
        let (factory, shared) = FakeDisk::factory(usize::MAX, Some((44 + rate as usize, Duration::from_millis(800))));
        let b = Buffering { ring_slots: 16, max_buffered_bytes: budget, header_update: Duration::from_millis(30) };
        let svc = RecordingService::start_with(Path::new("/nonexistent-unused"), b, factory).unwrap();
        let mut r = svc.begin(CallId(40), rate);
        let frame = rate as usize / 50;
        let (caller, bot) = (vec![5i16; frame], vec![6i16; frame]);
        let mut clock = crate::session::record::RecordClock::default();
        let t0 = Instant::now();
        for i in 0..secs * 50 {
            let pos = clock.bot(frame as u64, i > 0);
            r.bot(&bot, pos);
            clock.caller(frame as u64);
            r.caller(&caller);
            let next = t0 + Duration::from_millis(20 * (i as u64 + 1));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let st = r.status().clone();
        drop(r);
        wait_finished(&st);
        let bytes = shared.lock().unwrap().clone();
        let mut rd = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a valid WAV");
        assert_eq!(rd.spec().sample_rate, rate);
        let s: Vec<i16> = rd.samples::<i16>().map(Result::unwrap).collect();
        (st, s.chunks(2).map(|f| (f[0], f[1])).collect())
    }

    #[test]
    fn a_disk_that_stalls_loses_nothing_the_mixer_keeps_draining_the_small_rings() {
        // 16 slots per call hold 160 ms; the disk stalls 800 ms. At 48 kHz the
        // ring is six times larger (a slot holds 20 ms at 8 kHz).
        for rate in [8000, 48000] {
            let (st, frames) = record_through_a_stall(rate, 8 << 20, 2);
            assert!(st.loss().is_none(), "{rate} Hz: {:?}", st.loss());
            assert_eq!(frames.len(), 2 * rate as usize, "{rate} Hz: every frame is in the file");
            assert!(frames.iter().all(|&f| f == (5, 6)), "{rate} Hz: both sides, aligned, nothing lost");
        }
    }

    #[test]
    fn past_the_buffer_budget_audio_becomes_silence_of_the_same_length_and_is_counted() {
        // A budget of 16 KiB is 0.5 s at 8 kHz: most of the 800 ms stall is dropped.
        let (st, frames) = record_through_a_stall(8000, 16 << 10, 2);
        let loss = st.loss().expect("the loss is reported");
        assert!(loss.contains("dropped"), "{loss}");
        assert_eq!(frames.len(), 16000, "the file keeps the call's length: later audio stays in place");
        let silent = frames.iter().filter(|&&f| f == (0, 0)).count();
        assert!(silent >= 1600, "silence where audio was dropped ({silent} frames)");
        assert_eq!(frames.last(), Some(&(5, 6)), "audio after the stall is written where it belongs");
        assert_eq!(frames.iter().filter(|&&f| f != (0, 0) && f != (5, 6)).count(), 0);
    }
}
