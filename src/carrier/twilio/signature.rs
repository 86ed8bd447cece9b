//! Twilio request validation: `X-Twilio-Signature` is base64 HMAC-SHA1, keyed
//! by the account's auth token, over the URL Twilio requested followed by the
//! form parameters sorted by name (PROTOCOLS §2). Twilio is inconsistent about
//! the default port, so both forms of the URL are accepted. Pure functions; the
//! webhook handlers call them.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

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
            string_to_sign(URL, &params),
            "https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212"
        );
        assert_eq!(compute("12345", URL, &params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(
            compute("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", &params),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        let dup =
            p(&[("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]);
        assert_eq!(compute("12345", URL, &dup), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
        assert_eq!(compute("12345", "wss://example.com/media", &[]), "7PR3qMkpDyEJtMrVOY/LDyNq8J8=");
    }

    #[test]
    fn twilio_validation_accepts_either_port_form_and_rejects_forgeries() {
        let params = published_params();
        let tokens = vec!["12345".to_string()];
        // Twilio signed with :443, we know the URL without it, and vice versa.
        assert!(validate(&tokens, URL, &params, "kvajT1Ptam85bY51eRf/AJRuM3w="));
        assert!(validate(
            &tokens,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // Signed at :1234 over http, validated with the port removed or :80.
        assert!(validate(
            &tokens,
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
            &params,
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        assert!(validate(
            &tokens,
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &params,
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        // Secondary token during rotation.
        assert!(validate(&["nope".into(), "12345".into()], URL, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        // Wrong token, changed parameter, empty signature, wrong URL.
        assert!(!validate(&["54321".into()], URL, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        let mut forged = params.clone();
        forged[4].1 = "+18005550000".into();
        assert!(!validate(&tokens, URL, &forged, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!validate(&tokens, URL, &params, ""));
        assert!(!validate(&tokens, "https://evil.com/myapp.php?foo=1&bar=2", &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!validate(&[String::new()], URL, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
    }
}
