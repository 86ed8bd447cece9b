//! Pure DSP: codecs, resampling, voice activity, pacing, WAV clips.
//!
//! Nothing here does I/O, reads the clock or allocates per frame; every type is a
//! plain struct driven by its caller.

pub mod dtmf;
pub mod g711;
pub mod pacer;
pub mod resample;
pub mod vad;
pub mod wav;

/// Samples in one 20 ms frame at `rate` Hz.
pub const fn frame_samples(rate: u32) -> usize {
    rate as usize / 50
}

/// Duration of one audio frame.
pub const FRAME: std::time::Duration = std::time::Duration::from_millis(20);
