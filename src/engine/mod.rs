//! Speech engines: what the session asks of them and what they answer.
//!
//! An engine codec turns [`EngineCommand`]s into its wire protocol and its wire
//! messages into [`EngineEvent`]s. Like carrier codecs they are sans-IO; the
//! runtime owns any socket. The embedded [`local::LocalEngine`] needs no socket
//! at all. Response ids are allocated by the engine side and are monotonic per
//! call, so the session drops stale audio by comparing ids.

pub mod local;
pub mod openai_realtime;

use std::sync::Arc;

use crate::ids::ResponseId;

/// A slice of shared response audio (linear PCM at the engine's output rate).
///
/// Sharing matters: the local engine hands every call the same clip without a
/// copy; network engines wrap each received delta once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChunk {
    /// The response this audio belongs to.
    pub response: ResponseId,
    /// Backing samples.
    pub samples: Arc<[i16]>,
    /// Start of the live range in `samples`.
    pub start: usize,
    /// End (exclusive) of the live range.
    pub end: usize,
}

impl AudioChunk {
    /// A chunk covering all of `samples`.
    pub fn whole(response: ResponseId, samples: Arc<[i16]>) -> Self {
        let end = samples.len();
        Self { response, samples, start: 0, end }
    }

    /// The live samples.
    pub fn as_slice(&self) -> &[i16] {
        &self.samples[self.start..self.end]
    }

    /// Number of live samples.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether no samples are left.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// What the session asks of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineCommand<'a> {
    /// The call is up; the engine may speak first (greeting).
    Start,
    /// Caller audio at the engine's input rate.
    Audio(&'a [i16]),
    /// The caller's turn ended: answer it.
    CreateResponse,
    /// Stop producing `response`; the caller heard its first `heard_ms`.
    Cancel {
        /// the interrupted response
        response: ResponseId,
        /// how much of it the caller heard
        heard_ms: u32,
    },
    /// The call is over.
    Stop,
}

/// What an engine tells the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// A response began; audio with this id follows.
    ResponseStarted(ResponseId),
    /// Response audio.
    Audio(AudioChunk),
    /// The engine finished producing `ResponseId` (all its audio was emitted).
    ResponseDone(ResponseId),
}

/// Audio formats an engine works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineFormat {
    /// Rate of caller audio it wants, or `None` if it wants none (local engine).
    pub input_rate: Option<u32>,
    /// Rate of the audio it produces.
    pub output_rate: u32,
}
