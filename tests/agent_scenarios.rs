//! The session's backend-facing policies in virtual time, through the real
//! call loop: engine speech-start barge-in, tool calls (request, filler,
//! budget, fallback), engine trouble (reconnect, failed response, fatal
//! error), and the engine's first-audio latency. No sockets, no sleeps.

mod common;

use std::sync::Arc;
use std::time::Duration;

use callbridge::contract::Event;
use callbridge::engine::local::LocalClips;
use callbridge::engine::{AudioChunk, EngineEvent};
use callbridge::ids::ResponseId;
use callbridge::session::{AgentConfig, HangupReason, Reply, ReplyFailure, SessionConfig, Telemetry};
use common::*;
use serde_json::json;

fn with_backend() -> SessionConfig {
    SessionConfig { agent: AgentConfig { backend: true, events: true, ..AgentConfig::default() }, ..energy_config() }
}

/// A reply playing for `ms`.
fn playing(cfg: SessionConfig, ms: u64) -> Harness {
    let mut h = Harness::with_reply_ms(cfg, 5000);
    h.frames(&tone(-20.0), 10);
    h.frames(&silence(), 25);
    assert!(h.audio_frames() > 0, "reply started");
    let t = h.now + Duration::from_millis(ms);
    h.advance_to(t);
    h
}

fn tool_call(id: &str) -> EngineEvent {
    EngineEvent::ToolCall { call_id: id.into(), name: "book".into(), arguments: json!({"when": "9am"}) }
}

fn plays(h: &Harness) -> Vec<usize> {
    h.cmds().into_iter().filter_map(|c| if let Cmd::Play(n) = c { Some(n) } else { None }).collect()
}

#[test]
fn the_engines_speech_start_barges_in_even_when_our_vad_hears_nothing() {
    let mut h = playing(energy_config(), 500);
    h.engine_event(EngineEvent::SpeechStarted);
    assert_eq!(h.clears().len(), 1, "cleared on the engine's word alone (the caller frames are silent)");
    assert_eq!(h.cancels().len(), 1);
    assert_eq!(h.barge_ins().len(), 1);
    // Nothing playing: the engine's speech start interrupts nothing.
    let t = h.now + Duration::from_secs(10);
    h.advance_to(t);
    h.engine_event(EngineEvent::SpeechStarted);
    assert_eq!(h.clears().len(), 1);
}

#[test]
fn a_tool_call_is_a_request_with_a_filler_and_its_result_goes_back_to_the_engine() {
    let cfg = with_backend();
    let filler_len = cfg.agent.prompts.filler.len();
    let mut h = Harness::with_reply_ms(cfg, 200);
    h.engine_event(tool_call("c1"));
    assert_eq!(h.io.requests.len(), 1);
    let req = h.io.requests[0].clone();
    assert!(matches!(&req.event, Event::ToolCall { tool_call_id, name, .. } if tool_call_id == "c1" && name == "book"));
    // 699 ms: no filler yet; 700 ms: the filler (the bot is silent).
    let t = h.now + Duration::from_millis(699);
    h.advance_to(t);
    assert!(plays(&h).is_empty());
    let t = h.now + Duration::from_millis(1);
    h.advance_to(t);
    assert_eq!(plays(&h), vec![filler_len], "the filler, once");
    let t = h.now + Duration::from_millis(300);
    h.advance_to(t);
    h.reply(Reply { id: req.id, result: Ok(json!({"result": {"booked": true}})) });
    let results: Vec<_> = h.cmds().into_iter().filter(|c| matches!(c, Cmd::ToolResult { .. })).collect();
    assert_eq!(results, vec![Cmd::ToolResult { call_id: "c1".into(), output: json!({"booked": true}), respond: true }]);
    assert_eq!(h.io.notes, vec![("tool.result", json!({"tool_call_id": "c1", "result": {"booked": true}}))]);
    assert_eq!(plays(&h).len(), 1, "no fallback on success");
}

#[test]
fn a_tool_call_past_its_budget_fails_once_with_the_fallback_and_a_late_answer_is_ignored() {
    let cfg = with_backend();
    let fallback_len = cfg.agent.prompts.fallback.len();
    let mut h = Harness::with_reply_ms(cfg, 200);
    h.engine_event(tool_call("c2"));
    let id = h.io.requests[0].id;
    // Budget 1500 ms + 250 ms grace.
    let t = h.now + Duration::from_millis(1749);
    h.advance_to(t);
    assert!(!h.cmds().iter().any(|c| matches!(c, Cmd::ToolResult { .. })));
    let t = h.now + Duration::from_millis(1);
    h.advance_to(t);
    let results: Vec<_> = h.cmds().into_iter().filter(|c| matches!(c, Cmd::ToolResult { .. })).collect();
    assert!(matches!(&results[..], [Cmd::ToolResult { respond: false, .. }]), "{results:?}");
    assert_eq!(plays(&h).last(), Some(&fallback_len), "the caller hears the fallback");
    assert!(h.io.incidents.iter().any(|i| i.source == "tool" && i.kind == "timeout"));
    assert!(h.io.events.iter().any(|e| matches!(e, Event::Error { source, .. } if source == "tool")));
    h.reply(Reply { id, result: Ok(json!({"late": true})) });
    assert_eq!(h.cmds().iter().filter(|c| matches!(c, Cmd::ToolResult { .. })).count(), 1, "late answer ignored");
    // A failed answer before the budget: the same fallback at once.
    h.engine_event(tool_call("c3"));
    let id = h.io.requests[1].id;
    h.reply(Reply { id, result: Err(ReplyFailure { kind: "http_5xx", message: "callback answered HTTP 500".into() }) });
    assert_eq!(h.cmds().iter().filter(|c| matches!(c, Cmd::ToolResult { respond: false, .. })).count(), 2);
}

#[test]
fn without_a_backend_the_engine_is_told_at_once() {
    let mut h = Harness::with_reply_ms(energy_config(), 200);
    h.engine_event(tool_call("c4"));
    assert!(h.io.requests.is_empty());
    let results: Vec<_> = h.cmds().into_iter().filter(|c| matches!(c, Cmd::ToolResult { .. })).collect();
    assert!(matches!(&results[..], [Cmd::ToolResult { respond: true, output, .. }] if output["error"].is_string()));
}

#[test]
fn engine_trouble_apology_fallback_and_a_fatal_end() {
    let cfg = with_backend();
    let (apology, fallback) = (cfg.agent.prompts.apology.len(), cfg.agent.prompts.fallback.len());
    let mut h = playing(cfg, 500);
    h.engine_event(EngineEvent::Reconnected);
    assert_eq!(h.clears().len(), 1, "what was playing is cut");
    assert_eq!(plays(&h), vec![apology]);
    h.engine_event(EngineEvent::ResponseFailed {
        response: ResponseId(9),
        code: "response_failed".into(),
        message: "server_error".into(),
    });
    assert_eq!(plays(&h), vec![apology, fallback]);
    assert!(h.io.events.iter().any(|e| matches!(e, Event::Error { code, .. } if code == "response_failed")));
    assert!(h.ended().is_none());
    h.engine_event(EngineEvent::Error { fatal: true, code: "invalid_api_key".into(), message: "bad key".into() });
    assert_eq!(h.ended(), Some(HangupReason::EngineError));
    assert!(h.io.incidents.iter().any(|i| i.kind == "fatal_error"));
}

#[test]
fn engine_first_audio_is_measured_from_the_end_of_the_turn() {
    // An engine that answers with nothing by itself; its audio comes 300 ms later.
    let mut h = Harness::new(energy_config(), LocalClips { greeting: None, reply: Arc::from(vec![0i16; 0]) });
    h.frames(&tone(-20.0), 10);
    h.frames(&silence(), 25);
    assert_eq!(h.turns_answered(), 1);
    let t = h.now + Duration::from_millis(300);
    h.advance_to(t);
    h.engine_event(EngineEvent::ResponseStarted(ResponseId(50)));
    h.engine_event(EngineEvent::Audio(AudioChunk::whole(ResponseId(50), Arc::from(vec![900i16; 1600]))));
    let first: Vec<_> =
        h.io.telemetry
            .iter()
            .filter_map(|(_, t)| if let Telemetry::EngineFirstAudio(d) = t { Some(*d) } else { None })
            .collect();
    assert_eq!(first, vec![Duration::from_millis(300)]);
}

/// The live events a plan may opt into, in the order a dashboard sees them.
#[test]
fn opt_in_live_events_follow_the_call_and_default_off_they_are_absent() {
    use callbridge::session::agent::LiveEvents;
    let kinds = |h: &Harness| -> Vec<String> {
        h.io.events
            .iter()
            .filter_map(|e| match e {
                Event::CallStatus { status, .. } => Some(format!("status:{status}")),
                Event::SpeechStarted { who, .. } => Some(format!("{who}+")),
                Event::SpeechStopped { who, .. } => Some(format!("{who}-")),
                Event::TranscriptPartial { text, .. } => Some(format!("partial:{text}")),
                Event::TurnUser(_) => Some("turn.user".into()),
                Event::TurnAgent(_) => Some("turn.agent".into()),
                _ => None,
            })
            .collect()
    };
    let mut cfg = with_backend();
    cfg.agent.live = LiveEvents { status: true, speech: true, partial: true };
    let mut h = Harness::new(cfg, LocalClips { greeting: None, reply: Arc::from(vec![1000i16; 4000]) });
    h.frames(&tone(-20.0), 30);
    h.engine_event(EngineEvent::CallerTranscript { text: "my sink".into(), is_final: false });
    h.frames(&silence(), 25 + 40);
    let got = kinds(&h);
    assert_eq!(
        got,
        [
            "status:answered",
            "status:engine_connected",
            "caller+",
            "partial:my sink",
            "caller-",
            "turn.user",
            "agent+",
            "agent-",
            "turn.agent"
        ],
        "{got:?}"
    );
    // The times line up: the caller's speech before the agent's.
    let at = |want: &str| {
        h.io.events
            .iter()
            .find_map(|e| match e {
                Event::SpeechStarted { who, at_ms } if who == want => Some(*at_ms),
                _ => None,
            })
            .unwrap()
    };
    assert!(at("caller") < at("agent"));
    // A transfer under way is a status too.
    h.control(callbridge::session::ControlCommand::Transferred);
    assert_eq!(kinds(&h).last().unwrap(), "status:transferring");
    // Not asked for: none of them.
    let mut h = Harness::new(with_backend(), LocalClips { greeting: None, reply: Arc::from(vec![1000i16; 4000]) });
    h.frames(&tone(-20.0), 30);
    h.engine_event(EngineEvent::CallerTranscript { text: "my sink".into(), is_final: false });
    h.frames(&silence(), 25 + 40);
    assert_eq!(kinds(&h), ["turn.user", "turn.agent"]);
}

fn brain() -> SessionConfig {
    SessionConfig {
        agent: AgentConfig {
            backend: true,
            events: true,
            brain: true,
            expect_transcripts: true,
            ..AgentConfig::default()
        },
        ..energy_config()
    }
}

fn replies(h: &Harness) -> Vec<(String, bool)> {
    h.cmds()
        .into_iter()
        .filter_map(|c| if let Cmd::Reply { text, done } = c { Some((text, done)) } else { None })
        .collect()
}

fn final_words(text: &str) -> EngineEvent {
    EngineEvent::CallerTranscript { text: text.into(), is_final: true }
}

#[test]
fn with_the_backend_as_the_brain_each_turn_is_a_request_and_its_streamed_words_are_spoken() {
    let mut h = Harness::with_reply_ms(brain(), 200);
    h.frames(&tone(-20.0), 10);
    h.frames(&silence(), 60);
    assert!(h.io.requests.is_empty(), "a turn.user waits for its transcript");
    h.engine_event(final_words("   "));
    assert!(h.io.requests.is_empty(), "no words: nothing to answer");
    assert!(h.io.events.iter().any(|e| matches!(e, Event::TurnUser(_))), "recorded as an event instead");
    h.frames(&tone(-20.0), 10);
    h.frames(&silence(), 60);
    h.engine_event(final_words("I need a plumber"));
    let first = h.io.requests[0].clone();
    assert!(matches!(&first.event, Event::TurnUser(u) if u.transcript.as_deref() == Some("I need a plumber")));
    // The caller speaks again before any answer: the newer turn supersedes it.
    h.frames(&tone(-20.0), 10);
    h.frames(&silence(), 60);
    h.engine_event(final_words("today if possible"));
    assert_eq!(h.io.cancelled, vec![first.id], "the unanswered request is abandoned");
    let second = h.io.requests[1].id;
    h.reply_delta(first.id, "Stale words. ");
    assert!(replies(&h).is_empty(), "a superseded reply is not spoken");
    h.reply_delta(second, "Sure. ");
    h.reply_delta(second, "Tomorrow at nine?");
    h.reply(Reply { id: second, result: Ok(serde_json::Value::Null) });
    assert_eq!(replies(&h), vec![("Sure. ".into(), false), ("Tomorrow at nine?".into(), false), (String::new(), true)]);
    let stages: Vec<&str> =
        h.io.telemetry
            .iter()
            .filter_map(|(_, t)| if let Telemetry::Stage { stage, .. } = t { Some(*stage) } else { None })
            .collect();
    assert!(stages.contains(&"endpoint") && stages.contains(&"backend_first_text"), "{stages:?}");
}

#[test]
fn a_brain_that_is_silent_gets_the_filler_then_the_fallback_and_a_bad_reply_the_fallback() {
    let cfg = brain();
    let (filler, fallback) = (cfg.agent.prompts.filler.len(), cfg.agent.prompts.fallback.len());
    let mut h = Harness::with_reply_ms(cfg, 200);
    h.frames(&tone(-20.0), 10);
    h.frames(&silence(), 60);
    h.engine_event(final_words("Hello?"));
    let id = h.io.requests[0].id;
    let t = h.now + Duration::from_millis(700);
    h.advance_to(t);
    assert_eq!(plays(&h), vec![filler]);
    let t = h.now + Duration::from_millis(1100);
    h.advance_to(t);
    assert_eq!(plays(&h), vec![filler, fallback], "past the budget (1.5 s + grace)");
    assert_eq!(h.io.cancelled, vec![id]);
    // A reply that is not a TurnReply: the fallback, at once.
    h.frames(&tone(-20.0), 10);
    h.frames(&silence(), 60);
    h.engine_event(final_words("Are you there?"));
    let id = h.io.requests[1].id;
    h.reply(Reply { id, result: Ok(json!({"reply": 42})) });
    assert_eq!(plays(&h).len(), 3);
    assert!(h.io.incidents.iter().any(|i| i.kind == "bad_body"));
}

fn with_builtins(plan: serde_json::Value) -> SessionConfig {
    let plan: callbridge::contract::CallPlan = serde_json::from_value(plan).unwrap();
    let mut cfg = with_backend();
    cfg.agent.builtins = callbridge::session::builtin::Builtins::from_plan(&plan);
    cfg
}

fn builtin_call(id: &str, name: &str, arguments: serde_json::Value) -> EngineEvent {
    EngineEvent::ToolCall { call_id: id.into(), name: name.into(), arguments }
}

fn results(h: &Harness) -> Vec<(String, serde_json::Value, bool)> {
    h.cmds()
        .into_iter()
        .filter_map(|c| match c {
            Cmd::ToolResult { call_id, output, respond } => Some((call_id, output, respond)),
            _ => None,
        })
        .collect()
}

#[test]
fn send_dtmf_plays_key_tones_the_far_end_can_decode() {
    let cfg = with_builtins(json!({"builtin_tools": ["send_dtmf"]}));
    let mut h = Harness::with_reply_ms(cfg, 200);
    h.engine_event(builtin_call("d1", "send_dtmf", json!({"digits": "12#9"})));
    assert!(h.io.requests.is_empty(), "run by callbridge, not the backend");
    h.frames(&silence(), 60);
    assert_eq!(callbridge::audio::dtmf::decode(h.far_played(), 8000), "12#9", "Goertzel hears the keys");
    assert_eq!(results(&h), vec![("d1".into(), json!({"ok": true, "sent": "12#9"}), false)]);
    h.engine_event(builtin_call("d2", "send_dtmf", json!({"digits": "12x"})));
    assert!(results(&h)[1].2, "a bad key is an error the model hears about");
    assert!(results(&h)[1].1["error"].as_str().unwrap().contains("'x'"));
}

#[test]
fn end_call_hangs_up_once_the_goodbye_was_heard() {
    let cfg = with_builtins(json!({"builtin_tools": ["end_call"]}));
    let mut h = playing(cfg, 300);
    h.engine_event(builtin_call("e1", "end_call", json!({"reason": "done"})));
    assert_eq!(h.ended(), None, "the reply still plays");
    h.frames(&silence(), 300);
    assert_eq!(h.ended(), Some(HangupReason::AgentHangup));
    assert!(h.cancels().is_empty(), "nothing was cut off");
}

#[test]
fn transfer_call_goes_only_to_the_plans_destinations_and_unknown_tools_still_reach_the_backend() {
    let plan = json!({"builtin_tools": ["transfer_call"],
        "transfer_destinations": [{"name": "on_call", "to": "+15557654321", "description": "emergencies"}]});
    let mut h = Harness::with_reply_ms(with_builtins(plan), 200);
    h.engine_event(builtin_call("t1", "transfer_call", json!({"destination": "on_call"})));
    assert_eq!(h.io.transfers, vec!["+15557654321".to_string()]);
    h.engine_event(builtin_call("t2", "transfer_call", json!({"destination": "+19005550000"})));
    assert_eq!(h.io.transfers.len(), 1, "a number the model made up is not dialled");
    assert!(results(&h)[1].1["error"].is_string() && results(&h)[1].2);
    // Not enabled: end_call is an ordinary tool for the backend.
    h.engine_event(builtin_call("x", "end_call", json!({})));
    assert_eq!(h.io.requests.len(), 1);
    let specs = callbridge::session::builtin::specs(
        &serde_json::from_value(json!({"builtin_tools": ["transfer_call", "send_dtmf"],
            "transfer_destinations": [{"name": "on_call", "to": "+15557654321"}]}))
        .unwrap(),
    );
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["transfer_call", "send_dtmf"]);
    assert_eq!(specs[0].parameters["properties"]["destination"]["enum"], json!(["on_call"]));
}

#[test]
fn a_greeting_marked_not_interruptible_is_heard_to_the_end_then_the_caller_has_the_floor() {
    let mut cfg = with_backend();
    cfg.agent.greeting_interruptible = false;
    let greeting: Arc<[i16]> = Arc::from(vec![3000i16; 8000 * 2]);
    let mut h = Harness::new(cfg, LocalClips { greeting: Some(greeting), reply: Arc::from(vec![1000i16; 40000]) });
    h.frames(&silence(), 10);
    assert!(h.audio_frames() > 0, "the greeting plays");
    h.frames(&tone(-20.0), 40);
    assert!(h.clears().is_empty() && h.cancels().is_empty(), "talking over it does not stop it");
    // Still talking when it ends: their turn starts, and the next reply may be interrupted.
    h.frames(&tone(-20.0), 80);
    h.frames(&silence(), 60);
    assert_eq!(h.turns_answered(), 1, "the caller's turn was taken after the greeting");
    h.frames(&silence(), 5);
    h.frames(&tone(-20.0), 20);
    assert_eq!(h.cancels().len(), 1, "the reply is interruptible as usual");
}
