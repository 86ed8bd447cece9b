//! Caller audio clips and where speech starts and ends in them.
//!
//! A clip is µ-law 20 ms frames ready to send. Speech boundaries are measured
//! from the audio (first/last frame above −45 dBFS), since the clips are
//! speech between stretches of silence.

use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use callbridge::audio::g711;
use callbridge::audio::vad::EnergyGate;
use callbridge::audio::wav::read_wav_mono_i16;

/// Level above which a frame counts as speech for bookkeeping.
pub const SPEECH_DBFS: f32 = -45.0;

/// One caller utterance.
#[derive(Debug, Clone)]
pub struct Clip {
    /// File name.
    pub name: String,
    /// µ-law frames of 160 bytes.
    pub frames: Vec<[u8; 160]>,
    /// The same frames base64-encoded once, for carriers that send them so.
    pub b64: Vec<String>,
    /// Index of the first speech frame.
    pub speech_start: usize,
    /// Index of the last speech frame.
    pub speech_end: usize,
    /// The turn ends at the end of a sentence (fixture sets say; plain clips are).
    pub complete: bool,
}

impl Clip {
    /// Build a clip from 8 kHz PCM.
    pub fn from_pcm(name: &str, pcm: &[i16]) -> anyhow::Result<Self> {
        let mut frames = Vec::with_capacity(pcm.len() / 160 + 1);
        let mut levels = Vec::with_capacity(pcm.len() / 160 + 1);
        for chunk in pcm.chunks(160) {
            let mut f = [0i16; 160];
            f[..chunk.len()].copy_from_slice(chunk);
            levels.push(EnergyGate::level_dbfs(&f));
            let mut u = [0u8; 160];
            g711::ulaw_encode(&f, &mut u);
            frames.push(u);
        }
        let Some(speech_start) = levels.iter().position(|&l| l > SPEECH_DBFS) else {
            bail!("{name}: no speech found");
        };
        let speech_end = levels.iter().rposition(|&l| l > SPEECH_DBFS).unwrap_or(speech_start);
        let b64 = frames.iter().map(|f| B64.encode(f)).collect();
        Ok(Self { name: name.to_string(), frames, b64, speech_start, speech_end, complete: true })
    }

    /// Load an 8 kHz mono 16-bit WAV.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (rate, pcm) = read_wav_mono_i16(&bytes).with_context(|| format!("decoding {}", path.display()))?;
        if rate != 8000 {
            bail!("{}: clips must be 8 kHz (got {rate} Hz)", path.display());
        }
        Self::from_pcm(&path.file_name().unwrap_or_default().to_string_lossy(), &pcm)
    }

    /// Trailing silence after the speech, in frames.
    pub fn tail_frames(&self) -> usize {
        self.frames.len() - self.speech_end - 1
    }
}

/// The caller clips shipped in `fixtures/audio`.
pub const CALLER_CLIPS: &[&str] =
    &["caller_leak_8k.wav", "caller_address_8k.wav", "caller_emergency_8k.wav", "caller_short_8k.wav"];

/// Load the caller clips from a fixtures folder.
pub fn load_caller_clips(dir: &Path) -> anyhow::Result<Vec<Clip>> {
    CALLER_CLIPS.iter().map(|n| Clip::load(&dir.join(n))).collect()
}

/// A fixture set of caller turns (`fixtures/turns/<set>/turns.json`): one WAV
/// per turn, each with a `complete` flag. The turns are padded with 300 ms of
/// silence before them so every caller starts from a quiet line.
pub fn load_fixture_set(dir: &Path) -> anyhow::Result<Vec<Clip>> {
    let manifest = dir.join("turns.json");
    let text = std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let Some(turns) = v["turns"].as_array() else { bail!("{}: no \"turns\" list", manifest.display()) };
    let mut out = Vec::new();
    for t in turns {
        let Some(file) = t["file"].as_str() else { bail!("{}: a turn without \"file\"", manifest.display()) };
        let path = dir.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (rate, pcm) = read_wav_mono_i16(&bytes).with_context(|| format!("decoding {}", path.display()))?;
        if rate != 8000 {
            bail!("{}: turns must be 8 kHz (got {rate} Hz)", path.display());
        }
        let mut padded = vec![0i16; 8 * 300];
        padded.extend_from_slice(&pcm);
        let mut c = Clip::from_pcm(file, &padded)?;
        c.complete = t["complete"].as_bool().unwrap_or(true);
        out.push(c);
    }
    if out.is_empty() {
        bail!("{}: no turns", manifest.display());
    }
    Ok(out)
}

/// Whether a µ-law frame from the bot carries sound.
pub fn is_sound(ulaw: &[u8]) -> bool {
    let mut pcm = [0i16; 160];
    let n = ulaw.len().min(160);
    g711::ulaw_decode(&ulaw[..n], &mut pcm);
    EnergyGate::level_dbfs(&pcm[..n]) > SPEECH_DBFS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_boundaries_are_found_where_the_sound_is() {
        let mut pcm = vec![0i16; 160 * 10];
        for s in &mut pcm[160 * 3..160 * 6 + 10] {
            *s = 8000;
        }
        let c = Clip::from_pcm("t", &pcm).unwrap();
        assert_eq!(c.frames.len(), 10);
        assert_eq!(c.speech_start, 3);
        assert_eq!(c.speech_end, 6);
        assert_eq!(c.tail_frames(), 3);
        assert!(Clip::from_pcm("s", &[0; 800]).is_err());
        assert!(is_sound(&c.frames[4]));
        assert_eq!(B64.decode(&c.b64[4]).unwrap(), c.frames[4]);
        assert!(!is_sound(&c.frames[0]));
    }

    #[test]
    fn shipped_clips_have_the_documented_padding() {
        let clips = load_caller_clips(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/audio"))).unwrap();
        for c in clips {
            // 300 ms of silence before the speech: frames 0..15.
            assert!((14..=16).contains(&c.speech_start), "{}: {}", c.name, c.speech_start);
            assert!(c.tail_frames() >= 25, "{}: at least 500 ms after", c.name);
        }
    }
}
