//! A FAKE OpenAI Realtime server for latency benchmarks: `callbridge_testkit::fake_realtime::FakeRealtime`
//! on 127.0.0.1, answering every response at once with a canned clip. Runs until killed.
//!
//!     fake_realtime --port 19000 [--reply fixtures/audio/bot_reply_8k.wav]
//!
//! Point callbridge at it with `OPENAI_API_KEY=fake OPENAI_REALTIME_URL=ws://127.0.0.1:19000/v1/realtime`.

use std::sync::Arc;

use clap::Parser;

#[derive(Parser)]
#[command(about = "FAKE OpenAI Realtime server on loopback (for benchmarks)")]
struct Args {
    /// Port on 127.0.0.1 (0 = any; the chosen address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// 8 kHz mono WAV every response plays.
    #[arg(long, default_value = "fixtures/audio/bot_reply_8k.wav")]
    reply: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let (rate, pcm) = callbridge::audio::wav::read_wav_mono_i16(&std::fs::read(&a.reply)?)?;
    anyhow::ensure!(rate == 8000, "{}: need 8 kHz, got {rate}", a.reply);
    // Like a TTS that starts speaking at once (and like the local engine's clips).
    let pcm = callbridge::engine::local::trim_silence(&pcm, rate);
    let mut ulaw = vec![0u8; pcm.len()];
    callbridge::audio::g711::ulaw_encode(&pcm, &mut ulaw);
    let cfg = callbridge_testkit::fake_realtime::FakeRealtimeConfig::new(Arc::from(ulaw));
    let fake = callbridge_testkit::fake_realtime::FakeRealtime::start_on(cfg, a.port).await?;
    println!("{}", fake.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
