//! The smart-turn front end against pipecat's, and the model through ONNX
//! Runtime against onnxruntime's Python answers (`tests/data/smart_turn/`,
//! provenance in `fixtures/README.md`); the worker pool's overload and
//! deadline paths.
//!
//! The model and the runtime come from `scripts/fetch-smart-turn.sh` (run by
//! `scripts/test.sh`, the test command): `CALLBRIDGE_SMART_TURN_DIR` (default
//! `models`). Without them the model tests fail, unless
//! `CALLBRIDGE_SKIP_SMART_TURN=1` says to skip them.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use callbridge::config::TurnModelConfig;
use callbridge::runtime::turn_pool::TurnPool;
use callbridge::session::TurnQuery;
use callbridge::smart_turn::SmartTurnModel;
use callbridge::smart_turn::features::{FRAMES, LogMel, MELS};

fn data(name: &str) -> PathBuf {
    PathBuf::from("tests/data/smart_turn").join(name)
}

fn wav16k(name: &str) -> Vec<i16> {
    let (rate, pcm) = callbridge::audio::wav::read_wav_mono_i16(&std::fs::read(data(name)).unwrap()).unwrap();
    assert_eq!(rate, 16_000);
    pcm
}

fn reference() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(data("reference.json")).unwrap()).unwrap()
}

#[test]
fn log_mel_features_match_pipecats_extractor() {
    let mut mel = LogMel::new();
    let mut out = vec![0f32; MELS * FRAMES];
    for case in reference()["cases"].as_array().unwrap() {
        let Some(f) = case["features"].as_str() else { continue };
        let name = case["name"].as_str().unwrap();
        let want: Vec<f32> = std::fs::read(data(f))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        mel.compute(&wav16k(&format!("{name}_16k.wav")), &mut out);
        let worst = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        // The reference is numpy in f64 after an f32 normalisation; so is this.
        assert!(worst < 1e-5, "{name}: max |Δ| = {worst}");
    }
}

fn models() -> Option<(PathBuf, PathBuf)> {
    let dir = PathBuf::from(std::env::var("CALLBRIDGE_SMART_TURN_DIR").unwrap_or_else(|_| "models".into()));
    let (rt, model) = (dir.join("libonnxruntime.so"), dir.join("smart-turn-v3.2-cpu.onnx"));
    if rt.is_file() && model.is_file() {
        return Some((rt, model));
    }
    if std::env::var("CALLBRIDGE_SKIP_SMART_TURN").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: no smart-turn model in {} (CALLBRIDGE_SKIP_SMART_TURN=1)", dir.display());
        return None;
    }
    panic!("no smart-turn model in {}: run scripts/fetch-smart-turn.sh", dir.display());
}

#[test]
fn the_model_agrees_with_onnxruntime_on_human_pauses() {
    let Some((rt, path)) = models() else { return };
    let mut m = SmartTurnModel::load(&rt, &path).expect("the model loads");
    for case in reference()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let p = m.predict(&wav16k(&format!("{name}_16k.wav")), 16_000).unwrap();
        let want = case["probability"].as_f64().unwrap() as f32;
        let spread = case["spread"].as_array().unwrap();
        let (lo, hi) = (spread[0].as_f64().unwrap() as f32, spread[1].as_f64().unwrap() as f32);
        // 8-bit activations: the same graph gives different answers on
        // different CPUs (onnxruntime picks its int8 kernels by instruction
        // set). The spread was measured here (AVX2); a CI machine gave 0.679
        // for `better` (0.799 here). So the band is wide and the decision is
        // the robust check.
        assert!(p >= lo - 0.2 && p <= hi + 0.2, "{name}: p = {p}, onnxruntime {want} ({lo}..{hi})");
        assert_eq!(p > 0.5, case["decision"] == "COMPLETE", "{name}: p = {p}");
    }
    // Through the phone path: 8 kHz in, resampled to 16 kHz inside.
    let pcm = wav16k("heaven_16k.wav");
    let narrow: Vec<i16> = pcm.chunks_exact(2).map(|c| ((c[0] as i32 + c[1] as i32) / 2) as i16).collect();
    let p8 = m.predict(&narrow, 8000).unwrap();
    assert!(p8 < 0.5, "heaven at 8 kHz: p = {p8}");
}

#[test]
fn missing_files_are_clear_errors() {
    let e = SmartTurnModel::load(std::path::Path::new("/nonexistent/libonnxruntime.so"), &data("reference.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ONNX Runtime library not found"), "{e}");
    let e = SmartTurnModel::load(std::path::Path::new("/x"), std::path::Path::new("/nonexistent.onnx")).unwrap_err();
    assert!(e.to_string().contains("model not found"), "{e}");
}

/// A pool of one worker with a queue of one (None without the model files).
fn one_worker_pool() -> Option<std::sync::Arc<TurnPool>> {
    let (rt, path) = models()?;
    let cfg =
        TurnModelConfig { model: path.display().to_string(), runtime: rt.display().to_string(), workers: 1, queue: 1 };
    Some(TurnPool::start(&cfg).expect("pool starts"))
}

#[test]
fn the_pool_answers_sheds_load_and_skips_late_questions() {
    let Some(pool) = one_worker_pool() else { return };
    let audio = wav16k("hope_16k.wav");
    let (tx, rx) = mpsc::channel();
    // Five questions at once at one worker with a queue of one: at most two
    // are answered (one running, one queued), the rest at once with None.
    for id in 0..5u32 {
        let tx = tx.clone();
        let q = TurnQuery { id, audio: audio.clone(), rate: 16_000 };
        pool.ask(q, Duration::from_secs(10), 0.5, Box::new(move |p| tx.send((id, p)).unwrap()));
    }
    let answers: Vec<(u32, Option<f32>)> = (0..5).map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap()).collect();
    let answered: Vec<_> = answers.iter().filter(|(_, p)| p.is_some()).collect();
    assert!((1..=2).contains(&answered.len()), "{answers:?}");
    assert!(answered.iter().all(|(_, p)| p.unwrap() > 0.5), "hope, (+200 ms) is COMPLETE: {answers:?}");
    // A question whose deadline passed while queued is not run.
    let tx2 = tx.clone();
    pool.ask(
        TurnQuery { id: 9, audio: audio.clone(), rate: 16_000 },
        Duration::ZERO,
        0.5,
        Box::new(move |p| tx2.send((9, p)).unwrap()),
    );
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), (9, None));
}

#[cfg(target_os = "linux")]
#[test]
fn the_workers_run_at_idle_priority_so_calls_come_first() {
    use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy};
    let Some(pool) = one_worker_pool() else { return };
    // The answer runs on the worker: it reads the worker's own policy.
    let (tx, rx) = mpsc::channel();
    let q = TurnQuery { id: 1, audio: wav16k("hope_16k.wav"), rate: 16_000 };
    pool.ask(q, Duration::from_secs(10), 0.5, Box::new(move |_| tx.send(thread_schedule_policy().unwrap()).unwrap()));
    let policy = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(policy, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
    // The thread asking is untouched.
    assert_eq!(thread_schedule_policy().unwrap(), ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other));
}
