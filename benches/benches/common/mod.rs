//! Criterion settings and real-data loading shared by the bench targets.

// Each bench target compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;
use registry_redirect_benches::data::load_cloud_ranges;
use registry_redirect_core::sources::LabeledRanges;

/// The environment variable that shortens every bench to a smoke run.
pub const QUICK_VAR: &str = "BENCH_QUICK";

/// Returns whether `BENCH_QUICK` is set to anything but empty or `0`.
pub fn is_quick() -> bool {
    std::env::var(QUICK_VAR).is_ok_and(|value| !value.is_empty() && value != "0")
}

/// Builds the Criterion settings: its defaults (3 s warm-up, 5 s of
/// measurement, 100 samples, 100,000 bootstrap resamples), or with
/// `BENCH_QUICK` 0.1 s, 0.3 s, 10 and 1,000, then whatever the command
/// line sets.
pub fn criterion() -> Criterion {
    let criterion = Criterion::default();
    let criterion = if is_quick() {
        criterion
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300))
            .sample_size(10)
            .nresamples(1_000)
    } else {
        criterion
    };
    criterion.configure_from_args()
}

/// Loads the published cloud ranges, or prints why the real-data benches
/// are skipped and returns `None`.
///
/// # Panics
///
/// Panics when the file is there but cannot be read or parsed, so that a
/// broken data file does not pass for an absent one.
pub fn cloud_ranges_or_skip(target: &str) -> Option<LabeledRanges> {
    match load_cloud_ranges() {
        Ok(ranges) => Some(ranges),
        Err(error) if error.is_absent() => {
            eprintln!("{target}: real-data benches skipped: {error}");
            None
        }
        Err(error) => panic!("{target}: {error}"),
    }
}
