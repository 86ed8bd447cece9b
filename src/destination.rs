//! Where a tenant may send a call (transfers, forwarding), at the operator's
//! cost: a list of allowed number prefixes (`+1`, `+4420`) and SIP domains
//! (`pbx.example.com`, or `*.example.com` for its subdomains). A tenant that
//! lists nothing may reach numbers in its own country only (the country
//! calling code of its registered number) and no SIP domain at all, so a
//! stolen tenant token cannot dial premium-rate numbers abroad.

/// Where to transfer a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// An E.164 phone number.
    Number(String),
    /// A SIP URI (`sip:` or `sips:`).
    Sip(String),
}

impl TransferTarget {
    /// Parse a phone number or SIP URI.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if crate::tenant::is_e164(s) {
            return Ok(Self::Number(s.into()));
        }
        let lower = s.to_ascii_lowercase();
        if (lower.starts_with("sip:") || lower.starts_with("sips:"))
            && s.len() <= 256
            && s.contains('@')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
        {
            return Ok(Self::Sip(s.into()));
        }
        Err(format!("{s:?} is neither an E.164 number nor a sip:/sips: URI"))
    }

    /// The number or URI as given.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Number(n) | Self::Sip(n) => n,
        }
    }
}

/// Two-digit country calling codes (ITU-T E.164 assignments); codes of one
/// digit are 1 (NANP) and 7, all others have three.
const TWO_DIGIT: &[&str] = &[
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47", "48", "49", "51",
    "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65", "66", "81", "82", "84", "86", "90",
    "91", "92", "93", "94", "95", "98",
];

/// The country calling code of an E.164 number, with its `+` (`+1`, `+44`, `+353`).
pub fn country_code(e164: &str) -> Option<&str> {
    let digits = e164.strip_prefix('+')?;
    let len = match digits.as_bytes().first()? {
        b'1' | b'7' => 1,
        _ if digits.len() >= 2 && TWO_DIGIT.contains(&&digits[..2]) => 2,
        _ => 3,
    };
    (digits.len() > len).then(|| &e164[..len + 1])
}

/// A tenant's allowed destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationPolicy {
    prefixes: Vec<String>,
    sip_domains: Vec<String>,
}

/// One entry of an allow-list that is neither a number prefix nor a domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a number prefix (+ and digits) nor a SIP domain")]
pub struct BadEntry(pub String);

impl DestinationPolicy {
    /// The policy from a tenant's list, or its own country when the list is empty.
    pub fn new(own_number: &str, allow: &[String]) -> Result<Self, BadEntry> {
        let mut p = Self { prefixes: Vec::new(), sip_domains: Vec::new() };
        for a in allow {
            let a = a.trim();
            if let Some(d) = a.strip_prefix('+') {
                if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(BadEntry(a.into()));
                }
                p.prefixes.push(a.into());
            } else {
                let d = a.to_ascii_lowercase();
                let host = d.strip_prefix("*.").unwrap_or(&d);
                let ok = !host.is_empty()
                    && host.contains('.')
                    && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if !ok {
                    return Err(BadEntry(a.into()));
                }
                p.sip_domains.push(d);
            }
        }
        if allow.is_empty()
            && let Some(cc) = country_code(own_number)
        {
            p.prefixes.push(cc.into());
        }
        Ok(p)
    }

    /// Whether `target` may be dialled.
    pub fn allows(&self, target: &TransferTarget) -> bool {
        match target {
            TransferTarget::Number(n) => self.prefixes.iter().any(|p| n.starts_with(p.as_str())),
            TransferTarget::Sip(uri) => {
                let Some(host) = sip_host(uri) else { return false };
                self.sip_domains.iter().any(|d| match d.strip_prefix("*.") {
                    Some(base) => host.ends_with(&format!(".{base}")),
                    None => host == *d,
                })
            }
        }
    }
}

/// The host part of a `sip:`/`sips:` URI, lower-cased.
fn sip_host(uri: &str) -> Option<String> {
    let rest = uri.split_once(':')?.1;
    let after_user = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = after_user.split([';', ':', '?', '>']).next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TransferTarget {
        TransferTarget::parse(s).unwrap()
    }

    #[test]
    fn transfer_targets_parse() {
        assert_eq!(TransferTarget::parse("+15557654321").unwrap(), TransferTarget::Number("+15557654321".into()));
        assert!(matches!(
            TransferTarget::parse("sip:oncall@pbx.example.com;transport=tls"),
            Ok(TransferTarget::Sip(_))
        ));
        assert!(TransferTarget::parse("5557654321").is_err());
        assert!(TransferTarget::parse("sip:a@b\"><Hangup/>").is_err());
        assert!(TransferTarget::parse("http://x@y").is_err());
    }

    #[test]
    fn country_codes() {
        assert_eq!(country_code("+15551230000"), Some("+1"));
        assert_eq!(country_code("+74951234567"), Some("+7"));
        assert_eq!(country_code("+442071234567"), Some("+44"));
        assert_eq!(country_code("+353861234567"), Some("+353"));
        assert_eq!(country_code("+2348012345678"), Some("+234"));
        assert_eq!(country_code("15551230000"), None);
    }

    #[test]
    fn by_default_only_the_tenants_own_country_and_no_sip() {
        let p = DestinationPolicy::new("+15550001111", &[]).unwrap();
        assert!(p.allows(&t("+15557654321")));
        assert!(!p.allows(&t("+882345678901")), "international network numbers are refused");
        assert!(!p.allows(&t("+442071234567")));
        assert!(!p.allows(&t("sip:oncall@pbx.example.com")));
    }

    #[test]
    fn listed_prefixes_and_domains() {
        let p = DestinationPolicy::new("+15550001111", &["+4420".into(), "*.example.com".into(), "pbx.acme.io".into()])
            .unwrap();
        assert!(p.allows(&t("+442071234567")));
        assert!(!p.allows(&t("+441611234567")));
        assert!(!p.allows(&t("+15557654321")), "a list replaces the default");
        assert!(p.allows(&t("sip:oncall@pbx.example.com;transport=tls")));
        assert!(!p.allows(&t("sip:oncall@example.com")), "*. means subdomains");
        assert!(p.allows(&t("sips:desk@PBX.ACME.IO")));
        assert!(!p.allows(&t("sip:desk@pbx.acme.io.evil.com")));
        assert!(DestinationPolicy::new("+1555", &["+1-800".into()]).is_err());
        assert!(DestinationPolicy::new("+1555", &["localhost".into()]).is_err());
    }
}
