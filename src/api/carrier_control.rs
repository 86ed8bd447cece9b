//! Acting on calls through their carrier's REST API — moving a live call
//! (transfer) and placing an outbound one (dial) — behind one trait so the
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
    /// The carrier's answer was not what its API documents.
    #[error("the carrier's answer was not understood: {0}")]
    BadAnswer(String),
    /// This carrier cannot do it (from here).
    #[error("{0}")]
    Unsupported(&'static str),
}

impl ControlError {
    /// What went wrong without the carrier's own words (which may quote the
    /// numbers dialled): for logs.
    pub fn summary(&self) -> String {
        match self {
            ControlError::Refused { status, .. } => format!("the carrier answered HTTP {status}"),
            ControlError::Unreachable(_) => "the carrier is unreachable".into(),
            ControlError::BadAnswer(_) => "the carrier's answer was not understood".into(),
            other => other.to_string(),
        }
    }
}

/// Send one carrier REST request (10 s budget) and map its outcome: 2xx is
/// done; `gone(status, body)` says the call no longer exists; anything else
/// is refused with `message(body)` (cut to 300 characters). URLs never reach
/// the error text (they carry account ids).
pub async fn send(
    req: reqwest::RequestBuilder,
    gone: impl Fn(u16, &serde_json::Value) -> bool,
    message: impl Fn(&serde_json::Value) -> String,
) -> Result<(), ControlError> {
    send_for(req, gone, message).await.map(drop)
}

/// [`send`], keeping a 2xx answer's JSON body (`Null` if it had none).
pub async fn send_for(
    req: reqwest::RequestBuilder,
    gone: impl Fn(u16, &serde_json::Value) -> bool,
    message: impl Fn(&serde_json::Value) -> String,
) -> Result<serde_json::Value, ControlError> {
    let resp = req
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| ControlError::Unreachable(e.without_url().to_string()))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        // Bounded: a carrier's answer to one request is a few KiB.
        let bytes = resp.bytes().await.map_err(|e| ControlError::Unreachable(e.without_url().to_string()))?;
        if bytes.len() > 256 * 1024 {
            return Err(ControlError::BadAnswer("the answer is too large".into()));
        }
        return Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null));
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if gone(status, &body) {
        return Err(ControlError::CallGone);
    }
    Err(ControlError::Refused { status, message: message(&body).chars().take(300).collect() })
}

/// Log the outcome of hanging up a call whose stream we ended: a call
/// already gone is fine, no credentials (a stream no webhook announced) is
/// worth a debug line, anything else a warning.
pub fn report_hangup(carrier: &'static str, result: Result<(), ControlError>) {
    match result {
        Ok(()) | Err(ControlError::CallGone) => {}
        Err(e @ ControlError::NoCredentials(_)) => tracing::debug!(carrier, error = %e, "no hangup"),
        Err(e) => tracing::warn!(carrier, error = %e, "carrier hangup failed"),
    }
}

/// `title: detail` of a JSON error, as Telnyx and Vonage give them.
pub fn title_and_detail(e: &serde_json::Value) -> String {
    [e["title"].as_str(), e["detail"].as_str()].into_iter().flatten().collect::<Vec<_>>().join(": ")
}

/// A boxed future (the trait is object-safe).
pub type ControlFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ControlError>> + Send + 'a>>;

/// A boxed future of the carrier's id of a call it placed.
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = Result<String, ControlError>> + Send + 'a>>;

/// An outbound call to place.
#[derive(Debug, Clone)]
pub struct Dial {
    /// Our id of the call (the carrier's webhooks name it).
    pub call_id: crate::ids::CallId,
    /// Who is called.
    pub to: TransferTarget,
    /// The caller ID: a number the tenant owns.
    pub from: String,
    /// Give up after this long ringing (`no_answer`).
    pub ring_timeout_s: u32,
    /// Machine handling.
    pub machine: crate::runtime::dialing::MachineDetection,
}

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

    /// Whether this carrier is configured to place outbound calls.
    fn dials(&self) -> bool {
        false
    }

    /// Place `call`; the carrier then reports to its webhook module whether
    /// and by whom it was answered. Returns the carrier's id of the call.
    fn dial<'a>(&'a self, _call: &'a Dial) -> DialFuture<'a> {
        Box::pin(async { Err(ControlError::Unsupported("this carrier cannot place outbound calls yet")) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_for_logs_drops_the_carriers_words() {
        let e = ControlError::Refused { status: 400, message: "The 'To' number +15557654321 is not valid".into() };
        assert_eq!(e.summary(), "the carrier answered HTTP 400");
        assert!(e.to_string().contains("+15557654321"), "the API caller still gets the carrier's reason");
    }
}
