//! Twilio REST as Twilio's [`CarrierControl`]: "update call" (PROTOCOLS §3)
//! runs new TwiML on a live call — `<Dial>` for a transfer — and "create
//! call" places an outbound one.
//!
//! Update: `POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`,
//! form body `Twiml=...`. Create: `POST …/Accounts/{AccountSid}/Calls.json`
//! with `To`, `From`, `Url` (our answer webhook, [`super::outbound`]),
//! `StatusCallback` (the outcome: busy, no-answer, failed, completed),
//! `Timeout` and optionally `MachineDetection`; Twilio answers `201` with the
//! call's `sid`. HTTP Basic with an API key (`SK…` + secret) or the account
//! SID + auth token. The base URL is configurable so tests use a fake on
//! loopback.

use super::xml_escape;
use crate::api::carrier_control::{CarrierControl, ControlError, ControlFuture, Dial, DialFuture, TransferTarget};
use crate::runtime::dialing::MachineDetection;
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

    fn credentials(&self) -> Result<(&str, &str), ControlError> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str())).ok_or_else(|| {
            ControlError::NoCredentials(
                "Twilio REST credentials are not configured (TWILIO_API_KEY/TWILIO_API_SECRET or TWILIO_AUTH_TOKEN)"
                    .into(),
            )
        })
    }

    /// Place a call: Twilio requests `Url` when it is answered (after machine
    /// detection, if asked) and `StatusCallback` when it ends or fails.
    pub async fn create_call(&self, dial: &Dial) -> Result<String, ControlError> {
        let (user, pass) = self.credentials()?;
        let account = self.account_sid.as_deref().filter(|a| valid_sid(a, "AC")).ok_or_else(|| {
            ControlError::NoCredentials("outbound calls need TWILIO_ACCOUNT_SID (the account that places them)".into())
        })?;
        let user = if user.is_empty() { account } else { user };
        let url = format!("{}/2010-04-01/Accounts/{account}/Calls.json", self.base);
        let id = dial.call_id;
        let mut form = vec![
            ("To", dial.to.as_str().to_string()),
            ("From", dial.from.clone()),
            ("Url", format!("{}{}?call={id}", self.public_http, super::outbound::ANSWER_PATH)),
            ("Method", "POST".into()),
            ("StatusCallback", format!("{}{}?call={id}", self.public_http, super::outbound::STATUS_PATH)),
            ("StatusCallbackMethod", "POST".into()),
            ("StatusCallbackEvent", "completed".into()),
            ("Timeout", dial.ring_timeout_s.to_string()),
        ];
        match dial.machine {
            MachineDetection::Off => {}
            MachineDetection::Hangup => form.push(("MachineDetection", "Enable".into())),
            MachineDetection::LeaveMessage => form.push(("MachineDetection", "DetectMessageEnd".into())),
        }
        let req = self.http.post(&url).basic_auth(user, Some(pass)).form(&form);
        let body = crate::api::carrier_control::send_for(
            req,
            |_, _| false,
            |body| body["message"].as_str().unwrap_or("").to_string(),
        )
        .await?;
        match body["sid"].as_str() {
            Some(sid) if valid_sid(sid, "CA") => Ok(sid.to_string()),
            _ => Err(ControlError::BadAnswer("Twilio's answer has no call sid".into())),
        }
    }

    /// Replace the running TwiML of `call_sid` with `twiml`.
    pub async fn update_call(&self, account_sid: &str, call_sid: &str, twiml: &str) -> Result<(), ControlError> {
        let (user, pass) = self.credentials()?;
        let user = if user.is_empty() { account_sid } else { user };
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

    fn dials(&self) -> bool {
        self.auth.is_some() && self.account_sid.as_deref().is_some_and(|a| valid_sid(a, "AC"))
    }

    fn dial<'a>(&'a self, call: &'a Dial) -> DialFuture<'a> {
        Box::pin(self.create_call(call))
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
