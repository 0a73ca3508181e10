//! Errors found while loading a configuration file, each with the file,
//! line and column it points at.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::position::Position;

/// One error in a configuration file. It displays as
/// `FILE:LINE:COLUMN: MESSAGE`, the form editors and terminals link to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}", line = position.line, column = position.column)]
pub struct ConfigError {
    /// The file name as the user gave it.
    pub file: String,
    /// The start of the offending text.
    pub position: Position,
    /// The field path, when known, then what is wrong and what was expected.
    pub message: String,
}

/// Every error found in a configuration file, ordered by position. Displays
/// one error a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// An error that kept a configuration file from loading.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("failed to read config file {}: {source}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{0}")]
    Invalid(ConfigErrors),
}
