//! callbridge loadtest: a carrier-protocol load generator.
//!
//! Each simulated call behaves like its carrier (Twilio Media Streams, Telnyx
//! or Vonage, built on callbridge-testkit's peer codecs): `connected`, `start`,
//! a `media` frame every 20 ms, `dtmf`, marks echoed at playout time, `stop`.
//! It measures what a caller would feel: response latency, barge-in latency,
//! outbound pacing.
//!
//! The generator is built to cost less per call than the server it measures:
//! one frame ticker per thread sends every call's audio from 20 one-millisecond
//! phase slots (`ticker`), frames are pre-encoded per clip (`clip`, `peer`),
//! each tick is one non-blocking write, and the WebSocket framing reads into
//! spare buffer capacity without zero-filling it (`wire`). The ticker reports
//! its own send lag, so a run shows when the generator was the late one.

pub mod caller;
pub mod clip;
pub mod peer;
pub use callbridge::procstat;
pub mod report;
pub mod run;
pub mod scenario;
pub mod script;
pub mod stats;
pub mod ticker;
pub mod webrtc;
pub mod wire;
