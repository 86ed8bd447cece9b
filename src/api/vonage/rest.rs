//! The Vonage Voice API calls we make (PROTOCOLS §4.2): `PUT
//! {api_url}/v1/calls/{uuid}` with a JSON action — `hangup`, or `transfer` to
//! a new NCCO — and `POST {api_url}/v1/calls` to place an outbound call (its
//! `answer_url` and `event_url` are ours, [`super::outbound`]), authenticated
//! with an RS256 JWT from the application's private key; and Vonage's
//! [`CarrierControl`]. The base URL is configurable so tests
//! use a fake on loopback.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::api::carrier_control::{CarrierControl, ControlError, ControlFuture, Dial, DialFuture, TransferTarget};
use crate::carrier::vonage::jwt::AppKey;
use crate::carrier::vonage::valid_uuid;
use crate::runtime::dialing::MachineDetection;
use crate::runtime::registry::CallDetails;

/// Vonage Voice API client.
#[derive(Debug)]
pub struct VonageRest {
    http: reqwest::Client,
    base: String,
    key: Option<AppKey>,
    /// Our public HTTP base (transfer outcomes come to its `/vonage/event`).
    public_http: String,
}

impl VonageRest {
    /// A client for `base`, signing with `key` (if configured).
    pub fn new(http: reqwest::Client, base: &str, key: Option<AppKey>, public_http: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
            public_http: public_http.trim_end_matches('/').to_string(),
        }
    }

    fn key(&self) -> Result<&AppKey, ControlError> {
        self.key.as_ref().ok_or_else(|| {
            ControlError::NoCredentials(
                "the Vonage Voice API needs VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY_PATH".into(),
            )
        })
    }

    /// `POST /v1/calls`: Vonage requests the `answer_url` when the call is
    /// answered and reports its progress to the `event_url`. Returns its uuid.
    pub async fn create_call(&self, dial: &Dial) -> Result<String, ControlError> {
        let key = self.key()?;
        let id = dial.call_id;
        let mut body = json!({
            "to": [endpoint(&dial.to)],
            "from": {"type": "phone", "number": dial.from.trim_start_matches('+')},
            "answer_url": [format!("{}{}?call={id}", self.public_http, super::outbound::ANSWER_PATH)],
            "answer_method": "POST",
            "event_url": [format!("{}{}?call={id}", self.public_http, super::outbound::EVENT_PATH)],
            "event_method": "POST",
            "ringing_timer": dial.ring_timeout_s,
        });
        match dial.machine {
            MachineDetection::Off => {}
            MachineDetection::Hangup => body["machine_detection"] = "hangup".into(),
            MachineDetection::LeaveMessage => body["machine_detection"] = "continue".into(),
        }
        let req =
            self.http.post(format!("{}/v1/calls", self.base)).bearer_auth(key.token(SystemTime::now())).json(&body);
        let answer =
            crate::api::carrier_control::send_for(req, |_, _| false, crate::api::carrier_control::title_and_detail)
                .await?;
        match answer["uuid"].as_str() {
            Some(uuid) if valid_uuid(uuid) => Ok(uuid.to_string()),
            _ => Err(ControlError::BadAnswer("Vonage's answer has no call uuid".into())),
        }
    }

    /// `PUT /v1/calls/{uuid}` with `body`.
    pub async fn modify(&self, uuid: &str, body: Value) -> Result<(), ControlError> {
        let key = self.key()?;
        if !valid_uuid(uuid) {
            return Err(ControlError::NoCarrierCall);
        }
        let req = self
            .http
            .put(format!("{}/v1/calls/{uuid}", self.base))
            .bearer_auth(key.token(SystemTime::now()))
            .json(&body);
        crate::api::carrier_control::send(req, |status, _| status == 404, crate::api::carrier_control::title_and_detail)
            .await
    }

    /// Hang call `uuid` up.
    pub async fn hangup(&self, uuid: &str) -> Result<(), ControlError> {
        self.modify(uuid, json!({"action": "hangup"})).await
    }
}

/// The NCCO endpoint for a transfer target.
pub(super) fn endpoint(to: &TransferTarget) -> Value {
    match to {
        // Vonage numbers are E.164 without the plus.
        TransferTarget::Number(n) => json!({"type": "phone", "number": n.trim_start_matches('+')}),
        TransferTarget::Sip(uri) => json!({"type": "sip", "uri": uri}),
    }
}

impl CarrierControl for VonageRest {
    fn carrier(&self) -> &'static str {
        "vonage"
    }

    fn transfer<'a>(
        &'a self,
        id: crate::ids::CallId,
        call: &'a CallDetails,
        to: &'a TransferTarget,
    ) -> ControlFuture<'a> {
        Box::pin(async move {
            if call.carrier_call_id.is_empty() {
                return Err(ControlError::NoCarrierCall);
            }
            // The caller's leg runs a new NCCO that dials `to`; its events (answered,
            // busy, …) come back to us marked with our call id.
            let event_url = format!("{}/vonage/event?transfer={id}", self.public_http);
            let ncco = json!([{"action": "connect", "eventUrl": [event_url], "endpoint": [endpoint(to)]}]);
            let body = json!({"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}});
            self.modify(&call.carrier_call_id, body).await
        })
    }

    fn dials(&self) -> bool {
        self.key.is_some()
    }

    fn dial<'a>(&'a self, call: &'a Dial) -> DialFuture<'a> {
        Box::pin(self.create_call(call))
    }
}
