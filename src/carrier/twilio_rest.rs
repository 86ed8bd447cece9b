//! Twilio REST, the one call we need: "update call" (PROTOCOLS §3), to run new
//! TwiML on a live call — `<Dial>` for a transfer.
//!
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`, form
//! body `Twiml=...`, HTTP Basic with an API key (`SK…` + secret) or the account
//! SID + auth token. The base URL is configurable so tests use a fake on
//! loopback.

use std::time::Duration;

use crate::api::twilio::xml_escape;

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// No credentials configured.
    #[error("Twilio REST credentials are not configured (TWILIO_API_KEY/TWILIO_API_SECRET or TWILIO_AUTH_TOKEN)")]
    NoCredentials,
    /// The call is over (Twilio 404 / code 20404).
    #[error("Twilio says the call no longer exists")]
    CallNotFound,
    /// Twilio refused.
    #[error("Twilio answered HTTP {status}: {message}")]
    Status {
        /// HTTP status
        status: u16,
        /// Twilio's message
        message: String,
    },
    /// Network failure or timeout.
    #[error("Twilio unreachable: {0}")]
    Unreachable(String),
}

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

    /// The TwiML that dials it.
    pub fn twiml(&self) -> String {
        let inner = match self {
            Self::Number(n) => xml_escape(n),
            Self::Sip(u) => format!("<Sip>{}</Sip>", xml_escape(u)),
        };
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{inner}</Dial></Response>"#)
    }
}

/// Twilio REST client.
#[derive(Debug, Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    base: String,
    /// (user, password) for Basic auth; user is an API key SID or "" meaning
    /// "the account SID of the call".
    auth: Option<(String, String)>,
}

impl TwilioRest {
    /// A client for `base` with credentials from `secrets`.
    pub fn new(http: reqwest::Client, base: &str, secrets: &crate::config::Secrets) -> Self {
        let auth = match (&secrets.twilio_api_key, secrets.twilio_auth_tokens.first()) {
            (Some((k, v)), _) => Some((k.clone(), v.clone())),
            (None, Some(token)) => Some((secrets.twilio_account_sid.clone().unwrap_or_default(), token.clone())),
            (None, None) => None,
        };
        Self { http, base: base.trim_end_matches('/').to_string(), auth }
    }

    /// Replace the running TwiML of `call_sid` with `twiml`.
    pub async fn update_call(&self, account_sid: &str, call_sid: &str, twiml: &str) -> Result<(), RestError> {
        let (user, pass) = self.auth.as_ref().ok_or(RestError::NoCredentials)?;
        let user = if user.is_empty() { account_sid } else { user.as_str() };
        let url = format!("{}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json", self.base);
        let resp = self
            .http
            .post(&url)
            .basic_auth(user, Some(pass))
            .form(&[("Twiml", twiml)])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| RestError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if status == 404 || body["code"] == 20404 {
            return Err(RestError::CallNotFound);
        }
        let message = body["message"].as_str().unwrap_or("").chars().take(300).collect();
        Err(RestError::Status { status, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_targets() {
        assert_eq!(
            TransferTarget::parse("+15557654321").unwrap().twiml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial>+15557654321</Dial></Response>"#
        );
        assert_eq!(
            TransferTarget::parse("sip:oncall@pbx.example.com;transport=tls").unwrap().twiml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Sip>sip:oncall@pbx.example.com;transport=tls</Sip></Dial></Response>"#
        );
        assert!(TransferTarget::parse("5557654321").is_err());
        assert!(TransferTarget::parse("sip:a@b\"><Hangup/>").is_err());
        assert!(TransferTarget::parse("http://x@y").is_err());
    }
}
