//! The call's engine, whichever it is, behind one set of calls the call task
//! makes: take a session command, yield engine events, play a clip of ours,
//! speak text, forward caller audio, flush messages to the engine socket.
//!
//! The local engine answers in the same instant; the realtime engine turns
//! commands into messages on its [`EngineLink`] (never awaited: a full lane
//! drops audio and counts it) and keeps its non-audio outputs (transcripts,
//! tool calls, errors, the engine's own speech detection) for the call task.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::audio::resample::Resampler;
use crate::engine::local::{LOCAL_RATE, LocalEngine};
use crate::engine::openai_realtime::{RealtimeCodec, RealtimeOutput, WireAudio};
use crate::engine::{EngineCommand, EngineEvent, EngineFormat};
use crate::runtime::engine_link::{EngineLink, SendError};

/// A realtime engine with its socket.
#[derive(Debug)]
pub struct Realtime {
    /// Protocol state.
    pub codec: RealtimeCodec,
    /// The socket task.
    pub link: EngineLink,
    msg: String,
    /// Non-audio outputs for the call task.
    pub side: VecDeque<RealtimeOutput>,
    /// When the last response was asked for (engine time to first audio).
    pub asked_at: Option<Instant>,
    /// Messages dropped because the lane was full.
    pub dropped: u64,
}

impl Realtime {
    /// Wrap a codec and its link.
    pub fn new(codec: RealtimeCodec, link: EngineLink) -> Self {
        Self { codec, link, msg: String::with_capacity(512), side: VecDeque::new(), asked_at: None, dropped: 0 }
    }

    fn send_msg(&mut self) {
        if self.msg.is_empty() {
            return;
        }
        let m = std::mem::replace(&mut self.msg, String::with_capacity(512));
        if let Err(SendError::Full) = self.link.send(m) {
            self.dropped += 1;
            metrics::counter!(crate::metrics::ENGINE_DROPPED).increment(1);
        }
    }
}

/// The engine of one call.
#[derive(Debug)]
pub enum Engine {
    /// Embedded clips.
    Local(LocalEngine),
    /// OpenAI Realtime.
    Realtime(Box<Realtime>),
}

impl Engine {
    /// Metrics and logs label.
    pub fn label(&self) -> &'static str {
        match self {
            Engine::Local(_) => "local",
            Engine::Realtime(_) => "openai_realtime",
        }
    }

    /// Audio formats.
    pub fn format(&self) -> EngineFormat {
        match self {
            Engine::Local(e) => e.format(),
            Engine::Realtime(r) => r.codec.format(),
        }
    }

    /// A session command.
    pub fn command(&mut self, cmd: EngineCommand<'_>, now: Instant) {
        match self {
            Engine::Local(e) => e.handle_command(cmd),
            Engine::Realtime(r) => {
                if matches!(cmd, EngineCommand::CreateResponse) {
                    r.asked_at = Some(now);
                }
                let Realtime { codec, msg, .. } = &mut **r;
                codec.handle_command(cmd, msg);
                r.send_msg();
            }
        }
    }

    /// Next event for the session (other realtime outputs go to `side`).
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        match self {
            Engine::Local(e) => e.poll_event(),
            Engine::Realtime(r) => loop {
                match r.codec.poll_output()? {
                    RealtimeOutput::Engine(ev) => return Some(ev),
                    other => r.side.push_back(other),
                }
            },
        }
    }

    /// Send whatever the codec queued (realtime).
    pub fn flush(&mut self) {
        if let Engine::Realtime(r) = self {
            while let Some(m) = r.codec.poll_message() {
                r.msg = m;
                r.send_msg();
            }
        }
    }

    /// Forward the carrier's µ-law bytes as they came (realtime, pcmu).
    pub fn forward_ulaw(&mut self, ulaw: &[u8]) {
        if let Engine::Realtime(r) = self
            && r.codec.config().audio == WireAudio::Pcmu
            && !ulaw.is_empty()
        {
            let Realtime { codec, msg, .. } = &mut **r;
            codec.append_ulaw(ulaw, msg);
            r.send_msg();
        }
    }

    /// Play a clip of ours (8 kHz) as its own response.
    pub fn inject(&mut self, clip: &Arc<[i16]>) {
        match self {
            Engine::Local(e) => e.say(clip.clone()),
            Engine::Realtime(r) => {
                let rate = r.codec.format().output_rate;
                r.codec.inject_clip(resample_clip(clip, LOCAL_RATE, rate));
            }
        }
    }

    /// Speak text, if the engine can.
    pub fn say_text(&mut self, text: &str) -> Result<(), String> {
        match self {
            Engine::Local(_) => Err("the local engine cannot speak text; send audio_url".into()),
            Engine::Realtime(r) => {
                r.codec.say_text(text);
                Ok(())
            }
        }
    }
}

/// `clip` at `to` Hz (shared unchanged when the rates match).
pub fn resample_clip(clip: &Arc<[i16]>, from: u32, to: u32) -> Arc<[i16]> {
    if from == to {
        return clip.clone();
    }
    let block = (from / 50) as usize;
    let Ok(mut r) = Resampler::new(from, to, block) else { return clip.clone() };
    let mut out = Vec::with_capacity(clip.len() * to as usize / from as usize + 8);
    let mut buf = vec![0i16; (to / 50) as usize + 8];
    for chunk in clip.chunks(block) {
        let n = r.process(chunk, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }
    out.into()
}
