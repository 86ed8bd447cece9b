//! Hot-path costs "per 20 ms frame" (160 µ-law samples at 8 kHz).
//!
//! Run: `cargo bench --bench frame`. Groups:
//! - `g711`: µ-law decode / encode of one frame;
//! - `resample`: our polyphase FIR for every telephony ratio, next to rubato's
//!   FFT resampler (the measured alternative) for the common ones;
//! - `vad`: the gated libfvad detector on speech and on silence, energy only;
//! - `path`: the whole inbound path (JSON → base64 → µ-law → resample → VAD),
//!   the whole outbound path (resample → µ-law → base64 → JSON), and one frame
//!   in + one frame out through a real `Session` including WebSocket framing
//!   (tungstenite server side, 8 KiB read buffer), for one call and cycling
//!   over 1,000 call states;
//! - `resample` also holds the 48 kHz legs of a browser call (FIR and rubato);
//! - `webrtc`: Opus decode and encode of one 20 ms speech frame at 48 kHz
//!   (libopus through audiopus, VoIP mode, in-band FEC, 32 kbit/s; encode at
//!   complexities 10, 9 — libopus's default — and 5; each iteration the next
//!   frame of the speech fixture), and one frame in +
//!   one frame out of a browser call through the real `Call` (WebRTC codec,
//!   session, local engine) — the shell's RTP/SRTP/ICE work in the `webrtc`
//!   crate is not in it (the loadtest's WebRTC mode measures the whole).

use std::hint::black_box;

use callbridge::audio::g711;
use callbridge::audio::resample::Resampler;
use callbridge::audio::vad::{VadConfig, VadKind, VoiceDetector};
use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
use callbridge::carrier::{CarrierEvent, WireIn, WireOut};
use callbridge_testkit::mem_call::{MemCall, client_frames};
use callbridge_testkit::twilio_peer::TwilioPeer;
use criterion::{Criterion, criterion_group, criterion_main};

fn speech_8k() -> Vec<i16> {
    let (_, s) =
        callbridge::audio::wav::read_wav_mono_i16(&std::fs::read("fixtures/audio/caller_leak_8k.wav").unwrap())
            .unwrap();
    s
}

/// A loud speech frame from the fixture (frame 22 is mid-word).
fn speech_frame() -> Vec<i16> {
    speech_8k()[22 * 160..23 * 160].to_vec()
}

fn g711_bench(c: &mut Criterion) {
    let pcm = speech_frame();
    let mut ulaw = vec![0u8; 160];
    g711::ulaw_encode(&pcm, &mut ulaw);
    let mut out = vec![0i16; 160];
    let mut g = c.benchmark_group("g711");
    g.bench_function("ulaw_decode_frame", |b| b.iter(|| g711::ulaw_decode(black_box(&ulaw), &mut out)));
    g.bench_function("ulaw_encode_frame", |b| b.iter(|| g711::ulaw_encode(black_box(&pcm), &mut ulaw)));
    g.finish();
}

fn resample_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample");
    let rates = [
        (8000, 16000),
        (16000, 8000),
        (8000, 24000),
        (24000, 8000),
        (8000, 48000),
        (48000, 8000),
        (16000, 24000),
        (24000, 16000),
    ];
    // A browser call's legs: Opus is 48 kHz; the session runs at the
    // carrier's rate and engines want 8, 16 or 24 kHz.
    let rates = rates.into_iter().chain([(16000, 48000), (48000, 16000), (24000, 48000), (48000, 24000)]);
    for (from, to) in rates {
        let n_in = from as usize / 50;
        let input: Vec<i16> = (0..n_in).map(|i| ((i * 37) % 2000) as i16 - 1000).collect();
        let mut out = vec![0i16; to as usize / 50 + 2];
        let mut r = Resampler::new(from, to, n_in).unwrap();
        eprintln!("fir {from}->{to}: delay {:.2} ms, state {} B", r.delay().as_secs_f64() * 1000.0, r.state_bytes());
        g.bench_function(format!("fir_{from}_to_{to}"), |b| b.iter(|| r.process(black_box(&input), &mut out)));
    }
    // rubato's FFT resampler, f32 (what it processes natively), 4 sub-chunks.
    use rubato::audioadapter_buffers::direct::InterleavedSlice;
    use rubato::{Fft, FixedSync, Resampler as _};
    for (from, to) in [
        (8000usize, 16000usize),
        (16000, 8000),
        (8000, 24000),
        (24000, 8000),
        (8000, 48000),
        (48000, 8000),
        (16000, 48000),
        (48000, 16000),
        (24000, 48000),
        (48000, 24000),
    ] {
        let n_in = from / 50;
        let mut r =
            Fft::<f32>::new_custom(from, to, n_in, 4, 1, rubato::WindowFunction::BlackmanHarris2, FixedSync::Both)
                .unwrap();
        let n_in = r.input_frames_next();
        eprintln!(
            "rubato Fft {from}->{to}: output delay {} frames = {:.2} ms",
            r.output_delay(),
            r.output_delay() as f64 * 1000.0 / to as f64
        );
        let input: Vec<f32> = (0..n_in).map(|i| ((i * 37) % 2000) as f32 / 2000.0 - 0.5).collect();
        let mut out = vec![0f32; r.output_frames_max()];
        g.bench_function(format!("rubato_fft_{from}_to_{to}"), |b| {
            b.iter(|| {
                let inp = InterleavedSlice::new(&input, 1, n_in).unwrap();
                let n_out = out.len();
                let mut o = InterleavedSlice::new_mut(&mut out, 1, n_out).unwrap();
                r.process_into_buffer(&inp, &mut o, None).unwrap()
            })
        });
    }
    g.finish();
}

fn vad_bench(c: &mut Criterion) {
    let speech = speech_frame();
    let silence = vec![0i16; 160];
    let mut g = c.benchmark_group("vad");
    // Gate forced open: what libfvad itself costs on a speech frame.
    let open = VadConfig { gate_margin_db: -200.0, min_level_dbfs: -200.0, ..VadConfig::default() };
    let mut v = VoiceDetector::new(&open, 8000).unwrap();
    g.bench_function("webrtc_model_speech_frame", |b| b.iter(|| v.process(black_box(&speech))));
    // Real gate: silence never reaches the model.
    let mut v = VoiceDetector::new(&VadConfig::default(), 8000).unwrap();
    g.bench_function("webrtc_gated_silence_frame", |b| b.iter(|| v.process(black_box(&silence))));
    let mut v = VoiceDetector::new(&VadConfig { kind: VadKind::Energy, ..VadConfig::default() }, 8000).unwrap();
    g.bench_function("energy_speech_frame", |b| b.iter(|| v.process(black_box(&speech))));
    g.finish();
}

fn path_bench(c: &mut Criterion) {
    let speech = speech_8k();
    let mut peer = TwilioPeer::new(1);
    let start = peer.start(&[]);
    let msgs: Vec<String> = speech
        .chunks_exact(160)
        .enumerate()
        .map(|(i, f)| {
            let mut u = vec![0u8; 160];
            g711::ulaw_encode(f, &mut u);
            peer.media(&u, i as u64 * 20)
        })
        .collect();
    let mut g = c.benchmark_group("path");

    // Inbound DSP: JSON → base64 → µ-law → resample 8→16 k (as for a 16 kHz engine) → VAD.
    let speech_msg = msgs[22].clone();
    let mut codec = TwilioCodec::new(TwilioLimits::default());
    codec.decode_text(&start).unwrap();
    let mut up = Resampler::new(8000, 16000, 160).unwrap();
    let mut buf16 = vec![0i16; 320];
    let mut vad = VoiceDetector::new(&VadConfig::default(), 8000).unwrap();
    for _ in 0..10 {
        vad.process(&[0; 160]);
    }
    g.bench_function("inbound_json_b64_ulaw_resample_vad", |b| {
        b.iter(|| {
            let CarrierEvent::Audio(a) = codec.decode_text(black_box(&speech_msg)).unwrap() else { unreachable!() };
            up.process(a.pcm, &mut buf16);
            black_box(vad.process(a.pcm))
        })
    });

    // Outbound DSP: 24 kHz engine audio → 8 k → µ-law → base64 → JSON.
    let engine_frame: Vec<i16> = (0..480).map(|i| ((i * 13) % 3000) as i16 - 1500).collect();
    let mut down = Resampler::new(24000, 8000, 480).unwrap();
    let mut pcm8 = vec![0i16; 160];
    let mut out = WireOut::new(16, 4096);
    g.bench_function("outbound_resample_ulaw_b64_json", |b| {
        b.iter(|| {
            down.process(black_box(&engine_frame), &mut pcm8);
            codec.encode_into(&callbridge::carrier::CarrierCommand::Audio(&pcm8), &mut out).unwrap();
            black_box(out.pop().map(|m| m.data.len()))
        })
    });

    // Whole call path, one frame in and one out, with WebSocket framing,
    // through the same call loop the server runs.
    let frames = client_frames(&msgs);
    let mut one = MemCall::talking(frames.clone(), &start);
    // The bot must really be talking: 100 frames in, ≈ 50 messages (40 ms each) out.
    for _ in 0..100 {
        one.cycle();
    }
    assert!(one.io.sent >= 45, "bot audio flows: {} messages in 100 frames", one.io.sent);
    g.bench_function("in_out_session_with_ws_framing", |b| b.iter(|| one.cycle()));

    let mut many: Vec<MemCall> = (0..1000).map(|_| MemCall::talking(frames.clone(), &start)).collect();
    let mut i = 0;
    g.bench_function("in_out_session_with_ws_framing_1000_calls", |b| {
        b.iter(|| {
            many[i].cycle();
            i = (i + 1) % many.len();
        })
    });
    g.finish();
}

/// OpenAI Realtime relay cost: one 100 ms µ-law audio delta in (JSON → base64 →
/// µ-law → PCM chunk), one 20 ms caller frame out (µ-law → base64 → JSON).
fn realtime_bench(c: &mut Criterion) {
    use base64::Engine as _;
    use callbridge::engine::openai_realtime::*;
    use callbridge::engine::{AudioRef, Engine, EngineCommand};
    let cfg = RealtimeConfig {
        url: "ws://127.0.0.1:9/v1/realtime?model=gpt-realtime".into(),
        api_key: "sk-bench".into(),
        model: "gpt-realtime".into(),
        instructions: String::new(),
        voice: "alloy".into(),
        tools: vec![],
        greeting: None,
        turn: TurnMode::Local,
        audio: WireAudio::Pcmu,
        transcription_model: String::new(),
        silence_duration_ms: 500,
        connect_timeout: std::time::Duration::from_secs(5),
        max_queued: 64,
        answer_timeout: std::time::Duration::from_secs(5),
        append_ms: 0, // every frame its own append: the per-frame cost as it was measured
    };
    let mut engine = RealtimeEngine::new(cfg);
    engine.on_message(r#"{"type":"response.created","response":{"id":"resp_1"}}"#).unwrap();
    let pcm = speech_8k();
    let mut ulaw = vec![0u8; 800];
    g711::ulaw_encode(&pcm[8000..8800], &mut ulaw);
    let delta = base64::engine::general_purpose::STANDARD.encode(&ulaw);
    let msg = format!(
        r#"{{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"{delta}"}}"#
    );
    let mut g = c.benchmark_group("realtime");
    g.bench_function("audio_delta_100ms_in", |b| {
        b.iter(|| {
            engine.on_message(black_box(&msg)).unwrap();
            while let Some(o) = engine.poll_event() {
                black_box(o);
            }
        })
    });
    let now = std::time::Instant::now();
    g.bench_function("caller_frame_20ms_append_out", |b| {
        b.iter(|| {
            engine.handle_command(now, EngineCommand::Audio(AudioRef::Encoded(black_box(&ulaw[..160]))));
            black_box(engine.poll_transmit())
        })
    });
    g.finish();
}

/// The speech fixture at `rate` (FIR-resampled from 8 kHz).
fn speech_at(rate: u32) -> Vec<i16> {
    let speech = speech_8k();
    if rate == 8000 {
        return speech;
    }
    let mut up = Resampler::new(8000, rate, 160).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0i16; up.output_len(160)];
    for f in speech.chunks_exact(160) {
        let n = up.process(f, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// An Opus encoder as the WebRTC codec makes it (VoIP, FEC, 32 kbit/s).
fn opus_encoder(rate: u32) -> audiopus::coder::Encoder {
    use audiopus::{Application, Bitrate, Channels, SampleRate};
    let mut enc =
        audiopus::coder::Encoder::new(SampleRate::try_from(rate as i32).unwrap(), Channels::Mono, Application::Voip)
            .unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_bitrate(Bitrate::BitsPerSecond(32_000)).unwrap();
    enc
}

/// A browser call through the real `Call` at `rate`, its agent talking
/// without end (real speech: Opus's cost depends on the signal); `cycle`
/// feeds the next of the browser's packets, 20 ms later.
struct BrowserCall {
    call: callbridge::call::Call,
    io: callbridge_testkit::mem_call::CountingIo,
    talk: std::sync::Arc<[i16]>,
    msgs: Vec<Vec<u8>>,
    msg: Vec<u8>,
    now: std::time::Instant,
    next: usize,
    ts: u32,
}

impl BrowserCall {
    fn new(rate: u32, browser_packets: &[Vec<u8>]) -> Self {
        use callbridge::carrier::Carrier as _;
        use callbridge::carrier::webrtc::{KIND_OPUS, StartMessage, WebRtcCodec};
        use callbridge::engine::Engine as _;
        use callbridge::engine::local::{LocalClips, LocalEngine};
        use callbridge::session::{Session, SessionConfig};
        let msgs = browser_packets
            .iter()
            .map(|p| {
                let mut m = vec![KIND_OPUS, 0, 0, 0, 0];
                m.extend_from_slice(p);
                m
            })
            .collect();
        let complexity = callbridge::config::WebRtcConfig::default().opus_complexity;
        let mut codec = WebRtcCodec::new(rate).unwrap().with_complexity(complexity).unwrap();
        let start = serde_json::to_string(&StartMessage::new("wr_bench", "browser", "", None, false)).unwrap();
        let now = std::time::Instant::now();
        let CarrierEvent::Start(info) = codec.decode(now, WireIn::Text(&start)).unwrap() else { unreachable!() };
        // 100 s (the playback queue holds 120 s at most), said again whenever it ends.
        let talk: std::sync::Arc<[i16]> = speech_8k().into_iter().cycle().take(8000 * 100).collect::<Vec<_>>().into();
        let engine =
            LocalEngine::new(LocalClips { greeting: Some(talk.clone()), reply: std::sync::Arc::from(vec![1i16; 160]) });
        let mut cfg = SessionConfig::default();
        cfg.turn.barge_in_min_speech_ms = u32::MAX;
        let session = Session::new(cfg, codec.capabilities(), engine.format(), now).unwrap();
        let mut call = callbridge::call::Call::new(session, Box::new(codec), Box::new(engine), 20);
        let mut io = callbridge_testkit::mem_call::CountingIo {
            wire: WireOut::new(512, callbridge::carrier::ARENA_BYTES),
            sent: 0,
            barge_ins: 0,
        };
        call.start(now, info, &mut io);
        let mut c = Self { call, io, talk, msgs, msg: Vec::with_capacity(1400), now, next: 0, ts: 0 };
        // The agent must really be talking: one Opus packet out per frame in.
        for _ in 0..100 {
            c.cycle();
        }
        assert!(c.io.sent >= 95, "agent audio flows at {rate} Hz: {} packets in 100 frames", c.io.sent);
        c
    }

    fn cycle(&mut self) {
        use callbridge::carrier::webrtc::RTP_FRAME;
        self.now += std::time::Duration::from_millis(20);
        self.ts = self.ts.wrapping_add(RTP_FRAME);
        self.msg.clear();
        self.msg.extend_from_slice(&self.msgs[self.next]);
        self.msg[1..5].copy_from_slice(&self.ts.to_be_bytes());
        self.next = (self.next + 1) % self.msgs.len();
        let now = self.now;
        self.call.on_wire(now, WireIn::Binary(&self.msg), &mut self.io).unwrap();
        if self.call.poll_timeout().is_some_and(|t| t <= now) {
            self.call.on_timeout(now, &mut self.io);
        }
        if !self.call.session().bot_playing(now) {
            let _ = self.call.say(now, callbridge::session::Say::Clip(self.talk.clone()), false, false, &mut self.io);
        }
        while let Some(m) = self.io.wire.pop() {
            black_box(m.data.len());
            self.io.sent += 1;
        }
        self.io.wire.reclaim();
    }
}

/// The browser call's Opus and its whole in/out path (see the module doc).
fn webrtc_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("webrtc");
    // What a browser sends: 48 kHz Opus packets of the speech.
    let browser = opus_encoder(48_000);
    let mut packet = vec![0u8; 1275];
    let packets: Vec<Vec<u8>> = speech_at(48_000)
        .chunks_exact(960)
        .map(|f| {
            let n = browser.encode(f, &mut packet).unwrap();
            packet[..n].to_vec()
        })
        .collect();
    eprintln!("libopus default complexity: {}", browser.complexity().unwrap());
    // Each iteration encodes the next frame of the speech (one frame over and
    // over is not what an encoder sees, and libopus's cost depends on it).
    for (rate, complexities) in [(48_000u32, &[10u8, 9, 5][..]), (16_000, &[9, 5][..])] {
        let pcm = speech_at(rate);
        let frames: Vec<&[i16]> = pcm.chunks_exact(rate as usize / 50).collect();
        let mut enc = opus_encoder(rate);
        for &cx in complexities {
            enc.set_complexity(cx).unwrap();
            let mut k = 0usize;
            g.bench_function(format!("opus_encode_20ms_{}k_complexity_{cx}", rate / 1000), |b| {
                b.iter(|| {
                    k = (k + 1) % frames.len();
                    enc.encode(black_box(frames[k]), &mut packet).unwrap()
                })
            });
        }
    }
    for rate in [48_000u32, 16_000] {
        use audiopus::coder::Decoder;
        let mut dec =
            Decoder::new(audiopus::SampleRate::try_from(rate as i32).unwrap(), audiopus::Channels::Mono).unwrap();
        let mut out = vec![0i16; 5760];
        let mut k = 0usize;
        g.bench_function(format!("opus_decode_20ms_to_{}k", rate / 1000), |b| {
            b.iter(|| {
                k = (k + 1) % packets.len();
                let pkt = audiopus::packet::Packet::try_from(black_box(&packets[k][..])).unwrap();
                dec.decode(Some(pkt), audiopus::MutSignals::try_from(&mut out[..]).unwrap(), false).unwrap()
            })
        });
    }
    // One frame in and one out through the real call: binary message → Opus
    // decode → session (→ 8 kHz for the local engine, VAD, turns) → local
    // engine → playback (8 kHz → the call's rate) → Opus encode → the
    // shell's message; at the default 16 kHz and at 48 kHz.
    for rate in [16_000u32, 48_000] {
        let mut call = BrowserCall::new(rate, &packets);
        g.bench_function(format!("in_out_call_20ms_{}k", rate / 1000), |b| b.iter(|| call.cycle()));
    }
    g.finish();
}

criterion_group!(benches, g711_bench, resample_bench, vad_bench, path_bench, realtime_bench, webrtc_bench);
criterion_main!(benches);
