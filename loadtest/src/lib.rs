//! callbridge loadtest: a carrier-protocol load generator.
//!
//! Each simulated call behaves like Twilio Media Streams (built on callbridge's
//! own Twilio peer codec): `connected`, `start`, a `media` frame every 20 ms paced
//! by a timer, `dtmf`, marks echoed at playout time, `stop`. It measures what a
//! caller would feel: response latency, barge-in latency, outbound pacing.

pub mod clip;
pub mod procstat;
pub mod report;
pub mod run;
pub mod scenario;
pub mod script;
pub mod stats;
