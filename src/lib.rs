//! callbridge: a real-time audio media server between phone carriers and AI
//! speech engines.
//!
//! Two rings (see `DESIGN.md` in the project notes and README):
//! - a **sans-IO core** that never awaits, never reads the clock and never touches
//!   a socket: [`audio`] (G.711, resampling, VAD, pacing), [`carrier`] wire
//!   codecs, [`engine`] codecs, and the per-call [`session::Session`];
//! - an **I/O shell** of tokio tasks: [`api`] (axum routes and upgrades),
//!   [`runtime`] (one task per call, the registry), [`server`] (start and
//!   graceful shutdown), [`metrics`].
//!
//! The call run loop: the call task waits for the first of {control command,
//! carrier message, writer progress, session deadline}, feeds the session with
//! `now`, drains `poll_output()` into the carrier writer and the engine, and
//! sleeps until `poll_timeout()`.

pub mod api;
pub mod audio;
pub mod callback;
pub mod callstore;
pub mod carrier;
pub mod config;
pub mod engine;
pub mod fakes;
pub mod ids;
pub mod metrics;
pub mod recording;
pub mod runtime;
pub mod server;
pub mod session;
pub mod signature;
pub mod tenant;
