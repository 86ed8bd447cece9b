//! Telnyx Call Control v2 (PROTOCOLS §4.1): the commands we issue on a call —
//! `answer` (with the media stream), `reject`, `hangup`, `transfer`,
//! `streaming_start` — as `POST {api_url}/v2/calls/{call_control_id}/actions/{action}`
//! with `Authorization: Bearer {TELNYX_API_KEY}` and a JSON body; dialling
//! an outbound call (`POST {api_url}/v2/calls`); and Telnyx's [`CarrierControl`].
//!
//! Every command carries a `command_id` (Telnyx ignores a repeat of the same
//! one on the same call), so retrying a command that may have landed is safe.
//! A call that already ended answers 422 with error code `90018`
//! ([`ControlError::CallGone`]). The base URL is configurable so tests use a
//! fake Call Control server on loopback.

use serde_json::{Value, json};

use crate::api::carrier_control::{CarrierControl, ControlError, ControlFuture, Dial, DialFuture, TransferTarget};
use crate::carrier::telnyx::valid_id;
use crate::runtime::dialing::MachineDetection;
use crate::runtime::registry::CallDetails;

/// The `client_state` marking a transfer of our call `id` (Telnyx returns it
/// on that call's later webhooks).
pub fn transfer_state(id: crate::ids::CallId) -> String {
    crate::carrier::telnyx::client_state(&format!("xfer:{id}"))
}

/// The body of a command that streams the call to us: the caller's leg,
/// bidirectional RTP in `codec`, the stream presenting `client_state`.
fn stream_body(stream_url: &str, codec: &str, client_state: &str, command_id: String) -> Value {
    json!({
        "stream_url": stream_url,
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": codec,
        "client_state": client_state,
        "command_id": command_id,
    })
}

/// Telnyx Call Control client.
#[derive(Debug, Clone)]
pub struct TelnyxRest {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    /// Outbound calls: the Call Control application to place them on, and
    /// where their webhooks go.
    outbound: Option<(String, String)>,
}

impl TelnyxRest {
    /// A client for `base` with the API key (if any).
    pub fn new(http: reqwest::Client, base: &str, key: Option<String>) -> Self {
        Self { http, base: base.trim_end_matches('/').to_string(), key, outbound: None }
    }

    /// Place outbound calls on `connection_id`, their webhooks to `webhook_url`.
    pub fn with_outbound(mut self, connection_id: &str, webhook_url: &str) -> Self {
        if !connection_id.is_empty() {
            self.outbound = Some((connection_id.to_string(), webhook_url.to_string()));
        }
        self
    }

    fn key(&self) -> Result<&str, ControlError> {
        self.key
            .as_deref()
            .ok_or_else(|| ControlError::NoCredentials("Telnyx Call Control needs TELNYX_API_KEY".into()))
    }

    /// Dial: `POST /v2/calls`; the call's webhooks carry `client_state`
    /// (`answered`, `machine.detection.ended`, `hangup`, …). Returns its
    /// `call_control_id`.
    pub async fn dial_call(&self, dial: &Dial) -> Result<String, ControlError> {
        let key = self.key()?;
        let (connection_id, webhook_url) = self.outbound.as_ref().ok_or_else(|| {
            ControlError::NoCredentials("outbound calls through Telnyx need telnyx.connection_id".into())
        })?;
        let mut body = json!({
            "connection_id": connection_id,
            "to": dial.to.as_str(),
            "from": dial.from,
            "timeout_secs": dial.ring_timeout_s,
            "webhook_url": webhook_url,
            "webhook_url_method": "POST",
            "client_state": super::outbound::dial_state(dial.call_id),
            "command_id": format!("cb-dial-{}", dial.call_id),
        });
        match dial.machine {
            MachineDetection::Off => {}
            MachineDetection::Hangup => body["answering_machine_detection"] = "detect".into(),
            MachineDetection::LeaveMessage => body["answering_machine_detection"] = "greeting_end".into(),
        }
        let req = self.http.post(format!("{}/v2/calls", self.base)).bearer_auth(key).json(&body);
        let answer = crate::api::carrier_control::send_for(
            req,
            |_, _| false,
            |body| crate::api::carrier_control::title_and_detail(&body["errors"][0]),
        )
        .await?;
        match answer["data"]["call_control_id"].as_str() {
            Some(id) if valid_id(id) => Ok(id.to_string()),
            _ => Err(ControlError::BadAnswer("Telnyx's answer has no call_control_id".into())),
        }
    }

    /// Issue `action` on call `call_control_id` with `body`.
    pub async fn action(&self, call_control_id: &str, action: &str, mut body: Value) -> Result<(), ControlError> {
        let key = self.key()?;
        if !valid_id(call_control_id) {
            return Err(ControlError::NoCarrierCall);
        }
        if body.get("command_id").is_none() {
            body["command_id"] = Value::String(format!("cb-{action}-{}", crate::ids::CallId::random()));
        }
        let url = format!("{}/v2/calls/{call_control_id}/actions/{action}", self.base);
        let req = self.http.post(&url).bearer_auth(key).json(&body);
        crate::api::carrier_control::send(
            req,
            // An ended call: 422 with error code 90018.
            |status, body| status == 404 || body["errors"][0]["code"] == "90018" || body["errors"][0]["code"] == 90018,
            |body| crate::api::carrier_control::title_and_detail(&body["errors"][0]),
        )
        .await
    }

    /// Answer the call and stream it to `stream_url` both ways in `codec`, the
    /// stream presenting `client_state` back to us.
    pub async fn answer(
        &self,
        call_control_id: &str,
        stream_url: &str,
        codec: &str,
        client_state: &str,
    ) -> Result<(), ControlError> {
        let body = stream_body(stream_url, codec, client_state, format!("cb-answer-{call_control_id}"));
        self.action(call_control_id, "answer", body).await
    }

    /// Stream an answered (outbound) call to `stream_url` both ways in `codec`.
    pub async fn stream(
        &self,
        call_control_id: &str,
        stream_url: &str,
        codec: &str,
        client_state: &str,
    ) -> Result<(), ControlError> {
        let body = stream_body(stream_url, codec, client_state, format!("cb-stream-{call_control_id}"));
        self.action(call_control_id, "streaming_start", body).await
    }

    /// Refuse the call (`USER_BUSY` or `CALL_REJECTED`).
    pub async fn reject(&self, call_control_id: &str, busy: bool) -> Result<(), ControlError> {
        let cause = if busy { "USER_BUSY" } else { "CALL_REJECTED" };
        self.action(
            call_control_id,
            "reject",
            json!({"cause": cause, "command_id": format!("cb-reject-{call_control_id}")}),
        )
        .await
    }

    /// Hang the call up.
    pub async fn hangup(&self, call_control_id: &str) -> Result<(), ControlError> {
        self.action(call_control_id, "hangup", json!({"command_id": format!("cb-hangup-{call_control_id}")})).await
    }
}

impl CarrierControl for TelnyxRest {
    fn carrier(&self) -> &'static str {
        "telnyx"
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
            let body = json!({"to": to.as_str(), "client_state": transfer_state(id)});
            self.action(&call.carrier_call_id, "transfer", body).await
        })
    }

    fn dials(&self) -> bool {
        self.key.is_some() && self.outbound.is_some()
    }

    fn dial<'a>(&'a self, call: &'a Dial) -> DialFuture<'a> {
        Box::pin(self.dial_call(call))
    }
}
