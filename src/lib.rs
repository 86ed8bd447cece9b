//! callbridge: a real-time audio media server between phone carriers and AI
//! speech engines. The map is `docs/architecture.md`.
//!
//! Two rings:
//! - a **sans-IO core** that never awaits, never reads the clock and never touches
//!   a socket: [`audio`] (G.711, resampling, VAD, pacing), [`carrier`] codecs
//!   behind the [`carrier::Carrier`] trait, [`engine`]s behind the
//!   [`engine::Engine`] trait, the per-call [`session::Session`], and
//!   [`call::Call`], the one loop that drives the three; [`smart_turn`]'s
//!   front end (its model runs on worker threads, never on a call task);
//! - an **I/O shell** of tokio tasks: [`api`] (axum routes, webhooks and
//!   upgrades), [`runtime`] (one task per call, engine links, the registry),
//!   [`callback`] delivery, [`recording`], [`callstore`], [`server`] (start and
//!   graceful shutdown), [`metrics`].
//!
//! The call run loop: the call task waits for the first of {control command,
//! engine link update, callback reply, carrier message, deadline}, reads the
//! clock once, feeds the [`call::Call`], which drains the session into the
//! carrier's outbound queue, the engine and the shell's outputs, and sleeps
//! until its next deadline.

pub mod api;
pub mod audio;
pub mod call;
pub mod callback;
pub mod callstore;
pub mod carrier;
pub mod cluster;
pub mod config;
pub mod contract;
pub mod destination;
pub mod engine;
pub mod ids;
pub mod listener;
pub mod metrics;
pub mod netguard;
pub mod procstat;
pub mod recording;
pub mod runtime;
pub mod server;
pub mod session;
pub mod signature;
pub mod smart_turn;
pub mod tenant;
