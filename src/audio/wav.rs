//! WAV loading for fixtures and the local engine's clips (via `hound`).
//!
//! Off the hot path: clips are read once at start-up and shared between calls.

use std::io::Cursor;

/// Errors reading a WAV clip.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// Not a readable WAV file.
    #[error("wav: {0}")]
    Format(#[from] hound::Error),
    /// A format callbridge does not load (it wants 16-bit PCM, mono).
    #[error("wav: need 16-bit PCM mono, got {bits}-bit {format:?} with {channels} channels")]
    Unsupported {
        /// bits per sample
        bits: u16,
        /// sample format
        format: hound::SampleFormat,
        /// channel count
        channels: u16,
    },
}

/// Read a 16-bit PCM mono WAV from bytes: (sample rate, samples).
pub fn read_wav_mono_i16(bytes: &[u8]) -> Result<(u32, Vec<i16>), WavError> {
    let mut r = hound::WavReader::new(Cursor::new(bytes))?;
    let spec = r.spec();
    if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int || spec.channels != 1 {
        return Err(WavError::Unsupported {
            bits: spec.bits_per_sample,
            format: spec.sample_format,
            channels: spec.channels,
        });
    }
    let samples = r.samples::<i16>().collect::<Result<Vec<_>, _>>()?;
    Ok((spec.sample_rate, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixture_and_rejects_non_wav() {
        let (rate, s) = read_wav_mono_i16(&std::fs::read("fixtures/audio/caller_short_8k.wav").unwrap()).unwrap();
        assert_eq!(rate, 8000);
        assert!(s.len() > 8000);
        assert!(read_wav_mono_i16(b"not a wav").is_err());
        let (rate16, _) = read_wav_mono_i16(&std::fs::read("fixtures/audio/caller_leak_16k.wav").unwrap()).unwrap();
        assert_eq!(rate16, 16000);
    }
}
