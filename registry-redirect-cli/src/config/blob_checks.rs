//! `[blob_checks]`: the settings of the blob checks and health probes that
//! `serve` runs for upstreams with `verify_blobs` or a `health_check`.
//!
//! Each key sets the field of the tower crate's [`CheckSettings`] with the
//! same name, in the unit its suffix names. A key that is left out keeps
//! the tower crate's default.

use std::time::Duration;

use registry_redirect_tower::CheckSettings;
use serde::Deserialize;

/// `[blob_checks]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlobChecksSpec {
    cache_capacity: Option<u64>,
    missing_ttl_seconds: Option<u64>,
    timeout_ms: Option<u64>,
    failing_mirror_skip_seconds: Option<u64>,
    connect_timeout_ms: Option<u64>,
}

impl BlobChecksSpec {
    /// Builds the settings, or returns each invalid key with its message.
    pub(crate) fn settings(&self) -> Result<CheckSettings, Vec<(&'static str, String)>> {
        let mut settings = CheckSettings::default();
        let mut errors = Vec::new();
        let mut at_least_one = |key: &'static str, value: Option<u64>, meaning: &str| {
            if value == Some(0) {
                errors.push((
                    key,
                    format!("blob_checks.{key}: 0 is not allowed (expected at least 1: {meaning})"),
                ));
            }
            value.filter(|&value| value > 0)
        };

        let cache_capacity = at_least_one(
            "cache_capacity",
            self.cache_capacity,
            "the number of blob locations whose result is cached",
        );
        let timeout = at_least_one(
            "timeout_ms",
            self.timeout_ms,
            "the milliseconds a HEAD check may take",
        );
        let connect_timeout = at_least_one(
            "connect_timeout_ms",
            self.connect_timeout_ms,
            "the milliseconds opening a connection to a mirror may take",
        );
        if !errors.is_empty() {
            return Err(errors);
        }

        if let Some(capacity) = cache_capacity {
            settings.cache_capacity = capacity;
        }
        if let Some(milliseconds) = timeout {
            settings.timeout = Duration::from_millis(milliseconds);
        }
        if let Some(milliseconds) = connect_timeout {
            settings.connect_timeout = Duration::from_millis(milliseconds);
        }
        if let Some(seconds) = self.missing_ttl_seconds {
            settings.missing_ttl = Duration::from_secs(seconds);
        }
        if let Some(seconds) = self.failing_mirror_skip_seconds {
            settings.failing_mirror_skip = Duration::from_secs(seconds);
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_keep_tower_defaults() {
        assert_eq!(
            BlobChecksSpec::default().settings().unwrap(),
            CheckSettings::default()
        );
    }

    #[test]
    fn every_key_sets_its_field() {
        let spec = BlobChecksSpec {
            cache_capacity: Some(500),
            missing_ttl_seconds: Some(0),
            timeout_ms: Some(250),
            failing_mirror_skip_seconds: Some(60),
            connect_timeout_ms: Some(100),
        };
        assert_eq!(
            spec.settings().unwrap(),
            CheckSettings {
                cache_capacity: 500,
                missing_ttl: Duration::ZERO,
                timeout: Duration::from_millis(250),
                failing_mirror_skip: Duration::from_secs(60),
                connect_timeout: Duration::from_millis(100),
            }
        );
    }

    #[test]
    fn zero_capacity_and_timeouts_rejected() {
        let spec = BlobChecksSpec {
            cache_capacity: Some(0),
            timeout_ms: Some(0),
            connect_timeout_ms: Some(0),
            ..BlobChecksSpec::default()
        };
        let keys: Vec<&str> = spec
            .settings()
            .unwrap_err()
            .iter()
            .map(|(key, _)| *key)
            .collect();
        assert_eq!(keys, ["cache_capacity", "timeout_ms", "connect_timeout_ms"]);
    }
}
