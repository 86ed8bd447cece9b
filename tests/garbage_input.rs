//! Network input never panics: the Twilio codec and the session are fed
//! tens of thousands of mutated and truncated versions of real messages
//! (a deterministic xorshift generator; no fuzzing toolchain needed). Every
//! outcome must be a decoded event or a typed error.

use std::time::{Duration, Instant};

use callbridge::carrier::CarrierEvent;
use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
use callbridge::engine::local::{LocalClips, LocalEngine};
use callbridge::session::{Input, Session, SessionConfig};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALPHABET: &[u8] = br#"{}[]:,"\0123456789abcdefAZ+/=-. eE\u"#;

fn mutate(rng: &mut Rng, base: &str) -> String {
    let mut b = base.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = ALPHABET[rng.below(ALPHABET.len())];
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.truncate(i);
            }
            2 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, ALPHABET[rng.below(ALPHABET.len())]);
            }
            _ if !b.is_empty() => {
                let i = rng.below(b.len());
                b.remove(i);
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn mutated_messages_never_panic_the_codec_or_the_session() {
    let fixtures = std::fs::read_to_string("fixtures/twilio/inbound.jsonl").unwrap();
    let bases: Vec<String> = fixtures
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["raw"].as_str().unwrap().to_string())
        .collect();
    let start = bases.iter().find(|b| b.contains(r#""event":"start""#)).unwrap().clone();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut err) = (0u32, 0u32);
    for round in 0..300 {
        let mut codec = TwilioCodec::new(TwilioLimits::default());
        let engine = LocalEngine::new(LocalClips::builtin());
        let mut now = Instant::now();
        let mut session = Session::new(SessionConfig::default(), engine.format(), now);
        let mut engine = engine;
        // Half the rounds start properly so media paths are reached.
        if round % 2 == 0
            && let Ok(ev) = codec.decode(&start)
        {
            session.handle_input(now, Input::Carrier(ev)).unwrap();
        }
        for _ in 0..100 {
            now += Duration::from_millis(20);
            let base = &bases[rng.below(bases.len())];
            let msg = mutate(&mut rng, base);
            match codec.decode(&msg) {
                Ok(ev) => {
                    ok += 1;
                    let is_start = matches!(ev, CarrierEvent::Start(_));
                    let r = session.handle_input(now, Input::Carrier(ev));
                    assert!(r.is_ok() || is_start, "session rejected a decoded event: {r:?}");
                }
                Err(e) => {
                    err += 1;
                    assert!(!e.code().is_empty() && !e.to_string().is_empty());
                }
            }
            session.handle_timeout(now);
            engine.pump(&mut session, now, |_| {});
        }
    }
    // Both paths were exercised.
    assert!(ok > 1_500 && err > 1_500, "ok {ok}, err {err}");
}
