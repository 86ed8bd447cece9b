//! Turn-taking on the recorded caller sets, in virtual time, per detector:
//! premature answers and response times after the caller's last sound.
//!
//! `cargo run --release --example turn_eval -- [MODELS_DIR] [LATENCY_MS] [key=value ...]`
//!
//! MODELS_DIR (default `models`, from `scripts/fetch-smart-turn.sh`) holds the
//! smart-turn model and ONNX Runtime; verdicts arrive LATENCY_MS (default 120)
//! after each question. `key=value` pairs override `[turn.smart]`
//! (`threshold=0.7 confirmations=2 candidate_ms=200 recheck_ms=300
//! max_wait_ms=1400`) for the `smart` rows.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use callbridge::session::SessionConfig;
use callbridge::session::turn::{Detector, SmartConfig, TurnConfig};
use callbridge::smart_turn::SmartTurnModel;
use callbridge_testkit::harness::energy_config;
use callbridge_testkit::turn_eval::{percentile, play_turn, read_8k};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().cloned().unwrap_or_else(|| "models".into());
    let latency = Duration::from_millis(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(120));
    let mut smart = SmartConfig::default();
    for kv in args.iter().skip(2) {
        let (k, v) = kv.split_once('=').expect("key=value");
        match k {
            "threshold" => smart.threshold = v.parse().expect("number"),
            "confirmations" => smart.confirmations = v.parse().expect("number"),
            "candidate_ms" => smart.candidate_ms = v.parse().expect("number"),
            "recheck_ms" => smart.recheck_ms = v.parse().expect("number"),
            "max_wait_ms" => smart.max_wait_ms = v.parse().expect("number"),
            other => panic!("unknown key {other}"),
        }
    }
    let model = SmartTurnModel::load(
        &Path::new(&dir).join("libonnxruntime.so"),
        &Path::new(&dir).join("smart-turn-v3.2-cpu.onnx"),
    )
    .expect("run scripts/fetch-smart-turn.sh first");
    let model = Rc::new(RefCell::new(model));
    let timings: Rc<RefCell<Vec<Duration>>> = Rc::default();
    let only_smart = std::env::var("ONLY_SMART").is_ok();
    let mut detectors: Vec<(String, TurnConfig)> = vec![
        ("silence 500".into(), TurnConfig { endpoint_silence_ms: 500, ..TurnConfig::default() }),
        ("silence 800 (default)".into(), TurnConfig::default()),
        ("smart".into(), TurnConfig { detector: Detector::Smart, smart: smart.clone(), ..TurnConfig::default() }),
    ];
    if only_smart {
        detectors.drain(..2);
    }
    for set in ["human", "paused"] {
        timings.borrow_mut().clear();
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("fixtures/turns/{set}/turns.json")).expect("run from the repository root"),
        )
        .expect("manifest JSON");
        let mut turns: Vec<(String, bool)> = vec![];
        for key in ["turns", "held_out"] {
            for t in manifest[key].as_array().into_iter().flatten() {
                let name = t["file"].as_str().expect("file").to_string();
                turns
                    .push((if key == "held_out" { format!("{name} (held out)") } else { name }, t["complete"] == true));
            }
        }
        for (label, turn) in &detectors {
            println!("\n## {set}: {label}");
            println!(
                "| turn | complete | premature (in pauses of, ms) | response ms | questions |\n|---|---|---|---|---|"
            );
            let (mut premature, mut n) = (0, 0);
            let (mut complete_rt, mut all_rt) = (vec![], vec![]);
            for (name, complete) in &turns {
                let file = name.trim_end_matches(" (held out)");
                let pcm = read_8k(Path::new(&format!("fixtures/turns/{set}/{file}")));
                let cfg = SessionConfig { turn: turn.clone(), vad: Default::default(), ..energy_config() };
                let m = model.clone();
                let t = timings.clone();
                let classifier: callbridge_testkit::harness::Classifier = Box::new(move |q| {
                    let started = std::time::Instant::now();
                    let p = m.borrow_mut().predict(&q.audio, q.rate).ok();
                    t.borrow_mut().push(started.elapsed());
                    p
                });
                let smart_on = turn.detector == Detector::Smart;
                let out = play_turn(cfg, &pcm, smart_on.then_some((classifier, latency)), Duration::from_secs(3));
                let pauses: Vec<String> = out.premature_pauses.iter().map(|d| d.as_millis().to_string()).collect();
                println!(
                    "| {name} | {complete} | {} ({}) | {} | {} |",
                    out.premature,
                    pauses.join(", "),
                    out.response.map_or("-".into(), |d| d.as_millis().to_string()),
                    out.questions
                );
                premature += out.premature.min(1);
                n += 1;
                if let Some(r) = out.response {
                    all_rt.push(r);
                    if *complete {
                        complete_rt.push(r);
                    }
                }
            }
            let ms = |d: Option<Duration>| d.map_or("-".into(), |d| d.as_millis().to_string());
            println!(
                "**turns with a premature answer: {premature}/{n}; complete-sentence turns: response p50 {} p95 {} ms; all turns p95 {} ms**",
                ms(percentile(&complete_rt, 50.0)),
                ms(percentile(&complete_rt, 95.0)),
                ms(percentile(&all_rt, 95.0)),
            );
        }
        let t = timings.borrow();
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0));
        println!(
            "\nmodel inference (front end + ONNX Runtime, one thread), {set}: n {} p50 {} ms p95 {} ms",
            t.len(),
            ms(percentile(&t, 50.0)),
            ms(percentile(&t, 95.0))
        );
    }
}
