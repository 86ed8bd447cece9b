//! Codec conformance: replay the golden Twilio fixtures through the codec.

use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
use callbridge::carrier::{CarrierCommand, CarrierEvent, MsgKind, WireOut};
use callbridge::ids::MarkId;
use serde_json::{Value, json};

fn summarize(ev: &CarrierEvent<'_>) -> Value {
    match ev {
        CarrierEvent::Connected => json!({"event": "connected"}),
        CarrierEvent::Start(i) => {
            let params: serde_json::Map<String, Value> =
                i.parameters.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            let account = i.carrier_id("account_sid").unwrap_or_default();
            let mut v =
                json!({"event": "start", "call_sid": i.call_id, "stream_sid": i.stream_id, "account_sid": account});
            if !params.is_empty() {
                v["params"] = Value::Object(params);
            }
            v
        }
        CarrierEvent::Audio(a) => {
            json!({"event": "audio", "samples": a.pcm.len(), "timestamp_ms": a.timestamp_ms, "first8": &a.pcm[..8.min(a.pcm.len())]})
        }
        CarrierEvent::Dtmf(d) => json!({"event": "dtmf", "digit": d.to_string()}),
        CarrierEvent::Mark(m) => json!({"event": "mark", "id": m.map(|m| m.0)}),
        CarrierEvent::Stop => json!({"event": "stop"}),
        CarrierEvent::Ignored => json!({"event": "ignored"}),
    }
}

#[test]
fn inbound_golden_messages_decode_as_recorded() {
    let text = std::fs::read_to_string("fixtures/twilio/inbound.jsonl").unwrap();
    let mut codec = TwilioCodec::new(TwilioLimits::default());
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let name = case["name"].as_str().unwrap();
        let got = match codec.decode_text(case["raw"].as_str().unwrap()) {
            Ok(ev) => summarize(&ev),
            Err(e) => json!({"error": e.code(), "fatal": e.is_fatal()}),
        };
        assert_eq!(got, case["expect"], "fixture {name:?}");
        n += 1;
    }
    assert!(n >= 12);
}

#[test]
fn outbound_golden_messages_encode_exactly() {
    let text = std::fs::read_to_string("fixtures/twilio/outbound.jsonl").unwrap();
    let mut codec = TwilioCodec::new(TwilioLimits::default());
    let start = text_of_start();
    codec.decode_text(&start).unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let c = &case["command"];
        let pcm: Vec<i16>;
        let cmd = if c.get("clear").is_some() {
            CarrierCommand::Clear
        } else if let Some(m) = c.get("mark") {
            CarrierCommand::Mark(MarkId(m.as_u64().unwrap()))
        } else {
            pcm = c["audio"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i16).collect();
            CarrierCommand::Audio(&pcm)
        };
        let mut out = WireOut::new(8, 1024);
        codec.encode_into(&cmd, &mut out).unwrap();
        let wire = out.pop().unwrap();
        assert_eq!(wire.kind, MsgKind::Text);
        assert_eq!(
            std::str::from_utf8(&wire.data).unwrap(),
            case["wire"].as_str().unwrap(),
            "fixture {}",
            case["name"]
        );
    }
}

fn text_of_start() -> String {
    let text = std::fs::read_to_string("fixtures/twilio/inbound.jsonl").unwrap();
    let line = text.lines().find(|l| l.contains(r#""expect": {"event": "start""#)).unwrap();
    let v: Value = serde_json::from_str(line).unwrap();
    v["raw"].as_str().unwrap().to_string()
}

/// The Telnyx golden frames (`fixtures/telnyx/inbound.jsonl`) through the
/// Telnyx codec, reorder buffer included: each case's released events in order.
#[test]
fn telnyx_golden_frames_decode_and_reorder_as_recorded() {
    use callbridge::carrier::telnyx::{TelnyxCodec, TelnyxLimits};
    use callbridge::carrier::{Carrier, WireIn};
    let text = std::fs::read_to_string("fixtures/telnyx/inbound.jsonl").unwrap();
    let mut codec = TelnyxCodec::new(TelnyxLimits::default());
    let now = std::time::Instant::now();
    let summary = |ev: &CarrierEvent<'_>| -> Value {
        match ev {
            CarrierEvent::Start(i) => {
                let params: serde_json::Map<String, Value> =
                    i.parameters.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                json!({"event": "start", "call_id": i.call_id, "stream_id": i.stream_id, "token": i.token,
                    "from": i.from, "to": i.to, "params": params})
            }
            CarrierEvent::Audio(a) => {
                assert_eq!(a.pcm.len(), 160);
                json!({"event": "audio", "chunk_byte": a.encoded[0], "timestamp_ms": a.timestamp_ms})
            }
            other => summarize(other),
        }
    };
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let name = case["name"].as_str().unwrap();
        let got = match codec.decode(now, WireIn::Text(case["raw"].as_str().unwrap())) {
            Ok(ev) => {
                let mut evs = vec![summary(&ev)];
                while let Some(ev) = codec.poll_event() {
                    evs.push(summary(&ev));
                }
                Value::Array(evs)
            }
            Err(e) => Value::String(e.code().to_string()),
        };
        assert_eq!(got, case["expect"], "{name}");
        n += 1;
    }
    assert_eq!(n, 12);
}

/// The Vonage golden messages (`fixtures/vonage/inbound.jsonl`), text and binary.
#[test]
fn vonage_golden_messages_decode_as_recorded() {
    use callbridge::carrier::vonage::VonageCodec;
    use callbridge::carrier::{Carrier, WireIn};
    let text = std::fs::read_to_string("fixtures/vonage/inbound.jsonl").unwrap();
    let mut codec = VonageCodec::new();
    let now = std::time::Instant::now();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let name = case["name"].as_str().unwrap();
        let raw = case["raw"].as_str().unwrap();
        let binary = case["kind"] == "binary";
        let bytes: Vec<u8> = if binary {
            (0..raw.len()).step_by(2).map(|i| u8::from_str_radix(&raw[i..i + 2], 16).unwrap()).collect()
        } else {
            Vec::new()
        };
        let msg = if binary { WireIn::Binary(&bytes) } else { WireIn::Text(raw) };
        let got = match codec.decode(now, msg) {
            Ok(CarrierEvent::Start(i)) => {
                let params: serde_json::Map<String, Value> =
                    i.parameters.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                json!([{"event": "start", "call_id": i.call_id, "token": i.token, "from": i.from, "to": i.to,
                    "rate": i.format.rate, "params": params}])
            }
            Ok(CarrierEvent::Audio(a)) => json!([{"event": "audio", "samples": a.pcm.len(), "first": a.pcm[0]}]),
            Ok(other) => json!([summarize(&other)]),
            Err(e) => Value::String(e.code().to_string()),
        };
        assert_eq!(got, case["expect"], "{name}");
        n += 1;
    }
    assert_eq!(n, 10);
}
