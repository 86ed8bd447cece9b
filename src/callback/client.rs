//! The HTTP side of callbacks: one signed POST, with a deadline, no redirects,
//! and a bounded response body. Retries and ordering live in
//! [`super::delivery`]; this module only says whether an attempt may be retried.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};

use crate::contract::Envelope;
use crate::netguard::{GuardedResolver, NetError, NetPolicy};
use crate::signature::callback as sig;

/// Where one tenant's callbacks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Callback URL.
    pub url: String,
    /// Signing secret.
    pub secret: String,
}

/// Why a callback attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// No answer within the deadline.
    #[error("callback timed out after {0:?}")]
    Timeout(Duration),
    /// Could not connect or the connection broke.
    #[error("callback unreachable: {0}")]
    Unreachable(String),
    /// The backend answered with an error status.
    #[error("callback answered HTTP {0}")]
    Status(u16),
    /// A redirect (not followed: a signed body must not be re-sent elsewhere).
    #[error("callback answered a redirect (HTTP {0}); redirects are not followed")]
    Redirect(u16),
    /// The body was larger than allowed.
    #[error("callback response over {0} bytes")]
    TooLarge(usize),
    /// The body was not the JSON we expect.
    #[error("callback response is not valid: {0}")]
    BadBody(String),
    /// The URL points where tenants may not send us (private, loopback, …).
    #[error("callback URL refused: {0}")]
    Forbidden(String),
}

impl CallbackError {
    /// Whether another attempt may succeed: timeouts, connection errors, 5xx,
    /// 408 and 429. Other 4xx, redirects and bad bodies are final.
    pub fn retryable(&self) -> bool {
        match self {
            CallbackError::Timeout(_) | CallbackError::Unreachable(_) => true,
            CallbackError::Status(s) => *s >= 500 || *s == 408 || *s == 429,
            _ => false,
        }
    }

    /// Short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallbackError::Timeout(_) => "timeout",
            CallbackError::Unreachable(_) => "unreachable",
            CallbackError::Status(s) if *s >= 500 => "http_5xx",
            CallbackError::Status(_) => "http_4xx",
            CallbackError::Redirect(_) => "redirect",
            CallbackError::TooLarge(_) => "too_large",
            CallbackError::BadBody(_) => "bad_body",
            CallbackError::Forbidden(_) => "forbidden_address",
        }
    }
}

/// Shared HTTP client for URLs tenants give us (callbacks, `say` audio):
/// no redirects, no proxies, and only public addresses
/// ([`crate::netguard`]) unless the allow-list says otherwise.
#[derive(Debug, Clone)]
pub struct CallbackClient {
    http: reqwest::Client,
    max_body: usize,
    policy: Arc<NetPolicy>,
}

impl CallbackClient {
    /// A client that reads at most `max_body` bytes of any response and
    /// reaches only what `policy` allows.
    pub fn new(max_body: usize, policy: NetPolicy) -> Self {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver::new(policy.clone()))
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client builds");
        Self { http, max_body, policy }
    }

    /// The underlying HTTP client (tenant URLs only: check them with [`Self::check_url`] first).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Whether a tenant URL may be fetched (IP literals are checked here;
    /// names when they are resolved).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), NetError> {
        self.policy.check_url(url)
    }

    /// POST `env` to `target`, signed, within `timeout`; the parsed JSON reply
    /// (`null` for an empty body).
    pub async fn post(
        &self,
        target: &Target,
        env: &Envelope,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallbackError> {
        let body = serde_json::to_vec(env).expect("events serialize");
        self.post_raw(target, body, timeout).await
    }

    /// POST `env` for a reply that may be streamed: a JSON body is read whole;
    /// `application/x-ndjson` comes back as lines to read as they arrive.
    /// `timeout` bounds the wait for the response head (and a whole body).
    pub async fn post_streaming(
        &self,
        target: &Target,
        env: &Envelope,
        timeout: Duration,
    ) -> Result<ReplyBody, CallbackError> {
        let body = serde_json::to_vec(env).expect("events serialize");
        let max = self.max_body;
        let attempt = async {
            let resp = self.send_signed(target, body).await?;
            let ndjson = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-ndjson"));
            if ndjson {
                Ok(ReplyBody::Lines(NdjsonLines { resp, buf: Vec::new(), read: 0, max, done: false }))
            } else {
                read_limited(resp, max).await.map(ReplyBody::Whole)
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(CallbackError::Timeout(timeout)),
        }
    }

    /// Sign and send; a success status or the error it maps to.
    async fn send_signed(&self, target: &Target, body: Vec<u8>) -> Result<reqwest::Response, CallbackError> {
        let url =
            reqwest::Url::parse(&target.url).map_err(|_| CallbackError::Unreachable("bad callback URL".into()))?;
        self.check_url(&url).map_err(|e| CallbackError::Forbidden(e.to_string()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let signature = sig::sign(&target.secret, now, &body);
        let resp = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(concat!("callbridge/", env!("CARGO_PKG_VERSION"))))
            .header(sig::HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| send_error(&e))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(CallbackError::Redirect(status.as_u16()));
        }
        if !status.is_success() {
            return Err(CallbackError::Status(status.as_u16()));
        }
        Ok(resp)
    }

    /// POST an already serialized body (retries re-sign the same bytes).
    pub async fn post_raw(
        &self,
        target: &Target,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallbackError> {
        let attempt = async {
            let resp = self.send_signed(target, body).await?;
            read_limited(resp, self.max_body).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(CallbackError::Timeout(timeout)),
        }
    }
}

/// A failed send: a refused address (the resolver found only forbidden ones)
/// is final; anything else may be retried.
fn send_error(e: &reqwest::Error) -> CallbackError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(n) = err.downcast_ref::<NetError>() {
            return CallbackError::Forbidden(n.to_string());
        }
        source = err.source();
    }
    CallbackError::Unreachable(without_url(e))
}

fn without_url(e: &reqwest::Error) -> String {
    // The URL may carry a tenant's credentials in its query; keep it out of logs.
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<callback url>");
    }
    s
}

async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<serde_json::Value, CallbackError> {
    if resp.content_length().is_some_and(|n| n as usize > max) {
        return Err(CallbackError::TooLarge(max));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| CallbackError::Unreachable(without_url(&e)))? {
        if buf.len() + chunk.len() > max {
            return Err(CallbackError::TooLarge(max));
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&buf).map_err(|e| CallbackError::BadBody(e.to_string()))
}

/// A reply body: whole, or NDJSON lines still arriving.
#[derive(Debug)]
pub enum ReplyBody {
    /// A JSON body (`null` when empty).
    Whole(serde_json::Value),
    /// `application/x-ndjson`: one JSON value per line.
    Lines(NdjsonLines),
}

/// The lines of a streamed reply, read as they arrive; at most `max` bytes in all.
#[derive(Debug)]
pub struct NdjsonLines {
    resp: reqwest::Response,
    buf: Vec<u8>,
    read: usize,
    max: usize,
    done: bool,
}

impl NdjsonLines {
    /// The next line's JSON (blank lines skipped), or `None` at the end.
    pub async fn next(&mut self) -> Option<Result<serde_json::Value, CallbackError>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(&line).map_err(|e| CallbackError::BadBody(e.to_string())));
            }
            if self.done {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                let line = std::mem::take(&mut self.buf);
                return Some(serde_json::from_slice(&line).map_err(|e| CallbackError::BadBody(e.to_string())));
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => {
                    self.read += chunk.len();
                    if self.read > self.max {
                        self.done = true;
                        self.buf.clear();
                        return Some(Err(CallbackError::TooLarge(self.max)));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    self.buf.clear();
                    return Some(Err(CallbackError::Unreachable(without_url(&e))));
                }
            }
        }
    }
}
