//! Shared test helpers: a virtual-time session harness and synthetic audio.
#![allow(dead_code)]

pub mod backend;
pub mod binary;
pub mod calls;
pub mod net;
pub mod pg;
pub mod redis;
pub mod tls;

#[allow(unused_imports)]
pub use callbridge_testkit::harness::*;
