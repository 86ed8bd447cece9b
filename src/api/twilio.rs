//! Twilio entry points: the voice webhook that answers with TwiML, and the
//! Media Streams WebSocket upgrade.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::runtime::call_task::run_twilio_call;

/// Escape text for an XML attribute value.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            c => o.push(c),
        }
    }
    o
}

/// TwiML connecting a call to our bidirectional media stream. Data goes in
/// `<Parameter>`s, never in the URL's query string (Twilio drops it).
pub fn connect_twiml(public_url: &str, params: &[(&str, &str)]) -> String {
    let url = format!("{}/twilio/stream", public_url.trim_end_matches('/'));
    let mut x = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url=""#);
    x.push_str(&xml_escape(&url));
    x.push_str("\">");
    for (k, v) in params {
        x.push_str(&format!(r#"<Parameter name="{}" value="{}"/>"#, xml_escape(k), xml_escape(v)));
    }
    x.push_str("</Stream></Connect></Response>");
    x
}

/// `POST /twilio/voice`: Twilio's incoming-call webhook.
pub async fn voice(State(s): State<Arc<AppState>>, Form(form): Form<HashMap<String, String>>) -> Response {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let params = [("call_sid", get("CallSid")), ("from", get("From")), ("to", get("To"))];
    let params: Vec<_> = params.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    ([(header::CONTENT_TYPE, "text/xml")], connect_twiml(&s.config.server.public_url, &params)).into_response()
}

/// `GET /twilio/stream`: the Media Streams WebSocket.
pub async fn stream(State(s): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    if let Err(refusal) = s.admit() {
        metrics::counter!(crate::metrics::CALLS_REJECTED, "reason" => refusal.1).increment(1);
        return refusal.into_response();
    }
    let cfg = &s.config.server;
    let ctx = s.call.clone();
    ws.read_buffer_size(cfg.read_buffer_bytes)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
        .on_upgrade(move |socket| run_twilio_call(socket, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_has_stream_url_without_query_and_escaped_parameters() {
        let x = connect_twiml("wss://cb.example.com/", &[("from", "+1555<&>\"")]);
        assert_eq!(
            x,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://cb.example.com/twilio/stream"><Parameter name="from" value="+1555&lt;&amp;&gt;&quot;"/></Stream></Connect></Response>"#
        );
    }
}
