//! Telnyx webhook signatures (PROTOCOLS §4.1): Ed25519 over
//! `"{telnyx-timestamp}|{raw body}"`, the signature base64 in
//! `telnyx-signature-ed25519`, the timestamp (unix seconds) in
//! `telnyx-timestamp`, the account's public key base64 (32 bytes). Deliveries
//! older or newer than [`TOLERANCE`] are refused (replays).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
/// Header carrying the signing time.
pub const TIMESTAMP_HEADER: &str = "telnyx-timestamp";
/// How far the signing time may be from ours.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// Why a delivery is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature or timestamp header.
    #[error("unsigned")]
    Unsigned,
    /// The timestamp is not a number, or too far from now.
    #[error("stale or bad timestamp")]
    Stale,
    /// The signature does not verify.
    #[error("bad signature")]
    Bad,
}

impl SignatureError {
    /// Stable code for metrics.
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Unsigned => "webhook_unsigned",
            SignatureError::Stale => "webhook_stale",
            SignatureError::Bad => "webhook_bad_signature",
        }
    }
}

/// A Telnyx account's webhook public key.
#[derive(Clone)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicKey(..)")
    }
}

impl PublicKey {
    /// From the base64 the Telnyx portal shows.
    pub fn from_base64(s: &str) -> Result<Self, String> {
        let raw = B64.decode(s.trim()).map_err(|_| "TELNYX_PUBLIC_KEY is not base64".to_string())?;
        let key: [u8; 32] =
            raw.try_into().map_err(|_| "TELNYX_PUBLIC_KEY must be a 32-byte Ed25519 key in base64".to_string())?;
        Ok(Self(key))
    }

    /// Check a delivery: `timestamp` and `signature` as in the headers, `body`
    /// the raw request body, `now` the current time.
    pub fn verify(&self, timestamp: &str, signature: &str, body: &[u8], now: SystemTime) -> Result<(), SignatureError> {
        if timestamp.is_empty() || signature.is_empty() {
            return Err(SignatureError::Unsigned);
        }
        let ts: u64 = timestamp.trim().parse().map_err(|_| SignatureError::Stale)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now.abs_diff(ts) > TOLERANCE.as_secs() {
            return Err(SignatureError::Stale);
        }
        let sig = B64.decode(signature.trim()).map_err(|_| SignatureError::Bad)?;
        let mut msg = Vec::with_capacity(timestamp.len() + 1 + body.len());
        msg.extend_from_slice(timestamp.as_bytes());
        msg.push(b'|');
        msg.extend_from_slice(body);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(&msg, &sig)
            .map_err(|_| SignatureError::Bad)
    }
}

/// Sign like Telnyx (tests and the loadtest's fake Telnyx): returns the
/// signature header value for `timestamp|body` with a PKCS#8 Ed25519 key.
pub fn sign(pkcs8: &[u8], timestamp: &str, body: &[u8]) -> Result<String, String> {
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| format!("bad Ed25519 key: {e}"))?;
    let mut msg = Vec::with_capacity(timestamp.len() + 1 + body.len());
    msg.extend_from_slice(timestamp.as_bytes());
    msg.push(b'|');
    msg.extend_from_slice(body);
    Ok(B64.encode(key.sign(&msg).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    fn keys() -> (Vec<u8>, PublicKey) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = PublicKey::from_base64(&B64.encode(pair.public_key().as_ref())).unwrap();
        (pkcs8.as_ref().to_vec(), public)
    }

    #[test]
    fn signed_deliveries_verify_and_tampering_stale_or_unsigned_ones_do_not() {
        let (private, public) = keys();
        let now = SystemTime::now();
        let ts = now.duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
        let body = br#"{"data":{"event_type":"call.initiated","id":"e1"}}"#;
        let sig = sign(&private, &ts, body).unwrap();
        assert_eq!(public.verify(&ts, &sig, body, now), Ok(()));
        assert_eq!(public.verify(&ts, &sig, b"{}", now), Err(SignatureError::Bad), "another body");
        let other = (now.duration_since(UNIX_EPOCH).unwrap().as_secs() + 1).to_string();
        assert_eq!(public.verify(&other, &sig, body, now), Err(SignatureError::Bad), "another timestamp");
        let later = now + Duration::from_secs(301);
        assert_eq!(public.verify(&ts, &sig, body, later), Err(SignatureError::Stale), "replayed 5 min later");
        assert_eq!(public.verify(&ts, &sig, body, now + Duration::from_secs(299)), Ok(()));
        assert_eq!(public.verify("", &sig, body, now), Err(SignatureError::Unsigned));
        assert_eq!(public.verify(&ts, "", body, now), Err(SignatureError::Unsigned));
        assert_eq!(public.verify(&ts, "!!", body, now), Err(SignatureError::Bad));
        let (_, stranger) = keys();
        assert_eq!(stranger.verify(&ts, &sig, body, now), Err(SignatureError::Bad), "another account's key");
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(PublicKey::from_base64("nope!").is_err());
        assert!(PublicKey::from_base64(&B64.encode([0u8; 31])).is_err());
        assert!(PublicKey::from_base64(&B64.encode([7u8; 32])).is_ok());
        assert_eq!(format!("{:?}", PublicKey::from_base64(&B64.encode([7u8; 32])).unwrap()), "PublicKey(..)");
    }
}
