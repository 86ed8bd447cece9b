//! Callback delivery: the HTTP side of the contract in [`crate::contract`].
//!
//! [`client`] makes one signed POST with a deadline; [`delivery`] runs one
//! ordered, retrying queue of non-blocking events per call. Both live in the
//! I/O shell: call tasks only ever hand them events and never wait on them.

pub mod client;
pub mod delivery;
