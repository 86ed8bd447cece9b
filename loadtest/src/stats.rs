//! Percentiles and summaries.

use serde::Serialize;

/// Nearest-rank percentile of sorted data (`q` in 0..=1); `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Distribution summary of a sample (milliseconds or any unit).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// samples
    pub n: usize,
    /// median
    pub p50: Option<f64>,
    /// 95th percentile
    pub p95: Option<f64>,
    /// 99th percentile
    pub p99: Option<f64>,
    /// maximum
    pub max: Option<f64>,
    /// mean
    pub mean: Option<f64>,
}

impl Summary {
    /// Summarize `data` (any order).
    pub fn of(data: &[f64]) -> Self {
        let mut s: Vec<f64> = data.iter().copied().filter(|x| x.is_finite()).collect();
        s.sort_by(|a, b| a.total_cmp(b));
        let mean = if s.is_empty() { None } else { Some(s.iter().sum::<f64>() / s.len() as f64) };
        Self {
            n: s.len(),
            p50: percentile(&s, 0.50),
            p95: percentile(&s, 0.95),
            p99: percentile(&s, 0.99),
            max: s.last().copied(),
            mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&d, 0.5), Some(50.0));
        assert_eq!(percentile(&d, 0.95), Some(95.0));
        assert_eq!(percentile(&d, 0.99), Some(99.0));
        assert_eq!(percentile(&d, 1.0), Some(100.0));
        assert_eq!(percentile(&d, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        let s = Summary::of(&[3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.n, s.p50, s.max, s.mean), (3, Some(2.0), Some(3.0), Some(2.0)));
    }
}
