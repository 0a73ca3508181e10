//! Parsers for the published cloud range files, turning each into prefixes
//! labelled with their cloud and region.
//!
//! Four formats are read, all from bytes ([`SourceFormat`]): AWS
//! `ip-ranges.json`, GCP `cloud.json`, Azure Service Tags JSON, and a plain
//! text list (`PREFIX [[CLOUD] REGION]` per line). [`parse`] returns a
//! [`LabeledRanges`]: every prefix once, each with the id of a shared
//! [`Label`]. Range files repeat a few hundred labels over tens of thousands
//! of prefixes, so labels are interned and a prefix stores only a
//! [`LabelId`]. [`LabeledRanges::table`] builds the longest-prefix
//! [`RangeTable`] from label ids.
//!
//! A region named `global` (any case, as AWS writes `GLOBAL` and GCP writes
//! `global`) or an empty region means the range is not tied to one region,
//! so its label has no region.
//!
//! ```
//! use registry_redirect_core::sources::{parse, SourceFormat};
//!
//! let text = b"\
//! 10.0.0.0/8     corp GLOBAL
//! 10.1.0.0/16    corp lab-1   # the lab network
//! 2001:db8::/32  dc-2
//! ";
//! let ranges = parse(SourceFormat::Plain, text, Some("corp")).unwrap();
//! assert_eq!(ranges.len(), 3);
//!
//! let table = ranges.table();
//! let lookup = |address: &str| {
//!     let id = table.lookup(address.parse().unwrap()).copied()?;
//!     ranges.label(id)
//! };
//! let lab = lookup("10.1.2.3").unwrap();
//! assert_eq!((lab.cloud(), lab.region()), (Some("corp"), Some("lab-1")));
//! let corp = lookup("10.200.0.1").unwrap();
//! assert_eq!((corp.cloud(), corp.region()), (Some("corp"), None));
//! assert_eq!(lookup("2001:db8::1").unwrap().region(), Some("dc-2"));
//! assert!(lookup("192.0.2.1").is_none());
//! ```

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use crate::client::canonical_network;
use crate::policy::parse_network_as_written;
use crate::ranges::RangeTable;

/// The index of a [`Label`] in [`LabeledRanges::labels`].
pub type LabelId = u32;

/// The format of a range file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// AWS `ip-ranges.json`: `prefixes[].ip_prefix` and
    /// `ipv6_prefixes[].ipv6_prefix`, each with a `region`.
    Aws,
    /// GCP `cloud.json`: `prefixes[].ipv4Prefix` or `ipv6Prefix`, with the
    /// region in `scope`. Google's `goog.json` has no `scope` and is rejected.
    Gcp,
    /// Azure Service Tags JSON: `values[].properties.addressPrefixes[]`, with
    /// `values[].properties.region`.
    Azure,
    /// One prefix per line, then optional label fields:
    /// `PREFIX`, `PREFIX REGION` or `PREFIX CLOUD REGION`.
    Plain,
}

impl SourceFormat {
    /// Every format, in the order of their names in messages.
    pub const ALL: [SourceFormat; 4] = [
        SourceFormat::Aws,
        SourceFormat::Gcp,
        SourceFormat::Azure,
        SourceFormat::Plain,
    ];

    /// Returns the format's name, as [`FromStr`] accepts it.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Aws => "aws",
            SourceFormat::Gcp => "gcp",
            SourceFormat::Azure => "azure",
            SourceFormat::Plain => "plain",
        }
    }

    /// Returns the cloud that a file of this format describes, which names
    /// its labels unless the caller gives another. `None` for plain text.
    pub fn cloud(self) -> Option<&'static str> {
        match self {
            SourceFormat::Aws => Some("aws"),
            SourceFormat::Gcp => Some("gcp"),
            SourceFormat::Azure => Some("azure"),
            SourceFormat::Plain => None,
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceFormat {
    type Err = UnknownFormat;

    /// Parses a format name (`aws`, `gcp`, `azure` or `plain`, in any case).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        SourceFormat::ALL
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownFormat(name.to_owned()))
    }
}

/// A range file format name that [`SourceFormat`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown range file format \"{0}\" (expected aws, gcp, azure or plain)")]
pub struct UnknownFormat(pub String);

/// An error in a range file.
///
/// Messages name the offending entry (`prefixes[12].ip_prefix`,
/// `values[3].properties.addressPrefixes[7]` or `line 7`) but not the file,
/// which the caller adds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The JSON is malformed, truncated, or has a value of the wrong type.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// The line of the error, counted from 1.
        line: usize,
        /// The column of the error, counted from 1 (0 when the error is at
        /// the end of the input, just after a line break).
        column: usize,
        /// serde_json's description of the error.
        message: String,
    },
    /// A required field is absent or `null`.
    #[error("{field} is missing (expected {expected})")]
    MissingField {
        /// The path of the field, such as `prefixes[12].region`.
        field: String,
        /// A description of the expected value.
        expected: &'static str,
    },
    /// A prefix is not a CIDR or IP address of the expected family.
    #[error("{field} is \"{value}\", which is not {expected}")]
    InvalidPrefix {
        /// The path of the field, such as `prefixes[12].ip_prefix` or `line 7`.
        field: String,
        /// The text as written.
        value: String,
        /// A description of the expected form.
        expected: &'static str,
    },
    /// A plain text line is not valid UTF-8.
    #[error("line {line} is not valid UTF-8 (expected a text file)")]
    InvalidUtf8 {
        /// The line, counted from 1.
        line: usize,
    },
    /// A plain text line has more than three fields before its comment.
    #[error("line {line} has {count} fields (\"{text}\"), expected PREFIX, PREFIX REGION or PREFIX CLOUD REGION")]
    TooManyFields {
        /// The line, counted from 1.
        line: usize,
        /// The number of whitespace-separated fields.
        count: usize,
        /// The line without its comment.
        text: String,
    },
    /// More than one line of a plain text file is invalid.
    #[error("{} invalid lines: {}", errors.len() + more, join_errors(errors, *more))]
    InvalidLines {
        /// The errors of the first invalid lines, in line order.
        errors: Vec<SourceError>,
        /// The number of invalid lines after those in `errors`.
        more: usize,
    },
    /// The file lists no prefixes at all.
    ///
    /// Rejecting it keeps a truncated or empty download from replacing
    /// ranges that were loaded before.
    #[error("the {format} range file lists no prefixes (expected at least one; the file may be truncated or in another format)")]
    Empty {
        /// The format the file was read as.
        format: SourceFormat,
    },
    /// An AWS service filter matches no entry of the file.
    #[error(
        "no entry of the aws range file has service {requested} (services in the file: {found})"
    )]
    NoMatchingService {
        /// The requested services, comma-separated.
        requested: String,
        /// The services that the file lists, comma-separated.
        found: String,
    },
    /// More distinct labels than a [`LabelId`] can number.
    #[error(
        "more than {} distinct labels (expected at most that many cloud and region pairs)",
        LabelId::MAX
    )]
    TooManyLabels,
}

/// Converts a serde_json error, moving its position out of the message.
fn json_error(error: serde_json::Error) -> SourceError {
    let (line, column) = (error.line(), error.column());
    let full = error.to_string();
    // serde_json appends the position to its message, and the variant shows it separately.
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    SourceError::InvalidJson {
        line,
        column,
        message,
    }
}

/// The cloud and region of a range.
///
/// Either may be absent. Plain text lines can omit both, and a range that
/// serves every region of a cloud has no region. [`Label::new`] turns an
/// empty cloud or region, and a region named `global` in any case, into
/// `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label {
    cloud: Option<Arc<str>>,
    region: Option<Arc<str>>,
}

impl Label {
    /// Builds a label, dropping an empty cloud and an empty or `global` region.
    ///
    /// ```
    /// use registry_redirect_core::sources::Label;
    ///
    /// let label = Label::new(Some("aws"), Some("GLOBAL"));
    /// assert_eq!(label.cloud(), Some("aws"));
    /// assert_eq!(label.region(), None);
    /// assert_eq!(Label::new(Some(""), Some("eu-west-1")).cloud(), None);
    /// ```
    pub fn new(cloud: Option<&str>, region: Option<&str>) -> Self {
        let cloud = cloud.filter(|cloud| !cloud.is_empty());
        let region = region.filter(|region| !region.is_empty() && !is_global(region));
        Label {
            cloud: cloud.map(Arc::from),
            region: region.map(Arc::from),
        }
    }

    /// Returns the cloud, such as `aws`.
    pub fn cloud(&self) -> Option<&str> {
        self.cloud.as_deref()
    }

    /// Returns the region, such as `eu-west-1`, or `None` for a range of
    /// every region.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

/// Writes the label fields of a plain text line: `CLOUD REGION`, with
/// `GLOBAL` for a missing region, or `REGION` alone when there is no cloud.
/// A label with neither writes nothing.
impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.cloud(), self.region()) {
            (Some(cloud), Some(region)) => write!(f, "{cloud} {region}"),
            (Some(cloud), None) => write!(f, "{cloud} GLOBAL"),
            (None, Some(region)) => f.write_str(region),
            (None, None) => Ok(()),
        }
    }
}

fn is_global(region: &str) -> bool {
    region.eq_ignore_ascii_case("global")
}

/// A prefix with the id of its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabeledPrefix {
    /// The prefix, with its host bits cleared, and as IPv4 when it lies
    /// inside `::ffff:0:0/96`.
    pub prefix: IpNet,
    /// The index of its label in [`LabeledRanges::labels`].
    pub label: LabelId,
}

/// Prefixes with interned labels, each prefix listed once.
///
/// When a file lists a prefix more than once, [`LabeledRanges::insert`]
/// keeps a label with a region over one without. This way an Azure global
/// tag does not hide the regional tag that lists the same prefix. Between
/// two labels that both have a region, or both have none, the later wins.
/// [`LabeledRanges::merge`] combines files, and there the later file always
/// wins.
#[derive(Debug, Clone, Default)]
pub struct LabeledRanges {
    labels: Vec<Label>,
    label_ids: HashMap<Label, LabelId>,
    entries: Vec<LabeledPrefix>,
    /// The index in `entries` of each prefix.
    positions: HashMap<IpNet, usize>,
    /// The plain text lines whose prefix had host bits set.
    host_bit_lines: Vec<(usize, IpNet)>,
    /// The plain text lines that repeat an earlier line's prefix with
    /// another label.
    repeated_lines: Vec<RepeatedPrefix>,
}

/// A line of a plain text range file that lists the same prefix as an
/// earlier line, with another label. Only one label is kept for the
/// prefix (see [`LabeledRanges::insert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepeatedPrefix {
    /// The line number, from 1.
    pub line: usize,
    /// The earlier line with the same prefix whose label the prefix had
    /// when this line was read.
    pub earlier_line: usize,
    /// The prefix, as looked up: without host bits, IPv4-mapped as IPv4.
    pub prefix: IpNet,
}

impl LabeledRanges {
    /// Creates an empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the lines of a plain text file whose prefix has host bits
    /// set, such as `10.1.2.3/8`, each with the prefix as written. Such a
    /// prefix is read as its network, which is more often a typo than
    /// meant, so a caller can warn about it. Empty for the other formats
    /// and for merged collections.
    pub fn host_bit_lines(&self) -> &[(usize, IpNet)] {
        &self.host_bit_lines
    }

    /// Returns the lines of a plain text file that list a prefix already
    /// listed on an earlier line, with another label. Only one of the
    /// labels is used, so a caller can warn about it. Lines that repeat a
    /// prefix with the same label are not listed. Empty for the other
    /// formats and for merged collections.
    pub fn repeated_lines(&self) -> &[RepeatedPrefix] {
        &self.repeated_lines
    }

    /// Adds a prefix with its label, returning the label's id.
    ///
    /// Host bits are cleared (`10.0.0.1/8` is `10.0.0.0/8`), and a prefix
    /// inside `::ffff:0:0/96` becomes the IPv4 prefix it maps, as
    /// [`RangeTable`] looks it up. When the prefix is already present, the
    /// label with a region is kept. Between two
    /// labels that both have a region, or both have none, the new one wins.
    pub fn insert(&mut self, prefix: IpNet, label: Label) -> Result<LabelId, SourceError> {
        self.insert_entry(prefix, label)
            .map(|inserted| inserted.label)
    }

    /// Inserts as [`LabeledRanges::insert`] does, and also returns where the
    /// prefix is in `entries` and, when it was there already, its label
    /// before this call.
    fn insert_entry(&mut self, prefix: IpNet, label: Label) -> Result<Inserted, SourceError> {
        let has_region = label.region.is_some();
        let id = self.intern(label)?;
        let prefix = canonical_network(prefix.trunc());
        let (index, previous) = match self.positions.entry(prefix) {
            Entry::Vacant(vacant) => {
                let index = self.entries.len();
                vacant.insert(index);
                self.entries.push(LabeledPrefix { prefix, label: id });
                (index, None)
            }
            Entry::Occupied(occupied) => {
                let index = *occupied.get();
                let mut previous = None;
                if let Some(entry) = self.entries.get_mut(index) {
                    previous = Some(entry.label);
                    let old_has_region = self
                        .labels
                        .get(entry.label as usize)
                        .is_some_and(|old| old.region.is_some());
                    if has_region || !old_has_region {
                        entry.label = id;
                    }
                }
                (index, previous)
            }
        };
        Ok(Inserted {
            label: id,
            index,
            previous,
        })
    }

    /// Adds every prefix of `other`, whose label replaces the label of an
    /// identical prefix already here (the later source wins).
    pub fn merge(&mut self, other: &LabeledRanges) -> Result<(), SourceError> {
        for entry in &other.entries {
            let Some(label) = other.labels.get(entry.label as usize) else {
                continue;
            };
            let id = self.intern(label.clone())?;
            match self.positions.entry(entry.prefix) {
                Entry::Vacant(vacant) => {
                    vacant.insert(self.entries.len());
                    self.entries.push(LabeledPrefix {
                        prefix: entry.prefix,
                        label: id,
                    });
                }
                Entry::Occupied(occupied) => {
                    if let Some(existing) = self.entries.get_mut(*occupied.get()) {
                        existing.label = id;
                    }
                }
            }
        }
        Ok(())
    }

    /// Builds the longest-prefix table from each prefix to its label id.
    ///
    /// The most specific prefix containing an address gives its label. Each
    /// prefix is listed once, so no two labels compete for the same prefix.
    pub fn table(&self) -> RangeTable<LabelId> {
        let entries = self
            .entries
            .iter()
            .map(|entry| (entry.prefix, entry.label))
            .collect();
        RangeTable::build(entries, |_outer, inner| *inner)
    }

    /// Returns the label with id `id`.
    pub fn label(&self, id: LabelId) -> Option<&Label> {
        self.labels.get(id as usize)
    }

    /// Returns every label, indexed by [`LabelId`].
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Returns every prefix with its label id, in the order first inserted.
    pub fn entries(&self) -> &[LabeledPrefix] {
        &self.entries
    }

    /// Iterates over every prefix with its label, in the order first inserted.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &Label)> + '_ {
        self.entries.iter().filter_map(|entry| {
            self.labels
                .get(entry.label as usize)
                .map(|label| (entry.prefix, label))
        })
    }

    /// Returns the number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether there are no prefixes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn intern(&mut self, label: Label) -> Result<LabelId, SourceError> {
        if let Some(&id) = self.label_ids.get(&label) {
            return Ok(id);
        }
        let id = LabelId::try_from(self.labels.len()).map_err(|_| SourceError::TooManyLabels)?;
        self.labels.push(label.clone());
        self.label_ids.insert(label, id);
        Ok(id)
    }

    /// Rejects an empty result, which is what a truncated download gives.
    fn non_empty(self, format: SourceFormat) -> Result<Self, SourceError> {
        if self.is_empty() {
            return Err(SourceError::Empty { format });
        }
        Ok(self)
    }
}

/// Parses a range file of `format` into labelled prefixes.
///
/// `default_cloud` is the cloud of every entry that does not name one: every
/// entry of the JSON formats (`aws`, `gcp` or `azure` when `None`, see
/// [`SourceFormat::cloud`]), and plain text lines with fewer than three
/// fields. A leading UTF-8 byte order mark is skipped. A file with no
/// prefixes is an error ([`SourceError::Empty`]).
///
/// ```
/// use registry_redirect_core::sources::{parse, SourceFormat};
///
/// let json = br#"{"prefixes": [{"ipv4Prefix": "34.1.208.0/20", "scope": "africa-south1"}]}"#;
/// let ranges = parse(SourceFormat::Gcp, json, None).unwrap();
/// let (prefix, label) = ranges.iter().next().unwrap();
/// assert_eq!(prefix.to_string(), "34.1.208.0/20");
/// assert_eq!(label.cloud(), Some("gcp"));
/// assert_eq!(label.region(), Some("africa-south1"));
/// ```
pub fn parse(
    format: SourceFormat,
    bytes: &[u8],
    default_cloud: Option<&str>,
) -> Result<LabeledRanges, SourceError> {
    let cloud = default_cloud.or(format.cloud());
    match format {
        SourceFormat::Aws => parse_aws(bytes, cloud, &[] as &[&str]),
        SourceFormat::Gcp => parse_gcp(bytes, cloud),
        SourceFormat::Azure => parse_azure(bytes, cloud),
        SourceFormat::Plain => parse_plain(bytes, cloud),
    }
}

/// Skips a UTF-8 byte order mark, which serde_json and line parsing reject.
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// The address family a prefix field must have.
#[derive(Debug, Clone, Copy)]
enum Family {
    V4,
    V6,
    Any,
}

impl Family {
    fn expected(self) -> &'static str {
        match self {
            Family::V4 => "an IPv4 prefix such as 192.0.2.0/24",
            Family::V6 => "an IPv6 prefix such as 2001:db8::/32",
            Family::Any => "a CIDR or IP address such as 192.0.2.0/24 or 2001:db8::/32",
        }
    }

    /// Returns [`Family::expected`] with a word on leading zeros, for a
    /// value that leading zeros make invalid.
    fn expected_without_leading_zeros(self) -> &'static str {
        match self {
            Family::V4 => "an IPv4 prefix such as 192.0.2.0/24, without leading zeros",
            Family::V6 => {
                "an IPv6 prefix such as 2001:db8::/32, without leading zeros in its length"
            }
            Family::Any => {
                "a CIDR or IP address such as 192.0.2.0/24 or 2001:db8::/32, without leading zeros"
            }
        }
    }

    fn admits(self, net: &IpNet) -> bool {
        match self {
            Family::V4 => matches!(net, IpNet::V4(_)),
            Family::V6 => matches!(net, IpNet::V6(_)),
            Family::Any => true,
        }
    }
}

/// Parses `value` as a prefix of `family`, host bits kept. `field` names
/// it in the error.
fn parse_prefix(
    value: &str,
    family: Family,
    field: impl FnOnce() -> String,
) -> Result<IpNet, SourceError> {
    match parse_network_as_written(value) {
        Some(net) if family.admits(&net) => Ok(net),
        _ => Err(SourceError::InvalidPrefix {
            field: field(),
            expected: if has_leading_zero(value) {
                family.expected_without_leading_zeros()
            } else {
                family.expected()
            },
            value: value.to_owned(),
        }),
    }
}

/// Returns whether an IPv4 number or the prefix length in `value` has a
/// leading zero (`010.0.0.0/8`, `10.0.0.0/08`), which [`crate::policy::parse_network`]
/// rejects.
fn has_leading_zero(value: &str) -> bool {
    let is_zero_led = |part: &str| {
        part.len() > 1 && part.starts_with('0') && part.bytes().all(|byte| byte.is_ascii_digit())
    };
    let (address, length) = match value.trim().split_once('/') {
        Some((address, length)) => (address, Some(length)),
        None => (value.trim(), None),
    };
    // The IPv4 numbers, also at the end of an IPv6 address (`::ffff:010.0.0.1`).
    let ipv4 = address.rsplit(':').next().unwrap_or(address);
    let ipv4_zero_led = ipv4.contains('.') && ipv4.split('.').any(is_zero_led);
    ipv4_zero_led || length.is_some_and(is_zero_led)
}

fn missing(field: String, expected: &'static str) -> SourceError {
    SourceError::MissingField { field, expected }
}

#[derive(Deserialize)]
#[serde(expecting = "an AWS ip-ranges.json object")]
struct AwsDocument {
    prefixes: Option<Vec<AwsEntry>>,
    ipv6_prefixes: Option<Vec<AwsEntry>>,
}

#[derive(Deserialize)]
#[serde(expecting = "an object with ip_prefix or ipv6_prefix, region and service")]
struct AwsEntry {
    ip_prefix: Option<String>,
    ipv6_prefix: Option<String>,
    region: Option<String>,
    service: Option<String>,
}

/// Parses AWS `ip-ranges.json`, keeping only entries whose `service` is in
/// `services` (compared in any case), or every entry when `services` is empty.
///
/// AWS lists a prefix once per service, so the same prefix and region appear
/// many times and are kept once. `cloud` is the cloud of every label. The
/// `prefixes` array is required, while `ipv6_prefixes` may be absent.
///
/// ```
/// use registry_redirect_core::sources::parse_aws;
///
/// let json = br#"{"prefixes": [
///     {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON"},
///     {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "S3"},
///     {"ip_prefix": "15.230.15.29/32", "region": "eu-west-1", "service": "EC2"}
/// ]}"#;
/// assert_eq!(parse_aws(json, Some("aws"), &[] as &[&str]).unwrap().len(), 2);
/// assert_eq!(parse_aws(json, Some("aws"), &["s3"]).unwrap().len(), 1);
/// ```
pub fn parse_aws<S: AsRef<str>>(
    bytes: &[u8],
    cloud: Option<&str>,
    services: &[S],
) -> Result<LabeledRanges, SourceError> {
    let document: AwsDocument = serde_json::from_slice(strip_bom(bytes)).map_err(json_error)?;
    let prefixes = document.prefixes.ok_or_else(|| {
        missing(
            "prefixes".to_owned(),
            "the array of IPv4 entries of an AWS ip-ranges.json file",
        )
    })?;

    let mut ranges = LabeledRanges::new();
    let mut found_services = BTreeSet::new();
    let families = [
        ("prefixes", prefixes, "ip_prefix", Family::V4),
        (
            "ipv6_prefixes",
            document.ipv6_prefixes.unwrap_or_default(),
            "ipv6_prefix",
            Family::V6,
        ),
    ];
    for (array, entries, prefix_key, family) in families {
        for (index, entry) in entries.into_iter().enumerate() {
            let field = |key: &str| format!("{array}[{index}].{key}");

            if !services.is_empty() {
                let service = entry
                    .service
                    .ok_or_else(|| missing(field("service"), "a service name such as EC2"))?;
                let is_requested = services
                    .iter()
                    .any(|name| name.as_ref().eq_ignore_ascii_case(&service));
                if !is_requested {
                    found_services.insert(service);
                    continue;
                }
            }

            let text = match family {
                Family::V6 => entry.ipv6_prefix,
                _ => entry.ip_prefix,
            };
            let text = text.ok_or_else(|| missing(field(prefix_key), family.expected()))?;
            let prefix = parse_prefix(&text, family, || field(prefix_key))?;
            let region = entry.region.ok_or_else(|| {
                missing(
                    field("region"),
                    "a region name such as eu-west-1, or GLOBAL",
                )
            })?;
            ranges.insert(prefix, Label::new(cloud, Some(&region)))?;
        }
    }

    if ranges.is_empty() && !found_services.is_empty() {
        let requested = services.iter().map(AsRef::as_ref).collect::<Vec<_>>();
        let found = found_services.into_iter().collect::<Vec<_>>();
        return Err(SourceError::NoMatchingService {
            requested: requested.join(", "),
            found: found.join(", "),
        });
    }
    ranges.non_empty(SourceFormat::Aws)
}

#[derive(Deserialize)]
#[serde(expecting = "a GCP cloud.json object")]
struct GcpDocument {
    prefixes: Option<Vec<GcpEntry>>,
}

#[derive(Deserialize)]
#[serde(expecting = "an object with ipv4Prefix or ipv6Prefix and scope")]
struct GcpEntry {
    #[serde(rename = "ipv4Prefix")]
    ipv4_prefix: Option<String>,
    #[serde(rename = "ipv6Prefix")]
    ipv6_prefix: Option<String>,
    scope: Option<String>,
}

/// Parses GCP `cloud.json`, with the region taken from each entry's `scope`.
///
/// An entry needs `ipv4Prefix` or `ipv6Prefix` (both are read when both are
/// present) and `scope`. The `global` scope gives a label with no region.
/// `cloud` is the cloud of every label.
pub fn parse_gcp(bytes: &[u8], cloud: Option<&str>) -> Result<LabeledRanges, SourceError> {
    let document: GcpDocument = serde_json::from_slice(strip_bom(bytes)).map_err(json_error)?;
    let entries = document.prefixes.ok_or_else(|| {
        missing(
            "prefixes".to_owned(),
            "the array of prefix entries of a GCP cloud.json file",
        )
    })?;

    let mut ranges = LabeledRanges::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let field = |key: &str| format!("prefixes[{index}].{key}");

        let scope = entry.scope.ok_or_else(|| {
            missing(
                field("scope"),
                "a region name such as europe-west4, or global",
            )
        })?;
        let label = Label::new(cloud, Some(&scope));

        if entry.ipv4_prefix.is_none() && entry.ipv6_prefix.is_none() {
            return Err(missing(
                field("ipv4Prefix"),
                "ipv4Prefix or ipv6Prefix, with a prefix such as 192.0.2.0/24 or 2001:db8::/32",
            ));
        }
        if let Some(text) = entry.ipv4_prefix {
            let prefix = parse_prefix(&text, Family::V4, || field("ipv4Prefix"))?;
            ranges.insert(prefix, label.clone())?;
        }
        if let Some(text) = entry.ipv6_prefix {
            let prefix = parse_prefix(&text, Family::V6, || field("ipv6Prefix"))?;
            ranges.insert(prefix, label)?;
        }
    }
    ranges.non_empty(SourceFormat::Gcp)
}

#[derive(Deserialize)]
#[serde(expecting = "an Azure Service Tags object")]
struct AzureDocument {
    values: Option<Vec<AzureServiceTag>>,
}

#[derive(Deserialize)]
#[serde(expecting = "a service tag object with properties")]
struct AzureServiceTag {
    properties: Option<AzureProperties>,
}

#[derive(Deserialize)]
#[serde(expecting = "a properties object with region and addressPrefixes")]
struct AzureProperties {
    region: Option<String>,
    #[serde(rename = "addressPrefixes")]
    address_prefixes: Option<Vec<String>>,
}

/// Parses an Azure Service Tags JSON file.
///
/// Tags with an empty region, such as `AzureCloud` or `Storage`, are global:
/// their prefixes get a label with no region. Azure lists most of those
/// prefixes again under a regional tag (`AzureCloud.eastus`), and the
/// regional label wins for the identical prefix whatever the order of the
/// tags. A more specific regional prefix inside a global one wins through the
/// longest-prefix match. `cloud` is the cloud of every label.
///
/// ```
/// use registry_redirect_core::sources::parse_azure;
///
/// let json = br#"{"values": [
///     {"name": "AzureCloud", "properties": {"region": "", "addressPrefixes": ["20.36.0.0/19"]}},
///     {"name": "AzureCloud.australiacentral",
///      "properties": {"region": "australiacentral", "addressPrefixes": ["20.36.0.0/19"]}}
/// ]}"#;
/// let ranges = parse_azure(json, Some("azure")).unwrap();
/// let (_, label) = ranges.iter().next().unwrap();
/// assert_eq!(label.region(), Some("australiacentral"));
/// ```
pub fn parse_azure(bytes: &[u8], cloud: Option<&str>) -> Result<LabeledRanges, SourceError> {
    let document: AzureDocument = serde_json::from_slice(strip_bom(bytes)).map_err(json_error)?;
    let tags = document.values.ok_or_else(|| {
        missing(
            "values".to_owned(),
            "the array of service tags of an Azure Service Tags file",
        )
    })?;

    let mut ranges = LabeledRanges::new();
    for (index, tag) in tags.into_iter().enumerate() {
        let field = |key: &str| format!("values[{index}].{key}");

        let properties = tag.properties.ok_or_else(|| {
            missing(
                field("properties"),
                "an object with region and addressPrefixes",
            )
        })?;
        let region = properties.region.ok_or_else(|| {
            missing(
                field("properties.region"),
                "a region name such as eastus, or \"\" for a global tag",
            )
        })?;
        let prefixes = properties.address_prefixes.ok_or_else(|| {
            missing(
                field("properties.addressPrefixes"),
                "an array of prefixes such as 20.36.0.0/19",
            )
        })?;

        let label = Label::new(cloud, Some(&region));
        for (position, text) in prefixes.iter().enumerate() {
            let prefix = parse_prefix(text, Family::Any, || {
                field(&format!("properties.addressPrefixes[{position}]"))
            })?;
            ranges.insert(prefix, label.clone())?;
        }
    }
    ranges.non_empty(SourceFormat::Azure)
}

/// Parses a plain text range list.
///
/// Each line contains a CIDR or single IP address, then optional label fields
/// separated by whitespace: `PREFIX`, `PREFIX REGION` or
/// `PREFIX CLOUD REGION`. Lines with fewer than three fields get
/// `default_cloud`. `#` starts a comment, on its own line or after the
/// fields, and blank lines are skipped.
///
/// Every line is checked, so that one run reports all invalid lines: the
/// first [`REPORTED_LINES`] in full, and how many more there are.
pub fn parse_plain(
    bytes: &[u8],
    default_cloud: Option<&str>,
) -> Result<LabeledRanges, SourceError> {
    let mut ranges = LabeledRanges::new();
    let mut errors = Vec::new();
    let mut more = 0;
    // The line that gave each entry of `ranges`, by index, its label.
    let mut entry_lines = Vec::new();
    for (index, raw) in strip_bom(bytes).split(|&byte| byte == b'\n').enumerate() {
        let line = index + 1;
        let entry = match parse_plain_line(raw, line, default_cloud) {
            Ok(Some(entry)) => entry,
            Ok(None) => continue,
            Err(error) if errors.len() < REPORTED_LINES => {
                errors.push(error);
                continue;
            }
            Err(_) => {
                more += 1;
                continue;
            }
        };
        let (prefix, cloud, region) = entry;
        if prefix.trunc() != prefix {
            ranges.host_bit_lines.push((line, prefix));
        }
        let inserted = ranges.insert_entry(prefix, Label::new(cloud, region))?;
        match inserted.previous {
            None => entry_lines.push(line),
            Some(previous) if previous == inserted.label => {}
            Some(_) => {
                let entry = ranges.entries.get(inserted.index).copied();
                let prefix = entry.map_or(prefix, |entry| entry.prefix);
                let kept_new_label = entry.is_some_and(|entry| entry.label == inserted.label);
                if let Some(earlier_line) = entry_lines.get_mut(inserted.index) {
                    ranges.repeated_lines.push(RepeatedPrefix {
                        line,
                        earlier_line: *earlier_line,
                        prefix,
                    });
                    if kept_new_label {
                        *earlier_line = line;
                    }
                }
            }
        }
    }
    match errors.len() {
        0 => ranges.non_empty(SourceFormat::Plain),
        1 => Err(errors.remove(0)),
        _ => Err(SourceError::InvalidLines { errors, more }),
    }
}

/// The result of [`LabeledRanges::insert_entry`]: where the prefix is.
struct Inserted {
    /// The id of the label given.
    label: LabelId,
    /// The prefix's index in `entries`.
    index: usize,
    /// The prefix's label before the call, when it was already present.
    previous: Option<LabelId>,
}

/// The number of invalid lines of a plain text file that an error describes
/// in full.
pub const REPORTED_LINES: usize = 10;

/// A prefix with its cloud and region, as a plain text line gives them.
type PlainEntry<'a> = (IpNet, Option<&'a str>, Option<&'a str>);

/// Parses line `line` of a plain text list, or returns `None` for a blank
/// or comment line.
fn parse_plain_line<'a>(
    raw: &'a [u8],
    line: usize,
    default_cloud: Option<&'a str>,
) -> Result<Option<PlainEntry<'a>>, SourceError> {
    let text = std::str::from_utf8(raw).map_err(|_| SourceError::InvalidUtf8 { line })?;
    let text = text.split_once('#').map_or(text, |(before, _)| before);

    let fields: Vec<&str> = text.split_whitespace().collect();
    let (prefix, cloud, region) = match fields.as_slice() {
        [] => return Ok(None),
        [prefix] => (*prefix, default_cloud, None),
        [prefix, region] => (*prefix, default_cloud, Some(*region)),
        [prefix, cloud, region] => (*prefix, Some(*cloud), Some(*region)),
        _ => {
            return Err(SourceError::TooManyFields {
                line,
                count: fields.len(),
                text: text.trim().to_owned(),
            })
        }
    };
    let prefix = parse_prefix(prefix, Family::Any, || format!("line {line}"))?;
    Ok(Some((prefix, cloud, region)))
}

/// Joins the messages of `errors` with `; `, then appends the count of `more` lines.
fn join_errors(errors: &[SourceError], more: usize) -> String {
    let mut text = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::PathBuf;

    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Looks up the (cloud, region) of the most specific prefix containing `address`.
    fn lookup<'a>(
        ranges: &'a LabeledRanges,
        table: &RangeTable<LabelId>,
        address: &str,
    ) -> Option<(Option<&'a str>, Option<&'a str>)> {
        let id = table.lookup(ip(address)).copied()?;
        let label = ranges.label(id)?;
        Some((label.cloud(), label.region()))
    }

    fn error_message(format: SourceFormat, input: &str) -> String {
        match parse(format, input.as_bytes(), None) {
            Ok(ranges) => panic!(
                "{format} input parsed to {} prefixes: {input}",
                ranges.len()
            ),
            Err(error) => error.to_string(),
        }
    }

    const AWS: &str = r#"{
      "syncToken": "1",
      "prefixes": [
        {"ip_prefix": "3.4.12.4/32", "region": "eu-west-1", "service": "AMAZON", "network_border_group": "eu-west-1"},
        {"ip_prefix": "3.4.12.4/32", "region": "eu-west-1", "service": "EC2", "network_border_group": "eu-west-1"},
        {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "S3", "network_border_group": "ap-northeast-2"},
        {"ip_prefix": "13.32.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT", "network_border_group": "GLOBAL"}
      ],
      "ipv6_prefixes": [
        {"ipv6_prefix": "2600:1f14::/35", "region": "us-west-2", "service": "AMAZON", "network_border_group": "us-west-2"},
        {"ipv6_prefix": "2600:1f14::/35", "region": "us-west-2", "service": "EC2", "network_border_group": "us-west-2"}
      ]
    }"#;

    #[test]
    fn aws_parses_both_families() {
        let ranges = parse(SourceFormat::Aws, AWS.as_bytes(), None).unwrap();
        let table = ranges.table();
        assert_eq!(
            lookup(&ranges, &table, "3.4.12.4"),
            Some((Some("aws"), Some("eu-west-1")))
        );
        assert_eq!(
            lookup(&ranges, &table, "3.5.143.255"),
            Some((Some("aws"), Some("ap-northeast-2")))
        );
        assert_eq!(
            lookup(&ranges, &table, "2600:1f14::1"),
            Some((Some("aws"), Some("us-west-2")))
        );
        assert_eq!(lookup(&ranges, &table, "3.4.12.5"), None);
    }

    #[test]
    fn aws_duplicate_pairs_are_merged() {
        let ranges = parse(SourceFormat::Aws, AWS.as_bytes(), None).unwrap();
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges.labels().len(), 4);
        let prefixes: Vec<IpNet> = ranges.entries().iter().map(|e| e.prefix).collect();
        assert_eq!(
            prefixes,
            [
                net("3.4.12.4/32"),
                net("3.5.140.0/22"),
                net("13.32.0.0/15"),
                net("2600:1f14::/35")
            ]
        );
    }

    #[test]
    fn aws_global_region_is_none() {
        let ranges = parse(SourceFormat::Aws, AWS.as_bytes(), None).unwrap();
        let table = ranges.table();
        assert_eq!(
            lookup(&ranges, &table, "13.33.0.1"),
            Some((Some("aws"), None))
        );
    }

    #[test]
    fn aws_service_filter() {
        let ranges = parse_aws(AWS.as_bytes(), Some("aws"), &["s3", "CLOUDFRONT"]).unwrap();
        let prefixes: Vec<IpNet> = ranges.entries().iter().map(|e| e.prefix).collect();
        assert_eq!(prefixes, [net("3.5.140.0/22"), net("13.32.0.0/15")]);
    }

    #[test]
    fn aws_service_filter_matching_nothing() {
        let error = parse_aws(AWS.as_bytes(), Some("aws"), &["EC2X"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no entry of the aws range file has service EC2X \
             (services in the file: AMAZON, CLOUDFRONT, EC2, S3)"
        );
    }

    #[test]
    fn custom_cloud_name_replaces_format_cloud() {
        let ranges = parse(SourceFormat::Aws, AWS.as_bytes(), Some("amazon")).unwrap();
        assert!(ranges.labels().iter().all(|l| l.cloud() == Some("amazon")));
    }

    const GCP: &str = r#"{
      "syncToken": "1",
      "prefixes": [
        {"ipv4Prefix": "34.1.208.0/20", "service": "Google Cloud", "scope": "africa-south1"},
        {"ipv6Prefix": "2600:1900:8000::/44", "service": "Google Cloud", "scope": "europe-west4"},
        {"ipv4Prefix": "34.0.0.0/15", "service": "Google Cloud", "scope": "global"},
        {"ipv4Prefix": "34.0.1.0/24", "service": "Google Cloud", "scope": "us-east1"}
      ]
    }"#;

    #[test]
    fn gcp_parses_scopes_as_regions() {
        let ranges = parse(SourceFormat::Gcp, GCP.as_bytes(), None).unwrap();
        let table = ranges.table();
        assert_eq!(ranges.len(), 4);
        assert_eq!(
            lookup(&ranges, &table, "34.1.223.255"),
            Some((Some("gcp"), Some("africa-south1")))
        );
        assert_eq!(
            lookup(&ranges, &table, "2600:1900:8000::5"),
            Some((Some("gcp"), Some("europe-west4")))
        );
        assert_eq!(
            lookup(&ranges, &table, "34.0.2.1"),
            Some((Some("gcp"), None))
        );
    }

    #[test]
    fn most_specific_prefix_wins() {
        let ranges = parse(SourceFormat::Gcp, GCP.as_bytes(), None).unwrap();
        let table = ranges.table();
        assert_eq!(
            lookup(&ranges, &table, "34.0.1.9"),
            Some((Some("gcp"), Some("us-east1")))
        );
        assert_eq!(
            lookup(&ranges, &table, "34.0.0.255"),
            Some((Some("gcp"), None))
        );
        assert_eq!(
            lookup(&ranges, &table, "34.0.2.0"),
            Some((Some("gcp"), None))
        );
    }

    const AZURE: &str = r#"{
      "changeNumber": 1,
      "cloud": "Public",
      "values": [
        {"name": "AzureCloud", "id": "AzureCloud",
         "properties": {"region": "", "platform": "Azure", "systemService": "",
                        "addressPrefixes": ["20.36.0.0/19", "40.64.0.0/10", "2603:1010::/46"]}},
        {"name": "AzureCloud.australiacentral", "id": "AzureCloud.australiacentral",
         "properties": {"region": "australiacentral", "platform": "Azure", "systemService": "",
                        "addressPrefixes": ["20.36.0.0/19", "2603:1010::/46", "40.64.8.0/24"]}},
        {"name": "Storage", "id": "Storage",
         "properties": {"region": "", "systemService": "AzureStorage",
                        "addressPrefixes": ["20.36.0.0/19"]}}
      ]
    }"#;

    #[test]
    fn azure_regional_tag_beats_global() {
        let ranges = parse(SourceFormat::Azure, AZURE.as_bytes(), None).unwrap();
        let table = ranges.table();
        assert_eq!(ranges.len(), 4);
        assert_eq!(
            lookup(&ranges, &table, "20.36.1.1"),
            Some((Some("azure"), Some("australiacentral")))
        );
        assert_eq!(
            lookup(&ranges, &table, "2603:1010::1"),
            Some((Some("azure"), Some("australiacentral")))
        );
    }

    #[test]
    fn azure_global_tag_has_no_region() {
        let ranges = parse(SourceFormat::Azure, AZURE.as_bytes(), None).unwrap();
        let table = ranges.table();
        assert_eq!(
            lookup(&ranges, &table, "40.100.0.1"),
            Some((Some("azure"), None))
        );
        assert_eq!(
            lookup(&ranges, &table, "40.64.8.1"),
            Some((Some("azure"), Some("australiacentral")))
        );
    }

    #[test]
    fn plain_text_label_fields() {
        let cases = [
            ("10.0.0.0/8", None, None, None),
            ("10.0.0.0/8", Some("corp"), Some("corp"), None),
            ("10.0.0.0/8 lab-1", None, None, Some("lab-1")),
            (
                "10.0.0.0/8 lab-1",
                Some("corp"),
                Some("corp"),
                Some("lab-1"),
            ),
            (
                "10.0.0.0/8 aws eu-west-1",
                Some("corp"),
                Some("aws"),
                Some("eu-west-1"),
            ),
            ("10.0.0.0/8\taws\tGLOBAL  ", None, Some("aws"), None),
            (
                "10.0.0.0/8 aws eu-west-1 # comment",
                None,
                Some("aws"),
                Some("eu-west-1"),
            ),
        ];
        for (line, default_cloud, cloud, region) in cases {
            let ranges = parse(SourceFormat::Plain, line.as_bytes(), default_cloud).unwrap();
            let (prefix, label) = ranges.iter().next().unwrap();
            assert_eq!(prefix, net("10.0.0.0/8"), "{line:?}");
            assert_eq!(label.cloud(), cloud, "{line:?} with {default_cloud:?}");
            assert_eq!(label.region(), region, "{line:?} with {default_cloud:?}");
        }
    }

    #[test]
    fn plain_text_comments_and_blanks() {
        let text = "\u{feff}# header\r\n\r\n   \n10.0.0.0/8 a r1# no space before\n\
                    # 10.1.0.0/16 a r2\n192.0.2.7\r\n2001:db8::/32 a r3 # v6\n";
        let ranges = parse(SourceFormat::Plain, text.as_bytes(), None).unwrap();
        let prefixes: Vec<IpNet> = ranges.entries().iter().map(|e| e.prefix).collect();
        assert_eq!(
            prefixes,
            [net("10.0.0.0/8"), net("192.0.2.7/32"), net("2001:db8::/32")]
        );
        let table = ranges.table();
        assert_eq!(
            lookup(&ranges, &table, "10.9.9.9"),
            Some((Some("a"), Some("r1")))
        );
        assert_eq!(
            lookup(&ranges, &table, "2001:db8::1"),
            Some((Some("a"), Some("r3")))
        );
    }

    #[test]
    fn plain_text_host_bits_cleared() {
        let ranges = parse(SourceFormat::Plain, b"10.1.2.3/8 x\n10.0.0.0/8 x\n", None).unwrap();
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges.entries()[0].prefix, net("10.0.0.0/8"));
    }

    #[test]
    fn identical_prefix_keeps_regional_label() {
        for text in [
            "10.0.0.0/8 a GLOBAL\n10.0.0.0/8 a r1\n",
            "10.0.0.0/8 a r1\n10.0.0.0/8 a GLOBAL\n",
            "::ffff:10.0.0.0/104 a r1\n10.0.0.0/8 a GLOBAL\n",
            "10.0.0.0/8 a r1\n::ffff:10.0.0.0/104 a GLOBAL\n",
        ] {
            let ranges = parse(SourceFormat::Plain, text.as_bytes(), None).unwrap();
            let (_, label) = ranges.iter().next().unwrap();
            assert_eq!(ranges.len(), 1, "{text:?}");
            assert_eq!(label.region(), Some("r1"), "{text:?}");
        }
    }

    #[test]
    fn identical_prefix_later_region_wins() {
        let text = b"10.0.0.0/8 a r1\n10.0.0.0/8 a r2\n";
        let ranges = parse(SourceFormat::Plain, text, None).unwrap();
        let (_, label) = ranges.iter().next().unwrap();
        assert_eq!(label.region(), Some("r2"));
    }

    #[test]
    fn merge_later_source_wins() {
        let first = parse(
            SourceFormat::Plain,
            b"10.0.0.0/8 a r1\n10.1.0.0/16 a r2\n",
            None,
        )
        .unwrap();
        let second = parse(
            SourceFormat::Plain,
            b"10.0.0.0/8 b GLOBAL\n192.0.2.0/24 b r3\n",
            None,
        )
        .unwrap();
        let mut merged = first.clone();
        merged.merge(&second).unwrap();

        assert_eq!(merged.len(), 3);
        let table = merged.table();
        assert_eq!(lookup(&merged, &table, "10.2.0.1"), Some((Some("b"), None)));
        assert_eq!(
            lookup(&merged, &table, "10.1.0.1"),
            Some((Some("a"), Some("r2")))
        );
        assert_eq!(
            lookup(&merged, &table, "192.0.2.1"),
            Some((Some("b"), Some("r3")))
        );
    }

    #[test]
    fn merge_reuses_interned_labels() {
        let mut merged = parse(SourceFormat::Plain, b"10.0.0.0/8 a r1\n", None).unwrap();
        let second = parse(
            SourceFormat::Plain,
            b"11.0.0.0/8 a r1\n12.0.0.0/8 a r2\n",
            None,
        )
        .unwrap();
        merged.merge(&second).unwrap();
        assert_eq!(merged.len(), 3);
        assert_eq!(merged.labels().len(), 2);
    }

    #[test]
    fn malformed_inputs_name_the_entry() {
        use SourceFormat::{Aws, Azure, Gcp, Plain};
        let cases: &[(SourceFormat, &str, &str)] = &[
            (
                Aws,
                "{\"prefixes\": [\n  {\"ip_prefix\": \"10.0.0.0/8\",",
                "invalid JSON at line 2, column 29: EOF while parsing a value",
            ),
            (
                Aws,
                r#"{"prefixes": [{"ip_prefix": "10.0.0.0/8", "region": 5}]}"#,
                "invalid JSON at line 1, column 53: invalid type: integer `5`, expected a string",
            ),
            (
                Aws,
                "<html><body>Service Unavailable</body></html>",
                "invalid JSON at line 1, column 1: expected value",
            ),
            (
                Gcp,
                r#""cloud.json""#,
                "invalid JSON at line 1, column 12: invalid type: string \"cloud.json\", expected a GCP cloud.json object",
            ),
            (
                Aws,
                r#"{"values": []}"#,
                "prefixes is missing (expected the array of IPv4 entries of an AWS ip-ranges.json file)",
            ),
            (
                Aws,
                r#"{"prefixes": [{"ip_prefix": "10.0.0.0/8", "region": "r"}, {"region": "r"}]}"#,
                "prefixes[1].ip_prefix is missing (expected an IPv4 prefix such as 192.0.2.0/24)",
            ),
            (
                Aws,
                r#"{"prefixes": [{"ip_prefix": "10.0.0.0/8"}]}"#,
                "prefixes[0].region is missing (expected a region name such as eu-west-1, or GLOBAL)",
            ),
            (
                Aws,
                r#"{"prefixes": [{"ip_prefix": "10.0.0/33", "region": "r"}]}"#,
                "prefixes[0].ip_prefix is \"10.0.0/33\", which is not an IPv4 prefix such as 192.0.2.0/24",
            ),
            (
                Aws,
                r#"{"prefixes": [], "ipv6_prefixes": [{"ipv6_prefix": "10.0.0.0/8", "region": "r"}]}"#,
                "ipv6_prefixes[0].ipv6_prefix is \"10.0.0.0/8\", which is not an IPv6 prefix such as 2001:db8::/32",
            ),
            (
                Gcp,
                r#"{"prefixes": [{"scope": "us-east1"}]}"#,
                "prefixes[0].ipv4Prefix is missing (expected ipv4Prefix or ipv6Prefix, with a prefix such as 192.0.2.0/24 or 2001:db8::/32)",
            ),
            (
                Gcp,
                r#"{"prefixes": [{"ipv4Prefix": "8.8.4.0/24"}]}"#,
                "prefixes[0].scope is missing (expected a region name such as europe-west4, or global)",
            ),
            (
                Gcp,
                r#"{"prefixes": [{"ipv6Prefix": "2600::/zz", "scope": "x"}]}"#,
                "prefixes[0].ipv6Prefix is \"2600::/zz\", which is not an IPv6 prefix such as 2001:db8::/32",
            ),
            (
                Azure,
                r#"{"values": [{"name": "x"}]}"#,
                "values[0].properties is missing (expected an object with region and addressPrefixes)",
            ),
            (
                Azure,
                r#"{"values": [{"properties": {"addressPrefixes": []}}]}"#,
                "values[0].properties.region is missing (expected a region name such as eastus, or \"\" for a global tag)",
            ),
            (
                Azure,
                r#"{"values": [{"properties": {"region": ""}}]}"#,
                "values[0].properties.addressPrefixes is missing (expected an array of prefixes such as 20.36.0.0/19)",
            ),
            (
                Azure,
                r#"{"values": [{"properties": {"region": "", "addressPrefixes": ["1.0.0.0/8", "1.2.3.4.5"]}}]}"#,
                "values[0].properties.addressPrefixes[1] is \"1.2.3.4.5\", which is not a CIDR or IP address such as 192.0.2.0/24 or 2001:db8::/32",
            ),
            (
                Plain,
                "10.0.0.0/8 a r1\n\n# comment\nfoo.example a r2\n",
                "line 4 is \"foo.example\", which is not a CIDR or IP address such as 192.0.2.0/24 or 2001:db8::/32",
            ),
            (
                Plain,
                "10.0.0.0/8 a r1\n010.1.0.0/16 a r2\n",
                "line 2 is \"010.1.0.0/16\", which is not a CIDR or IP address such as 192.0.2.0/24 or 2001:db8::/32, without leading zeros",
            ),
            (
                Aws,
                r#"{"prefixes": [{"ip_prefix": "3.6.0.0/016", "region": "x", "service": "AMAZON"}]}"#,
                "prefixes[0].ip_prefix is \"3.6.0.0/016\", which is not an IPv4 prefix such as 192.0.2.0/24, without leading zeros",
            ),
            (
                Plain,
                "10.0.0.0/8 aws eu west # split region\n",
                "line 1 has 4 fields (\"10.0.0.0/8 aws eu west\"), expected PREFIX, PREFIX REGION or PREFIX CLOUD REGION",
            ),
        ];
        for (format, input, expected) in cases {
            assert_eq!(
                &error_message(*format, input),
                expected,
                "{format}: {input}"
            );
        }
    }

    #[test]
    fn leading_zeros_found_in_numbers_and_lengths() {
        for value in [
            "010.0.0.0/8",
            "10.0.0.01",
            "10.0.0.0/08",
            "2001:db8::/032",
            "::ffff:010.0.0.1",
        ] {
            assert!(has_leading_zero(value), "{value}");
        }
        for value in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "2001:0db8::/32",
            "::ffff:10.0.0.1",
            "1.2.3.4.5",
        ] {
            assert!(!has_leading_zero(value), "{value}");
        }
    }

    #[test]
    fn plain_text_invalid_utf8() {
        let error =
            parse(SourceFormat::Plain, b"10.0.0.0/8\n10.1.0.0/16 \xff\n", None).unwrap_err();
        assert_eq!(error, SourceError::InvalidUtf8 { line: 2 });
        assert_eq!(
            error.to_string(),
            "line 2 is not valid UTF-8 (expected a text file)"
        );
    }

    #[test]
    fn plain_text_lines_with_host_bits_are_listed() {
        let input = b"10.0.0.0/8 a r1\n10.1.2.3/16 a r2\n192.0.2.7\n2001:db8::1/32 a r3\n";
        let ranges = parse(SourceFormat::Plain, input, None).unwrap();
        assert_eq!(
            ranges.host_bit_lines(),
            [(2, net("10.1.2.3/16")), (4, net("2001:db8::1/32"))]
        );
        assert!(ranges
            .entries()
            .iter()
            .any(|entry| entry.prefix == net("10.1.0.0/16")));
    }

    #[test]
    fn plain_text_repeated_prefixes_are_listed() {
        let input = b"10.0.0.0/8 a r1\n192.0.2.0/24 a r2\n10.0.0.0/8 a r1\n10.9.0.0/8 b r3\n\
                      10.0.0.0/8 a r1\n10.0.0.0/8\n10.0.0.0/8 c r9\n";
        let ranges = parse(SourceFormat::Plain, input, None).unwrap();
        let repeated: Vec<(usize, usize)> = ranges
            .repeated_lines()
            .iter()
            .map(|repeated| (repeated.line, repeated.earlier_line))
            .collect();
        // Line 5 repeats line 1's label but differs from line 4's, which
        // was in effect. Line 6 has no region, so line 5's label stays
        // for line 7.
        assert_eq!(repeated, [(4, 1), (5, 4), (6, 5), (7, 5)]);
        assert_eq!(ranges.repeated_lines()[0].prefix, net("10.0.0.0/8"));
        assert_eq!(ranges.len(), 2);
    }

    #[test]
    fn plain_text_reports_every_invalid_line() {
        let input = b"10.0.0.0/8 a r1\nfoo\n10.1.0.0/16 a b c\n\xff\n";
        let error = parse(SourceFormat::Plain, input, None).unwrap_err();
        let SourceError::InvalidLines { errors, more } = &error else {
            panic!("expected InvalidLines, got {error:?}");
        };
        assert_eq!(errors.len(), 3);
        assert_eq!(*more, 0);
        assert!(
            matches!(&errors[0], SourceError::InvalidPrefix { field, .. } if field == "line 2")
        );
        assert!(matches!(
            errors[1],
            SourceError::TooManyFields { line: 3, .. }
        ));
        assert_eq!(errors[2], SourceError::InvalidUtf8 { line: 4 });
        let message = error.to_string();
        assert!(
            message.starts_with("3 invalid lines: line 2 is \"foo\""),
            "{message}"
        );
        assert!(message.contains("; line 3 has 4 fields"), "{message}");
        assert!(
            message.ends_with("line 4 is not valid UTF-8 (expected a text file)"),
            "{message}"
        );
    }

    #[test]
    fn plain_text_invalid_lines_are_capped() {
        let input: String = (1..=REPORTED_LINES + 5)
            .map(|n| format!("bad{n}\n"))
            .collect();
        let error = parse(SourceFormat::Plain, input.as_bytes(), None).unwrap_err();
        let SourceError::InvalidLines { errors, more } = &error else {
            panic!("expected InvalidLines, got {error:?}");
        };
        assert_eq!(errors.len(), REPORTED_LINES);
        assert_eq!(*more, 5);
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{} invalid lines: ", REPORTED_LINES + 5)),
            "{message}"
        );
        assert!(message.ends_with("; and 5 more"), "{message}");
    }

    #[test]
    fn empty_sources_are_rejected() {
        let cases = [
            (
                SourceFormat::Aws,
                r#"{"prefixes": [], "ipv6_prefixes": []}"#,
            ),
            (SourceFormat::Gcp, r#"{"prefixes": []}"#),
            (
                SourceFormat::Azure,
                r#"{"values": [{"properties": {"region": "", "addressPrefixes": []}}]}"#,
            ),
            (SourceFormat::Plain, ""),
            (SourceFormat::Plain, "# only a comment\n\n"),
        ];
        for (format, input) in cases {
            let error = parse(format, input.as_bytes(), None).unwrap_err();
            assert_eq!(error, SourceError::Empty { format }, "{input:?}");
        }
        assert_eq!(
            error_message(SourceFormat::Gcp, r#"{"prefixes": []}"#),
            "the gcp range file lists no prefixes (expected at least one; \
             the file may be truncated or in another format)"
        );
    }

    #[test]
    fn format_names_round_trip() {
        for format in SourceFormat::ALL {
            assert_eq!(format.as_str().parse::<SourceFormat>(), Ok(format));
            assert_eq!(
                format.to_string().to_uppercase().parse::<SourceFormat>(),
                Ok(format)
            );
        }
        let error = "xml".parse::<SourceFormat>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown range file format \"xml\" (expected aws, gcp, azure or plain)"
        );
    }

    #[test]
    fn label_display_is_plain_fields() {
        let cases = [
            (Label::new(Some("aws"), Some("eu-west-1")), "aws eu-west-1"),
            (Label::new(Some("aws"), Some("global")), "aws GLOBAL"),
            (Label::new(None, Some("lab-1")), "lab-1"),
            (Label::new(Some(""), None), ""),
        ];
        for (label, text) in cases {
            assert_eq!(label.to_string(), text);
        }
    }

    // Tests over the published range files, read from the directory named by
    // REGISTRY_REDIRECT_DATA_DIR. Each is skipped when its file is absent.

    fn data_file(name: &str) -> Option<Vec<u8>> {
        let Some(dir) = std::env::var_os("REGISTRY_REDIRECT_DATA_DIR") else {
            println!("skipped: REGISTRY_REDIRECT_DATA_DIR is not set, so {name} is not read");
            return None;
        };
        let path = PathBuf::from(dir).join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                println!("skipped: cannot read {}: {error}", path.display());
                None
            }
        }
    }

    /// Checks that every prefix labelled `region`, when no other prefix at
    /// least as specific contains it, gives `region` to its first address,
    /// and that there is at least one such prefix.
    fn assert_region_found(ranges: &LabeledRanges, region: &str) {
        let table = ranges.table();
        let labelled: Vec<(IpNet, bool)> = ranges
            .iter()
            .map(|(prefix, label)| (prefix, label.region() == Some(region)))
            .collect();
        let candidates: Vec<IpNet> = labelled
            .iter()
            .filter(|(_, in_region)| *in_region)
            .map(|(prefix, _)| *prefix)
            .filter(|prefix| {
                !labelled.iter().any(|(other, in_region)| {
                    !in_region
                        && other.prefix_len() >= prefix.prefix_len()
                        && other.contains(&prefix.network())
                })
            })
            .collect();
        assert!(!candidates.is_empty(), "no prefix labelled {region}");

        for prefix in candidates {
            let id = table.lookup(prefix.network()).copied();
            let found = id.and_then(|id| ranges.label(id)).and_then(Label::region);
            assert_eq!(found, Some(region), "{prefix}");
        }
    }

    #[test]
    fn published_aws_file() {
        let Some(bytes) = data_file("aws-ip-ranges.json") else {
            return;
        };
        let ranges = parse(SourceFormat::Aws, &bytes, None).unwrap();
        assert!(ranges
            .iter()
            .any(|(prefix, _)| matches!(prefix, IpNet::V6(_))));
        assert_region_found(&ranges, "eu-west-1");
    }

    #[test]
    fn published_gcp_file() {
        let Some(bytes) = data_file("gcp-cloud.json") else {
            return;
        };
        let ranges = parse(SourceFormat::Gcp, &bytes, None).unwrap();
        assert_region_found(&ranges, "europe-west4");
    }

    #[test]
    fn published_plain_file() {
        let Some(bytes) = data_file("cloud-ranges.txt") else {
            return;
        };
        let ranges = parse(SourceFormat::Plain, &bytes, None).unwrap();
        let ipv6 = ranges
            .entries()
            .iter()
            .filter(|entry| matches!(entry.prefix, IpNet::V6(_)))
            .count();
        assert_eq!(ranges.len(), 26_685);
        assert_eq!(ipv6, 6_848);
        assert_region_found(&ranges, "eu-west-1");
    }
}
