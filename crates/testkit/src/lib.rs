//! Test support for callbridge, kept out of the shipped server: the far side
//! of the protocols callbridge speaks, for the tests, the benches and the
//! loadtest.
//!
//! - [`twilio_peer`]: Twilio's side of Media Streams (the messages Twilio sends
//!   and how it reads ours).
//! - [`telnyx_peer`]: Telnyx's side of media streaming.
//! - [`vonage_peer`]: Vonage's side of the Voice API WebSocket.
//! - [`webrtc_peer`]: a browser's side of a WebRTC call (the `webrtc` crate as the client).
//! - [`mutate`]: deterministic mutation of real messages (garbage-input tests).
//! - [`fake_realtime`]: a FAKE OpenAI Realtime server on loopback.
//! - [`fake_deepgram`]: a FAKE Deepgram live-transcription server on loopback.
//! - [`fake_elevenlabs`]: a FAKE ElevenLabs multi-context TTS server on loopback.
//! - [`harness`]: the real call loop driven in virtual time over a FAKE carrier.
//! - [`mem_call`]: a Twilio call through the real call loop over an in-memory WebSocket.
//! - [`webdriver`]: just enough WebDriver to drive Debian's headless Chromium (browser tests).
//! - [`turn_eval`]: recorded caller turns through the real call loop: premature answers and response times.
//!
//! Every fake here is named a fake: it speaks the real wire protocol and
//! understands nothing it hears.

pub mod fake_deepgram;
pub mod fake_elevenlabs;
pub mod fake_realtime;
pub mod fuzz;
pub mod harness;
pub mod mem_call;
pub mod mutate;
pub mod telnyx_peer;
pub mod turn_eval;
pub mod twilio_peer;
pub mod vonage_peer;
pub mod webdriver;
pub mod webrtc_peer;
