//! `[[client_ranges]]`: the range files that label client addresses with a
//! cloud and a region, read from disk and merged in the order written.
//!
//! Each entry names a file and its format. The core's
//! [`sources`](registry_redirect_core::sources) module parses the bytes;
//! this module reads the files, applies the entry's `cloud` and `services`,
//! and merges the results so that a later file wins for a prefix that an
//! earlier one also lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use registry_redirect_core::client::canonical_network;
use registry_redirect_core::sources::{
    self, LabeledRanges, RepeatedPrefix, SourceError, SourceFormat,
};
use serde::{Deserialize, Deserializer};

/// One `[[client_ranges]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeFileSpec {
    #[serde(deserialize_with = "deserialize_format")]
    pub(crate) format: SourceFormat,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) cloud: Option<String>,
    #[serde(default)]
    pub(crate) services: Vec<String>,
}

fn deserialize_format<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SourceFormat, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(serde::de::Error::custom)
}

/// A range file that loaded, with what it contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeFile {
    /// The format the file was parsed as.
    pub format: SourceFormat,
    /// The path as written in the configuration.
    pub path: PathBuf,
    /// The path that was read: `path` joined to the configuration file's
    /// directory when `path` is relative.
    pub resolved: PathBuf,
    /// The cloud that labels the file's ranges, when the entry sets one.
    pub cloud: Option<String>,
    /// The AWS services kept; empty keeps every entry.
    pub services: Vec<String>,
    /// The distinct prefixes the file lists (after the service filter).
    pub prefixes: usize,
    /// The distinct cloud and region pairs of those prefixes.
    pub labels: usize,
}

/// The client ranges of a configuration: every file, and the merged result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRanges {
    /// The files, in the order of the `[[client_ranges]]` entries.
    pub files: Vec<RangeFile>,
    /// The distinct prefixes after merging.
    pub prefixes: usize,
    /// The distinct cloud and region pairs in use after merging.
    pub labels: usize,
}

impl ClientRanges {
    /// Returns whether any range file is configured.
    pub fn is_configured(&self) -> bool {
        !self.files.is_empty()
    }
}

/// An error in one `[[client_ranges]]` entry: its index, the key to point
/// at, and the message, which starts with the field path.
pub(crate) struct EntryError {
    pub(crate) index: usize,
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

/// The result of loading every entry: the merged ranges of the entries that
/// loaded, a description of each, and the errors of the others.
pub(crate) struct Loaded {
    pub(crate) ranges: LabeledRanges,
    pub(crate) summary: ClientRanges,
    pub(crate) errors: Vec<EntryError>,
    /// Warnings about files that loaded, such as prefixes with host bits.
    pub(crate) warnings: Vec<EntryError>,
}

/// The number of lines that a warning about a range file lists.
const WARNING_LINES_SHOWN: usize = 3;

/// Reads, parses and merges the range files of `specs`. Relative paths
/// resolve against `dir`. Every entry is tried, so that all errors are
/// reported together.
pub(crate) fn load(specs: &[RangeFileSpec], dir: &Path) -> Loaded {
    let mut ranges = LabeledRanges::new();
    let mut files = Vec::with_capacity(specs.len());
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    for (index, spec) in specs.iter().enumerate() {
        let error = |key, reason: String| EntryError {
            index,
            key,
            message: format!("client_ranges[{index}].{key}: {reason}"),
        };
        if let Some((key, reason)) = check_entry(spec) {
            errors.push(error(key, reason));
            continue;
        }

        let written = PathBuf::from(&spec.path);
        let resolved = dir.join(&written);
        let bytes = match std::fs::read(&resolved) {
            Ok(bytes) => bytes,
            Err(source) => {
                let described = if resolved == written {
                    spec.path.clone()
                } else {
                    format!("{} (resolved to {})", spec.path, resolved.display())
                };
                errors.push(error(
                    "path",
                    format!("failed to read range file {described}: {source}"),
                ));
                continue;
            }
        };

        let parsed = match parse_entry(spec, &bytes) {
            Ok(parsed) => parsed,
            // One error per invalid line, so that each gets its own row.
            Err(SourceError::InvalidLines {
                errors: lines,
                more,
            }) => {
                let last = lines.len();
                for (position, line) in lines.into_iter().enumerate() {
                    let mut message = format!("{}: {line}", spec.path);
                    if position + 1 == last && more > 0 {
                        message.push_str(&format!(" (and {more} more invalid lines)"));
                    }
                    errors.push(error("path", message));
                }
                continue;
            }
            Err(source) => {
                // A service filter that matches nothing is a mistake in
                // `services`, not in the file.
                let key = match source {
                    SourceError::NoMatchingService { .. } => "services",
                    _ => "path",
                };
                errors.push(error(key, format!("{}: {source}", spec.path)));
                continue;
            }
        };
        let file_warnings = [
            host_bits_warning(&spec.path, parsed.host_bit_lines()),
            repeated_prefixes_warning(&spec.path, parsed.repeated_lines()),
        ];
        for warning in file_warnings.into_iter().flatten() {
            warnings.push(EntryError {
                index,
                key: "path",
                message: format!("warning: client_ranges[{index}].path: {warning}"),
            });
        }
        if let Err(source) = ranges.merge(&parsed) {
            errors.push(error("path", format!("{}: {source}", spec.path)));
            continue;
        }
        files.push(RangeFile {
            format: spec.format,
            path: written,
            resolved,
            cloud: spec.cloud.clone(),
            services: spec.services.clone(),
            prefixes: parsed.len(),
            labels: labels_in_use(&parsed),
        });
    }

    let summary = ClientRanges {
        files,
        prefixes: ranges.len(),
        labels: labels_in_use(&ranges),
    };
    Loaded {
        ranges,
        summary,
        errors,
        warnings,
    }
}

/// Describes the lines of the range file `path` whose prefixes have host
/// bits set, or returns `None` when there are none.
fn host_bits_warning(path: &str, lines: &[(usize, IpNet)]) -> Option<String> {
    let listed = list_lines(lines, |(line, written)| {
        let network = canonical_network(written.trunc());
        format!("line {line}: {written} is read as {network}")
    })?;
    Some(format!(
        "{path}: prefixes with host bits set ({listed}); write the network, or the \
         address alone for one address"
    ))
}

/// Describes the lines of the range file `path` that list an earlier
/// line's prefix with another label, or returns `None` when there are none.
fn repeated_prefixes_warning(path: &str, lines: &[RepeatedPrefix]) -> Option<String> {
    let listed = list_lines(lines, |repeated| {
        format!(
            "line {}: {}, labelled differently on line {}",
            repeated.line, repeated.prefix, repeated.earlier_line
        )
    })?;
    Some(format!(
        "{path}: prefixes listed again with another label ({listed}); each prefix keeps \
         one label, a label with a region over one without, else the later line's"
    ))
}

/// Joins the descriptions of the first [`WARNING_LINES_SHOWN`] `lines` and
/// counts the rest, or returns `None` when there are no lines.
fn list_lines<T>(lines: &[T], describe: impl Fn(&T) -> String) -> Option<String> {
    if lines.is_empty() {
        return None;
    }
    let listed: Vec<String> = lines
        .iter()
        .take(WARNING_LINES_SHOWN)
        .map(describe)
        .collect();
    let more = match lines.len().saturating_sub(WARNING_LINES_SHOWN) {
        0 => String::new(),
        count => format!(", and {count} more"),
    };
    Some(format!("{}{more}", listed.join("; ")))
}

/// Checks the values of an entry that the file's content does not decide.
fn check_entry(spec: &RangeFileSpec) -> Option<(&'static str, String)> {
    if spec.path.is_empty() {
        return Some((
            "path",
            "the path is empty (expected the path of a range file, relative to the \
             configuration file's directory or absolute)"
                .to_owned(),
        ));
    }
    if spec.cloud.as_deref() == Some("") {
        return Some((
            "cloud",
            "the cloud is empty (expected a name such as aws, or no cloud key to use the \
             format's cloud)"
                .to_owned(),
        ));
    }
    if !spec.services.is_empty() && spec.format != SourceFormat::Aws {
        return Some((
            "services",
            format!(
                "services filters only aws range files, and this entry has format {} \
                 (remove services, or use format = \"aws\")",
                spec.format
            ),
        ));
    }
    None
}

fn parse_entry(spec: &RangeFileSpec, bytes: &[u8]) -> Result<LabeledRanges, SourceError> {
    let cloud = spec.cloud.as_deref();
    if spec.services.is_empty() {
        sources::parse(spec.format, bytes, cloud)
    } else {
        let cloud = cloud.or(SourceFormat::Aws.cloud());
        sources::parse_aws(bytes, cloud, &spec.services)
    }
}

/// Counts the labels that some prefix uses. A merge can leave labels that
/// no prefix refers to any more, and those are not counted.
fn labels_in_use(ranges: &LabeledRanges) -> usize {
    ranges
        .entries()
        .iter()
        .map(|entry| entry.label)
        .collect::<BTreeSet<_>>()
        .len()
}

/// The clouds and regions that label some loaded prefix, lowercased, for
/// warning about rule values that match none of them.
pub(crate) struct LoadedLabels {
    pub(crate) clouds: BTreeSet<String>,
    pub(crate) regions: BTreeSet<String>,
}

impl LoadedLabels {
    pub(crate) fn of(ranges: &LabeledRanges) -> Self {
        let mut clouds = BTreeSet::new();
        let mut regions = BTreeSet::new();
        for (_, label) in ranges.iter() {
            if let Some(cloud) = label.cloud() {
                clouds.insert(cloud.to_ascii_lowercase());
            }
            if let Some(region) = label.region() {
                regions.insert(region.to_ascii_lowercase());
            }
        }
        LoadedLabels { clouds, regions }
    }

    /// Returns whether a rule's region pattern (`eu-west-1`, or `eu-*` for a
    /// prefix) matches a loaded region. Both compare without regard to
    /// case, as the core matches them.
    pub(crate) fn has_region_matching(&self, pattern: &str) -> bool {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_suffix('*') {
            Some(prefix) => self
                .regions
                .range(prefix.to_owned()..)
                .next()
                .is_some_and(|region| region.starts_with(prefix)),
            None => self.regions.contains(&pattern),
        }
    }
}
