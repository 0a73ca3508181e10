//! The listener keys of `serve`: `[tls]`, `proxy_protocol` and `[limits]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::limits::Limits;
use crate::tls::TlsFiles;

/// `[tls]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSpec {
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl TlsSpec {
    /// Returns the files, with relative paths taken relative to `dir`, the
    /// directory of the configuration file.
    pub(crate) fn files(&self, dir: &Path) -> TlsFiles {
        TlsFiles {
            cert_file: dir.join(&self.cert_file),
            key_file: dir.join(&self.key_file),
        }
    }
}

/// `[limits]` as written. A key that is left out keeps the default of
/// [`Limits`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSpec {
    header_read_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    http2_max_concurrent_streams: Option<u32>,
}

impl LimitsSpec {
    /// Builds the limits, or returns the message of the first key out of
    /// range.
    pub(crate) fn limits(&self) -> Result<Limits, String> {
        let defaults = Limits::default();
        let limits = Limits {
            header_read_timeout: self
                .header_read_timeout_seconds
                .map_or(defaults.header_read_timeout, Duration::from_secs),
            idle_timeout: self
                .idle_timeout_seconds
                .map_or(defaults.idle_timeout, Duration::from_secs),
            max_header_bytes: self.max_header_bytes.unwrap_or(defaults.max_header_bytes),
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            http2_max_concurrent_streams: self
                .http2_max_concurrent_streams
                .unwrap_or(defaults.http2_max_concurrent_streams),
        };
        limits
            .validate()
            .map(|()| limits)
            .map_err(|error| format!("limits: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_limit_keys_keep_defaults() {
        assert_eq!(LimitsSpec::default().limits(), Ok(Limits::default()));
    }

    #[test]
    fn limit_keys_set_their_fields() {
        let spec = LimitsSpec {
            header_read_timeout_seconds: Some(5),
            idle_timeout_seconds: Some(90),
            max_header_bytes: Some(16384),
            max_connections: Some(50),
            http2_max_concurrent_streams: Some(10),
        };
        assert_eq!(
            spec.limits(),
            Ok(Limits {
                header_read_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(90),
                max_header_bytes: 16384,
                max_connections: 50,
                http2_max_concurrent_streams: 10,
            })
        );
    }

    #[test]
    fn tls_paths_relative_to_config() {
        let spec = TlsSpec {
            cert_file: PathBuf::from("tls.crt"),
            key_file: PathBuf::from("/etc/tls.key"),
        };
        let files = spec.files(Path::new("/srv/redirect"));
        assert_eq!(files.cert_file, Path::new("/srv/redirect/tls.crt"));
        assert_eq!(files.key_file, Path::new("/etc/tls.key"));
    }
}
