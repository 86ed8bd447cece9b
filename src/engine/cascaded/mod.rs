//! The cascaded engine: streaming speech-to-text → the backend's own words →
//! streaming text-to-speech. Callbridge is the ears and the mouth; the brain
//! is the backend, which answers each `turn.user` with what to say
//! ([`Engine::needs_brain`]).
//!
//! Two links: Deepgram live transcription ([`deepgram`], link 0) and
//! ElevenLabs multi-context speech ([`elevenlabs`], link 1). Both are sans-IO
//! codecs; this module only routes commands and events between them and the
//! session, allocates response ids (for TTS replies and for callbridge's own
//! clips alike), and turns their timings into stage latencies.
//!
//! Invariants: µ-law carriers' audio reaches Deepgram untouched and
//! ElevenLabs answers in `ulaw_8000`; other carriers use linear PCM at the
//! stream's rate both ways (`linear16`, `pcm_<rate>`). Provider keys come from the environment only and never
//! reach a log (the configs' `Debug` leaves them out).

pub mod deepgram;
pub mod elevenlabs;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::registry::{BuildError, EngineFactory, EngineRequest};
use super::{
    AudioChunk, AudioRef, Engine, EngineCommand, EngineEvent, EngineFormat, InputAudio, LinkEvent, LinkMsg, LinkSpec,
};
use crate::carrier::AudioFormat;
use crate::ids::ResponseId;
use deepgram::{DeepgramConfig, Stt, SttAudio, SttEvent};
use elevenlabs::{ElevenLabsConfig, Tts, TtsAudio, TtsEvent};

/// Link index of the transcriber.
pub const STT_LINK: usize = 0;
/// Link index of the voice.
pub const TTS_LINK: usize = 1;

/// `[engine.cascaded]`: defaults for calls whose plan says `"engine": "cascaded"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CascadedSettings {
    /// Said first when the plan gives no greeting ("" = wait for the caller).
    pub greeting: String,
    /// `[engine.cascaded.deepgram]`
    pub deepgram: DeepgramSettings,
    /// `[engine.cascaded.elevenlabs]`
    pub elevenlabs: ElevenLabsSettings,
    /// Deadline for connecting each socket.
    pub connect_timeout_ms: u64,
    /// Reconnects allowed per socket per call.
    pub reconnects: u32,
}

/// `[engine.cascaded.deepgram]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeepgramSettings {
    /// Listen endpoint (env `DEEPGRAM_URL` overrides).
    pub url: String,
    /// Model.
    pub model: String,
    /// Language ("" = the model's default).
    pub language: String,
    /// `endpointing` (ms of silence that ends a segment on Deepgram's side).
    pub endpointing_ms: u32,
    /// `utterance_end_ms` (≥ 1000).
    pub utterance_end_ms: u32,
    /// `smart_format`.
    pub smart_format: bool,
    /// Stop streaming after this much silence (0 = stream everything); a
    /// 400 ms pre-roll goes ahead of the next speech.
    pub silence_gate_ms: u32,
    /// How long our end of turn waits for `Finalize` to be answered.
    pub finalize_timeout_ms: u32,
}

/// `[engine.cascaded.elevenlabs]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ElevenLabsSettings {
    /// API base (env `ELEVENLABS_URL` overrides).
    pub url: String,
    /// Voice id (a plan's `voice` or `tts.voice_id` overrides).
    pub voice_id: String,
    /// Model.
    pub model_id: String,
    /// `generation_config.chunk_length_schedule` (each 50–500).
    pub chunk_length_schedule: Vec<u32>,
    /// Keep-alive period between turns.
    pub keepalive_s: u32,
    /// Text sent to be spoken with no audio for it this long: the response is
    /// given up (`engine_silent`) and the caller hears the fallback.
    pub answer_timeout_ms: u64,
}

impl Default for CascadedSettings {
    fn default() -> Self {
        Self {
            greeting: "Hello! How can I help you today?".into(),
            deepgram: DeepgramSettings::default(),
            elevenlabs: ElevenLabsSettings::default(),
            connect_timeout_ms: 5000,
            reconnects: 3,
        }
    }
}

impl Default for DeepgramSettings {
    fn default() -> Self {
        Self {
            url: "wss://api.deepgram.com/v1/listen".into(),
            model: "nova-3".into(),
            language: String::new(),
            endpointing_ms: 300,
            utterance_end_ms: 1000,
            smart_format: true,
            silence_gate_ms: 1500,
            finalize_timeout_ms: 800,
        }
    }
}

impl Default for ElevenLabsSettings {
    fn default() -> Self {
        Self {
            url: "wss://api.elevenlabs.io".into(),
            voice_id: "21m00Tcm4TlvDq8ikWAM".into(),
            model_id: "eleven_flash_v2_5".into(),
            chunk_length_schedule: vec![50, 120, 160, 250],
            keepalive_s: 15,
            answer_timeout_ms: 5000,
        }
    }
}

/// One call's cascaded engine.
#[derive(Debug)]
pub struct CascadedEngine {
    stt: Stt,
    tts: Tts,
    greeting: Option<String>,
    input: InputAudio,
    out_rate: u32,
    next_id: u32,
    /// The backend reply being spoken (more text may follow).
    reply: Option<ResponseId>,
    /// Links up at least once (STT, TTS): both → `Connected`.
    up: [bool; 2],
    events: VecDeque<EngineEvent>,
}

impl CascadedEngine {
    /// An engine speaking with `tts` and listening with `stt`.
    pub fn new(stt: DeepgramConfig, tts: ElevenLabsConfig, greeting: Option<String>) -> Self {
        let input = match stt.audio {
            SttAudio::Mulaw8k => InputAudio::Passthrough(AudioFormat::PCMU_8K),
            SttAudio::Linear16(rate) => InputAudio::Pcm { rate },
        };
        let out_rate = tts.audio.rate();
        Self {
            stt: Stt::new(stt),
            tts: Tts::new(tts),
            greeting,
            input,
            out_rate,
            next_id: 0,
            reply: None,
            up: [false; 2],
            events: VecDeque::with_capacity(8),
        }
    }

    fn new_response(&mut self) -> ResponseId {
        self.next_id += 1;
        let id = ResponseId(self.next_id);
        self.events.push_back(EngineEvent::ResponseStarted(id));
        id
    }

    fn speak(&mut self, now: Instant, text: &str, done: bool) {
        if text.trim().is_empty() && self.reply.is_none_or(|r| self.tts.speaking() != Some(r)) {
            self.reply = None;
            return; // closing a reply that is no longer being spoken (or nothing at all)
        }
        let id = match self.reply.filter(|r| self.tts.speaking() == Some(*r)) {
            Some(id) => id,
            None => {
                let id = self.new_response();
                self.tts.begin(now, id);
                id
            }
        };
        self.reply = (!done).then_some(id);
        self.tts.text(now, text, done);
    }

    fn drain(&mut self) {
        while let Some(ev) = self.stt.poll_event() {
            let ev = match ev {
                SttEvent::Partial(text) => EngineEvent::CallerTranscript { text, is_final: false },
                SttEvent::Final { text, latency } => {
                    self.events.push_back(EngineEvent::Stage { stage: "stt_final", latency });
                    EngineEvent::CallerTranscript { text, is_final: true }
                }
                // Deepgram's VAD also fires on the bot's own echo; barge-in
                // stays with our echo-checked VAD, which is faster anyway.
                SttEvent::SpeechStarted => continue,
                SttEvent::Down(message) => EngineEvent::Error { fatal: true, code: "stt_unavailable".into(), message },
            };
            self.events.push_back(ev);
        }
        while let Some(ev) = self.tts.poll_event() {
            self.events.push_back(match ev {
                TtsEvent::Audio(id, pcm) => EngineEvent::Audio(AudioChunk::whole(id, pcm.into())),
                TtsEvent::Alignment(response, chars, starts_ms) => {
                    EngineEvent::Alignment { response, chars, starts_ms }
                }
                TtsEvent::Text(id, text) => EngineEvent::AgentText(id, text),
                TtsEvent::FirstAudio(latency) => EngineEvent::Stage { stage: "tts_first_audio", latency },
                TtsEvent::Done(id) => EngineEvent::ResponseDone(id),
                TtsEvent::Silent(response, message) => {
                    EngineEvent::ResponseFailed { response, code: "engine_silent".into(), message }
                }
                TtsEvent::Down(message) => EngineEvent::Error { fatal: true, code: "tts_unavailable".into(), message },
            });
        }
    }
}

impl Engine for CascadedEngine {
    fn label(&self) -> &'static str {
        "cascaded"
    }

    fn format(&self) -> EngineFormat {
        EngineFormat { input: self.input, output_rate: self.out_rate }
    }

    fn speaks_text(&self) -> bool {
        true
    }

    fn transcribes_caller(&self) -> bool {
        true
    }

    fn needs_brain(&self) -> bool {
        true
    }

    fn links(&self) -> Vec<LinkSpec> {
        vec![self.stt.link(), self.tts.link()]
    }

    fn report(&self) -> super::EngineReport {
        super::EngineReport {
            model: format!("{} + {}", self.stt.model(), self.tts.model()),
            voice: self.tts.voice().to_string(),
            usage: Some(serde_json::json!({
                "stt_seconds": (self.stt.seconds_sent() * 10.0).round() / 10.0,
                "tts_characters": self.tts.characters_sent(),
            })),
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: EngineCommand<'_>) {
        match cmd {
            EngineCommand::Start => {
                if let Some(g) = self.greeting.take() {
                    self.speak(now, &g, true);
                }
            }
            EngineCommand::Audio(AudioRef::Encoded(b)) => self.stt.audio_ulaw(now, b),
            EngineCommand::Audio(AudioRef::Pcm(p)) => self.stt.audio_pcm(now, p),
            EngineCommand::EndOfTurn => self.stt.end_of_turn(now),
            EngineCommand::Cancel { response, .. } => {
                self.tts.cancel(now, response);
                if self.reply == Some(response) {
                    self.reply = None;
                }
            }
            EngineCommand::Say(text) => {
                self.reply = None;
                self.speak(now, &text, true);
            }
            EngineCommand::Reply { text, done } => self.speak(now, &text, done),
            EngineCommand::Play(clip) => {
                let id = self.new_response();
                let clip = crate::audio::resample::resample_clip(&clip, super::local::LOCAL_RATE, self.out_rate);
                self.events.push_back(EngineEvent::Audio(AudioChunk::whole(id, clip)));
                self.events.push_back(EngineEvent::ResponseDone(id));
            }
            // No model of its own asks for tools: the backend decides.
            EngineCommand::ToolResult { .. } => {}
            EngineCommand::Stop => {
                self.stt.stop(now);
                self.tts.stop(now);
            }
        }
        self.drain();
    }

    fn handle_link(&mut self, now: Instant, link: usize, ev: LinkEvent<'_>) {
        let result = match (link, ev) {
            (STT_LINK, LinkEvent::Text(t)) => self.stt.on_text(now, t),
            (TTS_LINK, LinkEvent::Text(t)) => self.tts.on_text(now, t),
            (STT_LINK, ev) => {
                match ev {
                    LinkEvent::Lost => self.stt.lost(),
                    LinkEvent::Up { reconnected } => self.stt.up(now, reconnected),
                    LinkEvent::Down(why) => self.stt.down(why),
                    LinkEvent::Text(_) | LinkEvent::Binary(_) => {}
                }
                Ok(())
            }
            (TTS_LINK, ev) => {
                match ev {
                    LinkEvent::Lost => self.tts.lost(),
                    LinkEvent::Up { reconnected } => self.tts.up(now, reconnected),
                    LinkEvent::Down(why) => self.tts.down(why),
                    LinkEvent::Text(_) | LinkEvent::Binary(_) => {}
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let (LinkEvent::Up { .. }, Some(u)) = (ev, self.up.get_mut(link))
            && !*u
        {
            *u = true;
            if self.up == [true; 2] {
                self.events.push_back(EngineEvent::Connected);
            }
        }
        if let Err(message) = result {
            let code = if link == STT_LINK { "stt_error" } else { "tts_error" };
            self.events.push_back(EngineEvent::Error { fatal: false, code: code.into(), message });
        }
        self.drain();
    }

    fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    fn poll_transmit(&mut self) -> Option<(usize, LinkMsg)> {
        if let Some(m) = self.stt.poll_transmit() {
            return Some((STT_LINK, m));
        }
        self.tts.poll_transmit().map(|m| (TTS_LINK, m))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.stt.poll_timeout(), self.tts.poll_timeout()].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.stt.handle_timeout(now);
        self.tts.handle_timeout(now);
        self.drain();
    }
}

/// Builds cascaded engines (Deepgram + ElevenLabs) from config, env keys and the plan.
pub struct CascadedFactory {
    settings: CascadedSettings,
    deepgram_key: Option<String>,
    elevenlabs_key: Option<String>,
}

impl std::fmt::Debug for CascadedFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CascadedFactory")
            .field("deepgram_key", &self.deepgram_key.as_ref().map(|_| "<set>"))
            .field("elevenlabs_key", &self.elevenlabs_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// Provider keys and URL overrides from the environment.
#[derive(Clone, Default)]
pub struct CascadedEnv {
    /// `DEEPGRAM_API_KEY`
    pub deepgram_key: Option<String>,
    /// `DEEPGRAM_URL`
    pub deepgram_url: Option<String>,
    /// `ELEVENLABS_API_KEY`
    pub elevenlabs_key: Option<String>,
    /// `ELEVENLABS_URL`
    pub elevenlabs_url: Option<String>,
}

impl CascadedFactory {
    /// A factory over `settings`, with the environment's keys and URLs.
    pub fn new(mut settings: CascadedSettings, env: CascadedEnv) -> Self {
        if let Some(u) = env.deepgram_url {
            settings.deepgram.url = u;
        }
        if let Some(u) = env.elevenlabs_url {
            settings.elevenlabs.url = u;
        }
        Self { settings, deepgram_key: env.deepgram_key, elevenlabs_key: env.elevenlabs_key }
    }
}

const NAME: &str = "cascaded";

impl EngineFactory for CascadedFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn available(&self) -> Result<(), BuildError> {
        match (&self.deepgram_key, &self.elevenlabs_key) {
            (Some(_), Some(_)) => Ok(()),
            (None, _) => Err(BuildError::NotConfigured { engine: NAME, why: "DEEPGRAM_API_KEY is not set".into() }),
            (_, None) => Err(BuildError::NotConfigured { engine: NAME, why: "ELEVENLABS_API_KEY is not set".into() }),
        }
    }

    fn build(&self, req: &EngineRequest<'_>) -> Result<Box<dyn Engine>, BuildError> {
        self.available()?;
        let s = &self.settings;
        let plan = req.plan;
        let stt_plan = plan.stt.clone().unwrap_or_default();
        let tts_plan = plan.tts.clone().unwrap_or_default();
        if let Some(p) = stt_plan.provider.as_deref().filter(|p| *p != "deepgram") {
            return Err(BuildError::Unsupported { engine: NAME, why: format!("no STT provider {p:?} (deepgram)") });
        }
        if let Some(p) = tts_plan.provider.as_deref().filter(|p| *p != "elevenlabs") {
            return Err(BuildError::Unsupported { engine: NAME, why: format!("no TTS provider {p:?} (elevenlabs)") });
        }
        // µ-law 8 kHz both ways untouched; anything else (A-law, L16, Opus) as
        // linear PCM at the stream's rate (the session decodes, and resamples
        // the voice when ElevenLabs has no PCM format at that rate).
        let ulaw = req.stream == AudioFormat::PCMU_8K;
        let rate = req.stream.rate;
        let voice_rate = if [8000, 16000, 22050, 24000, 44100, 48000].contains(&rate) { rate } else { 16000 };
        let connect_timeout = Duration::from_millis(s.connect_timeout_ms);
        let dg = &s.deepgram;
        let stt = DeepgramConfig {
            url: dg.url.clone(),
            api_key: self.deepgram_key.clone().unwrap_or_default(),
            model: stt_plan.model.unwrap_or_else(|| dg.model.clone()),
            language: stt_plan.language.unwrap_or_else(|| dg.language.clone()),
            endpointing_ms: stt_plan.endpointing_ms.unwrap_or(dg.endpointing_ms),
            utterance_end_ms: stt_plan.utterance_end_ms.unwrap_or(dg.utterance_end_ms),
            smart_format: dg.smart_format,
            audio: if ulaw { SttAudio::Mulaw8k } else { SttAudio::Linear16(rate) },
            keepalive: Duration::from_secs(4),
            gate_hangover: (dg.silence_gate_ms > 0).then(|| Duration::from_millis(dg.silence_gate_ms.into())),
            finalize_timeout: Duration::from_millis(dg.finalize_timeout_ms.into()),
            reconnects: s.reconnects,
            connect_timeout,
        };
        let el = &s.elevenlabs;
        let tts = ElevenLabsConfig {
            base_url: el.url.clone(),
            api_key: self.elevenlabs_key.clone().unwrap_or_default(),
            voice_id: tts_plan.voice_id.or_else(|| plan.voice.clone()).unwrap_or_else(|| el.voice_id.clone()),
            model_id: tts_plan.model_id.unwrap_or_else(|| el.model_id.clone()),
            audio: if ulaw { TtsAudio::Ulaw8k } else { TtsAudio::Pcm(voice_rate) },
            voice_settings: tts_plan.voice_settings.unwrap_or(serde_json::Value::Null),
            chunk_length_schedule: el.chunk_length_schedule.iter().map(|&n| n.clamp(50, 500)).collect(),
            keepalive: Duration::from_secs(el.keepalive_s.max(1).into()),
            answer_timeout: Duration::from_millis(el.answer_timeout_ms.max(100)),
            reconnects: s.reconnects,
            connect_timeout,
        };
        let greeting = req
            .greet
            .then(|| plan.greeting.clone().or_else(|| Some(s.greeting.clone())))
            .flatten()
            .filter(|g| !g.trim().is_empty());
        Ok(Box::new(CascadedEngine::new(stt, tts, greeting)))
    }
}
