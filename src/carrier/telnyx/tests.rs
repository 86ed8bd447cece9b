use super::*;

const START: &str = r#"{"event":"start","sequence_number":"1","stream_id":"32de0dea-53cb-4b21-89a4-9e1819c043bc","start":{"user_id":"3e6f995f-85f7-4705-9741-53b116d28237","call_control_id":"v3:u5OAKGEPT3Dx8SZSSDRWEMdNH2OripQhO","call_session_id":"cs-1","from":"+13122010094","to":"+13122123456","client_state":"Y2IxOnQwaw==","custom_parameters":{"x":"1"},"media_format":{"encoding":"PCMU","sample_rate":8000,"channels":1}}}"#;

fn started() -> TelnyxCodec {
    let mut c = TelnyxCodec::new(TelnyxLimits::default());
    match c.decode_text(Instant::now(), START).unwrap() {
        CarrierEvent::Start(info) => {
            assert_eq!(info.carrier, "telnyx");
            assert_eq!(info.call_id, "v3:u5OAKGEPT3Dx8SZSSDRWEMdNH2OripQhO");
            assert_eq!(info.stream_id, "32de0dea-53cb-4b21-89a4-9e1819c043bc");
            assert_eq!((info.from.as_str(), info.to.as_str()), ("+13122010094", "+13122123456"));
            assert_eq!(info.token.as_deref(), Some("t0k"), "the token we put in client_state");
            assert_eq!(info.carrier_id("call_session_id"), Some("cs-1"));
            assert_eq!(info.parameter("x"), Some("1"));
            assert_eq!(info.format, AudioFormat::PCMU_8K);
        }
        other => panic!("{other:?}"),
    }
    c
}

fn media(chunk: u64, byte: u8) -> String {
    let payload = B64.encode([byte; 160]);
    format!(
        r#"{{"event":"media","sequence_number":"{}","stream_id":"32de0dea-53cb-4b21-89a4-9e1819c043bc","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{payload}"}}}}"#,
        chunk + 1,
        chunk * 20
    )
}

/// Feed messages at `now`; the first PCM sample of each audio frame played, in order.
fn play(c: &mut TelnyxCodec, now: Instant, msgs: &[String]) -> Vec<i16> {
    let mut out = Vec::new();
    for m in msgs {
        match c.decode_text(now, m) {
            Ok(CarrierEvent::Audio(a)) => out.push(a.pcm[0]),
            Ok(_) => {}
            Err(e) => assert_eq!(e.code(), "late_frame", "{e}"),
        }
        while let Some(ev) = c.poll_event() {
            if let CarrierEvent::Audio(a) = ev {
                out.push(a.pcm[0]);
            }
        }
    }
    out
}

fn pcm_of(byte: u8) -> i16 {
    let mut o = [0i16];
    g711::ulaw_decode(&[byte], &mut o);
    o[0]
}

#[test]
fn in_order_media_decodes_at_once() {
    let mut c = started();
    let got = play(&mut c, Instant::now(), &[media(1, 0x10), media(2, 0x20)]);
    assert_eq!(got, [pcm_of(0x10), pcm_of(0x20)]);
}

#[test]
fn frames_out_of_order_are_put_back_in_order() {
    let mut c = started();
    let now = Instant::now();
    // 1, 3, 2, 5, 4: played 1, 2, 3, 4, 5.
    let msgs = [media(1, 1), media(3, 3), media(2, 2), media(5, 5), media(4, 4)];
    assert_eq!(play(&mut c, now, &msgs), [1, 2, 3, 4, 5].map(pcm_of));
    assert_eq!((c.late_frames(), c.skipped_frames()), (0, 0));
}

#[test]
fn a_late_frame_is_counted_and_never_played_twice() {
    let mut c = started();
    let now = Instant::now();
    let msgs = [media(1, 1), media(2, 2), media(2, 2), media(1, 1)];
    assert_eq!(play(&mut c, now, &msgs), [1, 2].map(pcm_of));
    assert_eq!(c.late_frames(), 2);
    let e = c.decode_text(now, &media(1, 1)).unwrap_err();
    assert_eq!((e.code(), e.severity()), ("late_frame", Severity::Ignorable));
}

#[test]
fn a_lost_frame_is_skipped_when_the_slots_fill_or_the_wait_is_over() {
    let mut c = started();
    let t0 = Instant::now();
    // Chunk 2 never comes: 3, 4, 5 wait; 6 fills the slots and they all go.
    let msgs: Vec<_> = [1, 3, 4, 5].iter().map(|&n| media(n, n as u8)).collect();
    assert_eq!(play(&mut c, t0, &msgs), [pcm_of(1)]);
    assert_eq!(play(&mut c, t0, &[media(6, 6)]), [3, 4, 5, 6].map(pcm_of));
    assert_eq!(c.skipped_frames(), 1);
    // Chunk 2 now is late.
    assert_eq!(play(&mut c, t0, &[media(2, 2)]), Vec::<i16>::new());
    assert_eq!(c.late_frames(), 1);
    // Chunk 7 lost; 8 waits; 9 comes after the hold time: 8 and 9 go.
    assert_eq!(play(&mut c, t0, &[media(8, 8)]), Vec::<i16>::new());
    assert_eq!(play(&mut c, t0 + MAX_HOLD, &[media(9, 9)]), [8, 9].map(pcm_of));
}

#[test]
fn held_frames_play_before_the_stop() {
    let mut c = started();
    let now = Instant::now();
    assert_eq!(play(&mut c, now, &[media(1, 1), media(3, 3)]), [pcm_of(1)]);
    let stop = r#"{"event":"stop","sequence_number":"9","stream_id":"32de0dea-53cb-4b21-89a4-9e1819c043bc","stop":{"user_id":"u","call_control_id":"v3:x"}}"#;
    assert!(matches!(c.decode_text(now, stop).unwrap(), CarrierEvent::Audio(_)));
    assert!(matches!(c.poll_event(), Some(CarrierEvent::Stop)));
    assert!(c.poll_event().is_none());
}

#[test]
fn outbound_messages_are_exact() {
    let mut c = started();
    let mut out = WireOut::new(16, 1024);
    let mut one = |c: &mut TelnyxCodec, cmd: CarrierCommand<'_>| {
        c.encode_into(&cmd, &mut out).unwrap();
        String::from_utf8(out.pop().unwrap().data.to_vec()).unwrap()
    };
    assert_eq!(one(&mut c, CarrierCommand::Clear), r#"{"event":"clear"}"#);
    assert_eq!(one(&mut c, CarrierCommand::Mark(MarkId(42))), r#"{"event":"mark","mark":{"name":"42"}}"#);
    assert_eq!(one(&mut c, CarrierCommand::Audio(&[0, 0])), r#"{"event":"media","media":{"payload":"//8="}}"#);
}

#[test]
fn marks_dtmf_and_alaw() {
    let mut c = started();
    let now = Instant::now();
    let mark = r#"{"event":"mark","sequence_number":"4","stream_id":"32de0dea-53cb-4b21-89a4-9e1819c043bc","mark":{"name":"7"}}"#;
    assert_eq!(c.decode_text(now, mark).unwrap(), CarrierEvent::Mark(Some(MarkId(7))));
    let dtmf = r##"{"event":"dtmf","stream_id":"32de0dea-53cb-4b21-89a4-9e1819c043bc","occurred_at":"2026-01-01T00:00:00Z","dtmf":{"digit":"#"}}"##;
    assert_eq!(c.decode_text(now, dtmf).unwrap(), CarrierEvent::Dtmf('#'));
    let bad = r#"{"event":"dtmf","dtmf":{"digit":"12"}}"#;
    assert_eq!(c.decode_text(now, bad).unwrap_err().code(), "bad_dtmf");
    // A-law as the older docs spell it.
    let mut c = TelnyxCodec::new(TelnyxLimits::default());
    let start = START.replace(r#""encoding":"PCMU""#, r#""encoding":"audio/x-alaw""#);
    let CarrierEvent::Start(info) = c.decode_text(now, &start).unwrap() else { panic!() };
    assert_eq!(info.format.encoding, AudioEncoding::Pcma);
    let CarrierEvent::Audio(a) = c.decode_text(now, &media(1, 0xD5)).unwrap() else { panic!() };
    let mut want = [0i16];
    g711::alaw_decode(&[0xD5], &mut want);
    assert_eq!(a.pcm[0], want[0]);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let now = Instant::now();
    let mut c = TelnyxCodec::new(TelnyxLimits::default());
    let e = c.decode_text(now, &media(1, 1)).unwrap_err();
    assert_eq!((e.code(), e.severity()), ("before_start", Severity::Fatal));
    let l16 = START.replace(r#""encoding":"PCMU""#, r#""encoding":"L16""#);
    let e = CarrierError::from(c.decode_text(now, &l16).unwrap_err());
    assert_eq!((e.code(), e.is_fatal(), e.close_code()), ("unsupported_format", true, close::UNSUPPORTED));
    let wide = START.replace(r#""sample_rate":8000"#, r#""sample_rate":16000"#);
    assert_eq!(c.decode_text(now, &wide).unwrap_err().code(), "unsupported_format");
    let injected = START.replace("v3:u5OAKGEPT3Dx8SZSSDRWEMdNH2OripQhO", "v3:../../calls");
    assert_eq!(c.decode_text(now, &injected).unwrap_err().code(), "invalid_id");
    let mut c = started();
    assert_eq!(c.decode_text(now, START).unwrap_err().code(), "duplicate_start");
    let e = c.decode(now, WireIn::Binary(&[1, 2])).unwrap_err();
    assert_eq!((e.code(), e.severity()), ("binary_frame", Severity::Skip));
    let e = c.decode_text(now, r#"{"event":"bogus"}"#).unwrap_err();
    assert_eq!(e.severity(), Severity::Ignorable);
    assert_eq!(c.decode_text(now, "{nope").unwrap_err().code(), "malformed_json");
    let other = media(2, 2).replace("32de0dea-53cb-4b21-89a4-9e1819c043bc", "another");
    assert_eq!(c.decode_text(now, &other).unwrap_err().code(), "wrong_stream");
    let bad = r#"{"event":"media","media":{"chunk":"3","payload":"!!!"}}"#;
    assert_eq!(c.decode_text(now, bad).unwrap_err().code(), "bad_base64");
    let big = format!(r#"{{"event":"media","media":{{"payload":"{}"}}}}"#, "A".repeat(20_000));
    assert_eq!(c.decode_text(now, &big).unwrap_err().code(), "payload_too_large");
    // Telnyx's own error frames, in both shapes seen, are reported (and skipped).
    for err in [
        r#"{"event":"error","stream_id":"32de0dea-53cb-4b21-89a4-9e1819c043bc","error":{"title":"malformed_frame","code":"100003","detail":"bad"}}"#,
        r#"{"event":"error","payload":{"code":100004,"title":"invalid_media","detail":"x"}}"#,
    ] {
        let e = c.decode_text(now, err).unwrap_err();
        assert_eq!((e.code(), e.severity()), ("carrier_reported_error", Severity::Skip));
        assert!(e.to_string().contains("10000"), "{e}");
    }
    // A client_state someone else set is not a token.
    assert_eq!(token_from_client_state(&B64.encode("hello")), None);
    assert_eq!(token_from_client_state("!!"), None);
    assert_eq!(token_from_client_state(&client_state("abc")).as_deref(), Some("abc"));
}

#[test]
fn a_jump_in_the_numbering_is_followed_and_never_mutes_the_caller() {
    let mut c = started();
    let now = Instant::now();
    assert_eq!(play(&mut c, now, &[media(1, 1), media(2, 2)]), [1, 2].map(pcm_of));
    // A corrupt chunk number far ahead, then the real numbering goes on.
    let bogus = media(3, 9).replace(r#""chunk":"3""#, r#""chunk":"999999""#);
    let got = play(&mut c, now, &[bogus, media(3, 3), media(4, 4), media(5, 5)]);
    assert_eq!(got, [9, 3, 4, 5].map(pcm_of), "one stray frame, then the caller goes on");
    assert_eq!(c.resyncs(), 2);
    // After a while (over a second of audio) the numbering restarts from 1.
    let more: Vec<_> = (6..=70).map(|n| media(n, 1)).collect();
    assert_eq!(play(&mut c, now, &more).len(), 65);
    assert_eq!(play(&mut c, now, &[media(1, 7), media(2, 8)]), [7, 8].map(pcm_of));
    // Within a second behind, a frame is late, not a restart.
    assert!(play(&mut c, now, &[media(1, 7)]).is_empty());
    // u64::MAX does not overflow.
    let max = media(3, 6).replace(r#""chunk":"3""#, r#""chunk":"18446744073709551615""#);
    assert_eq!(play(&mut c, now, &[max]), [pcm_of(6)]);
}
