//! Fuzz bodies: one function per decoder that takes bytes from the network or
//! a backend, shared by the libFuzzer targets (`fuzz/`, nightly `cargo fuzz`)
//! and the stable replay of their corpora (`tests/fuzz_corpus.rs`, run in CI).
//!
//! Each body feeds the input the way the server would — split into messages
//! on newlines where a connection carries many — and drains everything the
//! decoder produces, so a later message meets the state earlier ones left.
//! A body returns normally for every input; a panic is the finding.

use std::time::{Duration, Instant, SystemTime};

use callbridge::carrier::{Carrier, WireIn};

/// A fuzz body.
pub type Body = fn(&[u8]);

/// Targets by name (as in `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Body)] = &[
    ("twilio_stream", twilio_stream),
    ("telnyx_stream", telnyx_stream),
    ("vonage_stream", vonage_stream),
    ("realtime_events", realtime_events),
    ("deepgram_events", deepgram_events),
    ("elevenlabs_events", elevenlabs_events),
    ("callback_replies", callback_replies),
    ("wav_clip", wav_clip),
    ("signatures", signatures),
    ("webhooks", webhooks),
    ("webrtc_media", webrtc_media),
    ("webrtc_offer", webrtc_offer),
];

fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n').take(64)
}

/// A message as a WebSocket would hand it: text if it is UTF-8 (and does not
/// ask to be binary with a leading 0x00), binary otherwise.
fn message(m: &[u8]) -> WireIn<'_> {
    match (m.first(), std::str::from_utf8(m)) {
        (Some(0), _) => WireIn::Binary(&m[1..]),
        (_, Ok(s)) => WireIn::Text(s),
        (_, Err(_)) => WireIn::Binary(m),
    }
}

/// What a driven codec produced: caller audio samples and key presses (for
/// the tests that check a harness gets past its decoder's front door).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Caller audio samples, concealment included.
    pub samples: usize,
    /// Key presses, in order.
    pub keys: String,
}

impl Decoded {
    fn add(&mut self, ev: &callbridge::carrier::CarrierEvent<'_>) {
        use callbridge::carrier::CarrierEvent;
        match ev {
            CarrierEvent::Audio(a) => self.samples += a.pcm.len(),
            CarrierEvent::Dtmf(k) => self.keys.push(*k),
            _ => {}
        }
    }
}

fn drive(mut codec: Box<dyn Carrier>, data: &[u8]) -> Decoded {
    let t0 = Instant::now();
    let mut out = Decoded::default();
    for (i, m) in lines(data).enumerate() {
        let now = t0 + Duration::from_millis(20 * i as u64);
        match codec.decode(now, message(m)) {
            Ok(ev) => out.add(&ev),
            Err(_) => continue,
        }
        while let Some(ev) = codec.poll_event() {
            out.add(&ev);
        }
    }
    out
}

/// Twilio Media Streams messages (text JSON), one per line.
pub fn twilio_stream(data: &[u8]) {
    use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
    drive(Box::new(TwilioCodec::new(TwilioLimits { max_payload_bytes: 48 * 1024 })), data);
}

/// Telnyx media stream messages (text JSON, frames reordered by chunk), one per line.
pub fn telnyx_stream(data: &[u8]) {
    use callbridge::carrier::telnyx::{TelnyxCodec, TelnyxLimits};
    drive(Box::new(TelnyxCodec::new(TelnyxLimits::default())), data);
}

/// Vonage WebSocket messages (text JSON and binary PCM), one per line.
pub fn vonage_stream(data: &[u8]) {
    drive(Box::new(callbridge::carrier::vonage::VonageCodec::new()), data);
}

/// A browser call's media as the WebRTC shell hands it to the codec: the
/// start message (text JSON), then `[kind][RTP timestamp][payload]` binary
/// messages whose payloads are what the browser put in its RTP packets
/// (Opus packets for libopus to decode, with timestamp gaps to conceal, and
/// RFC 4733 telephone-events), one per line.
pub fn webrtc_media(data: &[u8]) {
    let _ = webrtc_media_decoded(data);
}

/// [`webrtc_media`], with what the codec produced. The call's audio rate
/// follows the input's length, so every rate Opus takes is reached.
pub fn webrtc_media_decoded(data: &[u8]) -> Decoded {
    use callbridge::carrier::webrtc::WebRtcCodec;
    let rates = [16_000, 8_000, 12_000, 24_000, 48_000];
    let rate = rates[data.len() % rates.len()];
    drive(Box::new(WebRtcCodec::new(rate).expect("opus at a supported rate")), data)
}

/// A browser's SDP offer, as `POST /webrtc/offer` reads it before any
/// socket is opened: the WebRTC stack's SDP parser, the server's own checks
/// and the payload types read from the answer's `a=rtpmap` lines.
pub fn webrtc_offer(data: &[u8]) {
    let Ok(sdp) = std::str::from_utf8(data) else { return };
    let _ = webrtc::peer_connection::RTCSessionDescription::offer(sdp.to_owned());
    let _ = callbridge::runtime::webrtc::negotiated(sdp);
    let _ = callbridge::api::webrtc::looks_like_offer(sdp);
}

/// OpenAI Realtime server events, one per line, after the session was sent.
pub fn realtime_events(data: &[u8]) {
    use callbridge::engine::openai_realtime::{RealtimeConfig, RealtimeEngine, TurnMode, WireAudio};
    let mut e = RealtimeEngine::new(RealtimeConfig {
        url: "wss://api.openai.com/v1/realtime?model=gpt-realtime".into(),
        api_key: "sk-fuzz".into(),
        model: "gpt-realtime".into(),
        instructions: "Be brief.".into(),
        voice: "alloy".into(),
        tools: vec![],
        greeting: Some("Hello!".into()),
        turn: TurnMode::Local,
        audio: WireAudio::Pcmu,
        transcription_model: "gpt-4o-mini-transcribe".into(),
        silence_duration_ms: 500,
        connect_timeout: Duration::from_secs(5),
        max_queued: 64,
        answer_timeout: Duration::from_secs(5),
        append_ms: 100,
    });
    for m in lines(data) {
        let Ok(text) = std::str::from_utf8(m) else { continue };
        let _ = e.on_message(text);
        while e.poll_message().is_some() {}
        while callbridge::engine::Engine::poll_event(&mut e).is_some() {}
    }
}

/// Deepgram live results, one per line, between audio and turn ends.
pub fn deepgram_events(data: &[u8]) {
    use callbridge::engine::cascaded::deepgram::{DeepgramConfig, Stt, SttAudio};
    let mut stt = Stt::new(DeepgramConfig {
        url: "wss://dg.example/v1/listen".into(),
        api_key: "dg-fuzz".into(),
        model: "nova-3".into(),
        language: "en-US".into(),
        endpointing_ms: 300,
        utterance_end_ms: 1000,
        smart_format: true,
        audio: SttAudio::Mulaw8k,
        keepalive: Duration::from_secs(4),
        gate_hangover: Some(Duration::from_millis(1500)),
        finalize_timeout: Duration::from_millis(800),
        reconnects: 3,
        connect_timeout: Duration::from_secs(5),
    });
    let t0 = Instant::now();
    stt.up(t0, false);
    for (i, m) in lines(data).enumerate() {
        let now = t0 + Duration::from_millis(100 * i as u64);
        stt.audio_ulaw(now, &[0x55; 160]);
        if let Ok(text) = std::str::from_utf8(m) {
            let _ = stt.on_text(now, text);
        }
        if i % 4 == 3 {
            stt.end_of_turn(now);
        }
        stt.handle_timeout(now + Duration::from_secs(1));
        while stt.poll_transmit().is_some() {}
        while stt.poll_event().is_some() {}
    }
}

/// ElevenLabs multi-context messages, one per line, while a reply is spoken.
pub fn elevenlabs_events(data: &[u8]) {
    use callbridge::engine::cascaded::elevenlabs::{ElevenLabsConfig, Tts, TtsAudio};
    let mut tts = Tts::new(ElevenLabsConfig {
        base_url: "wss://el.example/".into(),
        api_key: "el-fuzz".into(),
        voice_id: "voice1".into(),
        model_id: "eleven_flash_v2_5".into(),
        audio: TtsAudio::Ulaw8k,
        voice_settings: serde_json::Value::Null,
        chunk_length_schedule: vec![50, 120, 160, 250],
        keepalive: Duration::from_secs(15),
        answer_timeout: Duration::from_secs(5),
        reconnects: 3,
        connect_timeout: Duration::from_secs(5),
    });
    let t0 = Instant::now();
    tts.up(t0, false);
    let response = callbridge::ids::ResponseId(1);
    tts.begin(t0, response);
    tts.text(t0, "Thanks for calling. How can I help? ", true);
    for (i, m) in lines(data).enumerate() {
        let now = t0 + Duration::from_millis(50 * i as u64);
        if let Ok(text) = std::str::from_utf8(m) {
            let _ = tts.on_text(now, text);
        }
        tts.handle_timeout(now);
        while tts.poll_transmit().is_some() {}
        while tts.poll_event().is_some() {}
    }
}

/// A backend's reply bodies: the call plan (with what the server derives
/// from it), a tool result, a `turn.user` reply whole or as ndjson lines.
pub fn callback_replies(data: &[u8]) {
    use callbridge::contract::{CallPlan, ToolResult, TurnReply};
    if let Ok(plan) = serde_json::from_slice::<CallPlan>(data) {
        let _ = plan.turn.apply(&callbridge::session::turn::TurnConfig::default());
        let _ = callbridge::session::agent::LiveEvents::from_names(&plan.events);
        for to in plan.forward.iter().chain(plan.transfer_destinations.iter().map(|d| &d.to)) {
            let _ = callbridge::destination::TransferTarget::parse(to);
        }
        let _ = callbridge::session::builtin::Builtins::from_plan(&plan);
        let _ = callbridge::session::builtin::specs(&plan);
        let _ = serde_json::to_vec(&plan);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = ToolResult::from_reply(v);
    }
    let _ = serde_json::from_slice::<TurnReply>(data);
    for line in lines(data) {
        let _ = serde_json::from_slice::<TurnReply>(line);
    }
}

/// A WAV file a backend points `say` at (any rate, converted for the call).
pub fn wav_clip(data: &[u8]) {
    let _ = callbridge::engine::local::clip_from_wav(data, "fuzz");
}

/// Signature and token checks on attacker-chosen headers: the callback
/// signature, Twilio's, Telnyx's Ed25519, Vonage's JWT (and its GET query).
/// The input is split into header and body at the first newline.
pub fn signatures(data: &[u8]) {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let _ = callbridge::signature::callback::verify("whsec_fuzz_0123456789", &head, body, 1_700_000_000, 300);
    let params = vec![("CallSid".to_string(), String::from_utf8_lossy(body).into_owned())];
    let _ = callbridge::carrier::twilio::signature::validate(
        &["token".to_string()],
        "https://cb.example.com/twilio/voice",
        &params,
        &head,
    );
    if let Ok(key) =
        callbridge::carrier::telnyx::signature::PublicKey::from_base64("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")
    {
        let (ts, sig) = head.split_once('|').unwrap_or((&head, ""));
        let _ = key.verify(ts, sig, body, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    }
    let _ = callbridge::carrier::vonage::jwt::verify_webhook("vonage-secret", &head, body, SystemTime::now());
    let _ = callbridge::carrier::vonage::jwt::query_payload(&String::from_utf8_lossy(body));
}

/// The routes [`webhooks`] picks from with its first byte: the carriers'
/// webhooks (form, JSON envelope, query fields) and the tenants' JSON API.
const WEBHOOK_ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/twilio/voice", "application/x-www-form-urlencoded"),
    ("POST", "/twilio/stream-status", "application/x-www-form-urlencoded"),
    ("POST", "/twilio/transfer-status", "application/x-www-form-urlencoded"),
    ("POST", "/twilio/outbound", "application/x-www-form-urlencoded"),
    ("POST", "/twilio/outbound-status", "application/x-www-form-urlencoded"),
    ("POST", "/telnyx/webhook", "application/json"),
    ("GET", "/vonage/answer", ""),
    ("POST", "/vonage/answer", "application/json"),
    ("POST", "/vonage/event", "application/json"),
    ("GET", "/vonage/event", ""),
    ("POST", "/vonage/outbound", "application/json"),
    ("POST", "/vonage/outbound-event", "application/json"),
    ("POST", "/v1/calls", "application/json"),
    ("POST", "/v1/calls/{q}/say", "application/json"),
    ("POST", "/v1/calls/{q}/transfer", "application/json"),
];

/// One server for the whole fuzz run: the public router of a real state
/// (unsigned carrier webhooks allowed, as on a loopback listener, so inputs
/// reach the parsers behind the signature checks; one tenant whose callback
/// the network policy refuses at once), driven in process on one thread.
fn webhook_server() -> &'static (tokio::runtime::Runtime, axum::Router) {
    static SERVER: std::sync::OnceLock<(tokio::runtime::Runtime, axum::Router)> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let cfg = callbridge::config::Config::from_toml(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "wss://cb.example.com"
validate_twilio_signatures = false
allow_unsigned_tenant_calls = true
[storage]
database = ""
memory_max_calls = 100
[engine.local]
greeting_wav = ""
[[numbers]]
number = "+15550001111"
callback_url = "http://127.0.0.1:9/never"
secret = "whsec_fuzz_0123456789"
api_token = "tenant-token"
"#,
            "fuzz",
        )
        .expect("fuzz config");
        let secrets = callbridge::config::Secrets::default();
        let router = rt.block_on(async {
            let state = callbridge::server::build_state(cfg, secrets).expect("state");
            callbridge::api::router(state)
        });
        (rt, router)
    })
}

/// A carrier's webhook or a tenant's API request through the real router:
/// the first byte picks the route, the first line after it is the query
/// (and `{q}` in the path), the rest is the body. Every request must be
/// answered (any status) without a panic; the answer is read to its end.
pub fn webhooks(data: &[u8]) {
    let _ = webhook_status(data);
}

/// [`webhooks`], with the answer's status and body (`None` for an input that
/// makes no request).
pub fn webhook_status(data: &[u8]) -> Option<(u16, Vec<u8>)> {
    use tower::ServiceExt;
    let (&pick, rest) = data.split_first()?;
    let (method, path, content_type) = WEBHOOK_ROUTES[pick as usize % WEBHOOK_ROUTES.len()];
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let query: String =
        String::from_utf8_lossy(query).chars().filter(|c| c.is_ascii_graphic() && !matches!(c, '#' | '/')).collect();
    let path = path.replace("{q}", if query.is_empty() { "x" } else { &query });
    let uri = if query.is_empty() { path } else { format!("{path}?{query}") };
    let Ok(mut req) = axum::http::Request::builder()
        .method(method)
        .uri(&uri)
        .header("authorization", "Bearer tenant-token")
        .body(axum::body::Body::from(body.to_vec()))
    else {
        return None;
    };
    if !content_type.is_empty() {
        req.headers_mut().insert("content-type", axum::http::HeaderValue::from_static(content_type));
    }
    let (rt, router) = webhook_server();
    rt.block_on(async {
        let resp = router.clone().oneshot(req).await.expect("the router is infallible");
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.map(|b| b.to_vec()).unwrap_or_default();
        Some((status, body))
    })
}
