//! The call task's dealings with a network engine: choosing it from the plan,
//! its socket's events, what it says besides audio (transcripts, tool calls,
//! errors, its own speech detection), blocking `tool.call` requests with their
//! filler and fallback, and ending the call when the engine is gone for good.

use super::*;

impl Call {
    /// The engine the plan (or config) asks for, when it is not the local one
    /// already in place. Falls back to local, with a warning, when the choice
    /// cannot be honoured (unknown name, no API key).
    pub(super) fn choose_engine(&mut self, plan: &CallPlan, info: &StreamInfo) -> Option<Engine> {
        let kind = match plan.engine.as_deref() {
            None => self.ctx.default_engine,
            Some("local") => EngineKind::Local,
            Some("openai_realtime") => EngineKind::OpenaiRealtime,
            Some(other) => {
                warn!(call = %self.id, engine = other, "plan asks for an unknown engine; using the configured one");
                self.ctx.default_engine
            }
        };
        if kind == EngineKind::Local {
            return None;
        }
        let Some(key) = self.ctx.openai_api_key.clone() else {
            warn!(call = %self.id, "openai_realtime asked for but OPENAI_API_KEY is not set; using the local engine");
            return None;
        };
        let rc = &self.ctx.realtime;
        let audio = if info.encoding == crate::carrier::AudioEncoding::Pcmu && info.sample_rate == 8000 {
            WireAudio::Pcmu
        } else {
            WireAudio::Pcm24k
        };
        let cfg = RealtimeConfig {
            flavor: rc.api,
            model: rc.model.clone(),
            instructions: plan.instructions.clone().unwrap_or_else(|| rc.instructions.clone()),
            voice: plan.voice.clone().unwrap_or_else(|| rc.voice.clone()),
            tools: plan.tools.clone(),
            greeting: plan.greeting.clone().or_else(|| Some(rc.greeting.clone()).filter(|g| !g.is_empty())),
            turn: rc.turn_detection,
            audio,
            transcription_model: rc.transcription_model.clone(),
            silence_duration_ms: rc.silence_duration_ms,
        };
        let codec = RealtimeCodec::new(cfg);
        let base = &self.ctx.realtime_url;
        let url = if base.contains("model=") {
            base.clone()
        } else {
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}model={}", rc.model)
        };
        let link = EngineLink::spawn(
            LinkConfig {
                url,
                api_key: key,
                beta: rc.api == ApiFlavor::Beta,
                connect_timeout: Duration::from_millis(rc.connect_timeout_ms),
            },
            codec.session_update(),
            rc.max_queued_messages,
        );
        Some(Engine::Realtime(Box::new(Realtime::new(codec, link))))
    }

    /// An event from the engine socket.
    pub(super) fn on_link(&mut self, ev: Option<LinkEvent>) -> Step {
        let Engine::Realtime(r) = &mut self.engine else { return Step::Continue };
        match ev {
            Some(LinkEvent::Text(t)) => {
                if let Err(e) = r.codec.on_message(&t) {
                    metrics::counter!(crate::metrics::ENGINE_ERRORS, "kind" => "bad_message").increment(1);
                    debug!(call = %self.id, error = %e, "unusable engine message");
                }
            }
            Some(LinkEvent::Reconnected) => {
                metrics::counter!(crate::metrics::ENGINE_ERRORS, "kind" => "reconnected").increment(1);
                warn!(call = %self.id, "engine reconnected; the caller hears an apology");
                r.codec.on_reconnect();
                // What was playing is incomplete: stop it, then apologise.
                let now = Instant::now().into_std();
                let _ = self.session.handle_input(now, Input::Control(ControlCommand::Interrupt));
                self.engine.inject(&self.ctx.prompts.apology);
            }
            Some(LinkEvent::Failed(why)) => return self.fail_engine(why),
            None => return self.fail_engine("engine link ended".into()),
        }
        self.pump_step()
    }

    pub(super) fn fail_engine(&mut self, why: String) -> Step {
        metrics::counter!(crate::metrics::ENGINE_ERRORS, "kind" => "failed").increment(1);
        warn!(call = %self.id, reason = %why, "engine failed; ending the call");
        self.engine_failed = Some(why);
        let _ = self.session.handle_input(Instant::now().into_std(), Input::Control(ControlCommand::Hangup));
        self.pump_step()
    }

    pub(super) fn pump_step(&mut self) -> Step {
        match self.pump() {
            Some(end) => Step::End(CallEnd::Hangup(end), Some((close::NORMAL, format!("call ended: {}", end.code())))),
            None => Step::Continue,
        }
    }

    /// Handle what the engine said besides audio; called after every step.
    pub(super) fn after_engine(&mut self) -> Step {
        let Engine::Realtime(r) = &mut self.engine else { return Step::Continue };
        if r.side.is_empty() {
            return Step::Continue;
        }
        let now = Instant::now().into_std();
        let side: Vec<RealtimeOutput> = r.side.drain(..).collect();
        let asked_at = r.asked_at;
        for out in side {
            match out {
                RealtimeOutput::SpeechStarted => {
                    if self.session.bot_playing(now) {
                        let _ = self.session.handle_input(now, Input::Control(ControlCommand::Interrupt));
                    }
                }
                RealtimeOutput::UserTranscript(t) => {
                    if let Some(ev) = self.conversation.user_transcript(t) {
                        self.events.send(ev);
                    }
                }
                RealtimeOutput::AgentText(id, delta) => self.conversation.response_text(id, &delta),
                RealtimeOutput::FirstAudio(_) => {
                    if let Some(t) = asked_at {
                        self.conversation.engine_first_audio(now.saturating_duration_since(t));
                    }
                }
                RealtimeOutput::ToolCall { call_id, name, arguments } => self.start_tool_call(call_id, name, arguments),
                RealtimeOutput::Error { fatal: true, code, message } => {
                    metrics::counter!(crate::metrics::ENGINE_ERRORS, "kind" => "fatal_error").increment(1);
                    return self.fail_engine(format!("{code}: {message}"));
                }
                RealtimeOutput::Error { fatal: false, code, message } => {
                    metrics::counter!(crate::metrics::ENGINE_ERRORS, "kind" => "error").increment(1);
                    debug!(call = %self.id, code, message, "engine error event");
                }
                RealtimeOutput::Engine(_) => {}
            }
        }
        self.pump_step()
    }

    /// Ask the backend to run a tool (a blocking request, run off this task).
    pub(super) fn start_tool_call(&mut self, call_id: String, name: String, arguments: serde_json::Value) {
        let (Some(target), Some(tx)) = (self.target.clone(), self.tool_tx.clone()) else {
            // No backend: tell the model so it does not wait.
            if let Engine::Realtime(r) = &mut self.engine {
                let err = serde_json::json!({"error": "no backend handles tools for this call"});
                r.codec.tool_result(&call_id, &err, true);
            }
            return;
        };
        let seq = self.events.next_seq();
        let env = Envelope::new(
            &self.id.to_string(),
            seq,
            std::time::SystemTime::now(),
            Event::ToolCall { tool_call_id: call_id.clone(), name, arguments },
        );
        self.events.store_envelope(&env);
        self.pending_tools.push(PendingTool {
            call_id: call_id.clone(),
            started: Instant::now(),
            filler_played: false,
        });
        let client = self.ctx.client.clone();
        let budget = Duration::from_millis(self.ctx.callbacks.blocking_timeout_ms);
        tokio::spawn(async move {
            let result = client.post(&target, &env, budget).await.map_err(|e| {
                metrics::counter!(crate::metrics::CALLBACK_FALLBACKS, "type" => "tool.call", "kind" => e.kind())
                    .increment(1);
                e.to_string()
            });
            let _ = tx.send(ToolOutcome { call_id, result }).await;
        });
    }

    pub(super) fn on_tool_result(&mut self, outcome: ToolOutcome) {
        self.pending_tools.retain(|t| t.call_id != outcome.call_id);
        let record = match &outcome.result {
            Ok(v) => {
                serde_json::json!({"tool_call_id": outcome.call_id, "result": ToolResult::from_reply(v.clone()).result})
            }
            Err(e) => serde_json::json!({"tool_call_id": outcome.call_id, "error": e}),
        };
        self.events.record("tool.result", record);
        let Engine::Realtime(r) = &mut self.engine else { return };
        match outcome.result {
            Ok(v) => r.codec.tool_result(&outcome.call_id, &ToolResult::from_reply(v).result, true),
            Err(e) => {
                warn!(call = %self.id, error = %e, "tool call failed; the caller hears the fallback line");
                let err = serde_json::json!({"error": "the tool is unavailable right now"});
                r.codec.tool_result(&outcome.call_id, &err, false);
                self.engine.inject(&self.ctx.prompts.fallback);
            }
        }
    }

    /// Blocking tool calls slower than `after`: the caller hears the filler (once per call of the tool).
    pub(super) fn play_due_fillers(&mut self, now: Instant, after: Duration) {
        let mut due = false;
        for t in self.pending_tools.iter_mut().filter(|t| !t.filler_played && now >= t.started + after) {
            t.filler_played = true;
            due = true;
        }
        if due && !self.session.bot_playing(now.into_std()) {
            self.engine.inject(&self.ctx.prompts.filler);
        }
    }
}
