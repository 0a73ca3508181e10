//! [`Histogram`]: decision latency in fixed buckets, recorded with atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the buckets: the `le` label as written in the
/// output, and the bound in nanoseconds. A redirect takes a few hundred
/// nanoseconds, while a decision that waits for blob checks takes
/// milliseconds, so the buckets run from 100 ns to 10 ms.
pub(crate) const BUCKETS: [(&str, u64); 16] = [
    ("0.0000001", 100),
    ("0.00000025", 250),
    ("0.0000005", 500),
    ("0.000001", 1_000),
    ("0.0000025", 2_500),
    ("0.000005", 5_000),
    ("0.00001", 10_000),
    ("0.000025", 25_000),
    ("0.00005", 50_000),
    ("0.0001", 100_000),
    ("0.00025", 250_000),
    ("0.0005", 500_000),
    ("0.001", 1_000_000),
    ("0.0025", 2_500_000),
    ("0.005", 5_000_000),
    ("0.01", 10_000_000),
];

/// Counts of observations per bucket, not cumulative, with the last slot
/// for observations above the largest bound; cumulated when rendered.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation: two relaxed atomic additions, no lock and
    /// no allocation.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is not below the observation, or the
        // overflow slot after the last bucket.
        let index = BUCKETS.partition_point(|(_, bound)| *bound < nanos);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Returns the number of observations.
    pub(crate) fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples of `name`, each
    /// with `labels` (already formatted, such as `decision="redirect"`)
    /// before `le`.
    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (position, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = BUCKETS.get(position).map_or("+Inf", |(label, _)| label);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let histogram = Histogram::default();
        let cases = [
            (Duration::from_nanos(50), 0),
            (Duration::from_nanos(100), 0),
            (Duration::from_nanos(101), 1),
            (Duration::from_micros(3), 5),
            (Duration::from_millis(10), 15),
            (Duration::from_millis(11), 16),
            (Duration::from_secs(5), 16),
        ];
        for (elapsed, bucket) in cases {
            let before = histogram.buckets[bucket].load(Ordering::Relaxed);
            histogram.observe(elapsed);
            let after = histogram.buckets[bucket].load(Ordering::Relaxed);
            assert_eq!(after, before + 1, "{elapsed:?} in bucket {bucket}");
        }
        assert_eq!(histogram.count(), cases.len() as u64);
    }

    #[test]
    fn bucket_labels_match_bounds() {
        for (label, nanos) in BUCKETS {
            let seconds: f64 = label.parse().unwrap();
            assert_eq!((seconds * 1e9).round() as u64, nanos, "{label}");
        }
    }

    #[test]
    fn render_cumulates_buckets() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_nanos(80));
        histogram.observe(Duration::from_millis(20));
        let mut out = String::new();
        histogram.render(&mut out, "x", "decision=\"redirect\"");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "x_bucket{decision=\"redirect\",le=\"0.0000001\"} 1"
        );
        assert_eq!(lines[15], "x_bucket{decision=\"redirect\",le=\"0.01\"} 1");
        assert_eq!(lines[16], "x_bucket{decision=\"redirect\",le=\"+Inf\"} 2");
        assert_eq!(lines[17], "x_sum{decision=\"redirect\"} 0.02000008");
        assert_eq!(lines[18], "x_count{decision=\"redirect\"} 2");
    }
}
