//! Latency histograms, percentiles and ratios: the arithmetic behind every
//! figure the harness prints, kept pure so it is tested without a server.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Slowest latency a histogram keeps exactly (60 s, in microseconds);
/// anything slower is recorded as this value.
const MAX_MICROS: u64 = 60_000_000;

/// Latencies of one kind of operation, in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // 3 significant figures from 1 us to 60 s: ~0.1% error, ~200 KB.
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds");
        Self { hist }
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(MAX_MICROS).clamp(1, MAX_MICROS);
        self.hist.saturating_record(us);
    }

    /// Adds another set of latencies (e.g. one virtual user's) to this one.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The summary that reports print, in milliseconds.
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    fn of(l: &Latencies) -> Self {
        let h = &l.hist;
        if h.is_empty() {
            return Self {
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Operations per second; `None` when nothing ran or no time passed.
pub fn rate(count: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (count > 0 && secs > 0.0).then(|| count as f64 / secs)
}

/// `value / baseline`; `None` when either is missing or the baseline is
/// zero (a ratio to nothing means nothing).
pub fn ratio(value: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    match (value, baseline) {
        (Some(v), Some(b)) if b > 0.0 && v.is_finite() && b.is_finite() => Some(v / b),
        _ => None,
    }
}

/// How much slower `value` is than `baseline`, in percent (`+30.0` means
/// 30% extra). Negative when `value` is faster.
pub fn extra_percent(value: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    ratio(value, baseline).map(|r| (r - 1.0) * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.002 + 1e-9
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_where_you_expect_them() {
        let mut l = Latencies::new();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!(close(s.p50_ms, 500.0), "{s:?}");
        assert!(close(s.p95_ms, 950.0), "{s:?}");
        assert!(close(s.p99_ms, 990.0), "{s:?}");
        assert!(close(s.max_ms, 1000.0), "{s:?}");
        assert!(close(s.mean_ms, 500.5), "{s:?}");
    }

    #[test]
    fn merged_latencies_equal_latencies_recorded_in_one_place() {
        let (mut a, mut b, mut all) = (Latencies::new(), Latencies::new(), Latencies::new());
        for us in [120u64, 480, 7_000, 33, 90_000] {
            a.record(Duration::from_micros(us));
            all.record(Duration::from_micros(us));
        }
        for us in [5u64, 64_000, 1_200] {
            b.record(Duration::from_micros(us));
            all.record(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a.summary(), all.summary());
    }

    #[test]
    fn sub_microsecond_and_absurdly_slow_samples_are_clamped_not_lost() {
        let mut l = Latencies::new();
        l.record(Duration::from_nanos(10));
        l.record(Duration::from_secs(3600));
        let s = l.summary();
        assert_eq!(s.count, 2);
        assert!(s.max_ms >= 59_900.0 && s.max_ms <= 60_100.0, "{s:?}");
    }

    #[test]
    fn an_empty_set_summarises_to_zeros() {
        let s = Latencies::new().summary();
        assert_eq!(s.count, 0);
        assert_eq!(s.p99_ms, 0.0);
    }

    #[test]
    fn rates_need_work_and_time() {
        assert_eq!(rate(500, Duration::from_millis(250)), Some(2000.0));
        assert_eq!(rate(0, Duration::from_secs(1)), None);
        assert_eq!(rate(10, Duration::ZERO), None);
    }

    #[test]
    fn ratios_refuse_missing_or_zero_baselines() {
        assert_eq!(ratio(Some(50.0), Some(200.0)), Some(0.25));
        assert_eq!(ratio(Some(50.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
    }

    #[test]
    fn extra_percent_is_the_slowdown_over_the_baseline() {
        let e = extra_percent(Some(13.0), Some(10.0)).unwrap();
        assert!(close(e, 30.0), "{e}");
        let faster = extra_percent(Some(9.0), Some(10.0)).unwrap();
        assert!(close(faster, -10.0), "{faster}");
    }
}
