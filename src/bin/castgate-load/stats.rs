//! Percentiles of samples (milliseconds) as the report shows them.

use serde::Serialize;

/// p50/p95/p99 (and count, max) of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Summarizes `samples` (sorted in place); all zero when empty.
    pub fn of(samples: &mut [f64]) -> Percentiles {
        samples.sort_by(f64::total_cmp);
        let round = |v: f64| (v * 100.0).round() / 100.0;
        Percentiles {
            count: samples.len(),
            p50: round(nearest_rank(samples, 0.50)),
            p95: round(nearest_rank(samples, 0.95)),
            p99: round(nearest_rank(samples, 0.99)),
            max: round(samples.last().copied().unwrap_or(0.0)),
        }
    }

    /// `p50/p95/p99 (n)` for the text report.
    pub fn text(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.1} / p95 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
            self.p50, self.p95, self.p99, self.max, self.count
        )
    }
}

/// The nearest-rank percentile of sorted samples (0 when empty).
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(
            (p.count, p.p50, p.p95, p.p99, p.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(&mut []).p99, 0.0);
        assert_eq!(Percentiles::of(&mut [7.0]).p50, 7.0);
    }
}
