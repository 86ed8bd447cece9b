use std::time::Instant;

use super::*;

/// Most tests run the codec at Opus's own rate.
const RATE: u32 = 48_000;
const FRAME: usize = 960;
use crate::carrier::{CarrierEvent, WireIn, WireOut};

fn started(dtmf: bool) -> WebRtcCodec {
    let mut c = WebRtcCodec::new(RATE).expect("opus");
    let start =
        serde_json::to_string(&StartMessage::new("s1", "browser", "+15550100", Some("tok".into()), dtmf)).unwrap();
    match c.decode(Instant::now(), WireIn::Text(&start)).unwrap() {
        CarrierEvent::Start(info) => {
            assert_eq!(info.carrier, NAME);
            assert_eq!(info.call_id, "s1");
            assert_eq!(info.to, "+15550100");
            assert_eq!(info.token.as_deref(), Some("tok"));
            assert_eq!(info.format.rate, RATE);
        }
        other => panic!("expected start, got {other:?}"),
    }
    c
}

fn tone(n: usize, at: usize) -> Vec<i16> {
    (0..n)
        .map(|i| ((((at + i) as f64) * 2.0 * std::f64::consts::PI * 440.0 / 48_000.0).sin() * 8000.0) as i16)
        .collect()
}

/// Encode `pcm` with a codec and return the Opus packets it wrote.
fn packets(c: &mut WebRtcCodec, pcm: &[i16]) -> Vec<Vec<u8>> {
    let mut out = WireOut::new(64, 64 * 1024);
    c.encode(&CarrierCommand::Audio(pcm), &mut out).unwrap();
    let mut v = Vec::new();
    while let Some(m) = out.pop() {
        assert_eq!(m.data[0], KIND_OPUS);
        v.push(m.data[1..].to_vec());
    }
    v
}

fn media(kind: u8, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&ts.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
}

#[test]
fn audio_round_trips_through_opus_in_20_ms_frames() {
    let mut tx = started(false);
    let mut rx = started(false);
    let pcm = tone(FRAME * 10, 0);
    let pk = packets(&mut tx, &pcm);
    assert_eq!(pk.len(), 10, "one packet per 20 ms");
    let mut decoded = Vec::new();
    for (i, p) in pk.iter().enumerate() {
        let msg = media(KIND_OPUS, (i * FRAME) as u32, p);
        match rx.decode(Instant::now(), WireIn::Binary(&msg)).unwrap() {
            CarrierEvent::Audio(a) => {
                assert_eq!(a.pcm.len(), FRAME);
                assert_eq!(a.encoded, &p[..]);
                decoded.extend_from_slice(a.pcm);
            }
            other => panic!("expected audio, got {other:?}"),
        }
    }
    // Past the codec's start-up, the tone comes back at about its level.
    let (sent, got) = (rms(&pcm[FRAME * 4..]), rms(&decoded[FRAME * 4..]));
    assert!((got / sent - 1.0).abs() < 0.25, "level sent {sent:.0}, decoded {got:.0}");
}

#[test]
fn a_short_tail_waits_for_the_next_audio_and_clear_drops_it() {
    let mut c = started(false);
    assert!(packets(&mut c, &tone(FRAME / 2, 0)).is_empty());
    assert_eq!(packets(&mut c, &tone(FRAME / 2 + FRAME, 0)).len(), 2);
    assert!(packets(&mut c, &tone(FRAME / 2, 0)).is_empty());
    c.encode(&CarrierCommand::Clear, &mut WireOut::new(4, 4096)).unwrap();
    assert!(packets(&mut c, &tone(FRAME / 2, 0)).is_empty(), "the dropped tail is not completed");
}

#[test]
fn a_lost_packet_is_concealed_and_a_late_one_dropped() {
    let mut tx = started(false);
    let mut rx = started(false);
    let pk = packets(&mut tx, &tone(FRAME * 4, 0));
    let at = |i: usize| (i * FRAME) as u32 + 1_000_000;
    let n = |ev: CarrierEvent<'_>| match ev {
        CarrierEvent::Audio(a) => a.pcm.len(),
        CarrierEvent::Ignored => 0,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(n(rx.decode(Instant::now(), WireIn::Binary(&media(KIND_OPUS, at(0), &pk[0]))).unwrap()), FRAME);
    // Packets 1 and 2 lost: packet 3 arrives with two frames of concealment before it.
    assert_eq!(n(rx.decode(Instant::now(), WireIn::Binary(&media(KIND_OPUS, at(3), &pk[3]))).unwrap()), FRAME * 3);
    // Packet 1 turns up late: too late.
    assert_eq!(n(rx.decode(Instant::now(), WireIn::Binary(&media(KIND_OPUS, at(1), &pk[1]))).unwrap()), 0);
}

#[test]
fn a_key_press_is_reported_once_for_its_repeated_packets() {
    let mut c = started(true);
    assert!(c.capabilities().dtmf);
    let mut keys = Vec::new();
    for (ts, event, end) in
        [(100u32, 5u8, 0u8), (100, 5, 0), (100, 5, 0x80), (100, 5, 0x80), (900, 11, 0), (1700, 10, 0x80)]
    {
        let msg = media(KIND_DTMF, ts, &[event, end | 10, 0, 160]);
        if let CarrierEvent::Dtmf(k) = c.decode(Instant::now(), WireIn::Binary(&msg)).unwrap() {
            keys.push(k);
        }
    }
    assert_eq!(keys, vec!['5', '#', '*']);
}

#[test]
fn bad_input_is_an_error_of_the_right_weight() {
    let mut c = WebRtcCodec::new(RATE).unwrap();
    let e = c.decode(Instant::now(), WireIn::Binary(&media(KIND_OPUS, 0, &[1, 2, 3]))).unwrap_err();
    assert!(e.is_fatal(), "media before start ends the call");
    assert!(c.decode(Instant::now(), WireIn::Text("{nope")).unwrap_err().is_fatal());
    let mut c = started(false);
    for bad in [&[KIND_OPUS, 0][..], &media(9, 0, &[1])[..], &media(KIND_OPUS, 0, &[0xff; 3])[..]] {
        let e = c.decode(Instant::now(), WireIn::Binary(bad)).unwrap_err();
        assert!(!e.is_fatal(), "one bad packet is skipped: {e}");
    }
    assert!(!c.capabilities().far_end_buffer && !c.capabilities().clear && !c.capabilities().marks);
}

#[test]
fn at_16_khz_frames_are_320_samples_on_the_48_khz_rtp_clock() {
    let start = serde_json::to_string(&StartMessage::new("s16", "browser", "", None, false)).unwrap();
    let open = || {
        let mut c = WebRtcCodec::new(16_000).unwrap();
        assert!(
            matches!(c.decode(Instant::now(), WireIn::Text(&start)).unwrap(), CarrierEvent::Start(i) if i.format.rate == 16_000)
        );
        c
    };
    let (mut tx, mut rx) = (open(), open());
    assert_eq!(tx.capabilities().format.rate, 16_000);
    // 440 Hz at 16 kHz, 10 frames: 10 packets.
    let pcm: Vec<i16> =
        (0..3200).map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 16_000.0).sin() * 8000.0) as i16).collect();
    let pk = packets(&mut tx, &pcm);
    assert_eq!(pk.len(), 10);
    let n = |ev: CarrierEvent<'_>| match ev {
        CarrierEvent::Audio(a) => a.pcm.len(),
        CarrierEvent::Ignored => 0,
        other => panic!("unexpected {other:?}"),
    };
    // RTP timestamps advance 960 per packet whatever the PCM rate.
    let at = |i: u32| i * RTP_FRAME + 5_000;
    assert_eq!(n(rx.decode(Instant::now(), WireIn::Binary(&media(KIND_OPUS, at(0), &pk[0]))).unwrap()), 320);
    assert_eq!(n(rx.decode(Instant::now(), WireIn::Binary(&media(KIND_OPUS, at(1), &pk[1]))).unwrap()), 320);
    // One packet lost: one concealed 320-sample frame before packet 3.
    assert_eq!(n(rx.decode(Instant::now(), WireIn::Binary(&media(KIND_OPUS, at(3), &pk[3]))).unwrap()), 640);
    assert!(WebRtcCodec::new(44_100).is_err(), "a rate Opus does not take");
}
