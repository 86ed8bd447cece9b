//! The disk thread: appends the mixer's stereo frames to each call's WAV
//! file and keeps its header current.
//!
//! The file is a canonical 44-byte-header PCM WAV (stereo, 16-bit, the
//! call's rate). Its header is written at creation with no data, rewritten
//! every `header_update` and at the close, so after a crash the file opens
//! and holds the audio up to the last rewrite. (Written here rather than with
//! `hound`'s writer: the mixer hands over bytes already interleaved, and a
//! writer per call would keep a sample buffer per call.)
//!
//! Invariants: after a recording's first error nothing more is written to
//! its file (its header stays the last good one); every recording that was
//! opened is finished (`status.finished`, the live count) exactly once, also
//! when its file could not be made; a panic in one file's sink stops that
//! recording only.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{RecordingStatus, Sink, SinkFactory};

/// What the mixer sends.
pub(super) enum ToDisk {
    /// Create the file of recording `key`.
    Open { key: u64, path: PathBuf, rate: u32, status: Arc<RecordingStatus> },
    /// Interleaved little-endian stereo frames to append.
    Audio { key: u64, bytes: Vec<u8> },
    /// `frames` of silence to append (the audio was dropped: the disk was behind).
    Silence { key: u64, frames: usize },
    /// The recording is complete: final header, close.
    Close { key: u64 },
}

/// The largest data chunk a WAV's 32-bit sizes can describe.
const MAX_DATA: u64 = u32::MAX as u64 - 36;

/// The header of a stereo 16-bit PCM WAV at `rate` with `data` bytes of frames.
pub(super) fn header(rate: u32, data: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let mut put = |at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
    put(0, b"RIFF");
    put(4, &(36 + data).to_le_bytes());
    put(8, b"WAVE");
    put(12, b"fmt ");
    put(16, &16u32.to_le_bytes());
    put(20, &1u16.to_le_bytes()); // PCM
    put(22, &2u16.to_le_bytes()); // channels
    put(24, &rate.to_le_bytes());
    put(28, &(rate * 4).to_le_bytes()); // bytes per second
    put(32, &4u16.to_le_bytes()); // bytes per frame
    put(34, &16u16.to_le_bytes()); // bits per sample
    put(36, b"data");
    put(40, &data.to_le_bytes());
    h
}

/// One open recording.
struct WavFile {
    sink: Option<Box<dyn Sink>>,
    data: u64,
    status: Arc<RecordingStatus>,
    last_header: Instant,
}

impl WavFile {
    fn open(path: &Path, rate: u32, status: Arc<RecordingStatus>, sinks: &SinkFactory) -> Self {
        let mut f = WavFile { sink: None, data: 0, status, last_header: Instant::now() };
        let opened = guarded(|| {
            let mut s = sinks(path)?;
            s.write_all(&header(rate, 0))?;
            s.flush()?;
            Ok(s)
        });
        match opened {
            Ok(s) => f.sink = Some(s),
            Err(e) => f.fail(format!("cannot create {}: {e}", path.display())),
        }
        f
    }

    fn fail(&mut self, e: impl std::fmt::Display) {
        self.status.fail(e);
        // Dropped without another write: its header holds the last good update.
        self.sink = None;
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.status.is_stopped() {
            self.sink = None;
        }
        let Some(s) = self.sink.as_mut() else { return };
        if self.data + bytes.len() as u64 > MAX_DATA {
            return self.fail("recording too long for a WAV file (4 GiB)");
        }
        match guarded(|| s.write_all(bytes)) {
            Ok(()) => self.data += bytes.len() as u64,
            Err(e) => self.fail(e),
        }
    }

    fn silence(&mut self, frames: usize) {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut left = frames * 4;
        while left > 0 && self.sink.is_some() {
            let n = left.min(ZEROS.len());
            self.append(&ZEROS[..n]);
            left -= n;
        }
    }

    /// Rewrite the sizes in the header, then go back to the end.
    fn update_header(&mut self) {
        self.last_header = Instant::now();
        let Some(s) = self.sink.as_mut() else { return };
        let data = self.data as u32;
        let r = guarded(|| {
            s.seek(SeekFrom::Start(4))?;
            s.write_all(&(36 + data).to_le_bytes())?;
            s.seek(SeekFrom::Start(40))?;
            s.write_all(&data.to_le_bytes())?;
            s.seek(SeekFrom::End(0))?;
            s.flush()
        });
        if let Err(e) = r {
            self.fail(e);
        }
    }
}

/// Runs a sink operation; a panic in it (a bug below us) is an error of this recording.
fn guarded<T>(f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            metrics::counter!(crate::metrics::RECORDING_FAILED, "kind" => "writer_panic").increment(1);
            Err(std::io::Error::other("internal error in the recording writer"))
        }
    }
}

/// The disk thread's loop; returns once the mixer is gone and every file is closed.
pub(super) fn run(
    rx: crossbeam_channel::Receiver<ToDisk>,
    in_flight: Arc<AtomicUsize>,
    header_update: Duration,
    sinks: SinkFactory,
    live: Arc<AtomicUsize>,
) {
    let mut files: HashMap<u64, WavFile> = HashMap::new();
    let tick = header_update.clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut last_sweep = Instant::now();
    loop {
        match rx.recv_timeout(tick) {
            Ok(ToDisk::Open { key, path, rate, status }) => {
                files.insert(key, WavFile::open(&path, rate, status, &sinks));
            }
            Ok(ToDisk::Audio { key, bytes }) => {
                if let Some(f) = files.get_mut(&key) {
                    f.append(&bytes);
                }
                in_flight.fetch_sub(bytes.len(), Ordering::AcqRel);
            }
            Ok(ToDisk::Silence { key, frames }) => {
                if let Some(f) = files.get_mut(&key) {
                    f.silence(frames);
                }
            }
            Ok(ToDisk::Close { key }) => {
                if let Some(mut f) = files.remove(&key) {
                    f.update_header();
                    f.status.finished.store(true, Ordering::Release);
                    live.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                // The mixer closed every recording before it returned; anything
                // left (it panicked) is closed here so nobody waits for it.
                for (_, mut f) in files.drain() {
                    f.update_header();
                    f.status.finished.store(true, Ordering::Release);
                    live.fetch_sub(1, Ordering::AcqRel);
                }
                return;
            }
        }
        if last_sweep.elapsed() >= tick {
            last_sweep = Instant::now();
            for f in files.values_mut() {
                if f.last_header.elapsed() >= header_update {
                    f.update_header();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_one_hound_reads_as_stereo_16_bit_pcm() {
        let mut bytes = header(16000, 8).to_vec();
        bytes.extend_from_slice(&[1, 0, 2, 0, 3, 0, 4, 0]);
        let mut r = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        let spec = r.spec();
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 16000, 16));
        assert_eq!(spec.sample_format, hound::SampleFormat::Int);
        let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s, [1, 2, 3, 4]);
    }
}
