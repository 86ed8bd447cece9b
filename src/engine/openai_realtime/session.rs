//! The `session.update` that configures a Realtime session (GA shape,
//! PROTOCOLS §5.2): audio formats both ways, voice, instructions, tools, turn
//! detection (none when our VAD decides turns), input transcription.

use serde_json::{Value, json};

use super::{RealtimeConfig, TurnMode, WireAudio};

fn format_json(audio: WireAudio) -> Value {
    match audio {
        WireAudio::Pcmu => json!({"type": "audio/pcmu"}),
        WireAudio::Pcm24k => json!({"type": "audio/pcm", "rate": 24000}),
    }
}

/// The message, as sent.
pub(super) fn session_update(c: &RealtimeConfig) -> String {
    let turn = match c.turn {
        TurnMode::Local => Value::Null,
        TurnMode::ServerVad => json!({
            "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
            "silence_duration_ms": c.silence_duration_ms,
            "create_response": true, "interrupt_response": true,
        }),
    };
    let tools: Vec<Value> = c
        .tools
        .iter()
        .map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}))
        .collect();
    let mut input = json!({"format": format_json(c.audio), "turn_detection": turn});
    if !c.transcription_model.is_empty() {
        input["transcription"] = json!({"model": c.transcription_model});
    }
    let session = json!({
        "type": "realtime",
        "model": c.model,
        "instructions": c.instructions,
        "output_modalities": ["audio"],
        "audio": {"input": input, "output": {"format": format_json(c.audio), "voice": c.voice}},
        "tools": tools,
        "tool_choice": "auto",
    });
    json!({"type": "session.update", "session": session}).to_string()
}
