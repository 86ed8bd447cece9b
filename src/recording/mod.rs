//! Dual-channel call recording, off the hot path.
//!
//! Each recorded call task owns a [`Recorder`]: the producer end of a
//! lock-free SPSC ring (`rtrb`) of fixed-size [`Slot`]s. Pushing never blocks
//! and never allocates; a full ring drops the slot and counts it. One writer
//! thread for the whole server drains every ring, aligns the two channels and
//! writes a stereo 16-bit WAV (left: caller, right: bot) at the call's rate.
//!
//! Alignment: positions are samples since the stream started, decided by the
//! session ([`crate::session::record`]): caller audio sequentially as it
//! arrived (the carrier's clock), bot audio where the carrier will *play* it,
//! and a `clear` cuts everything scheduled from its position on, so a barge-in
//! shows as bot audio stopping where the caller heard it stop. The writer
//! commits audio up to 200 ms behind the caller's position
//! (bot audio is at most the playback lead ahead of it, and the caller's frame
//! clock may run a frame or two ahead of wall time).
//!
//! Durability: the WAV header is rewritten every `header_update_ms` and at the
//! end, so after a crash or `kill -9` the file opens and holds the audio up to
//! the last update. A disk error (full, permissions) stops that recording only;
//! the call goes on and its report says what was lost. Files are created
//! owner-only (0600) in an owner-only folder.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::ids::CallId;

/// How often the writer drains the rings: long enough to write in batches,
/// short against the ring's capacity (64 slots = 1.28 s by default).
const WRITER_PERIOD: Duration = Duration::from_millis(100);

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

/// What a recording lost, shared between the call and the writer.
#[derive(Debug, Default)]
pub struct RecordingStatus {
    /// Slots dropped because the ring was full.
    pub dropped_slots: AtomicU64,
    /// Samples (per channel) written to the file.
    pub written_samples: AtomicU64,
    /// Samples of caller audio missing (filled with silence) in the file.
    pub gap_samples: AtomicU64,
    /// The first disk error; writing stopped there.
    pub disk_error: Mutex<Option<String>>,
    /// The writer finished the file.
    pub finished: AtomicBool,
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
                self.status.dropped_slots.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::RECORDING_DROPPED).increment(1);
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
        // writer still sees the producer abandoned once it has drained the ring.
        let _ = self.tx.push(Slot { kind: Kind::End, pos: 0, n: 0, s: [0; SLOT] });
    }
}

/// Something a WAV can be written to (a file; tests inject failing ones).
pub trait Sink: Write + Seek + Send {}
impl<T: Write + Seek + Send> Sink for T {}

/// Opens the sink for a path.
pub type SinkFactory = Arc<dyn Fn(&Path) -> std::io::Result<Box<dyn Sink>> + Send + Sync>;

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
    Ok(Box::new(BufWriter::with_capacity(16 * 1024, f)))
}

struct NewRecording {
    rx: rtrb::Consumer<Slot>,
    path: PathBuf,
    rate: u32,
    status: Arc<RecordingStatus>,
}

/// Starts recordings and runs the writer thread.
#[derive(Clone)]
pub struct RecordingService {
    dir: PathBuf,
    ring_slots: usize,
    tx: mpsc::Sender<NewRecording>,
    /// Recordings not yet finished by the writer.
    live: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RecordingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingService").field("dir", &self.dir).finish()
    }
}

impl RecordingService {
    /// Recordings in `dir` (created owner-only), `ring_slots` per call, header
    /// rewritten every `header_update`.
    pub fn start(dir: &Path, ring_slots: usize, header_update: Duration) -> std::io::Result<Self> {
        Self::start_with(dir, ring_slots, header_update, Arc::new(file_sink))
    }

    /// [`Self::start`] with another sink (fault injection in tests).
    pub fn start_with(
        dir: &Path,
        ring_slots: usize,
        header_update: Duration,
        sinks: SinkFactory,
    ) -> std::io::Result<Self> {
        // The folder is made with the first file; a folder that cannot be made is
        // reported per call (the call still goes on).
        let (tx, rx) = mpsc::channel();
        let live = Arc::new(AtomicUsize::new(0));
        let l = live.clone();
        std::thread::Builder::new()
            .name("recording-writer".into())
            .spawn(move || writer(rx, header_update, sinks, l))?;
        Ok(Self { dir: dir.to_path_buf(), ring_slots: ring_slots.max(8), tx, live })
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
        let (ptx, prx) = rtrb::RingBuffer::new(self.ring_slots);
        let status = Arc::new(RecordingStatus::default());
        let path = self.path_of(id);
        self.live.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(NewRecording { rx: prx, path: path.clone(), rate, status: status.clone() }).is_err() {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        Recorder { tx: ptx, caller_pos: 0, status, path }
    }
}

/// A sink that refuses everything once switched off, so dropping a failed
/// writer cannot rewrite the header over the last good one.
struct Guarded {
    inner: Box<dyn Sink>,
    off: Arc<AtomicBool>,
}

impl Guarded {
    fn check(&self) -> std::io::Result<()> {
        if self.off.load(Ordering::Relaxed) { Err(std::io::Error::other("recording stopped")) } else { Ok(()) }
    }
}

impl Write for Guarded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.check()?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.check()?;
        self.inner.flush()
    }
}

impl Seek for Guarded {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.check()?;
        self.inner.seek(pos)
    }
}

struct Active {
    rx: rtrb::Consumer<Slot>,
    wav: Option<hound::WavWriter<Guarded>>,
    off: Arc<AtomicBool>,
    status: Arc<RecordingStatus>,
    written: u64,
    caller: VecDeque<i16>,
    bot: VecDeque<i16>,
    last_flush: Instant,
    ended: bool,
    /// Caller audio kept uncommitted so bot audio placed slightly in the past
    /// (the caller's frame clock runs a frame or two ahead of wall time) still lands.
    holdback: usize,
}

impl Active {
    fn fail(&mut self, e: impl std::fmt::Display) {
        let mut err = self.status.disk_error.lock().expect("status lock");
        if err.is_none() {
            *err = Some(e.to_string());
            metrics::counter!(crate::metrics::RECORDING_FAILED).increment(1);
            tracing::warn!(error = %e, "recording failed; the call continues unrecorded");
        }
        // Drop the writer without touching the file again: its header holds the last good update.
        self.off.store(true, Ordering::Relaxed);
        self.wav = None;
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
                let skip = (end - s.pos.min(end)) as usize;
                self.caller.extend(samples.iter().skip(skip));
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

    /// Write `n` frames from the pending channels (one buffered write).
    fn commit(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.bot.len() < n {
            self.bot.resize(n, 0);
        }
        if self.caller.len() < n {
            self.caller.resize(n, 0);
        }
        if let Some(w) = &mut self.wav {
            let mut w16 = w.get_i16_writer(n as u32 * 2);
            for (l, r) in self.caller.drain(..n).zip(self.bot.drain(..n)) {
                w16.write_sample(l);
                w16.write_sample(r);
            }
            if let Err(e) = w16.flush() {
                self.fail(e);
            }
        } else {
            self.caller.drain(..n);
            self.bot.drain(..n);
        }
        self.written += n as u64;
        if self.wav.is_some() {
            self.status.written_samples.store(self.written, Ordering::Relaxed);
        }
    }

    fn flush(&mut self) {
        if let Some(w) = &mut self.wav
            && let Err(e) = w.flush()
        {
            self.fail(e);
        }
        self.last_flush = Instant::now();
    }

    /// Drain the ring and write what is due; returns whether the recording is finished.
    fn step(&mut self, header_update: Duration) -> bool {
        while let Ok(s) = self.rx.pop() {
            self.apply(&s);
        }
        if self.ended || self.rx.is_abandoned() && self.rx.is_empty() {
            let n = self.caller.len().max(self.bot.len());
            self.commit(n);
            if let Some(w) = self.wav.take()
                && let Err(e) = w.finalize()
            {
                self.fail(e);
            }
            self.status.finished.store(true, Ordering::Release);
            return true;
        }
        let n = self.caller.len().saturating_sub(self.holdback);
        self.commit(n);
        if self.last_flush.elapsed() >= header_update {
            self.flush();
        }
        false
    }
}

fn writer(rx: mpsc::Receiver<NewRecording>, header_update: Duration, sinks: SinkFactory, live: Arc<AtomicUsize>) {
    let mut active: HashMap<u64, Active> = HashMap::new();
    let mut next = 0u64;
    let mut closed = false;
    loop {
        loop {
            match rx.try_recv() {
                Ok(n) => {
                    let spec = hound::WavSpec {
                        channels: 2,
                        sample_rate: n.rate,
                        bits_per_sample: 16,
                        sample_format: hound::SampleFormat::Int,
                    };
                    let mut a = Active {
                        rx: n.rx,
                        wav: None,
                        off: Arc::new(AtomicBool::new(false)),
                        status: n.status,
                        written: 0,
                        caller: VecDeque::with_capacity(n.rate as usize / 2),
                        bot: VecDeque::with_capacity(n.rate as usize / 2),
                        last_flush: Instant::now(),
                        ended: false,
                        holdback: (n.rate / 5) as usize,
                    };
                    let off = a.off.clone();
                    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        sinks(&n.path).and_then(|inner| {
                            hound::WavWriter::new(Guarded { inner, off }, spec).map_err(std::io::Error::other)
                        })
                    }));
                    match opened {
                        Ok(Ok(w)) => a.wav = Some(w),
                        Ok(Err(e)) => a.fail(format!("cannot create {}: {e}", n.path.display())),
                        Err(_) => {
                            metrics::counter!(crate::metrics::RECORDING_FAILED, "kind" => "writer_panic").increment(1);
                            a.fail("internal error in the recording writer");
                        }
                    }
                    a.flush();
                    active.insert(next, a);
                    next += 1;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut done = Vec::new();
        for (k, a) in active.iter_mut() {
            // One recording's bug must not stop every other call's recording:
            // a panic ends that recording (reported) and the writer goes on.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.step(header_update)));
            match step {
                Ok(true) => done.push(*k),
                Ok(false) => {}
                Err(_) => {
                    metrics::counter!(crate::metrics::RECORDING_FAILED, "kind" => "writer_panic").increment(1);
                    tracing::error!("recording writer panicked on one recording; it is stopped, others go on");
                    a.fail("internal error in the recording writer");
                    a.status.finished.store(true, Ordering::Release);
                    done.push(*k);
                }
            }
        }
        for k in done {
            active.remove(&k);
            live.fetch_sub(1, Ordering::AcqRel);
        }
        if closed && active.is_empty() {
            return;
        }
        std::thread::sleep(WRITER_PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAKE disk that fills up after `limit` bytes.
    struct FullDisk {
        inner: std::io::Cursor<Vec<u8>>,
        limit: usize,
        shared: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
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

    impl Seek for FullDisk {
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
        let svc = RecordingService::start(&dir, 256, Duration::from_millis(50)).unwrap();
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
        let shared = Arc::new(Mutex::new(Vec::new()));
        let s2 = shared.clone();
        let factory: SinkFactory = Arc::new(move |_p: &Path| {
            Ok(Box::new(FullDisk { inner: std::io::Cursor::new(Vec::new()), limit: 44 + 4 * 4000, shared: s2.clone() })
                as Box<dyn Sink>)
        });
        let svc =
            RecordingService::start_with(Path::new("/nonexistent-unused"), 64, Duration::from_millis(30), factory)
                .unwrap();
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
        let svc = RecordingService::start(&dir, 256, Duration::from_millis(30)).unwrap();
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
        let svc = RecordingService::start_with(&dir, 64, Duration::from_millis(30), factory).unwrap();
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
}
