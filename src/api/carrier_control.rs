//! Acting on a live call through its carrier's REST API (transfer now; hang-up
//! and outbound dialling as carriers need them), behind one trait so the
//! control API knows no carrier by name. Each carrier's webhook module
//! implements [`CarrierControl`]; the server registers one per carrier.

use std::future::Future;
use std::pin::Pin;

pub use crate::destination::TransferTarget;
use crate::runtime::registry::CallDetails;

/// Why a carrier action failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No credentials configured for the carrier's REST API.
    #[error("{0}")]
    NoCredentials(String),
    /// The carrier says the call is over.
    #[error("the carrier says the call no longer exists")]
    CallGone,
    /// The carrier did not identify the call well enough to act on it.
    #[error("the carrier did not identify this call")]
    NoCarrierCall,
    /// The carrier refused.
    #[error("the carrier answered HTTP {status}: {message}")]
    Refused {
        /// HTTP status
        status: u16,
        /// the carrier's message
        message: String,
    },
    /// Network failure or timeout.
    #[error("the carrier is unreachable: {0}")]
    Unreachable(String),
}

/// A boxed future (the trait is object-safe).
pub type ControlFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ControlError>> + Send + 'a>>;

/// One carrier's call-control REST API.
pub trait CarrierControl: Send + Sync {
    /// The carrier label (as in [`CallDetails::carrier`]).
    fn carrier(&self) -> &'static str;

    /// Move live call `id` to `to`; the media stream then ends as a transfer,
    /// and the carrier reports the transfer's outcome to its webhook module.
    fn transfer<'a>(
        &'a self,
        id: crate::ids::CallId,
        call: &'a CallDetails,
        to: &'a TransferTarget,
    ) -> ControlFuture<'a>;
}
