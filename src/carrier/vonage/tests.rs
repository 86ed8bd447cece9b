use super::*;

const CONNECTED: &str = r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000","cb_token":"t0k","call_uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab","from":"447700900000","to":"447700900001","trade":"hvac"}"#;

fn started() -> VonageCodec {
    let mut c = VonageCodec::new();
    match c.decode_text(CONNECTED).unwrap() {
        CarrierEvent::Start(info) => {
            assert_eq!(info.carrier, "vonage");
            assert_eq!(info.call_id, "aaaaaaaa-bbbb-cccc-dddd-0123456789ab");
            assert_eq!(info.token.as_deref(), Some("t0k"));
            assert_eq!((info.from.as_str(), info.to.as_str()), ("447700900000", "447700900001"));
            assert_eq!(info.parameter("trade"), Some("hvac"));
            assert_eq!(info.format, AudioFormat { encoding: AudioEncoding::L16, rate: 16000 });
        }
        other => panic!("{other:?}"),
    }
    c
}

#[test]
fn binary_frames_are_20_ms_of_little_endian_pcm() {
    let mut c = started();
    let mut frame = vec![0u8; 640];
    frame[0..2].copy_from_slice(&1234i16.to_le_bytes());
    frame[638..640].copy_from_slice(&(-2i16).to_le_bytes());
    match c.decode(std::time::Instant::now(), WireIn::Binary(&frame)).unwrap() {
        CarrierEvent::Audio(a) => {
            assert_eq!(a.pcm.len(), 320);
            assert_eq!((a.pcm[0], a.pcm[319]), (1234, -2));
            assert_eq!(a.encoded, &frame[..]);
        }
        other => panic!("{other:?}"),
    }
    let e = c.decode_binary(&frame[..320]).unwrap_err();
    assert_eq!((e.code(), e.severity()), ("bad_frame_size", Severity::Skip), "8 kHz-sized frame on a 16 kHz call");
    assert_eq!(c.decode_binary(&frame[..639]).unwrap_err().code(), "bad_frame_size");
}

#[test]
fn an_8_khz_stream_takes_320_byte_frames_and_headers_may_be_nested() {
    let mut c = VonageCodec::new();
    let msg = r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000","headers":{"cb_token":"x","call_uuid":"u-1"}}"#;
    let CarrierEvent::Start(info) = c.decode_text(msg).unwrap() else { panic!() };
    assert_eq!((info.token.as_deref(), info.call_id.as_str(), info.format.rate), (Some("x"), "u-1", 8000));
    assert!(matches!(c.decode_binary(&[0; 320]).unwrap(), CarrierEvent::Audio(a) if a.pcm.len() == 160));
    assert_eq!(c.decode_binary(&[0; 640]).unwrap_err().code(), "bad_frame_size");
}

#[test]
fn control_messages_both_ways() {
    let mut c = started();
    let mut out = WireOut::new(16, 4096);
    let mut one = |c: &mut VonageCodec, cmd: CarrierCommand<'_>| {
        c.encode_into(&cmd, &mut out).unwrap();
        let m = out.pop().unwrap();
        (m.kind, m.data.to_vec())
    };
    assert_eq!(one(&mut c, CarrierCommand::Clear), (super::super::MsgKind::Text, br#"{"action":"clear"}"#.to_vec()));
    assert_eq!(
        one(&mut c, CarrierCommand::Mark(MarkId(9))),
        (super::super::MsgKind::Text, br#"{"action":"notify","payload":{"mark":"9"}}"#.to_vec())
    );
    let (kind, data) = one(&mut c, CarrierCommand::Audio(&[1; 320]));
    assert_eq!((kind, data.len()), (super::super::MsgKind::Binary, 640));
    assert_eq!(&data[..2], &1i16.to_le_bytes());
    // A short tail is padded to a whole frame: Vonage takes exactly 20 ms per message.
    let (_, data) = one(&mut c, CarrierCommand::Audio(&[1; 100]));
    assert_eq!(data.len(), 640);
    assert_eq!(c.decode_text(r#"{"event":"websocket:cleared"}"#).unwrap(), CarrierEvent::Ignored);
    let notify = r#"{"event":"websocket:notify","payload":{"mark":"9"}}"#;
    assert_eq!(c.decode_text(notify).unwrap(), CarrierEvent::Mark(Some(MarkId(9))));
    let dtmf = r#"{"event":"websocket:dtmf","digit":"7","duration":250}"#;
    assert_eq!(c.decode_text(dtmf).unwrap(), CarrierEvent::Dtmf('7'));
    let dtmf = r##"{"event":"websocket:dtmf","dtmf":{"digits":"#","duration":100}}"##;
    assert_eq!(c.decode_text(dtmf).unwrap(), CarrierEvent::Dtmf('#'));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let mut c = VonageCodec::new();
    let e = c.decode_binary(&[0; 640]).unwrap_err();
    assert_eq!((e.code(), e.severity()), ("before_start", Severity::Fatal));
    let e = c.decode_text(&CONNECTED.replace("rate=16000", "rate=44100")).unwrap_err();
    assert_eq!(CarrierError::from(e).close_code(), close::UNSUPPORTED);
    let e = c.decode_text(&CONNECTED.replace("audio/l16", "audio/pcmu")).unwrap_err();
    assert_eq!(e.code(), "unsupported_format");
    let e = c.decode_text(&CONNECTED.replace("aaaaaaaa-bbbb", "../../v1")).unwrap_err();
    assert_eq!(e.code(), "invalid_id");
    let mut c = started();
    assert_eq!(c.decode_text(CONNECTED).unwrap_err().code(), "duplicate_start");
    assert_eq!(c.decode_text("nope").unwrap_err().code(), "malformed_json");
    let e = c.decode_text(r#"{"event":"websocket:media:update"}"#).unwrap_err();
    assert_eq!(e.severity(), Severity::Ignorable, "a new event type is not held against the call");
    assert_eq!(c.decode_text(r#"{"event":"websocket:dtmf","digit":"12"}"#).unwrap_err().code(), "bad_dtmf");
    assert_eq!(
        VonageCodec::new().encode_into(&CarrierCommand::Clear, &mut WireOut::new(1, 64)).unwrap_err().code(),
        "not_started"
    );
    assert_eq!(parse_content_type("audio/l16; rate=16000"), Some(16000));
    assert_eq!(parse_content_type("audio/L16;rate=8000"), Some(8000));
    assert_eq!(parse_content_type("audio/l16"), None);
}
