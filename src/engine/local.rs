//! The embedded local engine: answers with no keys, no network, no callback.
//!
//! It plays an optional greeting when the call starts and a fixed reply clip at
//! the end of every caller turn. Clips are decoded once at start-up and shared by
//! every call (`Arc<[i16]>`), so a response costs one `Arc` clone and no copy.
//! It answers in the same instant it is asked, which makes it the reference
//! engine for latency benchmarks: everything measured is callbridge itself.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use std::time::Instant;

use super::{AudioChunk, Engine, EngineCommand, EngineEvent, EngineFormat, InputAudio};
use crate::audio::resample::Resampler;
use crate::audio::wav::{WavError, read_wav_mono_i16};
use crate::ids::ResponseId;

/// The built-in greeting ("Thanks for calling Rapid Rooter plumbing…").
pub const BUILTIN_GREETING: &[u8] = include_bytes!("../../fixtures/audio/bot_greeting_8k.wav");
/// The built-in reply ("Got it. I can book a technician…").
pub const BUILTIN_REPLY: &[u8] = include_bytes!("../../fixtures/audio/bot_reply_8k.wav");

/// Built-in "One moment, please." (played while a blocking callback is slow).
pub const BUILTIN_FILLER: &[u8] = include_bytes!("../../fixtures/audio/bot_filler_8k.wav");
/// Built-in fallback line (a blocking callback failed).
pub const BUILTIN_FALLBACK: &[u8] = include_bytes!("../../fixtures/audio/bot_fallback_8k.wav");
/// Built-in apology (the engine dropped and came back).
pub const BUILTIN_APOLOGY: &[u8] = include_bytes!("../../fixtures/audio/bot_apology_8k.wav");
/// Built-in line for a caller back from a transfer that did not connect.
pub const BUILTIN_TRANSFER_FAILED: &[u8] = include_bytes!("../../fixtures/audio/bot_transfer_failed_8k.wav");
/// Built-in goodbye at the plan's time limit.
pub const BUILTIN_GOODBYE_TIME: &[u8] = include_bytes!("../../fixtures/audio/bot_goodbye_time_8k.wav");
/// Built-in goodbye after the plan's silence timeout.
pub const BUILTIN_GOODBYE_SILENCE: &[u8] = include_bytes!("../../fixtures/audio/bot_goodbye_silence_8k.wav");

/// Decode a WAV (any rate our resampler takes) to trimmed 8 kHz PCM.
pub fn clip_from_wav(bytes: &[u8], origin: &str) -> Result<Arc<[i16]>, LocalEngineError> {
    decode_clip(bytes, origin)
}

/// Rate the local engine's clips (and callbridge's own lines) are converted to at load time.
pub const LOCAL_RATE: u32 = 8000;

/// Errors loading clips.
#[derive(Debug, thiserror::Error)]
pub enum LocalEngineError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// path given in config
        path: String,
        /// cause
        source: std::io::Error,
    },
    /// Not a usable WAV.
    #[error("{path}: {source}")]
    Wav {
        /// path given in config
        path: String,
        /// cause
        source: WavError,
    },
    /// The clip's rate cannot be converted to 8 kHz.
    #[error("{path}: cannot resample {rate} Hz to 8000 Hz")]
    Rate {
        /// path given in config
        path: String,
        /// clip rate
        rate: u32,
    },
}

/// Clips shared by every call using the local engine.
#[derive(Debug, Clone)]
pub struct LocalClips {
    /// Played when the call starts, if any.
    pub greeting: Option<Arc<[i16]>>,
    /// Played at the end of every caller turn.
    pub reply: Arc<[i16]>,
}

impl LocalClips {
    /// Load clips named in config: a path, `builtin:greeting`, `builtin:reply`,
    /// or empty for no greeting.
    pub fn load(greeting: &str, reply: &str) -> Result<Self, LocalEngineError> {
        let greeting = if greeting.trim().is_empty() { None } else { Some(load_clip(greeting)?) };
        let reply = load_clip(if reply.trim().is_empty() { "builtin:reply" } else { reply })?;
        Ok(Self { greeting, reply })
    }

    /// The built-in clips.
    pub fn builtin() -> Self {
        Self::load("builtin:greeting", "builtin:reply").expect("built-in clips are valid")
    }
}

/// Load a clip: a WAV path or `builtin:{greeting,reply,filler,fallback,apology}`.
pub fn load_clip(spec: &str) -> Result<Arc<[i16]>, LocalEngineError> {
    let bytes: std::borrow::Cow<'static, [u8]> = match spec {
        "builtin:greeting" => BUILTIN_GREETING.into(),
        "builtin:reply" => BUILTIN_REPLY.into(),
        "builtin:filler" => BUILTIN_FILLER.into(),
        "builtin:fallback" => BUILTIN_FALLBACK.into(),
        "builtin:apology" => BUILTIN_APOLOGY.into(),
        "builtin:transfer_failed" => BUILTIN_TRANSFER_FAILED.into(),
        "builtin:goodbye_time" => BUILTIN_GOODBYE_TIME.into(),
        "builtin:goodbye_silence" => BUILTIN_GOODBYE_SILENCE.into(),
        path => std::fs::read(Path::new(path))
            .map_err(|source| LocalEngineError::Io { path: path.to_string(), source })?
            .into(),
    };
    decode_clip(&bytes, spec)
}

fn decode_clip(bytes: &[u8], spec: &str) -> Result<Arc<[i16]>, LocalEngineError> {
    let (rate, samples) =
        read_wav_mono_i16(bytes).map_err(|source| LocalEngineError::Wav { path: spec.to_string(), source })?;
    if rate == LOCAL_RATE {
        return Ok(trim_silence(&samples, rate).into());
    }
    let block = rate as usize / 50;
    let mut r =
        Resampler::new(rate, LOCAL_RATE, block).map_err(|_| LocalEngineError::Rate { path: spec.to_string(), rate })?;
    let mut out = Vec::with_capacity(samples.len() * LOCAL_RATE as usize / rate as usize + 2);
    let mut buf = vec![0i16; LOCAL_RATE as usize / 50 + 2];
    for chunk in samples.chunks(block) {
        let n = r.process(chunk, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }
    Ok(trim_silence(&out, LOCAL_RATE).into())
}

/// Samples quieter than this are silence for trimming (≈ −54 dBFS).
const TRIM_THRESHOLD: i16 = 64;

/// Drop leading silence (the engine must answer with sound at once, not with
/// the clip's padding) and keep at most 100 ms of trailing silence.
pub fn trim_silence(samples: &[i16], rate: u32) -> Vec<i16> {
    let start = samples.iter().position(|s| s.unsigned_abs() >= TRIM_THRESHOLD as u16).unwrap_or(samples.len());
    let end = samples.iter().rposition(|s| s.unsigned_abs() >= TRIM_THRESHOLD as u16).map_or(start, |e| e + 1);
    let tail = (rate as usize / 10).min(samples.len() - end);
    samples[start..end + tail].to_vec()
}

/// One call's local engine.
#[derive(Debug)]
pub struct LocalEngine {
    clips: LocalClips,
    next_id: u32,
    events: VecDeque<EngineEvent>,
}

impl LocalEngine {
    /// An engine playing `clips`.
    pub fn new(clips: LocalClips) -> Self {
        Self { clips, next_id: 0, events: VecDeque::with_capacity(4) }
    }

    fn respond(&mut self, clip: Arc<[i16]>) {
        self.next_id += 1;
        let id = ResponseId(self.next_id);
        self.events.push_back(EngineEvent::ResponseStarted(id));
        self.events.push_back(EngineEvent::Audio(AudioChunk::whole(id, clip)));
        self.events.push_back(EngineEvent::ResponseDone(id));
    }
}

impl Engine for LocalEngine {
    fn label(&self) -> &'static str {
        "local"
    }

    fn report(&self) -> super::EngineReport {
        super::EngineReport { model: "local".into(), ..Default::default() }
    }

    /// Wants no caller audio, speaks 8 kHz.
    fn format(&self) -> EngineFormat {
        EngineFormat { input: InputAudio::None, output_rate: LOCAL_RATE }
    }

    /// Answers are queued immediately.
    fn handle_command(&mut self, _now: Instant, cmd: EngineCommand<'_>) {
        match cmd {
            EngineCommand::Start => {
                self.events.push_back(EngineEvent::Connected);
                if let Some(g) = self.clips.greeting.clone() {
                    self.respond(g);
                }
            }
            EngineCommand::EndOfTurn => self.respond(self.clips.reply.clone()),
            EngineCommand::Play(clip) => self.respond(clip),
            // Responses are emitted whole, so there is nothing left to stop here;
            // the session drops the queued audio by id. Text and tools it cannot do
            // (the session never sends them: `speaks_text` is false, no tools).
            EngineCommand::Cancel { .. }
            | EngineCommand::Audio(_)
            | EngineCommand::Say(_)
            | EngineCommand::Reply { .. }
            | EngineCommand::ToolResult { .. }
            | EngineCommand::Stop => {}
        }
    }

    fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }
}

/// Builds the local engine for every call (it always builds: the fallback).
#[derive(Debug, Clone)]
pub struct LocalFactory {
    clips: LocalClips,
}

impl LocalFactory {
    /// Calls answered with `clips`.
    pub fn new(clips: LocalClips) -> Self {
        Self { clips }
    }
}

impl super::registry::EngineFactory for LocalFactory {
    fn name(&self) -> &'static str {
        "local"
    }

    fn build(&self, req: &super::registry::EngineRequest<'_>) -> Result<Box<dyn Engine>, super::registry::BuildError> {
        let mut clips = self.clips.clone();
        if !req.greet {
            clips.greeting = None;
        }
        Ok(Box::new(LocalEngine::new(clips)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_then_replies_with_new_ids() {
        let now = Instant::now();
        let mut e = LocalEngine::new(LocalClips::builtin());
        e.handle_command(now, EngineCommand::Start);
        assert_eq!(e.poll_event(), Some(EngineEvent::Connected));
        assert_eq!(e.poll_event(), Some(EngineEvent::ResponseStarted(ResponseId(1))));
        assert!(matches!(e.poll_event(), Some(EngineEvent::Audio(c)) if c.len() > 8000));
        assert_eq!(e.poll_event(), Some(EngineEvent::ResponseDone(ResponseId(1))));
        assert_eq!(e.poll_event(), None);
        e.handle_command(now, EngineCommand::EndOfTurn);
        assert_eq!(e.poll_event(), Some(EngineEvent::ResponseStarted(ResponseId(2))));
    }

    #[test]
    fn clips_start_with_sound() {
        let clips = LocalClips::builtin();
        assert!(clips.reply[..40].iter().any(|s| s.unsigned_abs() >= 64));
        assert_eq!(trim_silence(&[0, 0, 5, 100, -200, 3, 0], 8000), vec![100, -200, 3, 0]);
        assert_eq!(trim_silence(&[0; 10], 8000), Vec::<i16>::new());
    }

    #[test]
    fn empty_greeting_means_none_and_16k_clips_are_converted() {
        let clips = LocalClips::load("", "fixtures/audio/caller_leak_16k.wav").unwrap();
        assert!(clips.greeting.is_none());
        let (_, s16) = read_wav_mono_i16(&std::fs::read("fixtures/audio/caller_leak_16k.wav").unwrap()).unwrap();
        let trimmed16 = trim_silence(&s16, 16000);
        assert!((clips.reply.len() as i64 - trimmed16.len() as i64 / 2).abs() <= 160);
        let mut e = LocalEngine::new(clips);
        e.handle_command(Instant::now(), EngineCommand::Start);
        assert_eq!(e.poll_event(), Some(EngineEvent::Connected));
        assert_eq!(e.poll_event(), None, "no greeting");
        assert!(LocalClips::load("", "/nonexistent.wav").is_err());
    }
}
