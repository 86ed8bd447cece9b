//! The session's dealings with the backend and with what an engine says
//! besides audio: tool calls (a blocking request each, with the filler after
//! `filler_after`, a budget, and the fallback line on failure), transcripts
//! and agent text for the conversation record, engine trouble (reconnect →
//! apology, failed response → fallback, fatal error → end of call), and the
//! fallback line when the call plan could not be fetched.
//!
//! Sans-IO like the rest of the session: requests go out as
//! [`super::Output::Request`], answers come back as [`super::Input::Reply`],
//! and every deadline is a [`super::Session::poll_timeout`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::conversation::Conversation;
use super::{Cold, HangupReason, Phase, Session};
use crate::contract::{Event, ToolResult};
use crate::engine::{EngineCommand, EngineEvent};

/// Short lines callbridge itself speaks, whatever the engine: 8 kHz PCM.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompts {
    /// While waiting on a slow blocking callback.
    pub filler: Arc<[i16]>,
    /// When a blocking callback failed or timed out, or a response failed.
    pub fallback: Arc<[i16]>,
    /// After an engine reconnect.
    pub apology: Arc<[i16]>,
    /// When a transfer did not connect and the caller is back.
    pub transfer_failed: Arc<[i16]>,
    /// Before hanging up at the plan's `max_duration_s`.
    pub goodbye_time: Arc<[i16]>,
    /// Before hanging up after the plan's `silence_timeout_s`.
    pub goodbye_silence: Arc<[i16]>,
}

impl Prompts {
    /// The built-in prompts.
    pub fn builtin() -> Self {
        let load = |s: &str| crate::engine::local::load_clip(s).expect("built-in prompts are valid");
        Self {
            filler: load("builtin:filler"),
            fallback: load("builtin:fallback"),
            apology: load("builtin:apology"),
            transfer_failed: load("builtin:transfer_failed"),
            goodbye_time: load("builtin:goodbye_time"),
            goodbye_silence: load("builtin:goodbye_silence"),
        }
    }
}

/// The backend side of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Lines callbridge speaks itself.
    pub prompts: Prompts,
    /// A blocking request still unanswered after this: the caller hears the filler.
    pub filler_after: Duration,
    /// Budget of a blocking request; past it (plus a little grace for the
    /// shell's own timeout to answer first) it has failed.
    pub blocking_timeout: Duration,
    /// Keep the conversation and emit callback events (a backend or the store
    /// listens). Off, the session allocates nothing per turn.
    pub events: bool,
    /// A backend answers tool calls.
    pub backend: bool,
    /// The engine transcribes the caller: hold each `turn.user` for its text.
    pub expect_transcripts: bool,
    /// The backend is the brain: `turn.user` is a blocking request whose
    /// reply the engine speaks ([`crate::engine::Engine::needs_brain`]).
    pub brain: bool,
    /// The call plan could not be fetched: say the fallback line first.
    pub plan_failed: bool,
    /// The call comes back from a failed transfer: say so first.
    pub resumed: bool,
    /// Live events the plan asked for.
    pub live: LiveEvents,
    /// Hang up (after a goodbye line) this long after the stream started.
    pub max_duration: Option<Duration>,
    /// Hang up (after a goodbye line) when nobody spoke for this long.
    pub silence_timeout: Option<Duration>,
    /// Built-in tools the engine may call (`end_call`, `transfer_call`, `send_dtmf`).
    pub builtins: super::builtin::Builtins,
    /// The greeting may be talked over (false: barge-in waits until it ends).
    pub greeting_interruptible: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            prompts: Prompts::builtin(),
            filler_after: Duration::from_millis(700),
            blocking_timeout: Duration::from_millis(1500),
            events: false,
            backend: false,
            expect_transcripts: false,
            brain: false,
            plan_failed: false,
            resumed: false,
            live: LiveEvents::default(),
            max_duration: None,
            silence_timeout: None,
            builtins: Default::default(),
            greeting_interruptible: true,
        }
    }
}

/// Opt-in live events (the plan's `events`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveEvents {
    /// `call.status`.
    pub status: bool,
    /// `speech.started` / `speech.stopped`.
    pub speech: bool,
    /// `transcript.partial`.
    pub partial: bool,
}

impl LiveEvents {
    /// From the plan's list of names (unknown ones ignored).
    pub fn from_names(names: &[String]) -> Self {
        let has = |n: &str| names.iter().any(|x| x == n);
        Self { status: has("call.status"), speech: has("speech"), partial: has("transcript.partial") }
    }
}

/// Extra time the session gives a blocking request past its budget before
/// failing it itself (the shell's HTTP timeout normally answers first, with a
/// more precise reason).
const GRACE: Duration = Duration::from_millis(250);

/// Identifies a blocking request within the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A blocking callback request: the event to POST; the reply is awaited.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Our id (answer with the same).
    pub id: RequestId,
    /// The event (`tool.call`).
    pub event: Event,
}

/// Why a blocking request has no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyFailure {
    /// Stable kind for metrics (`timeout`, `http_5xx`, `unreachable`, …).
    pub kind: &'static str,
    /// Detail for logs and the transcript.
    pub message: String,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request answered.
    pub id: RequestId,
    /// The backend's JSON, or why there is none.
    pub result: Result<serde_json::Value, ReplyFailure>,
}

/// Something that went wrong, for the operator (a metric and a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// Where: `engine` or `tool`.
    pub source: &'static str,
    /// Stable kind for metrics (`reconnected`, `fatal_error`, `error`, `response_failed`, …).
    pub kind: &'static str,
    /// The engine's or backend's code.
    pub code: String,
    /// Detail.
    pub message: String,
}

#[derive(Debug)]
struct PendingTool {
    id: RequestId,
    call_id: String,
    started: Instant,
    filler_played: bool,
}

/// The agent's state (owned by the session).
#[derive(Debug)]
pub(super) struct Agent {
    pub(super) cfg: AgentConfig,
    pub(super) brain: super::brain::Brain,
    pub(super) end_call: super::builtin::EndCall,
    pub(super) conversation: Conversation,
    tools: Vec<PendingTool>,
    next_request: u64,
}

impl Agent {
    pub(super) fn new(cfg: AgentConfig, now: Instant) -> Self {
        let mut conversation = Conversation::new(now);
        conversation.expect_transcripts(cfg.expect_transcripts, cfg.brain);
        Self {
            cfg,
            brain: Default::default(),
            end_call: Default::default(),
            conversation,
            tools: Vec::new(),
            next_request: 0,
        }
    }

    pub(super) fn new_request(&mut self) -> super::RequestId {
        self.next_request += 1;
        super::RequestId(self.next_request)
    }

    pub(super) fn events_on(&self) -> bool {
        self.cfg.events
    }

    /// The live events wanted (none unless events are on).
    pub(super) fn live(&self) -> LiveEvents {
        if self.cfg.events { self.cfg.live } else { LiveEvents::default() }
    }

    /// The stream started: the conversation's clock starts now.
    pub(super) fn started(&mut self, now: Instant) {
        let mut c = Conversation::new(now);
        c.expect_transcripts(self.cfg.expect_transcripts, self.cfg.brain);
        self.conversation = c;
    }

    /// The goodbye line before a time limit hangs up.
    pub(super) fn goodbye(&self, max_duration: bool) -> Arc<[i16]> {
        let p = &self.cfg.prompts;
        if max_duration { p.goodbye_time.clone() } else { p.goodbye_silence.clone() }
    }

    /// The line to say before anything else: the plan failed, or a transfer did.
    pub(super) fn fallback_at_start(&self) -> Option<Arc<[i16]>> {
        if self.cfg.resumed {
            return Some(self.cfg.prompts.transfer_failed.clone());
        }
        self.cfg.plan_failed.then(|| self.cfg.prompts.fallback.clone())
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let brain = self.brain.deadline(self.cfg.filler_after, self.cfg.blocking_timeout + GRACE);
        self.tools
            .iter()
            .map(|t| {
                let budget = t.started + self.cfg.blocking_timeout + GRACE;
                if t.filler_played { budget } else { budget.min(t.started + self.cfg.filler_after) }
            })
            .chain(brain)
            .min()
    }
}

impl Session {
    pub(super) fn incident(&mut self, source: &'static str, kind: &'static str, code: &str, message: &str) {
        self.cold(Cold::Incident(Incident { source, kind, code: code.into(), message: message.into() }));
        if self.agent.events_on() && kind != "reconnected" {
            self.cold(Cold::Event(Event::Error {
                source: source.into(),
                code: code.chars().take(64).collect(),
                message: message.chars().take(300).collect(),
            }));
        }
    }

    pub(super) fn play(&mut self, clip: Arc<[i16]>) {
        self.cold(Cold::Engine(EngineCommand::Play(clip)));
    }

    /// What an engine said besides audio and its own speech detection.
    pub(super) fn agent_engine_event(&mut self, ev: EngineEvent) {
        match ev {
            EngineEvent::AgentText(id, delta) => {
                if self.agent.events_on() {
                    self.agent.conversation.response_text(id, &delta);
                }
            }
            EngineEvent::CallerTranscript { text, is_final: true } => {
                if self.agent.events_on()
                    && let Some(ev) = self.agent.conversation.user_transcript(text)
                {
                    if self.agent.cfg.brain {
                        self.brain_turn(ev);
                    } else {
                        self.cold(Cold::Event(ev));
                    }
                }
            }
            EngineEvent::Alignment { response, chars, starts_ms } => {
                let stale = self.cancelled_upto.is_some_and(|c| response <= c);
                if self.agent.events_on() && !stale {
                    self.agent.conversation.alignment(response, &chars, &starts_ms);
                }
            }
            EngineEvent::Stage { stage, latency } => self.telemetry(super::Telemetry::Stage { stage, latency }),
            EngineEvent::CallerTranscript { text, is_final: false } => {
                if self.agent.live().partial {
                    let at_ms = self.agent.conversation.at_ms(self.now);
                    self.cold(Cold::Event(Event::TranscriptPartial { text, at_ms }));
                }
            }
            EngineEvent::ToolCall { call_id, name, arguments } => self.tool_call(call_id, name, arguments),
            EngineEvent::Reconnected => {
                self.incident(
                    "engine",
                    "reconnected",
                    "reconnected",
                    "engine reconnected; the caller hears an apology",
                );
                // What was playing is incomplete: stop it, then apologise.
                self.interrupt(None);
                self.play(self.agent.cfg.prompts.apology.clone());
            }
            EngineEvent::ResponseFailed { code, message, .. } => {
                self.incident("engine", "response_failed", &code, &message);
                self.play(self.agent.cfg.prompts.fallback.clone());
            }
            EngineEvent::Error { fatal: true, code, message } => {
                self.incident("engine", "fatal_error", &code, &message);
                self.end(HangupReason::EngineError);
            }
            EngineEvent::Error { fatal: false, code, message } => self.incident("engine", "error", &code, &message),
            EngineEvent::Connected => {
                let status = self.agent.live().status;
                self.live(status, |at_ms| Event::CallStatus { status: "engine_connected".into(), at_ms }, self.now);
            }
            EngineEvent::ResponseStarted(_)
            | EngineEvent::Audio(_)
            | EngineEvent::ResponseDone(_)
            | EngineEvent::SpeechStarted => {}
        }
    }

    /// Ask the backend to run a tool (a blocking request).
    fn tool_call(&mut self, call_id: String, name: String, arguments: serde_json::Value) {
        if self.builtin_tool(&call_id, &name, &arguments) {
            return;
        }
        if !self.agent.cfg.backend {
            // No backend: tell the model so it does not wait.
            let output = json!({"error": "no backend handles tools for this call"});
            self.cold(Cold::Engine(EngineCommand::ToolResult { call_id, output, respond: true }));
            return;
        }
        let id = self.agent.new_request();
        self.agent.tools.push(PendingTool { id, call_id: call_id.clone(), started: self.now, filler_played: false });
        let event = Event::ToolCall { tool_call_id: call_id, name, arguments };
        self.cold(Cold::Request(Request { id, event }));
    }

    /// The backend answered a request.
    pub(super) fn agent_reply(&mut self, reply: Reply) {
        if self.brain_owns(reply.id) {
            self.brain_reply(reply.result);
            return;
        }
        let Some(i) = self.agent.tools.iter().position(|t| t.id == reply.id) else {
            return; // already failed by its deadline
        };
        let tool = self.agent.tools.remove(i);
        self.tool_outcome(tool, reply.result);
    }

    fn tool_outcome(&mut self, tool: PendingTool, result: Result<serde_json::Value, ReplyFailure>) {
        match result {
            Ok(v) => {
                let output = ToolResult::from_reply(v).result;
                self.cold(Cold::Note("tool.result", json!({"tool_call_id": tool.call_id, "result": output})));
                self.cold(Cold::Engine(EngineCommand::ToolResult { call_id: tool.call_id, output, respond: true }));
            }
            Err(f) => {
                self.cold(Cold::Note("tool.result", json!({"tool_call_id": tool.call_id, "error": f.message})));
                self.incident("tool", f.kind, f.kind, &f.message);
                let output = json!({"error": "the tool is unavailable right now"});
                self.cold(Cold::Engine(EngineCommand::ToolResult { call_id: tool.call_id, output, respond: false }));
                self.play(self.agent.cfg.prompts.fallback.clone());
            }
        }
    }

    /// Deadlines: fillers due, requests past their budget.
    pub(super) fn agent_timeout(&mut self) {
        if self.phase != Phase::Active {
            return;
        }
        let now = self.now;
        let (filler_after, budget) = (self.agent.cfg.filler_after, self.agent.cfg.blocking_timeout + GRACE);
        self.brain_timeout(filler_after, budget);
        let mut filler_due = false;
        for t in self.agent.tools.iter_mut().filter(|t| !t.filler_played && now >= t.started + filler_after) {
            t.filler_played = true;
            filler_due = true;
        }
        if filler_due && !self.playback.is_playing(now) {
            self.play(self.agent.cfg.prompts.filler.clone());
        }
        while let Some(i) = self.agent.tools.iter().position(|t| now >= t.started + budget) {
            let tool = self.agent.tools.remove(i);
            let message = format!("no answer within {} ms", budget.as_millis());
            self.tool_outcome(tool, Err(ReplyFailure { kind: "timeout", message }));
        }
    }
}
