#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*)
from the golden fixtures and the vendors' documented message shapes.

One seed per message, and one whole session per target (messages joined by
newlines, the way the fuzz bodies split them: crates/testkit/src/fuzz.rs).
Binary messages start with a 0x00 byte. Run from the repository root."""
import base64, json, os, pathlib, struct

root = pathlib.Path("fuzz/corpus")


def write(target, seeds):
    d = root / target
    d.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seeds):
        (d / f"seed-{i:02}").write_bytes(s if isinstance(s, bytes) else s.encode())
    (d / "seed-session").write_bytes(b"\n".join(s if isinstance(s, bytes) else s.encode() for s in seeds))


def golden(path):
    out = []
    for line in open(path):
        if line.strip():
            d = json.loads(line)
            raw = d["raw"]
            out.append(b"\x00" + bytes.fromhex(raw) if d.get("kind") == "binary" else raw.encode())
    return out


write("twilio_stream", golden("fixtures/twilio/inbound.jsonl"))
write("telnyx_stream", golden("fixtures/telnyx/inbound.jsonl"))
write("vonage_stream", golden("fixtures/vonage/inbound.jsonl"))

ulaw = base64.b64encode(bytes([0x55, 0xD5] * 80)).decode()
write("realtime_events", [json.dumps(m) for m in [
    {"type": "session.created", "session": {"id": "sess_1", "model": "gpt-realtime"}},
    {"type": "session.updated", "session": {"id": "sess_1"}},
    {"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": "item_u"},
    {"type": "input_audio_buffer.committed", "item_id": "item_u"},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_u", "content_index": 0,
     "transcript": "my sink is leaking"},
    {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
    {"type": "response.output_item.added", "response_id": "resp_1",
     "item": {"id": "item_1", "type": "message", "role": "assistant"}},
    {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_1", "output_index": 0,
     "content_index": 0, "delta": ulaw},
    {"type": "response.output_audio_transcript.delta", "response_id": "resp_1", "item_id": "item_1",
     "delta": "I can book that."},
    {"type": "response.function_call_arguments.done", "response_id": "resp_1", "item_id": "item_fc",
     "call_id": "call_1", "name": "book", "arguments": "{\"when\":\"tomorrow\"}"},
    {"type": "response.done", "response": {"id": "resp_1", "status": "completed",
     "usage": {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}}},
    {"type": "error", "error": {"type": "invalid_request_error", "code": "response_cancel_not_active",
     "message": "no active response"}},
]])

write("deepgram_events", [json.dumps(m) for m in [
    {"type": "Metadata", "request_id": "r1", "created": "2026-12-02T00:00:00Z", "duration": 0, "channels": 1},
    {"type": "SpeechStarted", "channel": [0], "timestamp": 0.5},
    {"type": "Results", "channel_index": [0, 1], "start": 0.0, "duration": 1.2, "is_final": False,
     "speech_final": False, "channel": {"alternatives": [{"transcript": "my kitchen", "confidence": 0.9,
     "words": [{"word": "my", "start": 0.1, "end": 0.3}]}]}},
    {"type": "Results", "channel_index": [0, 1], "start": 0.0, "duration": 2.0, "is_final": True,
     "speech_final": True, "from_finalize": False, "channel": {"alternatives": [{"transcript":
     "my kitchen sink is leaking", "confidence": 0.98, "words": []}]}},
    {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 2.0},
]])

write("elevenlabs_events", [json.dumps(m) for m in [
    {"audio": base64.b64encode(bytes([0x55] * 400)).decode(), "contextId": "r1", "isFinal": None,
     "alignment": {"chars": list("Thanks"), "charStartTimesMs": [0, 50, 100, 150, 200, 250],
                   "charDurationsMs": [50] * 6}, "normalizedAlignment": None},
    {"isFinal": True, "contextId": "r1"},
    {"error": "quota_exceeded", "message": "quota"},
]])

plan = {"engine": "local", "instructions": "You are the receptionist.", "greeting": "Thanks for calling.",
        "voice": "alloy", "tools": [{"name": "book", "description": "Book", "parameters": {"type": "object"}}],
        "record": True, "turn": {"endpoint_silence_ms": 600, "detector": "smart"}, "events": ["call.status"],
        "max_duration_s": 600, "silence_timeout_s": 30, "forward": "+15557654321",
        "builtin_tools": ["end_call", "transfer_call", "send_dtmf"],
        "transfer_destinations": [{"name": "on_call", "to": "sip:desk@pbx.example.com"}],
        "reject": {"reason": "busy", "say": "closed"}, "greeting_interruptible": False}
write("callback_replies", [json.dumps(plan), json.dumps({"result": {"booked": True}}),
                           json.dumps({"reply": "Sure.", "action": {"type": "transfer", "to": "+15557654321"}}),
                           json.dumps({"reply_delta": "Great. "}), json.dumps({"action": {"type": "hangup"}})])


def wav(rate, n, channels=1, bits=16):
    data = b"".join(struct.pack("<h", (i * 37) % 2000 - 1000) for i in range(n * channels))
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


d = root / "wav_clip"
d.mkdir(parents=True, exist_ok=True)
for name, b in [("seed-8k", wav(8000, 400)), ("seed-16k-stereo", wav(16000, 300, 2)), ("seed-44k", wav(44100, 500))]:
    (d / name).write_bytes(b)

write("signatures", ["t=1700000000,v1=34337189cda1d344c6595cf0e67b0df5c0e70362313ed63674f67d580336aed4\n"
                     '{"type":"call.started","call_id":"call_1","seq":1}',
                     "1700000000|c2lnbmF0dXJl\n{\"data\":{}}",
                     "Bearer eyJhbGciOiJIUzI1NiJ9.eyJpYXQiOjE3MDAwMDAwMDB9.c2ln\nto=1555&from=1444"])

# webhooks: first byte = route (crates/testkit/src/fuzz.rs WEBHOOK_ROUTES), first line = query, rest = body.
from urllib.parse import urlencode
tw = {"CallSid": "CA0123", "AccountSid": "AC0000", "From": "+15557770000", "To": "+15550001111",
      "CallStatus": "ringing", "Direction": "inbound", "CallerName": "Ann"}
tx = lambda kind, p: json.dumps({"data": {"id": "ev-" + kind, "event_type": kind, "record_type": "event",
                                          "payload": dict({"call_control_id": "v3:abc", "connection_id": "c1",
                                                           "from": "+15557770000", "to": "+15550001111",
                                                           "direction": "incoming", "client_state": None}, **p)}})
# WebRTC media as the shell frames it: the start message, then
# [kind][RTP timestamp BE][payload] (binary, so 0x00 first). The Opus packets
# are 20 ms of a tone encoded by libopus 1.3 (48 kHz mono, 24 kbit/s), chosen
# to hold no newline byte so a session's lines stay whole.
OPUS = [bytes.fromhex(h) for h in [
    "78ada377927bc193a9a182da564cfd056427e889ee58888899c78321613706bf1597dc43b1ec2647c78709204a55fee5ac7401ba7391bd",
    "78063a26830147971cc092076745f93f1fd35e367d8406efa02dc266c34e4f00a14f3ce84e440908f5f7b5",
    "78381d41dc4cacfe931a399431665061e3a561ffc84163a689ae6e07ea15846fd86bea8ffa7a3c83fbd49bd723ae46",
    "78063a26835c1ec643da1c4ab3a529a11326ee69ed124815e620323346e6d3464573827d70cd2117cee664af90bdeec6",
]]


def rtp(kind, ts, payload):
    return b"\x00" + bytes([kind]) + struct.pack(">I", ts & 0xFFFFFFFF) + payload


start = json.dumps({"event": "start", "session": "s1", "from": "browser", "to": "", "token": "t", "dtmf": True})
write("webrtc_media", [start] + [rtp(1, 960 * i, p) for i, p in enumerate(OPUS)] + [
    rtp(1, 960 * 7, OPUS[0]),            # three frames lost: concealed
    rtp(1, 960 * 2, OPUS[1]),            # late: dropped
    rtp(1, 960 * 8, b""),                # DTX gap marker
    rtp(2, 960 * 9, bytes([5, 0x0C, 0, 160])),   # key 5
    rtp(2, 960 * 9, bytes([5, 0x8C, 1, 64])),    # its end, repeated
    rtp(2, 960 * 12, bytes([11, 0x0C, 0, 160])),  # '#'
])

offer = "\r\n".join([
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
    "a=extmap-allow-mixed", "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Yk3x", "a=ice-pwd:7hQ0VUJbBd2q1sXb2A4o0l1u", "a=ice-options:trickle",
    "a=fingerprint:sha-256 2B:7C:3A:5E:4F:61:8D:9A:0B:1C:2D:3E:4F:50:61:72:83:94:A5:B6:C7:D8:E9:FA:0B:1C:2D:3E:4F:50:61:72",
    "a=setup:actpass", "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=sendrecv", "a=msid:- 9f5a", "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc", "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2", "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000", "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:1001 cname:abc", "a=ssrc:1001 msid:- 9f5a",
    "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0",
]) + "\r\n"
d = root / "webrtc_offer"
d.mkdir(parents=True, exist_ok=True)
(d / "seed-00").write_text(offer)
(d / "seed-01").write_text(offer.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 PCMU/8000"))
(d / "seed-02").write_text(offer.replace("m=audio", "m=video"))

vq = {"to": "15550001111", "from": "15557770000", "uuid": "uu-1", "conversation_uuid": "CON-1"}
hooks = [
    (0, "", urlencode(tw)),
    (1, "", urlencode({"StreamSid": "MZ1", "CallSid": "CA0123", "StreamEvent": "stream-stopped",
                       "StreamError": "x", "Timestamp": "2026-01-01T00:00:00Z"})),
    (2, "call=c_0123", urlencode({"CallSid": "CA0123", "DialCallStatus": "completed", "DialCallSid": "CA9"})),
    (3, "call=c_0123", urlencode(dict(tw, AnsweredBy="machine_end_beep", Direction="outbound-api"))),
    (4, "call=c_0123", urlencode(dict(tw, CallStatus="busy"))),
    (5, "", tx("call.initiated", {})),
    (5, "", tx("call.hangup", {"hangup_cause": "normal_clearing", "hangup_source": "caller"})),
    (5, "", tx("call.machine.detection.ended", {"result": "machine", "client_state": "b3V0OmNfMDEyMw=="})),
    (5, "", tx("call.recording.saved", {"recording_urls": {"mp3": "https://x/r.mp3"}, "channels": "dual",
                                        "recording_started_at": "2026-01-01T00:00:00Z"})),
    (6, urlencode(vq), ""),
    (7, "", json.dumps(vq)),
    (8, "", json.dumps(dict(vq, status="completed", direction="inbound", timestamp="2026-01-01T00:00:00.000Z"))),
    (9, urlencode(dict(vq, status="answered")) + "&transfer=c_0123", ""),
    (10, "call=c_0123", json.dumps(vq)),
    (11, "call=c_0123", json.dumps(dict(vq, status="machine", sub_state="beep_start"))),
    (12, "", json.dumps({"to": "+15557770000", "from": "+15550001111", "machine_detection": "leave_message",
                         "ring_timeout_s": 20, "plan": {"greeting": "Hi"}})),
    (13, "c_0123", json.dumps({"text": "Hello there", "interruptible": False})),
    (14, "c_0123", json.dumps({"to": "+15557654321"})),
]
d = root / "webhooks"
d.mkdir(parents=True, exist_ok=True)
for i, (route, query, body) in enumerate(hooks):
    (d / f"seed-{i:02}").write_bytes(bytes([route]) + query.encode() + b"\n" + body.encode())
print("seeds written under", root)
