//! The published cloud ranges, read from the directory that
//! `REGISTRY_REDIRECT_DATA_DIR` names.
//!
//! The benches run on real data only when the file is there: it is large
//! and changes as the clouds publish new ranges, so it is not part of the
//! repository. `cloud-ranges.txt` is the plain range format of
//! [`registry_redirect_core::sources`], one `PREFIX CLOUD REGION` a line,
//! with the AWS, GCP and Azure ranges together.
//!
//! ```
//! use registry_redirect_benches::data::{load_cloud_ranges, DataError};
//!
//! match load_cloud_ranges() {
//!     Ok(ranges) => assert!(!ranges.is_empty()),
//!     Err(error) if error.is_absent() => println!("skipped: {error}"),
//!     Err(error) => panic!("{error}"),
//! }
//! ```

use std::path::PathBuf;

use registry_redirect_core::sources::{parse, LabeledRanges, SourceError, SourceFormat};

/// The environment variable naming the directory with the range files.
pub const DATA_DIR_VAR: &str = "REGISTRY_REDIRECT_DATA_DIR";

/// The file name of the combined cloud ranges in that directory.
pub const CLOUD_RANGES_FILE: &str = "cloud-ranges.txt";

/// An error loading the cloud ranges.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The environment variable is not set.
    #[error("{DATA_DIR_VAR} is not set; set it to a directory containing {CLOUD_RANGES_FILE} to run on the published cloud ranges")]
    Unset,
    /// The directory has no range file.
    #[error("{} does not exist; put {CLOUD_RANGES_FILE} in the directory that {DATA_DIR_VAR} names to run on the published cloud ranges", path.display())]
    Missing {
        /// The path looked at.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error from the file system.
        source: std::io::Error,
    },
    /// The file is not a valid plain range list.
    #[error("invalid range file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The error from the parser.
        source: SourceError,
    },
}

impl DataError {
    /// Returns whether the data is simply not there (the variable is unset
    /// or the file missing), as opposed to there but unusable.
    pub fn is_absent(&self) -> bool {
        matches!(self, DataError::Unset | DataError::Missing { .. })
    }
}

/// Reads and parses `cloud-ranges.txt` from the directory named by
/// [`DATA_DIR_VAR`].
pub fn load_cloud_ranges() -> Result<LabeledRanges, DataError> {
    let bytes = read_cloud_ranges()?.1;
    parse_cloud_ranges(&bytes)
}

/// Reads the bytes of `cloud-ranges.txt`, with the path they came from.
pub fn read_cloud_ranges() -> Result<(PathBuf, Vec<u8>), DataError> {
    let dir = std::env::var_os(DATA_DIR_VAR).ok_or(DataError::Unset)?;
    let path = PathBuf::from(dir).join(CLOUD_RANGES_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok((path, bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(DataError::Missing { path })
        }
        Err(source) => Err(DataError::Read { path, source }),
    }
}

/// Parses the bytes of `cloud-ranges.txt`. Lines name their cloud, so no
/// default cloud is given.
pub fn parse_cloud_ranges(bytes: &[u8]) -> Result<LabeledRanges, DataError> {
    parse(SourceFormat::Plain, bytes, None).map_err(|source| DataError::Parse {
        path: PathBuf::from(CLOUD_RANGES_FILE),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_keep_their_cloud() {
        let text = b"# comment\n1.178.172.0/23 aws GLOBAL\n34.37.0.0/16 gcp us-west8\n2600:1f00::/40 aws us-east-1\n";
        let ranges = parse_cloud_ranges(text).unwrap();
        assert_eq!(ranges.len(), 3);
        let labels: Vec<_> = ranges
            .iter()
            .map(|(_, label)| (label.cloud(), label.region()))
            .collect();
        assert_eq!(
            labels,
            [
                (Some("aws"), None),
                (Some("gcp"), Some("us-west8")),
                (Some("aws"), Some("us-east-1"))
            ]
        );
    }

    #[test]
    fn invalid_line_is_parse_error() {
        let error = parse_cloud_ranges(b"not-a-prefix aws us-east-1\n").unwrap_err();
        assert!(matches!(error, DataError::Parse { .. }));
        assert!(!error.is_absent());
        assert!(error
            .to_string()
            .starts_with("invalid range file cloud-ranges.txt: "));
    }

    #[test]
    fn absent_data_is_reported_as_absent() {
        assert!(DataError::Unset.is_absent());
        let missing = DataError::Missing {
            path: PathBuf::from("/nonexistent/cloud-ranges.txt"),
        };
        assert!(missing.is_absent());
        assert!(missing.to_string().contains("REGISTRY_REDIRECT_DATA_DIR"));
    }
}
