//! A `Send` wrapper around libfvad (the WebRTC voice activity detector, via the
//! `webrtc-vad` crate).
//!
//! `webrtc_vad::Vad` holds a raw `*mut Fvad`, so it is `!Send` and cannot live in
//! a per-call session that a multi-threaded tokio task owns across `.await`.
//! libfvad keeps all of its state in that one heap object (no thread-local or
//! global state), so moving it between threads while it is exclusively owned is
//! sound. This crate is the only place in the workspace that says so with
//! `unsafe`; callbridge itself forbids unsafe code.
//!
//! Invariant: the wrapper is `Send` but not `Sync`; it is used through
//! `&mut self` only.

use webrtc_vad::{SampleRate, Vad, VadMode};

/// Aggressiveness of the detector (libfvad modes 0–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Mode 0: most permissive, flags more frames as speech.
    Quality,
    /// Mode 1.
    LowBitrate,
    /// Mode 2.
    Aggressive,
    /// Mode 3: flags the fewest frames as speech.
    VeryAggressive,
}

/// Errors from [`SendVad`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FvadError {
    /// Sample rate libfvad does not support (8, 16, 32 or 48 kHz only).
    UnsupportedRate(u32),
    /// Frame length is not 10, 20 or 30 ms at the configured rate.
    BadFrameLength(usize),
}

impl std::fmt::Display for FvadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FvadError::UnsupportedRate(r) => write!(f, "libfvad does not support {r} Hz"),
            FvadError::BadFrameLength(n) => {
                write!(f, "libfvad needs 10/20/30 ms frames, got {n} samples")
            }
        }
    }
}

impl std::error::Error for FvadError {}

/// One libfvad instance, movable between threads.
pub struct SendVad {
    inner: Vad,
    rate: u32,
}

// SAFETY: libfvad's state is a single heap allocation owned exclusively by this
// value (freed in `Vad::drop`); the C code uses no thread-local or global
// mutable state, so using it from another thread after a move is sound. The type
// stays `!Sync`, so it is never used from two threads at once.
#[allow(unsafe_code)]
unsafe impl Send for SendVad {}

impl SendVad {
    /// A detector for `rate` Hz in the given mode.
    pub fn new(rate: u32, mode: Mode) -> Result<Self, FvadError> {
        let sr = match rate {
            8000 => SampleRate::Rate8kHz,
            16000 => SampleRate::Rate16kHz,
            32000 => SampleRate::Rate32kHz,
            48000 => SampleRate::Rate48kHz,
            other => return Err(FvadError::UnsupportedRate(other)),
        };
        let mode = match mode {
            Mode::Quality => VadMode::Quality,
            Mode::LowBitrate => VadMode::LowBitrate,
            Mode::Aggressive => VadMode::Aggressive,
            Mode::VeryAggressive => VadMode::VeryAggressive,
        };
        Ok(Self { inner: Vad::new_with_rate_and_mode(sr, mode), rate })
    }

    /// Whether `frame` (10, 20 or 30 ms of samples) holds speech.
    pub fn is_speech(&mut self, frame: &[i16]) -> Result<bool, FvadError> {
        let ms10 = (self.rate / 100) as usize;
        if frame.is_empty() || !frame.len().is_multiple_of(ms10) || frame.len() / ms10 > 3 {
            return Err(FvadError::BadFrameLength(frame.len()));
        }
        self.inner.is_voice_segment(frame).map_err(|()| FvadError::BadFrameLength(frame.len()))
    }

    /// Forget all adaptation (new call).
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_lengths_and_rates() {
        assert_eq!(SendVad::new(11025, Mode::Aggressive).err(), Some(FvadError::UnsupportedRate(11025)));
        let mut v = SendVad::new(8000, Mode::Aggressive).unwrap();
        assert_eq!(v.is_speech(&[]), Err(FvadError::BadFrameLength(0)));
        assert_eq!(v.is_speech(&[0; 100]), Err(FvadError::BadFrameLength(100)));
        assert_eq!(v.is_speech(&[0; 320]), Err(FvadError::BadFrameLength(320)));
        assert_eq!(v.is_speech(&[0; 160]), Ok(false));
    }

    #[test]
    fn moves_to_another_thread() {
        let mut v = SendVad::new(8000, Mode::Aggressive).unwrap();
        let h = std::thread::spawn(move || v.is_speech(&[0; 80]));
        assert_eq!(h.join().unwrap(), Ok(false));
    }
}
