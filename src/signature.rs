//! Request signatures, both directions, and per-call stream tokens.
//!
//! - [`twilio`]: Twilio's `X-Twilio-Signature` (HMAC-SHA1 over the URL plus the
//!   sorted form parameters, base64), with the port quirk (PROTOCOLS §2).
//! - [`callback`]: our `X-Callbridge-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>` on every callback request, and its verification.
//! - [`StreamTokens`]: a token bound to one CallSid, handed to Twilio in a
//!   `<Parameter>` and checked on the stream's `start`, so a replayed upgrade
//!   signature alone cannot open a stream.
//!
//! Every comparison of a secret-derived value is constant-time.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;
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

/// Twilio request validation.
pub mod twilio {
    use super::*;

    /// The string Twilio signs: the URL, then every form parameter as
    /// `name + value`, sorted by name (then value), no separators.
    pub fn string_to_sign(url: &str, params: &[(String, String)]) -> String {
        let mut sorted: Vec<&(String, String)> = params.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut s = String::from(url);
        for (k, v) in sorted {
            s.push_str(k);
            s.push_str(v);
        }
        s
    }

    /// Base64 HMAC-SHA1 of `url` + `params` under `auth_token`.
    pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
        let mut m = HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
        m.update(string_to_sign(url, params).as_bytes());
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    }

    /// The URL without its port and with the scheme's default port: Twilio signs
    /// one or the other, so both are accepted.
    pub fn url_variants(url: &str) -> Vec<String> {
        let mut out = vec![url.to_string()];
        let Some((scheme, rest)) = url.split_once("://") else { return out };
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        let default_port = if matches!(scheme, "https" | "wss") { "443" } else { "80" };
        for v in [format!("{scheme}://{host}{tail}"), format!("{scheme}://{host}:{default_port}{tail}")] {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    /// Whether `signature` is valid for a request to `url` with `params` under
    /// any of `tokens` (primary, then secondary during rotation).
    pub fn validate(tokens: &[String], url: &str, params: &[(String, String)], signature: &str) -> bool {
        let sig = signature.trim().as_bytes();
        let mut ok = subtle::Choice::from(0);
        for token in tokens.iter().filter(|t| !t.is_empty()) {
            for u in url_variants(url) {
                ok |= compute(token, &u, params).as_bytes().ct_eq(sig);
            }
        }
        ok.into()
    }
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

/// Per-call tokens bound to a carrier call id: `hex(HMAC-SHA256(key, call_sid))`.
/// Stateless, so any node holding the key can check them.
#[derive(Clone)]
pub struct StreamTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for StreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamTokens(..)")
    }
}

impl StreamTokens {
    /// Tokens under `key` (empty: a random per-process key).
    pub fn new(key: &str) -> Self {
        let key = if key.is_empty() { random_hex() } else { key.to_string() };
        Self { key: key.into_bytes() }
    }

    /// The token for `call_sid`.
    pub fn issue(&self, call_sid: &str) -> String {
        hex::encode(hmac_sha256(&self.key, &[b"stream:", call_sid.as_bytes()]))
    }

    /// Whether `token` was issued for `call_sid`.
    pub fn check(&self, call_sid: &str, token: &str) -> bool {
        !call_sid.is_empty() && self.issue(call_sid).as_bytes().ct_eq(token.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn published_params() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn twilio_published_vectors() {
        let params = published_params();
        assert_eq!(
            twilio::string_to_sign(URL, &params),
            "https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212"
        );
        assert_eq!(twilio::compute("12345", URL, &params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(
            twilio::compute("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", &params),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        let dup =
            p(&[("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]);
        assert_eq!(twilio::compute("12345", URL, &dup), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
        assert_eq!(twilio::compute("12345", "wss://example.com/media", &[]), "7PR3qMkpDyEJtMrVOY/LDyNq8J8=");
    }

    #[test]
    fn twilio_validation_accepts_either_port_form_and_rejects_forgeries() {
        let params = published_params();
        let tokens = vec!["12345".to_string()];
        // Twilio signed with :443, we know the URL without it, and vice versa.
        assert!(twilio::validate(&tokens, URL, &params, "kvajT1Ptam85bY51eRf/AJRuM3w="));
        assert!(twilio::validate(
            &tokens,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // Signed at :1234 over http, validated with the port removed or :80.
        assert!(twilio::validate(
            &tokens,
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
            &params,
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        assert!(twilio::validate(
            &tokens,
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &params,
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        // Secondary token during rotation.
        assert!(twilio::validate(&["nope".into(), "12345".into()], URL, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        // Wrong token, changed parameter, empty signature, wrong URL.
        assert!(!twilio::validate(&["54321".into()], URL, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        let mut forged = params.clone();
        forged[4].1 = "+18005550000".into();
        assert!(!twilio::validate(&tokens, URL, &forged, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!twilio::validate(&tokens, URL, &params, ""));
        assert!(!twilio::validate(
            &tokens,
            "https://evil.com/myapp.php?foo=1&bar=2",
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!twilio::validate(&[String::new()], URL, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
    }

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

    #[test]
    fn stream_tokens_are_bound_to_their_call() {
        let t = StreamTokens::new("k");
        let tok = t.issue("CA1");
        assert!(t.check("CA1", &tok));
        assert!(!t.check("CA2", &tok));
        assert!(!t.check("", &t.issue("")));
        assert!(!StreamTokens::new("other").check("CA1", &tok));
        assert_ne!(StreamTokens::new("").issue("CA1"), StreamTokens::new("").issue("CA1"));
    }
}
