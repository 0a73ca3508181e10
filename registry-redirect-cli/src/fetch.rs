//! `ranges fetch`: downloads the published cloud range files into a
//! directory, and replaces a file there only with a download that passes
//! every check.
//!
//! A download must parse in its format, list at least one prefix, and not
//! list fewer prefixes than the file it replaces by more than the allowed
//! drop. A download that passes is written to a temporary file in the same
//! directory, flushed to disk and renamed over the old file, so that a
//! reader sees either the old file or the new one, never a partial file. A
//! download that fails leaves the old file as it was.
//!
//! ```
//! use registry_redirect_cli::fetch::{FetchSource, SourceUrls};
//!
//! let mut urls = SourceUrls::defaults();
//! assert_eq!(
//!     urls.url(FetchSource::Aws),
//!     Some("https://ip-ranges.amazonaws.com/ip-ranges.json")
//! );
//! // Azure publishes no stable URL, so it is fetched only when given one.
//! assert_eq!(urls.url(FetchSource::Azure), None);
//!
//! // An empty URL turns a source off.
//! urls.set(FetchSource::Gcp, "");
//! let sources: Vec<_> = urls.iter().map(|(source, _)| source.name()).collect();
//! assert_eq!(sources, ["aws"]);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use registry_redirect_core::sources::{self, SourceError, SourceFormat};

use crate::download::{parse_url, DownloadError, Downloader};

/// The default of `--max-drop`: the largest accepted fall in the prefix
/// count, in percent of the old file's count.
pub const DEFAULT_MAX_DROP_PERCENT: f64 = 20.0;

/// A published range file that `ranges fetch` downloads, checks and names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FetchSource {
    /// AWS `ip-ranges.json`.
    Aws,
    /// GCP `cloud.json`.
    Gcp,
    /// Azure Service Tags JSON.
    Azure,
}

impl FetchSource {
    /// Every source, in the order they are fetched and reported.
    pub const ALL: [FetchSource; 3] = [FetchSource::Aws, FetchSource::Gcp, FetchSource::Azure];

    /// Returns the name used by `--source NAME=URL` and `[ranges_fetch]`.
    pub fn name(self) -> &'static str {
        self.format().as_str()
    }

    /// Returns the format the file is checked as.
    pub fn format(self) -> SourceFormat {
        match self {
            FetchSource::Aws => SourceFormat::Aws,
            FetchSource::Gcp => SourceFormat::Gcp,
            FetchSource::Azure => SourceFormat::Azure,
        }
    }

    /// Returns the name of the file written in the output directory.
    pub fn file_name(self) -> &'static str {
        match self {
            FetchSource::Aws => "aws-ip-ranges.json",
            FetchSource::Gcp => "gcp-cloud.json",
            FetchSource::Azure => "azure-service-tags.json",
        }
    }

    /// Returns the URL the cloud publishes the file at. Azure has none: its
    /// download URL changes with every weekly release.
    pub fn default_url(self) -> Option<&'static str> {
        match self {
            FetchSource::Aws => Some("https://ip-ranges.amazonaws.com/ip-ranges.json"),
            FetchSource::Gcp => Some("https://www.gstatic.com/ipranges/cloud.json"),
            FetchSource::Azure => None,
        }
    }
}

impl fmt::Display for FetchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A source name that [`FetchSource`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown range source \"{0}\" (expected aws, gcp or azure)")]
pub struct UnknownSource(pub String);

impl FromStr for FetchSource {
    type Err = UnknownSource;

    /// Parses a source name (`aws`, `gcp` or `azure`, in any case).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        FetchSource::ALL
            .into_iter()
            .find(|source| source.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownSource(name.to_owned()))
    }
}

/// The URL to fetch each source from. A source without a URL is not
/// fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUrls {
    urls: BTreeMap<FetchSource, String>,
}

impl SourceUrls {
    /// Returns the published URLs: AWS and GCP.
    pub fn defaults() -> Self {
        let urls = FetchSource::ALL
            .into_iter()
            .filter_map(|source| Some((source, source.default_url()?.to_owned())))
            .collect();
        SourceUrls { urls }
    }

    /// Sets the URL of `source`. An empty URL turns the source off.
    pub fn set(&mut self, source: FetchSource, url: &str) {
        if url.is_empty() {
            self.urls.remove(&source);
        } else {
            self.urls.insert(source, url.to_owned());
        }
    }

    /// Returns the URL of `source`, or `None` when it is not fetched.
    pub fn url(&self, source: FetchSource) -> Option<&str> {
        self.urls.get(&source).map(String::as_str)
    }

    /// Iterates over the sources to fetch, in [`FetchSource::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (FetchSource, &str)> + '_ {
        self.urls
            .iter()
            .map(|(source, url)| (*source, url.as_str()))
    }

    /// Returns whether no source is left to fetch.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }
}

/// A `--source` argument that is not `NAME=URL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceArgError {
    /// There is no `=`.
    #[error(
        "\"{0}\" has no '=' (expected NAME=URL, such as \
         azure=https://download.example/ServiceTags_Public.json, or NAME= to skip a source)"
    )]
    MissingEquals(String),
    /// The name is not a known source.
    #[error(transparent)]
    UnknownSource(#[from] UnknownSource),
    /// The URL is not an absolute `http` or `https` URL.
    #[error("{0}")]
    InvalidUrl(String),
}

/// Parses `NAME=URL`. An empty URL (`gcp=`) turns the source off.
pub fn parse_source_arg(text: &str) -> Result<(FetchSource, String), SourceArgError> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| SourceArgError::MissingEquals(text.to_owned()))?;
    let source: FetchSource = name.trim().parse()?;
    let url = url.trim();
    check_url(url).map_err(SourceArgError::InvalidUrl)?;
    Ok((source, url.to_owned()))
}

/// Checks a source URL: empty, or an absolute `http` or `https` URL.
/// Returns the error message otherwise.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    parse_url(url).map(drop).map_err(|error| error.to_string())
}

/// Settings of one `ranges fetch` run.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchOptions {
    /// The directory the files are written to.
    pub out: PathBuf,
    /// The largest accepted fall in the prefix count, in percent of the
    /// old file's count, from 0 to 100.
    pub max_drop_percent: f64,
}

/// The reason a source was not updated.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The download failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The download is not a valid range file of the source's format.
    #[error("the download is not a valid {format} range file: {source}")]
    Invalid {
        /// The format it was checked as.
        format: SourceFormat,
        /// The parser's error.
        source: SourceError,
    },
    /// The download lists too few prefixes compared with the old file.
    #[error(
        "the download lists {prefixes} prefixes, {drop:.1}% fewer than the {previous} of the \
         current file, and at most {max_drop}% fewer are accepted (the download may be \
         incomplete; to accept it, run again with a larger --max-drop)"
    )]
    Dropped {
        /// The prefix count of the download.
        prefixes: usize,
        /// The prefix count of the file in the output directory.
        previous: usize,
        /// The fall, in percent.
        drop: f64,
        /// The largest fall accepted, in percent.
        max_drop: f64,
    },
    /// Writing or renaming the new file failed.
    #[error("failed to write {}: {source}", path.display())]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
}

/// A file that was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// The file written.
    pub path: PathBuf,
    /// The distinct prefixes of the new file.
    pub prefixes: usize,
    /// The distinct prefixes of the file it replaced, when there was one
    /// that parsed.
    pub previous: Option<usize>,
    /// The size of the new file.
    pub bytes: usize,
}

/// The outcome of fetching one source.
#[derive(Debug)]
pub struct SourceReport {
    /// The source.
    pub source: FetchSource,
    /// The URL it was fetched from.
    pub url: String,
    /// The file written, or why none was.
    pub result: Result<Updated, FetchError>,
    /// Remarks that do not stop the update, such as an old file that does
    /// not parse and so gives no count to compare with.
    pub warnings: Vec<String>,
}

impl SourceReport {
    /// Returns the line that reports a success, or `None` for a failure.
    pub fn success_line(&self) -> Option<String> {
        let updated = self.result.as_ref().ok()?;
        let before = match updated.previous {
            Some(previous) => format!("before: {previous}"),
            None => "new file".to_owned(),
        };
        Some(format!(
            "{}: updated {} from {}: {} prefixes ({before}), {} bytes",
            self.source,
            updated.path.display(),
            self.url,
            updated.prefixes,
            updated.bytes
        ))
    }

    /// Returns the line that reports a failure, or `None` for a success.
    pub fn failure_line(&self, out: &Path) -> Option<String> {
        let error = self.result.as_ref().err()?;
        let path = out.join(self.source.file_name());
        let old_file = if path.exists() {
            format!("kept the old {}", path.display())
        } else {
            format!("{} was not written", path.display())
        };
        Some(format!(
            "{} from {}: {error}; {old_file}",
            self.source, self.url
        ))
    }
}

/// Fetches every source of `urls` in turn into `options.out`, which is
/// created when missing. One source failing does not stop the others.
pub async fn fetch_all(
    downloader: &Downloader,
    urls: &SourceUrls,
    options: &FetchOptions,
) -> io::Result<Vec<SourceReport>> {
    std::fs::create_dir_all(&options.out)?;
    let mut reports = Vec::new();
    for (source, url) in urls.iter() {
        reports.push(fetch_source(downloader, source, url, options).await);
    }
    Ok(reports)
}

/// Downloads one source, checks it, and replaces its file when it passes.
pub async fn fetch_source(
    downloader: &Downloader,
    source: FetchSource,
    url: &str,
    options: &FetchOptions,
) -> SourceReport {
    let mut warnings = Vec::new();
    let result = async {
        let bytes = downloader.get(url).await?;
        let prefixes = count_prefixes(source, &bytes)?;
        let path = options.out.join(source.file_name());
        let previous = previous_count(source, &path, &mut warnings);
        check_drop(prefixes, previous, options.max_drop_percent)?;
        replace_file(&path, &bytes).map_err(|error| FetchError::Write {
            path: path.clone(),
            source: error,
        })?;
        Ok(Updated {
            path,
            prefixes,
            previous,
            bytes: bytes.len(),
        })
    }
    .await;
    SourceReport {
        source,
        url: url.to_owned(),
        result,
        warnings,
    }
}

/// Counts the prefixes of the file a download would replace. A file that
/// is missing gives `None`. So does one that cannot be read or parsed,
/// with a warning, because the new download should still replace it.
fn previous_count(source: FetchSource, path: &Path, warnings: &mut Vec<String>) -> Option<usize> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
        Err(error) => {
            warnings.push(format!(
                "failed to read the current {}: {error}; the prefix count is not compared",
                path.display()
            ));
            return None;
        }
    };
    match sources::parse(source.format(), &bytes, None) {
        Ok(ranges) => Some(ranges.len()),
        Err(error) => {
            warnings.push(format!(
                "the current {} is not a valid {} range file ({error}); the prefix count is \
                 not compared",
                path.display(),
                source.format()
            ));
            None
        }
    }
}

/// Parses a download and returns its count of distinct prefixes.
pub fn count_prefixes(source: FetchSource, bytes: &[u8]) -> Result<usize, FetchError> {
    let format = source.format();
    sources::parse(format, bytes, None)
        .map(|ranges| ranges.len())
        .map_err(|source| FetchError::Invalid { format, source })
}

/// Rejects a prefix count that is more than `max_drop_percent` below
/// `previous`, the count of the file it would replace.
pub fn check_drop(
    prefixes: usize,
    previous: Option<usize>,
    max_drop_percent: f64,
) -> Result<(), FetchError> {
    let Some(previous) = previous.filter(|&previous| previous > prefixes) else {
        return Ok(());
    };
    // Counts stay far below 2^52, so the conversion is exact.
    let drop = (previous - prefixes) as f64 * 100.0 / previous as f64;
    if drop > max_drop_percent {
        return Err(FetchError::Dropped {
            prefixes,
            previous,
            drop,
            max_drop: max_drop_percent,
        });
    }
    Ok(())
}

/// Replaces `path` with `bytes`: writes a temporary file in the same
/// directory, flushes it to disk, renames it over `path`, then flushes the
/// directory so that the rename survives a crash.
fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));

    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;

    // A directory opened read-only can be synced on Linux and the BSDs.
    std::fs::File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })?
    .sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS: &str = r#"{"prefixes": [
        {"ip_prefix": "192.0.2.0/24", "region": "eu-west-1", "service": "EC2"},
        {"ip_prefix": "198.51.100.0/24", "region": "us-east-1", "service": "EC2"}
    ]}"#;

    #[test]
    fn source_names_parse_in_any_case() {
        for source in FetchSource::ALL {
            assert_eq!(source.name().parse::<FetchSource>(), Ok(source));
            assert_eq!(
                source.name().to_uppercase().parse::<FetchSource>(),
                Ok(source)
            );
        }
        assert_eq!(
            "oracle".parse::<FetchSource>().unwrap_err().to_string(),
            "unknown range source \"oracle\" (expected aws, gcp or azure)"
        );
    }

    #[test]
    fn source_arguments_parse_or_say_why() {
        assert_eq!(
            parse_source_arg("azure=http://127.0.0.1:8080/tags.json"),
            Ok((
                FetchSource::Azure,
                "http://127.0.0.1:8080/tags.json".to_owned()
            ))
        );
        assert_eq!(
            parse_source_arg("gcp="),
            Ok((FetchSource::Gcp, String::new()))
        );
        assert_eq!(
            parse_source_arg("aws"),
            Err(SourceArgError::MissingEquals("aws".to_owned()))
        );
        assert!(matches!(
            parse_source_arg("oracle=https://example.com/a.json"),
            Err(SourceArgError::UnknownSource(_))
        ));
        assert!(matches!(
            parse_source_arg("aws=ftp://example.com/a.json"),
            Err(SourceArgError::InvalidUrl(_))
        ));
    }

    #[test]
    fn drop_check_limits_fall() {
        // (previous count, max drop %, accepted); the download has 2 prefixes.
        let cases = [
            (None, 20.0, true),
            (Some(2), 0.0, true),
            (Some(1), 0.0, true),
            (Some(3), 20.0, false),
            (Some(3), 34.0, true),
            (Some(4), 50.0, true),
            (Some(4), 49.9, false),
        ];
        for (previous, max_drop, accepted) in cases {
            let result = check_drop(2, previous, max_drop);
            assert_eq!(
                result.is_ok(),
                accepted,
                "previous {previous:?}, max drop {max_drop}: {result:?}"
            );
        }
    }

    #[test]
    fn drop_error_names_counts_and_flag() {
        let error = check_drop(2, Some(10), 20.0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the download lists 2 prefixes, 80.0% fewer than the 10 of the current file, and at \
             most 20% fewer are accepted (the download may be incomplete; to accept it, run \
             again with a larger --max-drop)"
        );
    }

    #[test]
    fn prefix_count_needs_the_source_format() {
        assert_eq!(count_prefixes(FetchSource::Aws, AWS.as_bytes()).unwrap(), 2);
        let error = count_prefixes(FetchSource::Gcp, AWS.as_bytes()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the download is not a valid gcp range file: "),
            "{error}"
        );
    }

    #[test]
    fn replace_file_swaps_content_and_leaves_no_temporary() {
        let dir =
            std::env::temp_dir().join(format!("registry-redirect-replace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("aws-ip-ranges.json");
        std::fs::write(&path, "old").unwrap();

        replace_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["aws-ip-ranges.json"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
