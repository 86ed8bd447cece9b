//! Identifier newtypes shared by every layer.

use std::fmt;

/// Our id for one call (independent of any carrier's ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u128);

impl CallId {
    /// A fresh random id.
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // Two independently keyed SipHashes of a process-wide counter: unique per
        // process and unpredictable enough for an identifier (not a secret).
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut hi = std::collections::hash_map::RandomState::new().build_hasher();
        hi.write_u64(n);
        let mut lo = std::collections::hash_map::RandomState::new().build_hasher();
        lo.write_u64(n ^ 0x9e37_79b9_7f4a_7c15);
        CallId(((hi.finish() as u128) << 64) | lo.finish() as u128)
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call_{:032x}", self.0)
    }
}

impl std::str::FromStr for CallId {
    type Err = ();

    /// Parse `call_<32 hex digits>` (the `Display` form).
    fn from_str(s: &str) -> Result<Self, ()> {
        let hex = s.strip_prefix("call_").ok_or(())?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        u128::from_str_radix(hex, 16).map(CallId).map_err(|_| ())
    }
}

/// One bot response within a call. Monotonic per call: a larger id is newer, so
/// "stale" is a comparison, not a set lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ResponseId(pub u32);

impl fmt::Display for ResponseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "resp_{}", self.0)
    }
}

/// A playback marker we send to the carrier and expect echoed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MarkId(pub u64);
