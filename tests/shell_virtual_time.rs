//! The I/O shell in virtual time: the real call task (`run_call`) over an
//! in-memory duplex WebSocket, tokio's clock paused. Timings are exact, so
//! the assertions are too: response latency is the endpoint silence, a
//! barge-in clears on the frame that completes the minimum speech, and the
//! start, idle and write-stall deadlines fire when configured — not a frame
//! later, and never on pings.

use std::sync::Arc;
use std::time::Duration;

use callbridge::api::AppState;
use callbridge::carrier::twilio::{TwilioCodec, TwilioLimits};
use callbridge::config::{Config, Secrets};
use callbridge::runtime::call_task::run_call;
use callbridge::runtime::transport::TungsteniteSocket;
use callbridge_testkit::twilio_peer::{ServerMessage, TwilioPeer};
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio::time::{Instant, interval};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

fn state(extra: &str) -> Arc<AppState> {
    let toml = if extra.contains("[engine.local]") {
        extra.to_string()
    } else {
        format!("[engine.local]\ngreeting_wav = \"\"\n{extra}")
    };
    let mut cfg = Config::from_toml(&toml, "test").unwrap();
    cfg.storage.database = String::new();
    callbridge::server::build_state(cfg, Secrets::default()).unwrap()
}

/// A call task on one end of an in-memory pipe; the client's socket on the other.
async fn connect(state: &Arc<AppState>, buffer: usize) -> WebSocketStream<DuplexStream> {
    let (client, server) = tokio::io::duplex(buffer);
    let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
    let codec = TwilioCodec::new(TwilioLimits::default());
    tokio::spawn(run_call(TungsteniteSocket::new(server), Box::new(codec), state.call.clone()));
    WebSocketStream::from_raw_socket(client, Role::Client, None).await
}

fn ulaw(name: &str) -> Vec<u8> {
    let (_, pcm) =
        callbridge::audio::wav::read_wav_mono_i16(&std::fs::read(format!("fixtures/audio/{name}")).unwrap()).unwrap();
    let mut out = vec![0u8; pcm.len()];
    callbridge::audio::g711::ulaw_encode(&pcm, &mut out);
    out
}

fn loud(payload: &[u8]) -> bool {
    let mut pcm = vec![0i16; payload.len()];
    callbridge::audio::g711::ulaw_decode(payload, &mut pcm);
    callbridge::audio::vad::EnergyGate::level_dbfs(&pcm) > -45.0
}

/// The last frame of `ulaw` louder than −45 dBFS (where the caller stops speaking).
fn last_loud_frame(ulaw: &[u8]) -> usize {
    ulaw.chunks_exact(160).rposition(loud).unwrap()
}

#[tokio::test(start_paused = true)]
async fn answer_at_the_endpoint_and_clear_on_the_third_speech_frame() {
    let st = state("");
    let mut ws = connect(&st, 64 * 1024).await;
    let mut peer = TwilioPeer::new(1);
    ws.send(Message::text(peer.connected())).await.unwrap();
    ws.send(Message::text(peer.start(&[]))).await.unwrap();
    let speech = ulaw("caller_short_8k.wav");
    let last = last_loud_frame(&speech);
    let silence = [0xFFu8; 160];
    let mut tick = interval(Duration::from_millis(20));
    let mut first_loud = None;
    let mut last_speech_at = None;
    let frames = speech.chunks_exact(160).chain(std::iter::repeat_n(&silence[..], 100));
    for (i, f) in frames.enumerate() {
        tick.tick().await;
        ws.send(Message::text(peer.media(f, i as u64 * 20))).await.unwrap();
        if i == last {
            last_speech_at = Some(Instant::now());
        }
        while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::ZERO, ws.next()).await {
            if let Ok(ServerMessage::Media(p)) = peer.parse(t.as_str())
                && first_loud.is_none()
                && loud(&p)
            {
                first_loud = Some(Instant::now());
            }
        }
    }
    let waited = first_loud.expect("the reply arrived") - last_speech_at.unwrap();
    // The VAD may still call the quiet frame after the last loud one speech: the
    // answer comes one endpoint after the VAD's last speech frame, on a frame boundary.
    let endpoint = Duration::from_millis(st.config.turn.endpoint_silence_ms as u64);
    assert!(
        waited >= endpoint && waited <= endpoint + Duration::from_millis(20),
        "answered {waited:?} after the caller's last loud frame (endpoint {endpoint:?})"
    );
    assert_eq!((waited.as_millis() % 20), 0, "on a frame boundary: {waited:?}");

    // Barge in: loud speech while the reply plays; clear comes with the third frame.
    let interrupt = ulaw("caller_leak_8k.wav");
    let onset = interrupt.chunks_exact(160).position(loud).unwrap();
    let mut sent_onset = None;
    let mut cleared = None;
    for (i, f) in interrupt.chunks_exact(160).enumerate().skip(onset).take(20) {
        tick.tick().await;
        ws.send(Message::text(peer.media(f, 0))).await.unwrap();
        if i == onset {
            sent_onset = Some(Instant::now());
        }
        while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::ZERO, ws.next()).await {
            if let Ok(ServerMessage::Clear) = peer.parse(t.as_str()) {
                cleared.get_or_insert(Instant::now());
            }
        }
    }
    let latency = cleared.expect("clear sent") - sent_onset.unwrap();
    assert!(
        latency >= Duration::from_millis(40) && latency <= Duration::from_millis(80),
        "clear {latency:?} after the loud onset (60 ms of speech needed: the VAD's third speech frame)"
    );
    ws.send(Message::text(peer.stop())).await.unwrap();
}

/// Read until the server closes; returns the close code and the virtual time it took.
async fn close_of(ws: &mut WebSocketStream<DuplexStream>, since: Instant) -> (Option<u16>, Duration) {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(c))) => return (c.map(|c| u16::from(c.code)), since.elapsed()),
            Some(Ok(_)) => {}
            _ => return (None, since.elapsed()),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_start_is_closed_after_the_start_deadline_even_if_it_pings() {
    let st = state("[server]\nstart_timeout_ms = 5000\nidle_timeout_ms = 30000\n");
    let mut ws = connect(&st, 64 * 1024).await;
    let t0 = Instant::now();
    let pinger = async {
        let mut tick = interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if ws.send(Message::Ping(vec![1].into())).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), pinger).await;
    let (code, _) = close_of(&mut ws, t0).await;
    assert_eq!(code, Some(1008), "closed as a policy violation");
    assert!(t0.elapsed() >= Duration::from_secs(5), "not before the deadline");
    tokio::time::timeout(Duration::from_secs(1), st.call.registry.wait_empty()).await.expect("the slot is freed");
}

#[tokio::test(start_paused = true)]
async fn a_started_stream_that_goes_silent_is_closed_at_the_idle_timeout_pings_or_not() {
    let st = state("[server]\nidle_timeout_ms = 3000\n");
    let mut ws = connect(&st, 64 * 1024).await;
    let mut peer = TwilioPeer::new(2);
    ws.send(Message::text(peer.start(&[]))).await.unwrap();
    ws.send(Message::text(peer.media(&[0xFF; 160], 0))).await.unwrap();
    let t0 = Instant::now();
    // Pings every 500 ms are not caller activity.
    let pinger = async {
        let mut tick = interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if ws.send(Message::Ping(vec![1].into())).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(3500), pinger).await;
    let (code, _) = close_of(&mut ws, t0).await;
    assert_eq!(code, Some(1008));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(3000) && took < Duration::from_millis(3600), "idle close at {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_dropped_at_the_write_timeout() {
    // A long lead and a tiny pipe: the bot's audio fills it within a few frames.
    let st = state(
        "[server]\nwrite_timeout_ms = 300\n[playback]\nlead_ms = 2000\n[engine.local]\ngreeting_wav = \"builtin:greeting\"\n",
    );
    let before = st.call.registry.len();
    let ws = connect(&st, 1024).await;
    let (mut tx, _never_read) = ws.split();
    let mut peer = TwilioPeer::new(3);
    tx.send(Message::text(peer.start(&[]))).await.unwrap();
    while st.call.registry.len() == before {
        tokio::task::yield_now().await;
    }
    let t0 = Instant::now();
    let mut tick = interval(Duration::from_millis(20));
    let mut gone = None;
    while t0.elapsed() < Duration::from_secs(3) {
        tick.tick().await;
        if tx.send(Message::text(peer.media(&[0xFF; 160], 0))).await.is_err() || st.call.registry.len() == before {
            gone = Some(t0.elapsed());
            break;
        }
    }
    let gone = gone.expect("the stuck peer was disconnected");
    assert!(gone >= Duration::from_millis(300) && gone < Duration::from_millis(1000), "dropped after {gone:?}");
}

#[tokio::test(start_paused = true)]
async fn a_caller_gone_silent_mid_reply_is_reported_with_the_cut_off_reply_and_their_turn() {
    // Idle timeout shorter than the reply: the call ends while the bot speaks.
    let st = state("[server]\nidle_timeout_ms = 1000\n");
    let reply_ms = callbridge::engine::local::load_clip("builtin:reply").unwrap().len() as u64 / 8;
    assert!(reply_ms > 1500, "the reply ({reply_ms} ms) outlasts the idle timeout");
    let mut ws = connect(&st, 64 * 1024).await;
    let mut peer = TwilioPeer::new(4);
    ws.send(Message::text(peer.start(&[]))).await.unwrap();
    let speech = ulaw("caller_short_8k.wav");
    let silence = [0xFFu8; 160];
    let mut tick = interval(Duration::from_millis(20));
    let mut reply_frames = 0;
    let frames = speech.chunks_exact(160).chain(std::iter::repeat_n(&silence[..], 200));
    for (i, f) in frames.enumerate() {
        tick.tick().await;
        ws.send(Message::text(peer.media(f, i as u64 * 20))).await.unwrap();
        while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::ZERO, ws.next()).await {
            if let Ok(ServerMessage::Media(_)) = peer.parse(t.as_str()) {
                reply_frames += 1;
            }
        }
        if reply_frames >= 10 {
            break;
        }
    }
    assert!(reply_frames >= 10, "the bot answered");
    let store = st.call.store.as_ref().expect("a call store");
    let id = store.unfinished().unwrap().pop().expect("the call is live").call_id;
    // The caller's line goes dead: nothing more is sent, what comes is read.
    let t0 = Instant::now();
    let (code, _) = close_of(&mut ws, t0).await;
    assert_eq!(code, Some(1008), "closed at the idle timeout");
    assert!(store.sync_within(Duration::from_secs(5)));
    let row = store.call(&id).unwrap().expect("the call's row");
    assert_eq!(row.reason.as_deref(), Some("idle_timeout"));
    let events = store.events(&id).unwrap();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"turn.user"), "the caller's turn is kept: {kinds:?}");
    let agent = events.iter().find(|e| e["type"] == "turn.agent").unwrap_or_else(|| panic!("the reply: {kinds:?}"));
    let heard = agent["heard_ms"].as_u64().unwrap();
    // Heard as of the caller's last message, not of the close a second later.
    eprintln!("heard {heard} ms; {reply_frames} reply frames had been sent before the line went dead");
    assert!(heard < reply_ms, "heard {heard} of {reply_ms} ms: cut off");
    assert!(heard <= 500, "heard {heard} ms: what played after the caller's last message is not counted");
    assert_eq!(agent["interrupted"], true, "{agent}");
}
