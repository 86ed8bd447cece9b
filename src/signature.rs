//! Request signatures: our callback signature, and shared helpers (random tokens, hashes).
//!
//! - [`callback`]: our `X-Callbridge-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>` on every callback request, and its verification.
//!
//! Every comparison of a secret-derived value is constant-time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// 32 random bytes as 64 hex characters (tokens, secrets).
pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source works");
    hex::encode(b)
}

/// Signing our callback requests, and the check a backend performs.
pub mod callback {
    use super::*;

    /// Header carrying the signature.
    pub const HEADER: &str = "X-Callbridge-Signature";

    /// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
        let ts = t.to_string();
        let mac = hmac_sha256(secret.as_bytes(), &[ts.as_bytes(), b".", body]);
        format!("t={ts},v1={}", hex::encode(mac))
    }

    /// Why a signature was refused.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum VerifyError {
        /// The header is not `t=..,v1=..`.
        #[error("malformed signature header")]
        Malformed,
        /// `t` is too far from now (replay protection).
        #[error("timestamp outside the tolerance")]
        Stale,
        /// No `v1` matched.
        #[error("signature mismatch")]
        Mismatch,
    }

    /// Verify a header against `body`, accepting timestamps within
    /// `tolerance_s` of `now`. Any of several `v1` values may match (rotation).
    pub fn verify(secret: &str, header: &str, body: &[u8], now: u64, tolerance_s: u64) -> Result<(), VerifyError> {
        let mut t = None;
        let mut sigs = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.parse::<u64>().ok(),
                Some(("v1", v)) => sigs.push(v),
                _ => {}
            }
        }
        let (Some(t), false) = (t, sigs.is_empty()) else { return Err(VerifyError::Malformed) };
        if t.abs_diff(now) > tolerance_s {
            return Err(VerifyError::Stale);
        }
        let expected = hex::encode(hmac_sha256(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]));
        let ok = sigs.iter().fold(subtle::Choice::from(0), |acc, s| acc | expected.as_bytes().ct_eq(s.as_bytes()));
        if bool::from(ok) { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_signature_vector_and_checks() {
        // The test vector published in docs/callbacks.md.
        let body = br#"{"type":"call.started","call_id":"call_1","seq":1}"#;
        let h = callback::sign("whsec_test", 1_700_000_000, body);
        assert_eq!(h, "t=1700000000,v1=34337189cda1d344c6595cf0e67b0df5c0e70362313ed63674f67d580336aed4");
        assert_eq!(callback::verify("whsec_test", &h, body, 1_700_000_100, 300), Ok(()));
        assert_eq!(callback::verify("whsec_test", &h, body, 1_700_000_301, 300), Err(callback::VerifyError::Stale));
        assert_eq!(callback::verify("other", &h, body, 1_700_000_000, 300), Err(callback::VerifyError::Mismatch));
        assert_eq!(callback::verify("whsec_test", &h, b"{}", 1_700_000_000, 300), Err(callback::VerifyError::Mismatch));
        assert_eq!(
            callback::verify("whsec_test", "v1=abc", body, 1_700_000_000, 300),
            Err(callback::VerifyError::Malformed)
        );
    }
}
