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
//!   over 1,000 call states.

use std::hint::black_box;

use callbridge::audio::g711;
use callbridge::audio::resample::Resampler;
use callbridge::audio::vad::{VadConfig, VadKind, VoiceDetector};
use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
use callbridge::carrier::{CarrierEvent, WireOut};
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
    for (from, to) in [(8000usize, 16000usize), (16000, 8000), (8000, 24000), (24000, 8000)] {
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

criterion_group!(benches, g711_bench, resample_bench, vad_bench, path_bench, realtime_bench);
criterion_main!(benches);
