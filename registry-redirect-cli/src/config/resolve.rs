//! `[resolve]`: the settings of resolve mode, which `serve` uses for every
//! upstream with `auth = "resolve"`.
//!
//! Each key sets the field of the tower crate's [`ResolverSettings`] named
//! like it, in the unit its suffix names. A key that is left out keeps the
//! tower crate's default.

use std::time::Duration;

use registry_redirect_tower::resolve::ResolverSettings;
use serde::Deserialize;

/// `[resolve]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveSpec {
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    document_cache_mib: Option<u64>,
}

impl ResolveSpec {
    /// Builds the settings, or returns each invalid key with its message.
    pub(crate) fn settings(&self) -> Result<ResolverSettings, Vec<(&'static str, String)>> {
        let mut settings = ResolverSettings::default();
        let mut errors = Vec::new();
        for (key, value, meaning) in [
            (
                "timeout_ms",
                self.timeout_ms,
                "the milliseconds a resolve-mode request may take",
            ),
            (
                "connect_timeout_ms",
                self.connect_timeout_ms,
                "the milliseconds opening a connection to an upstream may take",
            ),
        ] {
            if value == Some(0) {
                errors.push((
                    key,
                    format!("resolve.{key}: 0 is not allowed (expected at least 1: {meaning})"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        if let Some(milliseconds) = self.timeout_ms {
            settings.timeout = Duration::from_millis(milliseconds);
        }
        if let Some(milliseconds) = self.connect_timeout_ms {
            settings.connect_timeout = Duration::from_millis(milliseconds);
        }
        if let Some(mebibytes) = self.document_cache_mib {
            settings.document_cache_bytes = mebibytes.saturating_mul(1024 * 1024);
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
            ResolveSpec::default().settings().unwrap(),
            ResolverSettings::default()
        );
    }

    #[test]
    fn every_key_sets_its_field() {
        let spec = ResolveSpec {
            timeout_ms: Some(2500),
            connect_timeout_ms: Some(300),
            document_cache_mib: Some(0),
        };
        let settings = spec.settings().unwrap();
        assert_eq!(settings.timeout, Duration::from_millis(2500));
        assert_eq!(settings.connect_timeout, Duration::from_millis(300));
        assert_eq!(settings.document_cache_bytes, 0);
    }

    #[test]
    fn zero_timeouts_rejected() {
        let spec = ResolveSpec {
            timeout_ms: Some(0),
            connect_timeout_ms: Some(0),
            ..ResolveSpec::default()
        };
        let keys: Vec<&str> = spec
            .settings()
            .unwrap_err()
            .iter()
            .map(|(key, _)| *key)
            .collect();
        assert_eq!(keys, ["timeout_ms", "connect_timeout_ms"]);
    }
}
