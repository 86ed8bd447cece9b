//! Vonage's JSON Web Tokens, both directions (PROTOCOLS §4.2).
//!
//! - **Signed webhooks**: Vonage sends `Authorization: Bearer <JWT>`, HS256
//!   with the account's signature secret, whose `payload_hash` claim is the
//!   SHA-256 (hex) of the request body — for a GET (the answer webhook's
//!   default), of the query parameters as compact JSON in URL order
//!   ([`query_payload`]). [`verify_webhook`] checks the
//!   algorithm, the signature (constant time), the body hash, and that `iat`
//!   is within [`MAX_AGE`] of now (a captured request cannot be replayed later).
//! - **Voice API calls**: we authenticate with an RS256 JWT signed by the
//!   application's private key (PKCS#8 PEM), claims `application_id`, `iat`,
//!   `exp`, `jti` ([`AppKey::token`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// How old (or how far in the future) a webhook's `iat` may be.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// Why a webhook is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// No bearer token.
    #[error("unsigned")]
    Unsigned,
    /// Not a JWT, or not HS256.
    #[error("malformed token")]
    Malformed,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `payload_hash` does not match the body.
    #[error("body does not match payload_hash")]
    BodyMismatch,
    /// `iat` missing or too far from now.
    #[error("stale token")]
    Stale,
}

impl JwtError {
    /// Stable code for metrics.
    pub fn code(self) -> &'static str {
        match self {
            JwtError::Unsigned => "webhook_unsigned",
            JwtError::Malformed => "webhook_malformed_token",
            JwtError::BadSignature => "webhook_bad_signature",
            JwtError::BodyMismatch => "webhook_body_mismatch",
            JwtError::Stale => "webhook_stale",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// What a GET webhook's `payload_hash` covers: its query parameters (decoded)
/// as a compact JSON object, in the order of the URL.
pub fn query_payload(raw_query: &str) -> Vec<u8> {
    let mut out = String::from("{");
    for (i, (k, v)) in url::form_urlencoded::parse(raw_query.as_bytes()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(k.into_owned()).to_string());
        out.push(':');
        out.push_str(&serde_json::Value::String(v.into_owned()).to_string());
    }
    out.push('}');
    out.into_bytes()
}

/// Check a signed webhook: `authorization` is the header value, `body` what
/// its `payload_hash` covers (the raw body, or [`query_payload`] for a GET).
pub fn verify_webhook(secret: &str, authorization: &str, body: &[u8], now: SystemTime) -> Result<(), JwtError> {
    let token = authorization.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty());
    let token = token.ok_or(JwtError::Unsigned)?;
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let header: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(h).map_err(|_| JwtError::Malformed)?).map_err(|_| JwtError::Malformed)?;
    if header["alg"] != "HS256" {
        return Err(JwtError::Malformed);
    }
    let sig = B64URL.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(c.as_bytes());
    mac.verify_slice(&sig).map_err(|_| JwtError::BadSignature)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(c).map_err(|_| JwtError::Malformed)?).map_err(|_| JwtError::Malformed)?;
    let iat = claims["iat"].as_u64().ok_or(JwtError::Stale)?;
    if unix(now).abs_diff(iat) > MAX_AGE.as_secs() {
        return Err(JwtError::Stale);
    }
    // The hash covers the body as sent; a GET (no body) hashes the empty string.
    let want = hex(&Sha256::digest(body));
    match claims["payload_hash"].as_str() {
        Some(got) if got.eq_ignore_ascii_case(&want) => Ok(()),
        None if body.is_empty() => Ok(()),
        _ => Err(JwtError::BodyMismatch),
    }
}

/// Sign a webhook token as Vonage does (tests and fakes).
pub fn sign_webhook(secret: &str, body: &[u8], iat: u64) -> String {
    let header = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({"iat": iat, "jti": format!("jti-{iat}-{}", body.len()), "iss": "Vonage",
        "payload_hash": hex(&Sha256::digest(body)), "api_key": "fake", "application_id": "fake-app"});
    let claims = B64URL.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(claims.as_bytes());
    format!("{header}.{claims}.{}", B64URL.encode(mac.finalize().into_bytes()))
}

/// An application's private key, for Voice API tokens.
pub struct AppKey {
    application_id: String,
    key: ring::signature::RsaKeyPair,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey").field("application_id", &self.application_id).finish_non_exhaustive()
    }
}

impl AppKey {
    /// From the application id and its private key (PKCS#8 PEM, as Vonage issues it).
    pub fn from_pem(application_id: &str, pem: &str) -> Result<Self, String> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "VONAGE_PRIVATE_KEY_PATH is not a PEM file".to_string())?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("VONAGE_PRIVATE_KEY_PATH is not a PKCS#8 RSA private key: {e}"))?;
        Ok(Self { application_id: application_id.to_string(), key })
    }

    /// A token for one request, valid for five minutes from `now`.
    pub fn token(&self, now: SystemTime) -> String {
        let iat = unix(now);
        let header = B64URL.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let jti = crate::ids::CallId::random().to_string();
        let claims =
            serde_json::json!({"application_id": self.application_id, "iat": iat, "exp": iat + 300, "jti": jti});
        let claims = B64URL.encode(claims.to_string());
        let msg = format!("{header}.{claims}");
        let mut sig = vec![0; self.key.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        // Signing with a valid key into a buffer of the modulus length cannot fail.
        let _ = self.key.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, msg.as_bytes(), &mut sig);
        format!("{msg}.{}", B64URL.encode(sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_webhooks_verify_and_others_are_refused() {
        let now = SystemTime::now();
        let body = br#"{"status":"answered","uuid":"u-1"}"#;
        let t = sign_webhook("s3cret", body, unix(now));
        let auth = format!("Bearer {t}");
        assert_eq!(verify_webhook("s3cret", &auth, body, now), Ok(()));
        assert_eq!(verify_webhook("other", &auth, body, now), Err(JwtError::BadSignature));
        assert_eq!(verify_webhook("s3cret", &auth, b"{}", now), Err(JwtError::BodyMismatch));
        assert_eq!(verify_webhook("s3cret", &auth, body, now + Duration::from_secs(301)), Err(JwtError::Stale));
        assert_eq!(verify_webhook("s3cret", "", body, now), Err(JwtError::Unsigned));
        assert_eq!(verify_webhook("s3cret", "Bearer a.b", body, now), Err(JwtError::Malformed));
        // alg "none" (or anything but HS256) is refused before any signature check.
        let none = format!("{}.{}.", B64URL.encode(br#"{"alg":"none"}"#), t.split('.').nth(1).unwrap());
        assert_eq!(verify_webhook("s3cret", &format!("Bearer {none}"), body, now), Err(JwtError::Malformed));
        // A GET: the hash covers its query as compact JSON in URL order.
        let q = query_payload("to=447700900001&from=447700900000&uuid=abc&conversation_uuid=CON-1&x=a%20b");
        assert_eq!(
            String::from_utf8(q.clone()).unwrap(),
            r#"{"to":"447700900001","from":"447700900000","uuid":"abc","conversation_uuid":"CON-1","x":"a b"}"#
        );
        let t = sign_webhook("s3cret", &q, unix(now));
        assert_eq!(verify_webhook("s3cret", &format!("Bearer {t}"), &q, now), Ok(()));
        assert_eq!(verify_webhook("s3cret", &format!("Bearer {t}"), b"", now), Err(JwtError::BodyMismatch));
    }

    #[test]
    fn voice_api_tokens_are_rs256_with_the_application_id() {
        let pem = std::fs::read_to_string("tests/data/vonage/test_private_key.pem").unwrap();
        let public = std::fs::read("tests/data/vonage/test_public_key_pkcs1.der").unwrap();
        let key = AppKey::from_pem("app-123", &pem).unwrap();
        let t = key.token(SystemTime::now());
        let (msg, sig) = t.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &public)
            .verify(msg.as_bytes(), &B64URL.decode(sig).unwrap())
            .expect("the public half verifies it");
        let claims: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(msg.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(claims["application_id"], "app-123");
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 300);
        assert!(AppKey::from_pem("a", "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----").is_err());
        assert!(!format!("{key:?}").contains("BEGIN"), "the key never reaches Debug output");
    }
}
