//! The backend as the brain (engines that [`needs_brain`]): each caller turn
//! with words in it is a blocking `turn.user` whose reply the engine speaks —
//! whole (`{"reply": "…"}`) or streamed (`{"reply_delta": "…"}` lines, handed
//! on as they come, so speech starts at the first sentence).
//!
//! The same rules as every blocking callback: the filler after
//! `filler_after` with no words yet, the fallback line past the budget or on
//! failure. Once words arrive the budget no longer applies (the reply is
//! being spoken). A newer turn supersedes an unanswered one, and a barge-in
//! cancels a reply still streaming ([`super::Output::CancelRequest`]); the
//! backend learns what was heard from `turn.agent.heard_text`. A reply's
//! `action` (`hangup`, `transfer`) runs once the reply has been heard in full;
//! a barge-in into that reply drops it (the caller has more to say).
//!
//! [`needs_brain`]: crate::engine::Engine::needs_brain

use std::time::{Duration, Instant};

use super::{Cold, HangupReason, Phase, Session, Telemetry};
use crate::contract::{Event, ReplyAction, TurnReply};
use crate::engine::EngineCommand;
use crate::ids::ResponseId;
use crate::session::{ReplyFailure, Request, RequestId};

/// Longest a reply's action waits for the reply's tail to be played.
const ACTION_WAIT: Duration = Duration::from_secs(5);

/// The `turn.user` awaiting (or streaming) its reply.
#[derive(Debug)]
pub(super) struct PendingTurn {
    id: RequestId,
    started: Instant,
    filler_played: bool,
    /// Words were handed to the engine (the reply is being spoken).
    speaking: bool,
    /// The backend's own time to its first words, as the request saw it.
    backend: Option<Duration>,
}

/// The brain's state (in the agent).
#[derive(Debug, Default)]
pub(super) struct Brain {
    pub(super) pending: Option<PendingTurn>,
    /// Done after the reply has been heard.
    after: Option<ReplyAction>,
    /// The reply's audio is all out: run this once the caller has heard it
    /// (nothing playing any more), since when.
    due: Option<(ReplyAction, Instant)>,
    /// The response speaking the latest reply.
    reply_response: Option<ResponseId>,
    /// The next response the engine starts is the reply's.
    bind_next: bool,
    /// This turn's stages so far: endpoint, STT final, backend first text, TTS first audio.
    stages: [Option<Duration>; 4],
}

impl Brain {
    pub(super) fn deadline(&self, filler_after: Duration, budget: Duration) -> Option<Instant> {
        let p = self.pending.as_ref().filter(|p| !p.speaking)?;
        Some(if p.filler_played { p.started + budget } else { (p.started + budget).min(p.started + filler_after) })
    }
}

impl Session {
    /// A finished caller turn (with its transcript) for the brain: ask the
    /// backend, or just record it when nothing was said.
    pub(super) fn brain_turn(&mut self, ev: Event) {
        let words = matches!(&ev, Event::TurnUser(u) if u.transcript.as_deref().is_some_and(|t| !t.trim().is_empty()));
        if !words || !self.agent.cfg.backend {
            self.cold(Cold::Event(ev));
            return;
        }
        if let Some(old) = self.agent.brain.pending.take() {
            // The caller spoke again before the answer: the newer turn wins,
            // and words of the old reply not yet heard are dropped, not finished.
            self.cold(Cold::CancelRequest(old.id));
            if old.speaking {
                self.interrupt(None);
            }
        }
        self.agent.brain.after = None;
        let id = self.agent.new_request();
        self.agent.brain.pending =
            Some(PendingTurn { id, started: self.now, filler_played: false, speaking: false, backend: None });
        self.cold(Cold::Request(Request { id, event: ev }));
    }

    fn brain_close_reply(&mut self, p: &PendingTurn) {
        if p.speaking {
            self.cold(Cold::Engine(EngineCommand::Reply { text: String::new(), done: true }));
        }
    }

    /// Whether `id` is the brain's request.
    pub(super) fn brain_owns(&self, id: RequestId) -> bool {
        self.agent.brain.pending.as_ref().is_some_and(|p| p.id == id)
    }

    fn brain_words(&mut self, text: String, done: bool) {
        let Some(p) = self.agent.brain.pending.as_mut() else { return };
        if !p.speaking {
            p.speaking = true;
            self.agent.brain.bind_next = true;
            // The backend's own time when the request measured it; else ours.
            let latency = p.backend.unwrap_or_else(|| self.now.saturating_duration_since(p.started));
            self.telemetry(Telemetry::Stage { stage: "backend_first_text", latency });
        }
        self.cold(Cold::Engine(EngineCommand::Reply { text, done }));
    }

    /// The backend's own time to its first words.
    pub(super) fn brain_timing(&mut self, id: RequestId, backend: Duration) {
        if let Some(p) = self.agent.brain.pending.as_mut().filter(|p| p.id == id) {
            p.backend = Some(backend);
        }
    }

    /// Part of a streamed reply.
    pub(super) fn brain_delta(&mut self, id: RequestId, text: String) {
        if self.phase == Phase::Active && self.brain_owns(id) && !text.is_empty() {
            self.brain_words(text, false);
        }
    }

    /// The reply is complete (the whole body, or the end of a stream), or failed.
    pub(super) fn brain_reply(&mut self, result: Result<serde_json::Value, ReplyFailure>) {
        let Some(p) = self.agent.brain.pending.take() else { return };
        let reply = match result.and_then(|v| {
            if v.is_null() {
                return Ok(TurnReply::default());
            }
            serde_json::from_value::<TurnReply>(v)
                .map_err(|e| ReplyFailure { kind: "bad_body", message: format!("turn.user reply: {e}") })
        }) {
            Ok(r) => r,
            Err(f) => {
                self.incident("callback", f.kind, f.kind, &f.message);
                self.brain_close_reply(&p);
                if !p.speaking {
                    self.play(self.agent.cfg.prompts.fallback.clone());
                }
                return;
            }
        };
        let text = [reply.reply_delta, reply.reply].into_iter().flatten().collect::<String>();
        let says = p.speaking || !text.trim().is_empty();
        self.agent.brain.pending = Some(p);
        if says {
            self.brain_words(text, true);
        }
        self.agent.brain.pending = None;
        match reply.action {
            Some(a) if says => self.agent.brain.after = Some(a),
            Some(a) => self.brain_act(a),
            None => {}
        }
    }

    /// The engine started a response: bind it if it is the reply's.
    pub(super) fn brain_response_started(&mut self, id: ResponseId) {
        if std::mem::take(&mut self.agent.brain.bind_next) {
            self.agent.brain.reply_response = Some(id);
        }
    }

    /// A response is over; run the action after a reply heard in full (a
    /// barge-in into the reply drops it: the caller has more to say).
    pub(super) fn brain_finished(&mut self, response: ResponseId, interrupted: bool) {
        if self.agent.brain.reply_response != Some(response) {
            return;
        }
        if let Some(action) = self.agent.brain.after.take()
            && !interrupted
        {
            // All of it was sent; the carrier still holds the tail.
            self.agent.brain.due = Some((action, self.now));
        }
    }

    fn brain_act(&mut self, action: ReplyAction) {
        match action {
            ReplyAction::Hangup => self.end(HangupReason::AgentHangup),
            ReplyAction::Transfer { to } => self.cold(Cold::Transfer(to)),
        }
    }

    /// Stage accounting: the turn's stages, and at its first audio what is
    /// left of the response latency (`overhead`: callbridge itself).
    pub(super) fn brain_account(&mut self, t: &Telemetry) -> Option<Telemetry> {
        let st = &mut self.agent.brain.stages;
        match *t {
            Telemetry::TurnEnded { end, .. } => {
                let latency = self.now.saturating_duration_since(end);
                *st = [Some(latency), None, None, None];
                return Some(Telemetry::Stage { stage: "endpoint", latency });
            }
            Telemetry::Stage { stage, latency } => {
                let i = match stage {
                    "stt_final" => 1,
                    "backend_first_text" => 2,
                    "tts_first_audio" => 3,
                    _ => return None,
                };
                st[i].get_or_insert(latency);
            }
            Telemetry::ResponseLatency(total) if st.iter().all(Option::is_some) => {
                let sum: Duration = st.iter().flatten().sum();
                *st = [None; 4];
                return Some(Telemetry::Stage { stage: "overhead", latency: total.saturating_sub(sum) });
            }
            _ => {}
        }
        None
    }

    /// The caller barged in: a reply still streaming is cancelled.
    pub(super) fn brain_interrupted(&mut self) {
        if let Some(p) = self.agent.brain.pending.take_if(|p| p.speaking) {
            self.cold(Cold::CancelRequest(p.id));
        }
    }

    /// When a due action is next checked.
    pub(super) fn brain_due_deadline(&self) -> Option<Instant> {
        self.agent.brain.due.as_ref().map(|_| self.now + crate::audio::FRAME)
    }

    /// Deadlines: a due action once the reply was heard; the filler, then
    /// the fallback past the budget.
    pub(super) fn brain_timeout(&mut self, filler_after: Duration, budget: Duration) {
        let now = self.now;
        if let Some((_, since)) = &self.agent.brain.due
            && (!self.playback.is_playing(now) || now >= *since + ACTION_WAIT)
        {
            let (action, _) = self.agent.brain.due.take().expect("checked");
            self.brain_act(action);
        }
        let Some(p) = self.agent.brain.pending.as_mut().filter(|p| !p.speaking) else { return };
        if now >= p.started + budget {
            let id = p.id;
            self.agent.brain.pending = None;
            self.cold(Cold::CancelRequest(id));
            let message = format!("no reply to turn.user within {} ms", budget.as_millis());
            self.incident("callback", "timeout", "timeout", &message);
            self.play(self.agent.cfg.prompts.fallback.clone());
        } else if !p.filler_played && now >= p.started + filler_after {
            p.filler_played = true;
            if !self.playback.is_playing(now) {
                self.play(self.agent.cfg.prompts.filler.clone());
            }
        }
    }
}
