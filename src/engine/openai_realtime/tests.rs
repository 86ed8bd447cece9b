use super::*;

fn cfg(turn: TurnMode) -> RealtimeConfig {
    RealtimeConfig {
        url: "wss://api.openai.com/v1/realtime?model=gpt-realtime".into(),
        api_key: "sk-test".into(),
        model: "gpt-realtime".into(),
        instructions: "Be brief.".into(),
        voice: "alloy".into(),
        tools: vec![ToolSpec {
            name: "book".into(),
            description: "Book".into(),
            parameters: json!({"type": "object"}),
        }],
        greeting: Some("Hello!".into()),
        turn,
        audio: WireAudio::Pcmu,
        transcription_model: "gpt-4o-mini-transcribe".into(),
        silence_duration_ms: 500,
        connect_timeout: Duration::from_secs(5),
        max_queued: 64,
        answer_timeout: Duration::from_secs(5),
        append_ms: 0,
    }
}

fn now() -> Instant {
    Instant::now()
}

fn drain(c: &mut RealtimeEngine) -> Vec<Value> {
    std::iter::from_fn(|| c.poll_message()).map(|m| serde_json::from_str(&m).unwrap()).collect()
}

fn types(c: &mut RealtimeEngine) -> Vec<String> {
    drain(c).into_iter().map(|v| v["type"].as_str().unwrap().to_string()).collect()
}

fn outputs(c: &mut RealtimeEngine) -> Vec<EngineEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn msg(c: &mut RealtimeEngine, m: &str) {
    c.on_message(m).unwrap();
}

#[test]
fn session_update_is_the_ga_shape_and_the_link_carries_it_first() {
    let c = RealtimeEngine::new(cfg(TurnMode::Local));
    let ga: Value = serde_json::from_str(&c.session_update()).unwrap();
    assert_eq!(ga["type"], "session.update");
    let s = &ga["session"];
    assert_eq!(s["type"], "realtime");
    assert_eq!(s["audio"]["input"]["format"], json!({"type": "audio/pcmu"}));
    assert_eq!(s["audio"]["output"]["format"], json!({"type": "audio/pcmu"}));
    assert_eq!(s["audio"]["output"]["voice"], "alloy");
    assert_eq!(s["audio"]["input"]["turn_detection"], Value::Null, "local turns: manual");
    assert_eq!(s["audio"]["input"]["transcription"]["model"], "gpt-4o-mini-transcribe");
    assert_eq!(
        s["tools"][0],
        json!({"type": "function", "name": "book", "description": "Book", "parameters": {"type": "object"}})
    );
    let links = c.links();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].headers, vec![("Authorization".to_string(), "Bearer sk-test".to_string())]);
    assert_eq!(links[0].hello, vec![LinkMsg::Text(c.session_update())]);
    assert!(!format!("{:?}", links[0]).contains("sk-test"), "the key never reaches Debug output");
    assert!(!format!("{:?}", c.config()).contains("sk-test"));
    let vad: Value = serde_json::from_str(&RealtimeEngine::new(cfg(TurnMode::ServerVad)).session_update()).unwrap();
    assert_eq!(vad["session"]["audio"]["input"]["turn_detection"]["type"], "server_vad");
}

#[test]
fn a_turn_in_local_mode_commits_creates_and_maps_deltas() {
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    c.handle_command(now(), EngineCommand::Start);
    let greet = drain(&mut c);
    assert_eq!(greet[0]["type"], "response.create");
    assert_eq!(greet[0]["response"]["instructions"], "Say exactly this to the caller, and nothing else: Hello!");
    msg(&mut c, r#"{"type":"response.created","response":{"id":"resp_G"}}"#);
    msg(&mut c, r#"{"type":"response.done","response":{"id":"resp_G","status":"completed"}}"#);
    let _ = outputs(&mut c);
    c.handle_command(now(), EngineCommand::Audio(AudioRef::Encoded(&[0xFF; 160])));
    let a = drain(&mut c);
    assert_eq!(a[0]["type"], "input_audio_buffer.append");
    assert_eq!(B64.decode(a[0]["audio"].as_str().unwrap()).unwrap(), vec![0xFF; 160]);
    c.handle_command(now(), EngineCommand::EndOfTurn);
    assert_eq!(types(&mut c), ["input_audio_buffer.commit", "response.create"]);

    let delta = B64.encode([0x80u8; 800]); // 100 ms of loud µ-law
    msg(&mut c, r#"{"type":"response.created","response":{"id":"resp_A"}}"#);
    msg(
        &mut c,
        r#"{"type":"response.output_item.added","response_id":"resp_A","item":{"id":"item_A","type":"message"}}"#,
    );
    msg(
        &mut c,
        &format!(
            r#"{{"type":"response.output_audio.delta","response_id":"resp_A","item_id":"item_A","delta":"{delta}"}}"#
        ),
    );
    msg(&mut c, r#"{"type":"response.output_audio_transcript.delta","response_id":"resp_A","delta":"Hi there"}"#);
    msg(&mut c, r#"{"type":"response.done","response":{"id":"resp_A","status":"completed"}}"#);
    let out = outputs(&mut c);
    assert_eq!(out[0], EngineEvent::ResponseStarted(ResponseId(2)));
    match &out[1] {
        EngineEvent::Audio(a) => {
            assert_eq!(a.len(), 800);
            assert_eq!(a.as_slice()[0], g711::ulaw_decode_sample(0x80));
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(out[2], EngineEvent::AgentText(ResponseId(2), "Hi there".into()));
    assert_eq!(out[3], EngineEvent::ResponseDone(ResponseId(2)));
    assert_eq!(c.received_ms(ResponseId(2)), Some(100));
    // Server VAD mode: our turn end does not create responses.
    let mut s = RealtimeEngine::new(cfg(TurnMode::ServerVad));
    s.handle_command(now(), EngineCommand::EndOfTurn);
    assert!(s.poll_message().is_none());
}

#[test]
fn local_turns_append_caller_audio_in_100_ms_batches_and_send_the_rest_before_the_commit() {
    let mut c = RealtimeEngine::new(RealtimeConfig { append_ms: 100, ..cfg(TurnMode::Local) });
    // Seven 20 ms frames, each its own bytes: one append of the first five, in order.
    for i in 0..7u8 {
        c.handle_command(now(), EngineCommand::Audio(AudioRef::Encoded(&[i; 160])));
        if i < 4 {
            assert!(c.poll_message().is_none(), "frame {i}: gathered, not sent yet");
        }
    }
    let a = drain(&mut c);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["type"], "input_audio_buffer.append");
    let sent = B64.decode(a[0]["audio"].as_str().unwrap()).unwrap();
    assert_eq!(sent, (0..5u8).flat_map(|i| [i; 160]).collect::<Vec<_>>(), "100 ms, byte for byte, in order");
    // The end of the turn sends the two frames still gathered, then commits.
    c.handle_command(now(), EngineCommand::EndOfTurn);
    let m = drain(&mut c);
    let kinds: Vec<&str> = m.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["input_audio_buffer.append", "input_audio_buffer.commit", "response.create"]);
    let rest = B64.decode(m[0]["audio"].as_str().unwrap()).unwrap();
    assert_eq!(rest, [[5u8; 160], [6u8; 160]].concat());
    // Server VAD hears every frame as it comes (its VAD runs on what it has).
    let mut s = RealtimeEngine::new(RealtimeConfig { append_ms: 100, ..cfg(TurnMode::ServerVad) });
    s.handle_command(now(), EngineCommand::Audio(AudioRef::Encoded(&[9; 160])));
    assert_eq!(types(&mut s), ["input_audio_buffer.append"]);
    // 24 kHz PCM counts 48 bytes per ms: 100 ms is 2,400 samples.
    let mut p =
        RealtimeEngine::new(RealtimeConfig { append_ms: 100, audio: WireAudio::Pcm24k, ..cfg(TurnMode::Local) });
    p.handle_command(now(), EngineCommand::Audio(AudioRef::Pcm(&[1; 1920])));
    assert!(p.poll_message().is_none(), "80 ms gathered");
    p.handle_command(now(), EngineCommand::Audio(AudioRef::Pcm(&[1; 480])));
    assert_eq!(B64.decode(drain(&mut p)[0]["audio"].as_str().unwrap()).unwrap().len(), 4800);
}

#[test]
fn barge_in_cancels_truncates_clamped_and_drops_late_deltas() {
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    let delta = B64.encode([0x80u8; 4000]); // 500 ms
    msg(&mut c, r#"{"type":"response.created","response":{"id":"r1"}}"#);
    msg(
        &mut c,
        &format!(r#"{{"type":"response.output_audio.delta","response_id":"r1","item_id":"i1","delta":"{delta}"}}"#),
    );
    let _ = outputs(&mut c);
    // The caller heard 900 ms — more than the 500 ms received: clamped.
    c.handle_command(now(), EngineCommand::Cancel { response: ResponseId(1), heard_ms: 900 });
    let sent = drain(&mut c);
    assert_eq!(sent[0], json!({"type": "response.cancel", "response_id": "r1"}));
    assert_eq!(
        sent[1],
        json!({"type": "conversation.item.truncate", "item_id": "i1", "content_index": 0, "audio_end_ms": 500})
    );
    msg(&mut c, &format!(r#"{{"type":"response.audio.delta","response_id":"r1","item_id":"i1","delta":"{delta}"}}"#));
    assert!(outputs(&mut c).is_empty(), "late delta dropped");
    // A second cancel does not truncate again; a done response is not cancelled again.
    msg(&mut c, r#"{"type":"response.done","response":{"id":"r1","status":"cancelled"}}"#);
    let out = outputs(&mut c);
    assert_eq!(out, vec![EngineEvent::ResponseDone(ResponseId(1))], "a cancelled response is not a failure");
    c.handle_command(now(), EngineCommand::Cancel { response: ResponseId(1), heard_ms: 100 });
    assert!(drain(&mut c).is_empty());
    // Function call of a cancelled response is not run; of a live one it is.
    msg(
        &mut c,
        r#"{"type":"response.function_call_arguments.done","response_id":"r1","call_id":"c0","name":"book","arguments":"{}"}"#,
    );
    msg(&mut c, r#"{"type":"response.created","response":{"id":"r2"}}"#);
    msg(
        &mut c,
        r#"{"type":"response.function_call_arguments.done","response_id":"r2","call_id":"c1","name":"book","arguments":"{\"when\":\"9am\"}"}"#,
    );
    let out = outputs(&mut c);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        out[1],
        EngineEvent::ToolCall { call_id: "c1".into(), name: "book".into(), arguments: json!({"when": "9am"}) }
    );
    msg(&mut c, r#"{"type":"response.done","response":{"id":"r2","status":"completed"}}"#);
    c.handle_command(
        now(),
        EngineCommand::ToolResult { call_id: "c1".into(), output: json!({"ok": true}), respond: true },
    );
    let sent = drain(&mut c);
    assert_eq!(sent[0]["item"], json!({"type": "function_call_output", "call_id": "c1", "output": "{\"ok\":true}"}));
    assert_eq!(sent[1]["type"], "response.create");
}

#[test]
fn one_active_response_at_a_time_creates_wait_for_response_done() {
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    msg(&mut c, r#"{"type":"response.created","response":{"id":"r1"}}"#);
    // Two parallel tool calls answered while r1 is still generating, and a `say`.
    for id in ["t1", "t2"] {
        c.handle_command(now(), EngineCommand::ToolResult { call_id: id.into(), output: json!({}), respond: true });
    }
    c.handle_command(now(), EngineCommand::Say("Your booking is confirmed.".into()));
    assert_eq!(types(&mut c), ["conversation.item.create", "conversation.item.create"], "no create while r1 is active");
    msg(&mut c, r#"{"type":"response.done","response":{"id":"r1","status":"completed"}}"#);
    let sent = drain(&mut c);
    assert_eq!(sent.len(), 1, "exactly one create once r1 is done: {sent:?}");
    assert_eq!(sent[0]["type"], "response.create");
    assert!(sent[0].get("response").is_none(), "the tool follow-up (two results, one answer) goes first");
    // The service refuses it anyway (a server-side response slipped in): it is retried after that one.
    let refused = sent[0]["event_id"].as_str().unwrap().to_string();
    msg(
        &mut c,
        &format!(
            r#"{{"type":"error","error":{{"type":"invalid_request_error","code":"conversation_already_has_active_response","message":"busy","event_id":"{refused}"}}}}"#
        ),
    );
    assert!(drain(&mut c).is_empty());
    msg(&mut c, r#"{"type":"response.created","response":{"id":"r_srv"}}"#);
    msg(&mut c, r#"{"type":"response.done","response":{"id":"r_srv","status":"completed"}}"#);
    let sent = drain(&mut c);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].get("response").is_none(), "the refused create is sent again first");
    msg(&mut c, r#"{"type":"response.created","response":{"id":"r3"}}"#);
    msg(&mut c, r#"{"type":"response.done","response":{"id":"r3","status":"completed"}}"#);
    let sent = drain(&mut c);
    assert_eq!(
        sent[0]["response"]["instructions"],
        "Say exactly this to the caller, and nothing else: Your booking is confirmed."
    );
    let errors: Vec<_> = outputs(&mut c).into_iter().filter(|e| matches!(e, EngineEvent::Error { .. })).collect();
    assert_eq!(errors.len(), 1, "the refusal is reported, not hidden");
}

#[test]
fn a_failed_or_incomplete_response_is_reported() {
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    msg(&mut c, r#"{"type":"response.created","response":{"id":"r1"}}"#);
    msg(
        &mut c,
        r#"{"type":"response.done","response":{"id":"r1","status":"failed","status_details":{"type":"failed","error":{"type":"server_error","code":"server_error","message":"The server had an error"}}}}"#,
    );
    let out = outputs(&mut c);
    assert!(out.contains(&EngineEvent::ResponseDone(ResponseId(1))));
    assert!(out.iter().any(|e| matches!(e, EngineEvent::ResponseFailed { response: ResponseId(1), code, message }
        if code == "response_failed" && message == "The server had an error")));
    msg(&mut c, r#"{"type":"response.created","response":{"id":"r2"}}"#);
    msg(
        &mut c,
        r#"{"type":"response.done","response":{"id":"r2","status":"incomplete","status_details":{"type":"incomplete","reason":"max_output_tokens"}}}"#,
    );
    assert!(outputs(&mut c).iter().any(|e| matches!(e, EngineEvent::ResponseFailed { code, message, .. }
        if code == "response_incomplete" && message == "max_output_tokens")));
}

#[test]
fn errors_reconnects_and_played_clips() {
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    msg(
        &mut c,
        r#"{"type":"error","error":{"type":"invalid_request_error","code":"response_cancel_not_active","message":"no"}}"#,
    );
    msg(
        &mut c,
        r#"{"type":"error","error":{"type":"invalid_request_error","code":"invalid_api_key","message":"bad key"}}"#,
    );
    msg(
        &mut c,
        r#"{"type":"error","error":{"type":"invalid_request_error","code":"beta_api_shape_disabled","message":"gone"}}"#,
    );
    let out = outputs(&mut c);
    assert!(matches!(&out[0], EngineEvent::Error { fatal: false, .. }));
    assert!(matches!(&out[1], EngineEvent::Error { fatal: true, code, .. } if code == "invalid_api_key"));
    assert!(matches!(&out[2], EngineEvent::Error { fatal: true, .. }));
    assert!(c.on_message("not json").is_err());
    assert!(c.on_message(r#"{"type":"response.output_audio.delta","response_id":"x","delta":"%%%"}"#).is_err());
    let _ = outputs(&mut c);
    msg(&mut c, r#"{"type":"response.created","response":{"id":"r9"}}"#);
    let _ = outputs(&mut c);
    c.handle_link(now(), 0, LinkEvent::Up { reconnected: true });
    let out = outputs(&mut c);
    assert!(out.iter().any(|o| matches!(o, EngineEvent::ResponseDone(_))));
    assert_eq!(out.last(), Some(&EngineEvent::Reconnected));
    assert!(drain(&mut c).is_empty(), "the link re-sends the session config, not the engine");
    c.handle_command(now(), EngineCommand::Play(vec![1i16; 80].into()));
    let out = outputs(&mut c);
    let EngineEvent::ResponseStarted(id) = out[0] else { panic!() };
    assert!(id > ResponseId(2), "played clips continue the sequence");
    c.handle_link(now(), 0, LinkEvent::Down("engine closed the socket"));
    assert!(matches!(outputs(&mut c).as_slice(), [EngineEvent::Error { fatal: true, .. }]));
}

/// Network input never panics the engine: mutated and truncated versions of
/// real server events (a deterministic xorshift generator).
#[test]
fn mutated_server_events_never_panic() {
    let delta = B64.encode([0x80u8; 160]);
    let bases = [
        r#"{"type":"response.created","response":{"id":"r1"}}"#.to_string(),
        r#"{"type":"response.output_item.added","response_id":"r1","item":{"id":"i1","type":"message"}}"#.to_string(),
        format!(r#"{{"type":"response.output_audio.delta","response_id":"r1","item_id":"i1","delta":"{delta}"}}"#),
        r#"{"type":"response.output_audio_transcript.delta","response_id":"r1","delta":"Hi"}"#.to_string(),
        r#"{"type":"response.function_call_arguments.done","response_id":"r1","call_id":"c","name":"n","arguments":"{\"a\":1}"}"#.to_string(),
        r#"{"type":"response.done","response":{"id":"r1","status":"failed","status_details":{"reason":"x"}}}"#.to_string(),
        r#"{"type":"error","error":{"type":"t","code":"c","message":"m","event_id":"cb_create_1"}}"#.to_string(),
        r#"{"type":"conversation.item.input_audio_transcription.completed","transcript":"hello"}"#.to_string(),
    ];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rng = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut ok, mut bad) = (0, 0);
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    for i in 0..20_000u64 {
        let mut b = bases[(rng() % bases.len() as u64) as usize].clone().into_bytes();
        for _ in 0..1 + rng() % 3 {
            let n = b.len().max(1);
            match rng() % 3 {
                0 => b.truncate((rng() as usize) % n),
                1 if !b.is_empty() => {
                    let at = (rng() as usize) % b.len();
                    b[at] = b"{}[]:,\"0a1-."[(rng() % 12) as usize];
                }
                _ => b.insert((rng() as usize) % (b.len() + 1), b"\"}9e"[(rng() % 4) as usize]),
            }
        }
        let text = String::from_utf8_lossy(&b);
        match c.on_message(&text) {
            Ok(()) => ok += 1,
            Err(_) => bad += 1,
        }
        if i % 64 == 0 {
            c.handle_command(now(), EngineCommand::Cancel { response: ResponseId((i % 7) as u32), heard_ms: 300 });
            c.handle_command(now(), EngineCommand::EndOfTurn);
        }
        while c.poll_event().is_some() {}
        while c.poll_message().is_some() {}
    }
    assert!(ok > 2_000 && bad > 2_000, "both paths were exercised (ok {ok}, errors {bad})");
    // Still a working engine afterwards.
    msg(&mut c, r#"{"type":"response.created","response":{"id":"final"}}"#);
    assert!(matches!(c.poll_event(), Some(EngineEvent::ResponseStarted(_))));
}

#[test]
fn the_report_sums_every_responses_token_usage() {
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    for (i, o) in [(80, 40), (20, 10)] {
        let done = json!({"type": "response.done", "response": {"id": format!("resp_{i}"), "status": "completed",
            "usage": {"total_tokens": i + o, "input_tokens": i, "output_tokens": o}}});
        c.handle_link(now(), 0, LinkEvent::Text(&done.to_string()));
    }
    let r = c.report();
    assert_eq!((r.model.as_str(), r.voice.as_str()), ("gpt-realtime", "alloy"));
    assert_eq!(r.usage, Some(json!({"input_tokens": 100, "output_tokens": 50, "total_tokens": 150})));
}

fn link(c: &mut RealtimeEngine, at: Instant, m: &str) {
    c.handle_link(at, 0, LinkEvent::Text(m));
}

fn failed_silent(evs: &[EngineEvent]) -> usize {
    evs.iter().filter(|e| matches!(e, EngineEvent::ResponseFailed { code, .. } if code == "engine_silent")).count()
}

#[test]
fn an_engine_that_never_answers_is_given_up_and_its_late_answer_never_plays() {
    let t0 = now();
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    c.handle_link(t0, 0, LinkEvent::Up { reconnected: false });
    c.handle_command(t0, EngineCommand::Audio(AudioRef::Encoded(&[0x55; 160])));
    c.handle_command(t0, EngineCommand::EndOfTurn);
    assert_eq!(types(&mut c), ["input_audio_buffer.append", "input_audio_buffer.commit", "response.create"]);
    let _ = outputs(&mut c);
    let deadline = c.poll_timeout().expect("a response is awaited");
    assert_eq!(deadline, t0 + Duration::from_secs(5));
    // Before the deadline nothing happens.
    c.handle_timeout(deadline - Duration::from_millis(1));
    assert!(outputs(&mut c).is_empty());
    c.handle_timeout(deadline);
    assert_eq!(failed_silent(&outputs(&mut c)), 1, "the session is told, and plays the fallback");
    assert_eq!(types(&mut c), ["response.cancel"]);
    assert_eq!(c.poll_timeout(), None, "nothing awaited any more");
    // The answer turns up after all: cancelled, never started, its audio dropped.
    let late = t0 + Duration::from_secs(6);
    link(&mut c, late, r#"{"type":"response.created","response":{"id":"resp_late"}}"#);
    link(&mut c, late, r#"{"type":"response.output_audio.delta","response_id":"resp_late","delta":"VVVV"}"#);
    let evs = outputs(&mut c);
    assert!(!evs.iter().any(|e| matches!(e, EngineEvent::ResponseStarted(_) | EngineEvent::Audio(_))), "{evs:?}");
    let cancel = drain(&mut c);
    assert_eq!(cancel[0]["type"], "response.cancel");
    assert_eq!(cancel[0]["response_id"], "resp_late");
    // The next turn is asked for as usual and plays.
    c.handle_command(late, EngineCommand::EndOfTurn);
    assert_eq!(types(&mut c), ["response.create"]);
    link(&mut c, late, r#"{"type":"response.created","response":{"id":"resp_2"}}"#);
    link(&mut c, late, r#"{"type":"response.output_audio.delta","response_id":"resp_2","delta":"VVVV"}"#);
    let evs = outputs(&mut c);
    assert!(matches!(evs[0], EngineEvent::ResponseStarted(_)), "{evs:?}");
    assert!(evs.iter().any(|e| matches!(e, EngineEvent::Audio(_))));
    // The abandoned one's `response.done` does not end the active one: a
    // further request still waits for resp_2 (one active response at a time).
    link(&mut c, late, r#"{"type":"response.done","response":{"id":"resp_late","status":"cancelled"}}"#);
    c.handle_command(late, EngineCommand::EndOfTurn);
    assert!(types(&mut c).is_empty(), "waits for resp_2");
    link(&mut c, late, r#"{"type":"response.done","response":{"id":"resp_2","status":"completed"}}"#);
    assert_eq!(types(&mut c), ["response.create"]);
}

#[test]
fn a_response_that_stalls_midway_is_given_up_but_a_slow_steady_one_is_not() {
    let t0 = now();
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    c.handle_command(t0, EngineCommand::EndOfTurn);
    let _ = drain(&mut c);
    // Steady: something every 4 s for 20 s keeps it alive.
    link(&mut c, t0, r#"{"type":"response.created","response":{"id":"resp_1"}}"#);
    for i in 1..=5u64 {
        let at = t0 + Duration::from_secs(4 * i);
        c.handle_timeout(at);
        link(&mut c, at, r#"{"type":"response.output_audio.delta","response_id":"resp_1","delta":"VVVV"}"#);
    }
    assert_eq!(failed_silent(&outputs(&mut c)), 0, "an engine that keeps talking is not silent");
    // Then it stops mid-response.
    let last = t0 + Duration::from_secs(20);
    assert_eq!(c.poll_timeout(), Some(last + Duration::from_secs(5)));
    c.handle_timeout(last + Duration::from_secs(5));
    let evs = outputs(&mut c);
    assert!(evs.iter().any(|e| matches!(e, EngineEvent::ResponseDone(_))), "its playback is finished: {evs:?}");
    assert_eq!(failed_silent(&evs), 1);
    link(
        &mut c,
        last + Duration::from_secs(6),
        r#"{"type":"response.output_audio.delta","response_id":"resp_1","delta":"VVVV"}"#,
    );
    assert!(!outputs(&mut c).iter().any(|e| matches!(e, EngineEvent::Audio(_))), "late audio is dropped");
}

#[test]
fn a_response_the_caller_cut_off_is_finished_quietly_when_the_engine_goes_silent() {
    let t0 = now();
    let mut c = RealtimeEngine::new(cfg(TurnMode::Local));
    c.handle_command(t0, EngineCommand::EndOfTurn);
    link(&mut c, t0, r#"{"type":"response.created","response":{"id":"resp_1"}}"#);
    let id = match outputs(&mut c).first() {
        Some(EngineEvent::ResponseStarted(id)) => *id,
        other => panic!("{other:?}"),
    };
    c.handle_command(t0, EngineCommand::Cancel { response: id, heard_ms: 0 });
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(failed_silent(&outputs(&mut c)), 0, "no fallback over a caller who barged in");
    assert_eq!(c.poll_timeout(), None);
}
