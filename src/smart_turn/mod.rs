//! smart-turn v3: an audio end-of-turn classifier (Daily, BSD-2-Clause),
//! used by the `smart` turn detector at pause candidates.
//!
//! [`features`] is the exact Whisper log-mel front end (pure Rust, always
//! built); [`model`] runs the ONNX graph through an ONNX Runtime library
//! loaded at run time. The policy that decides what a probability means lives
//! in `session::turn`; the worker pool that runs the model off the call tasks
//! lives in `runtime::turn_pool`.

pub mod features;
pub mod model;

pub use model::{ModelError, SmartTurnModel};
