//! Built-in tools a plan may give the engine (`"builtin_tools"`): `end_call`
//! (hang up once what is playing has been heard), `transfer_call` (to one of
//! the plan's named `transfer_destinations`, nowhere else), and `send_dtmf`
//! (key tones played into the call, to work a phone menu). They are run by
//! callbridge itself, never sent to the backend, and the engine is told the
//! outcome as the tool's result.
//!
//! Invariants: the model can only name a destination; the number comes from
//! the plan, and the shell still checks it against the number's
//! `transfer_allow`. Unknown destinations and bad digits are refused with an
//! error result the model can read.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Cold, HangupReason, Session};
use crate::contract::{CallPlan, ToolSpec};
use crate::engine::EngineCommand;

/// `end_call`
pub const END_CALL: &str = "end_call";
/// `transfer_call`
pub const TRANSFER_CALL: &str = "transfer_call";
/// `send_dtmf`
pub const SEND_DTMF: &str = "send_dtmf";

/// Longest `end_call` waits for what is playing to finish.
const END_CALL_WAIT: Duration = Duration::from_secs(10);

/// The built-in tools a call may use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Builtins {
    /// `end_call`
    pub end_call: bool,
    /// `send_dtmf`
    pub send_dtmf: bool,
    /// `transfer_call` destinations: (name, number or SIP URI); empty = no such tool.
    pub transfer: Vec<(String, String)>,
}

impl Builtins {
    /// What `plan` enables (unknown names are ignored).
    pub fn from_plan(plan: &CallPlan) -> Self {
        let has = |n: &str| plan.builtin_tools.iter().any(|t| t == n);
        Self {
            end_call: has(END_CALL),
            send_dtmf: has(SEND_DTMF),
            transfer: if has(TRANSFER_CALL) {
                plan.transfer_destinations.iter().map(|d| (d.name.clone(), d.to.clone())).collect()
            } else {
                Vec::new()
            },
        }
    }

    fn owns(&self, name: &str) -> bool {
        (name == END_CALL && self.end_call)
            || (name == SEND_DTMF && self.send_dtmf)
            || (name == TRANSFER_CALL && !self.transfer.is_empty())
    }
}

/// The tool declarations for the engine (function schemas), after the plan's own.
pub fn specs(plan: &CallPlan) -> Vec<ToolSpec> {
    let b = Builtins::from_plan(plan);
    let mut out = Vec::new();
    if b.end_call {
        out.push(ToolSpec {
            name: END_CALL.into(),
            description: "Hang up the call. Say goodbye first; the call ends once that has been heard.".into(),
            parameters: json!({"type": "object", "properties": {"reason": {"type": "string"}}}),
        });
    }
    if !b.transfer.is_empty() {
        let names: Vec<&str> = b.transfer.iter().map(|(n, _)| n.as_str()).collect();
        let described: Vec<String> = plan
            .transfer_destinations
            .iter()
            .map(|d| if d.description.is_empty() { d.name.clone() } else { format!("{}: {}", d.name, d.description) })
            .collect();
        out.push(ToolSpec {
            name: TRANSFER_CALL.into(),
            description: format!("Transfer the caller to a person. Destinations: {}.", described.join("; ")),
            parameters: json!({"type": "object", "properties": {"destination": {"type": "string", "enum": names}},
                "required": ["destination"]}),
        });
    }
    if b.send_dtmf {
        out.push(ToolSpec {
            name: SEND_DTMF.into(),
            description: "Press keys on the phone keypad (to work a phone menu).".into(),
            parameters: json!({"type": "object", "properties": {"digits": {"type": "string",
                "pattern": "^[0-9*#A-Da-d]{1,32}$"}}, "required": ["digits"]}),
        });
    }
    out
}

/// A pending `end_call`: since when.
#[derive(Debug, Default)]
pub(super) struct EndCall {
    asked: Option<Instant>,
}

impl Session {
    /// Run a built-in tool if `name` is one this call has; `false` otherwise.
    pub(super) fn builtin_tool(&mut self, call_id: &str, name: &str, arguments: &serde_json::Value) -> bool {
        if !self.agent.cfg.builtins.owns(name) {
            return false;
        }
        let (output, respond) = match name {
            END_CALL => {
                self.agent.end_call.asked = Some(self.now);
                (json!({"ok": true, "status": "ending the call"}), false)
            }
            TRANSFER_CALL => {
                let want = arguments["destination"].as_str().unwrap_or_default();
                match self.agent.cfg.builtins.transfer.iter().find(|(n, _)| n == want) {
                    Some((_, to)) => {
                        self.cold(Cold::Transfer(to.clone()));
                        (json!({"ok": true, "status": "transferring", "destination": want}), false)
                    }
                    None => (json!({"error": format!("no destination {want:?}")}), true),
                }
            }
            _ => {
                let digits = arguments["digits"].as_str().unwrap_or_default();
                match crate::audio::dtmf::tones(digits, crate::engine::local::LOCAL_RATE) {
                    Ok(clip) => {
                        self.cold(Cold::Engine(EngineCommand::Play(clip.into())));
                        (json!({"ok": true, "sent": digits}), false)
                    }
                    Err(e) => (json!({"error": e.to_string()}), true),
                }
            }
        };
        self.cold(Cold::Note("tool.result", json!({"tool_call_id": call_id, "name": name, "result": output})));
        self.cold(Cold::Engine(EngineCommand::ToolResult { call_id: call_id.to_string(), output, respond }));
        true
    }

    /// A pending `end_call` hangs up once nothing is playing (or after a while).
    pub(super) fn builtin_timeout(&mut self) {
        let Some(asked) = self.agent.end_call.asked else { return };
        let now = self.now;
        if !self.playback.is_playing(now) || now >= asked + END_CALL_WAIT {
            self.agent.end_call.asked = None;
            self.end(HangupReason::AgentHangup);
        }
    }

    /// When a pending `end_call` is next checked.
    pub(super) fn builtin_deadline(&self) -> Option<Instant> {
        self.agent.end_call.asked.map(|_| self.now + crate::audio::FRAME)
    }
}
