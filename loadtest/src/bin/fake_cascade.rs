//! FAKES for cascaded-engine benchmarks, in one process on 127.0.0.1: the
//! testkit's FAKE Deepgram (every utterance is "said" as one fixed line) and
//! FAKE ElevenLabs (answers as fast as it can), and a FAKE backend that plans
//! every call as `"engine": "cascaded"` and answers every `turn.user` at once
//! with a fixed reply. Prints the three URLs (one per line) and runs until killed.
//!
//!     fake_cascade [--reply "Sure, I can book that for you."]
//!
//! Point callbridge at it with `DEEPGRAM_API_KEY=fake DEEPGRAM_URL=<line 1>
//! ELEVENLABS_API_KEY=fake ELEVENLABS_URL=<line 2>` and a `[[numbers]]`
//! entry whose `callback_url` is line 3 (`scripts/load.sh` with `ENGINE=cascaded`).

use axum::Json;
use axum::routing::post;
use callbridge_testkit::fake_deepgram::{FakeDeepgram, FakeDeepgramConfig};
use callbridge_testkit::fake_elevenlabs::{FakeElevenLabs, FakeElevenLabsConfig};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "FAKE Deepgram, ElevenLabs and backend on loopback (for cascaded benchmarks)")]
struct Args {
    /// What the backend answers every caller turn with.
    #[arg(long, default_value = "Sure, I can book a plumber for you tomorrow morning.")]
    reply: String,
    /// What the fake transcriber hears in every utterance.
    #[arg(long, default_value = "I would like to book a plumber please.")]
    heard: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dg = FakeDeepgram::start(FakeDeepgramConfig { script: vec![a.heard.clone()], drop_after_bytes: None }).await?;
    let el = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await?;
    let reply = a.reply.clone();
    let app = axum::Router::new().route(
        "/cb",
        post(move |Json(ev): Json<Value>| {
            let reply = reply.clone();
            async move {
                Json(match ev["type"].as_str() {
                    Some("call.started") => json!({"engine": "cascaded"}),
                    Some("turn.user") => json!({"reply": reply}),
                    _ => json!({}),
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend = format!("http://{}/cb", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    println!("{}\n{}\n{}", dg.url(), el.url(), backend);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
