//! Acting on a live call through its carrier's REST API (transfer now; hang-up
//! and outbound dialling as carriers need them), behind one trait so the
//! control API knows no carrier by name. Each carrier's webhook module
//! implements [`CarrierControl`]; the server registers one per carrier.

use std::future::Future;
use std::pin::Pin;

use crate::runtime::registry::CallDetails;

/// Where to transfer a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// An E.164 phone number.
    Number(String),
    /// A SIP URI (`sip:` or `sips:`).
    Sip(String),
}

impl TransferTarget {
    /// Parse a phone number or SIP URI.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if crate::tenant::is_e164(s) {
            return Ok(Self::Number(s.into()));
        }
        let lower = s.to_ascii_lowercase();
        if (lower.starts_with("sip:") || lower.starts_with("sips:"))
            && s.len() <= 256
            && s.contains('@')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
        {
            return Ok(Self::Sip(s.into()));
        }
        Err(format!("{s:?} is neither an E.164 number nor a sip:/sips: URI"))
    }

    /// The number or URI as given.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Number(n) | Self::Sip(n) => n,
        }
    }
}

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

    /// Move the live call to `to`; the media stream then ends as a transfer.
    fn transfer<'a>(&'a self, call: &'a CallDetails, to: &'a TransferTarget) -> ControlFuture<'a>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_targets_parse() {
        assert_eq!(TransferTarget::parse("+15557654321").unwrap(), TransferTarget::Number("+15557654321".into()));
        assert!(matches!(
            TransferTarget::parse("sip:oncall@pbx.example.com;transport=tls"),
            Ok(TransferTarget::Sip(_))
        ));
        assert!(TransferTarget::parse("5557654321").is_err());
        assert!(TransferTarget::parse("sip:a@b\"><Hangup/>").is_err());
        assert!(TransferTarget::parse("http://x@y").is_err());
    }
}
