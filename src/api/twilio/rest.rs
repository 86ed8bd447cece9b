//! Twilio REST, the one call we need: "update call" (PROTOCOLS §3), to run new
//! TwiML on a live call — `<Dial>` for a transfer — as Twilio's
//! [`CarrierControl`].
//!
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`, form
//! body `Twiml=...`, HTTP Basic with an API key (`SK…` + secret) or the account
//! SID + auth token. The base URL is configurable so tests use a fake on
//! loopback.

use super::xml_escape;
use crate::api::carrier_control::{CarrierControl, ControlError, ControlFuture, TransferTarget};
use crate::runtime::registry::CallDetails;

/// The TwiML that dials `target`; Twilio requests `action` (if given) with
/// the outcome (`DialCallStatus`) when the dialled leg ends or fails.
pub fn dial_twiml(target: &TransferTarget, action: Option<&str>) -> String {
    let inner = match target {
        TransferTarget::Number(n) => xml_escape(n),
        TransferTarget::Sip(u) => format!("<Sip>{}</Sip>", xml_escape(u)),
    };
    let attrs = action.map(|a| format!(r#" action="{}" method="POST""#, xml_escape(a))).unwrap_or_default();
    format!(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial{attrs}>{inner}</Dial></Response>"#)
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
    /// Our public HTTP base (the transfer outcome callback).
    public_http: String,
}

impl TwilioRest {
    /// A client for `base` with credentials from `secrets`; outcomes are
    /// reported to `public_http`.
    pub fn new(http: reqwest::Client, base: &str, secrets: &crate::config::Secrets, public_http: &str) -> Self {
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
            public_http: public_http.trim_end_matches('/').to_string(),
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
        let req = self.http.post(&url).basic_auth(user, Some(pass)).form(&[("Twiml", twiml)]);
        crate::api::carrier_control::send(
            req,
            |status, body| status == 404 || body["code"] == 20404,
            |body| body["message"].as_str().unwrap_or("").to_string(),
        )
        .await
    }
}

impl CarrierControl for TwilioRest {
    fn carrier(&self) -> &'static str {
        "twilio"
    }

    fn transfer<'a>(
        &'a self,
        id: crate::ids::CallId,
        call: &'a CallDetails,
        to: &'a TransferTarget,
    ) -> ControlFuture<'a> {
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
            if !valid_sid(&account, "AC") || !valid_sid(&call.carrier_call_id, "CA") {
                return Err(ControlError::NoCarrierCall);
            }
            let action = format!("{}{}?call={id}", self.public_http, super::TRANSFER_STATUS_PATH);
            self.update_call(&account, &call.carrier_call_id, &dial_twiml(to, Some(&action))).await
        })
    }
}

/// Whether `sid` is a Twilio SID of kind `prefix` (two letters + 32 hex digits):
/// nothing else goes into a REST URL path.
fn valid_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34 && sid.starts_with(prefix) && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_twiml() {
        assert_eq!(
            dial_twiml(&TransferTarget::parse("+15557654321").unwrap(), None),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial>+15557654321</Dial></Response>"#
        );
        assert_eq!(
            dial_twiml(&TransferTarget::parse("+15557654321").unwrap(), Some("https://cb.example.com/t?call=c&x=1")),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="https://cb.example.com/t?call=c&amp;x=1" method="POST">+15557654321</Dial></Response>"#
        );
        assert!(valid_sid("AC0123456789abcdef0123456789abcdef", "AC"));
        assert!(!valid_sid("AC0123456789abcdef0123456789abcde/", "AC"), "no path characters");
        assert!(!valid_sid("AC../../2010-04-01/Accounts/ACx/Calls", "AC"));
        assert_eq!(
            dial_twiml(&TransferTarget::parse("sip:oncall@pbx.example.com;transport=tls").unwrap(), None),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Sip>sip:oncall@pbx.example.com;transport=tls</Sip></Dial></Response>"#
        );
    }
}
