//! Twilio REST, the one call we need: "update call" (PROTOCOLS §3), to run new
//! TwiML on a live call — `<Dial>` for a transfer — as Twilio's
//! [`CarrierControl`].
//!
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`, form
//! body `Twiml=...`, HTTP Basic with an API key (`SK…` + secret) or the account
//! SID + auth token. The base URL is configurable so tests use a fake on
//! loopback.

use std::time::Duration;

use super::xml_escape;
use crate::api::carrier_control::{CarrierControl, ControlError, ControlFuture, TransferTarget};
use crate::runtime::registry::CallDetails;

/// The TwiML that dials `target`.
pub fn dial_twiml(target: &TransferTarget) -> String {
    let inner = match target {
        TransferTarget::Number(n) => xml_escape(n),
        TransferTarget::Sip(u) => format!("<Sip>{}</Sip>", xml_escape(u)),
    };
    format!(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{inner}</Dial></Response>"#)
}

/// Twilio REST client.
#[derive(Debug, Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    base: String,
    /// (user, password) for Basic auth; user is an API key SID or "" meaning
    /// "the account SID of the call".
    auth: Option<(String, String)>,
    /// `TWILIO_ACCOUNT_SID`, for calls whose stream did not name an account.
    account_sid: Option<String>,
}

impl TwilioRest {
    /// A client for `base` with credentials from `secrets`.
    pub fn new(http: reqwest::Client, base: &str, secrets: &crate::config::Secrets) -> Self {
        let auth = match (&secrets.twilio_api_key, secrets.twilio_auth_tokens.first()) {
            (Some((k, v)), _) => Some((k.clone(), v.clone())),
            (None, Some(token)) => Some((secrets.twilio_account_sid.clone().unwrap_or_default(), token.clone())),
            (None, None) => None,
        };
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
            account_sid: secrets.twilio_account_sid.clone(),
        }
    }

    /// Replace the running TwiML of `call_sid` with `twiml`.
    pub async fn update_call(&self, account_sid: &str, call_sid: &str, twiml: &str) -> Result<(), ControlError> {
        let (user, pass) = self.auth.as_ref().ok_or_else(|| {
            ControlError::NoCredentials(
                "Twilio REST credentials are not configured (TWILIO_API_KEY/TWILIO_API_SECRET or TWILIO_AUTH_TOKEN)"
                    .into(),
            )
        })?;
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
            .map_err(|e| ControlError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if status == 404 || body["code"] == 20404 {
            return Err(ControlError::CallGone);
        }
        let message = body["message"].as_str().unwrap_or("").chars().take(300).collect();
        Err(ControlError::Refused { status, message })
    }
}

impl CarrierControl for TwilioRest {
    fn carrier(&self) -> &'static str {
        "twilio"
    }

    fn transfer<'a>(&'a self, call: &'a CallDetails, to: &'a TransferTarget) -> ControlFuture<'a> {
        Box::pin(async move {
            let account = call
                .carrier_ids
                .iter()
                .find(|(k, _)| *k == "account_sid")
                .map(|(_, v)| v.clone())
                .or_else(|| self.account_sid.clone())
                .unwrap_or_default();
            if account.is_empty() || call.carrier_call_id.is_empty() {
                return Err(ControlError::NoCarrierCall);
            }
            self.update_call(&account, &call.carrier_call_id, &dial_twiml(to)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_twiml() {
        assert_eq!(
            dial_twiml(&TransferTarget::parse("+15557654321").unwrap()),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial>+15557654321</Dial></Response>"#
        );
        assert_eq!(
            dial_twiml(&TransferTarget::parse("sip:oncall@pbx.example.com;transport=tls").unwrap()),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Sip>sip:oncall@pbx.example.com;transport=tls</Sip></Dial></Response>"#
        );
    }
}
