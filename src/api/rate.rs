//! Per-tenant request rate for the control API: a token bucket per tenant
//! (`limits.api_requests_per_second`, bursts of `limits.api_burst`), so one
//! tenant's script cannot starve the server or other tenants. Time is passed
//! in, so the bucket is tested without sleeping.

use std::time::Instant;

use dashmap::DashMap;

/// Token buckets by tenant.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: DashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    /// `per_second` requests sustained, `burst` at once; `per_second == 0` disables it.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second: per_second as f64, burst: burst.max(1) as f64, buckets: DashMap::new() }
    }

    /// Take one request for `tenant` at `now`: `Err(seconds to wait)` when over the rate.
    pub fn check(&self, tenant: &str, now: Instant) -> Result<(), f64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut b = self.buckets.entry(tenant.to_string()).or_insert((self.burst, now));
        let (tokens, at) = *b;
        let refilled = (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second).min(self.burst);
        if refilled >= 1.0 {
            *b = (refilled - 1.0, now);
            Ok(())
        } else {
            *b = (refilled, now);
            Err((1.0 - refilled) / self.per_second)
        }
    }

    /// Forget tenants idle long enough to have a full bucket (bounded memory).
    pub fn sweep(&self, now: Instant) {
        let full_after = self.burst / self.per_second.max(1e-9);
        self.buckets.retain(|_, (_, at)| now.saturating_duration_since(*at).as_secs_f64() < full_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_the_sustained_rate_per_tenant() {
        let r = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.check("A", t0).is_ok());
        }
        let wait = r.check("A", t0).unwrap_err();
        assert!((wait - 0.1).abs() < 1e-9, "one token every 100 ms: {wait}");
        assert!(r.check("B", t0).is_ok(), "another tenant is unaffected");
        assert!(r.check("A", t0 + Duration::from_millis(99)).is_err());
        assert!(r.check("A", t0 + Duration::from_millis(200)).is_ok());
        r.sweep(t0 + Duration::from_secs(10));
        assert!(r.buckets.is_empty());
        assert!(RateLimiter::new(0, 0).check("A", t0).is_ok(), "0 disables the limit");
    }
}
