//! `serve --watch`: reloads the configuration when the configuration file,
//! a range file or TLS certificate or key file it names, or a certificate
//! or key file given on the command line, changes on disk.
//!
//! Editors and Kubernetes replace files rather than write them in place, so
//! the watcher never watches a file itself, whose watch would end with the
//! replaced inode. It watches the directories that contain the files, and
//! matches events by file name:
//!
//! - An editor that saves by rename writes a temporary file and renames it
//!   over the old one, which the directory reports as a move to the file's
//!   name.
//! - A Kubernetes ConfigMap volume contains `config.toml -> ..data/config.toml`
//!   and `..data -> ..2026_12_04_10_00_00.123456789/`. An update writes a new
//!   timestamped directory and renames a new `..data` link over the old
//!   one, so no event names `config.toml`. The watcher follows each file's
//!   chain of symbolic links, and watches the names of the links in it
//!   (here `..data`) and the directory of the file the chain ends at.
//!
//! Events arrive in bursts (a rename-save alone makes several), so a check
//! runs once no event has arrived for the quiet period, or after
//! [`MAX_DELAY`] of continuous events. A check hashes the watched files
//! (SHA-256) and reloads through [`Reloader::reload`],
//! exactly as `SIGHUP` does, only when a hash changed since the previous
//! check. Touching a file therefore does not reload it, and an invalid file
//! is tried once, logged with its errors, and the previous policy keeps
//! serving. After every check the watcher finds the files and links again,
//! because the new configuration may name other files and a new ConfigMap
//! or Secret version ends in another directory.
//!
//! NOTE: notify 8.2 logs `Unable to remove the path from the watches` at
//! WARN when a watched directory is removed while its parent is watched,
//! as the kubelet does with the old version on every ConfigMap update. The
//! watches are still right; `--log-level info,notify=error` hides the line.
//!
//! ```
//! use std::time::Duration;
//! use registry_redirect_cli::config::Config;
//! use registry_redirect_cli::serve::Reloader;
//! use registry_redirect_cli::watch::{watch_files, DEFAULT_QUIET_PERIOD};
//! use registry_redirect_tower::PolicyHandle;
//!
//! # let dir = std::env::temp_dir().join(format!("watch-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("config.toml");
//! std::fs::write(&path, "default_upstream = \"k8s\"\n[upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n").unwrap();
//! let config = Config::load(&path).unwrap();
//! let handle = PolicyHandle::new(config.policy.clone());
//! let reloader = Reloader::new(path.clone(), handle, None, &config);
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // Watches until `watching` is dropped.
//! let watching = watch_files(reloader, Vec::new(), DEFAULT_QUIET_PERIOD).unwrap();
//! assert_eq!(watching.files(), [path]);
//! # });
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use ring::digest::{digest, SHA256};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::serve::Reloader;

/// The time without events after which the watcher checks the files.
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_millis(200);

/// The maximum time a check waits while events keep arriving, so that a
/// file rewritten without pause is still reloaded.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// The maximum number of symbolic links followed from one file, as a guard
/// against loops. Linux itself stops at 40.
const MAX_LINK_HOPS: usize = 40;

/// An error that kept file watching from starting.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The operating system's file events could not be set up, for example
    /// because the inotify instance limit
    /// (`/proc/sys/fs/inotify/max_user_instances`) is reached.
    #[error("failed to start watching the configuration files: {0}")]
    Start(notify::Error),
}

/// The files and directories that one check found to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Targets {
    /// The configuration file, each file it names, as the configuration
    /// resolves them, and the fixed files.
    files: Vec<PathBuf>,
    /// The directories to watch: those of the files, of the links on the
    /// way to them, and of the files the links end at.
    directories: BTreeSet<PathBuf>,
    /// The file names whose events start a check: the files' own names and
    /// the names of the links on the way to them.
    names: BTreeSet<OsString>,
}

/// The content of each watched file when it was last checked: its SHA-256,
/// or `None` when it could not be read.
type Fingerprint = Vec<(PathBuf, Option<Vec<u8>>)>;

/// File watching of a running server. Dropping it stops the watching.
pub struct FileWatch {
    task: JoinHandle<()>,
    files: Vec<PathBuf>,
}

impl FileWatch {
    /// Returns the files watched when watching started: the configuration
    /// file, each range file, then the TLS certificate and key file it
    /// names, then the fixed files.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the configuration file of `reloader`, the range files
/// and TLS certificate and key files it names, and `fixed_files`, and
/// reloads through `reloader` when their content changes. `fixed_files` are
/// files that the reload reads but the configuration file does not name,
/// such as the certificate and key of `--tls-cert` and `--tls-key`. `quiet`
/// is the time without events after which the files are checked. Needs a
/// Tokio runtime.
pub fn watch_files(
    reloader: Reloader,
    fixed_files: Vec<PathBuf>,
    quiet: Duration,
) -> Result<FileWatch, WatchError> {
    let names = Arc::new(RwLock::new(BTreeSet::new()));
    let pending = Arc::new(Notify::new());
    let watcher = {
        let names = Arc::clone(&names);
        let pending = Arc::clone(&pending);
        notify::recommended_watcher(move |event: notify::Result<Event>| {
            if is_relevant(&event, &names) {
                pending.notify_one();
            }
        })
        .map_err(WatchError::Start)?
    };

    let mut state = WatchState {
        watcher,
        names,
        watched: BTreeSet::new(),
        named_paths: Vec::new(),
        fixed_files,
        targets: Targets::default(),
        fingerprint: Vec::new(),
    };
    // NOTE: the server loaded the configuration before this point, so a
    // write in between is reloaded only with the next change or SIGHUP.
    let scan = scan_files(reloader.path(), Vec::new(), &state.fixed_files);
    state.fingerprint = state.refresh(scan);
    let files = state.targets.files.clone();
    tracing::info!(
        config = %reloader.path().display(),
        files = files.len(),
        directories = state.watched.len(),
        quiet_ms = quiet.as_millis(),
        "watching the configuration and range files for changes"
    );

    let task = tokio::spawn(async move {
        loop {
            pending.notified().await;
            wait_for_quiet(&pending, quiet).await;
            state.check(&reloader).await;
        }
    });
    Ok(FileWatch { task, files })
}

/// Returns whether `event` may have changed a watched file. Errors and events
/// that ask for a rescan (the kernel's event queue overflowed) count, so
/// that a lost event never leaves an old policy serving.
fn is_relevant(event: &notify::Result<Event>, names: &RwLock<BTreeSet<OsString>>) -> bool {
    let event = match event {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "file watching reported an error; checking the files");
            return true;
        }
    };
    if event.need_rescan() {
        return true;
    }
    // Opening and reading a file changes nothing, and the checks read the
    // files themselves: counting those events would start a check after
    // every check. A write in place also shows as a modification.
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    let Ok(names) = names.read() else {
        return true;
    };
    event
        .paths
        .iter()
        .filter_map(|path| path.file_name())
        .any(|name| names.contains(name))
}

/// Waits until no event has arrived for `quiet`, or for [`MAX_DELAY`].
async fn wait_for_quiet(pending: &Notify, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + MAX_DELAY;
    loop {
        let quiet_end = tokio::time::Instant::now() + quiet;
        if quiet_end >= deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        tokio::select! {
            _ = pending.notified() => {}
            _ = tokio::time::sleep_until(quiet_end) => return,
        }
    }
}

/// The state of the watching task between checks.
struct WatchState {
    watcher: RecommendedWatcher,
    /// The names that [`is_relevant`] matches, shared with the watcher's
    /// thread.
    names: Arc<RwLock<BTreeSet<OsString>>>,
    /// The directories the watcher watches now.
    watched: BTreeSet<PathBuf>,
    /// The paths of the files that the last configuration file that parsed
    /// as TOML names, kept while the file does not parse.
    named_paths: Vec<String>,
    fixed_files: Vec<PathBuf>,
    targets: Targets,
    fingerprint: Fingerprint,
}

impl WatchState {
    /// Updates what is watched, hashes the files, and reloads when a hash
    /// changed since the previous check.
    ///
    /// The hashes are taken before the reload reads the files. A write
    /// between the two makes the next check see a changed hash and reload
    /// again, so no change is lost, at the cost of one extra reload.
    async fn check(&mut self, reloader: &Reloader) {
        // The files are read on a blocking thread, because a read may never
        // return (a FIFO or a hung network file system in place of a file).
        // On a runtime worker, such a read would stall the worker's requests.
        let config = reloader.path().to_path_buf();
        let named_paths = self.named_paths.clone();
        let fixed_files = self.fixed_files.clone();
        let scanned =
            tokio::task::spawn_blocking(move || scan_files(&config, named_paths, &fixed_files))
                .await;
        let scan = match scanned {
            Ok(scan) => scan,
            Err(error) => {
                tracing::error!(
                    config = %reloader.path().display(),
                    %error,
                    "reading the watched files failed; not reloading"
                );
                return;
            }
        };

        let current = self.refresh(scan);
        if current == self.fingerprint {
            tracing::debug!(
                config = %reloader.path().display(),
                "watched files changed on disk but their content did not; not reloading"
            );
            return;
        }
        self.fingerprint = current;
        reloader.reload("file change").await;
    }

    /// Takes the files and links that `scan` found, watches the directories
    /// that changed, and returns the scan's fingerprint.
    fn refresh(&mut self, scan: Scan) -> Fingerprint {
        self.named_paths = scan.named_paths;
        self.targets = scan.targets;

        if let Ok(mut names) = self.names.write() {
            names.clone_from(&self.targets.names);
        }
        let stale: Vec<PathBuf> = self
            .watched
            .difference(&self.targets.directories)
            .cloned()
            .collect();
        for directory in stale {
            // Removing a directory (an old ConfigMap version) ends its watch
            // by itself, and notify then warns of a watch it cannot find.
            if directory.exists() {
                if let Err(error) = self.watcher.unwatch(&directory) {
                    tracing::debug!(directory = %directory.display(), %error, "failed to stop watching a directory");
                }
            }
            self.watched.remove(&directory);
        }
        for directory in &self.targets.directories {
            if self.watched.contains(directory) {
                continue;
            }
            match self.watcher.watch(directory, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(directory.clone());
                }
                Err(error) => tracing::warn!(
                    directory = %directory.display(),
                    %error,
                    "failed to watch a directory; changes in it reload only on SIGHUP"
                ),
            }
        }
        scan.fingerprint
    }
}

/// The watched files and their content, as one look at the disk found them.
struct Scan {
    /// The files that the configuration file names, or the previous list
    /// when the file cannot be read or is not TOML.
    named_paths: Vec<String>,
    targets: Targets,
    fingerprint: Fingerprint,
}

/// Reads the configuration file `config` for the files it names, finds the
/// files and links to watch, and hashes the files. Keeps
/// `previous_named_paths` when the configuration file cannot be read or is
/// not TOML. Blocks on file I/O.
fn scan_files(config: &Path, previous_named_paths: Vec<String>, fixed_files: &[PathBuf]) -> Scan {
    let named_paths = read_named_files(config).unwrap_or(previous_named_paths);
    let targets = find_targets(config, &named_paths, fixed_files);
    let fingerprint = fingerprint(&targets.files);
    Scan {
        named_paths,
        targets,
        fingerprint,
    }
}

/// The parts of a configuration file that name other files.
#[derive(Deserialize)]
struct NamedFiles {
    #[serde(default)]
    client_ranges: Vec<RangeEntry>,
    tls: Option<TlsEntry>,
}

#[derive(Deserialize)]
struct RangeEntry {
    path: Option<String>,
}

#[derive(Deserialize)]
struct TlsEntry {
    cert_file: Option<String>,
    key_file: Option<String>,
}

/// Reads the files that the configuration file names: the `path` of each
/// `[[client_ranges]]` entry, then `tls.cert_file` and `tls.key_file`.
/// Returns `None` when the file cannot be read or is not TOML. The rest of
/// the file is not checked here: a reload reports its errors.
fn read_named_files(config: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(config).ok()?;
    let parsed: NamedFiles = toml::from_str(&text).ok()?;
    let mut paths: Vec<String> = parsed
        .client_ranges
        .into_iter()
        .filter_map(|entry| entry.path)
        .collect();
    if let Some(tls) = parsed.tls {
        paths.extend(tls.cert_file);
        paths.extend(tls.key_file);
    }
    Some(paths)
}

/// Lists the files, directories and names to watch for the configuration
/// file `config`, the files it names at `named_paths`, which are relative
/// to the directory of `config` unless absolute, as [`crate::config`]
/// resolves them, and `fixed_files`.
fn find_targets(config: &Path, named_paths: &[String], fixed_files: &[PathBuf]) -> Targets {
    let directory = config.parent().unwrap_or(Path::new(""));
    let mut files = vec![config.to_path_buf()];
    files.extend(named_paths.iter().map(|path| directory.join(path)));
    files.extend(fixed_files.iter().cloned());

    let mut targets = Targets {
        files,
        ..Targets::default()
    };
    for file in targets.files.clone() {
        add_link_chain(&file, &mut targets);
    }
    targets
}

/// Adds the directory and name of `file`, and of every symbolic link
/// followed on the way to the file it ends at, to `targets`. Only the last
/// component of each path is followed here. A link in a directory
/// component, such as `..data` in `..data/config.toml`, is found because the
/// link that points into it is relative and its first component is
/// recorded as a name.
fn add_link_chain(file: &Path, targets: &mut Targets) {
    let mut current = file.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        let directory = watch_directory(&current);
        // A watch on a path through a link stays on the directory the link
        // pointed to when the watch began, so watch the resolved directory.
        let resolved = std::fs::canonicalize(&directory).unwrap_or_else(|_| directory.clone());
        targets.directories.insert(resolved);
        if let Some(name) = current.file_name() {
            targets.names.insert(name.to_os_string());
        }

        let Ok(link) = std::fs::read_link(&current) else {
            break;
        };
        if link.is_relative() {
            if let Some(first) = link.components().next() {
                targets.names.insert(first.as_os_str().to_os_string());
            }
        }
        current = directory.join(link);
    }

    // The file the chain ends at, with every directory link resolved,
    // such as the timestamped directory of a ConfigMap.
    if let Ok(resolved) = std::fs::canonicalize(file) {
        targets.directories.insert(watch_directory(&resolved));
        if let Some(name) = resolved.file_name() {
            targets.names.insert(name.to_os_string());
        }
    }
}

/// Returns the directory to watch for `file`: its parent, or `.` for a bare
/// file name.
fn watch_directory(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Hashes the content of each file in `files`.
fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|file| {
            let hash = std::fs::read(file)
                .ok()
                .map(|bytes| digest(&SHA256, &bytes).as_ref().to_vec());
            (file.clone(), hash)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::time::Instant;

    use http::{HeaderMap, Method};
    use registry_redirect_core::{decide, RequestView};
    use registry_redirect_tower::PolicyHandle;

    use super::*;
    use crate::config::Config;

    /// Upper bound for a change on disk to reach the policy.
    const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

    /// A short quiet period, so that the tests run quickly.
    const TEST_QUIET: Duration = Duration::from_millis(50);

    /// Returns a configuration that sends everything to
    /// `http://127.0.0.1:9/NAME`.
    fn policy_text(name: &str) -> String {
        format!(
            "default_upstream = \"main\"\n[upstreams.main]\nurl = \"http://127.0.0.1:9/{name}\"\n"
        )
    }

    /// Returns the `Location` that the policy in `handle` gives a manifest
    /// request.
    fn location(handle: &PolicyHandle) -> String {
        let policy = handle.load_full();
        let headers = HeaderMap::new();
        let request = RequestView {
            method: &Method::GET,
            path: "/v2/pause/manifests/3.10",
            query: None,
            host: None,
            peer: Some("127.0.0.1".parse().unwrap()),
            headers: &headers,
            version: http::Version::HTTP_11,
        };
        decide(&policy, &request)
            .location()
            .unwrap_or_default()
            .to_owned()
    }

    fn expected_location(name: &str) -> String {
        format!("http://127.0.0.1:9/{name}/v2/pause/manifests/3.10")
    }

    /// Waits until the policy in `handle` redirects to upstream `name`.
    async fn wait_for_policy(handle: &PolicyHandle, name: &str) {
        let started = Instant::now();
        while location(handle) != expected_location(name) {
            assert!(
                started.elapsed() < RELOAD_DEADLINE,
                "policy still redirects to {}, expected upstream {name}",
                location(handle)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts watching `config` and returns the handle that reloads fill.
    fn start_watching(config: &Path) -> (PolicyHandle, FileWatch) {
        let loaded = Config::load(config).unwrap();
        let handle = PolicyHandle::new(loaded.policy.clone());
        let reloader = Reloader::new(config.to_path_buf(), handle.clone(), None, &loaded);
        let watching = watch_files(reloader, Vec::new(), TEST_QUIET).unwrap();
        (handle, watching)
    }

    /// Writes `text` to a temporary file beside `path` and renames it over
    /// `path`, as editors and `ranges fetch` save.
    fn save_by_rename(path: &Path, text: &str) {
        let staged = path.with_extension("swp");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, path).unwrap();
    }

    /// Writes a ConfigMap version directory with `files` and makes it the
    /// current one by renaming a new `..data` link over the old one, as the
    /// kubelet does.
    fn publish_configmap_version(dir: &Path, version: &str, files: &[(&str, &str)]) {
        let version_dir = dir.join(version);
        std::fs::create_dir(&version_dir).unwrap();
        for (name, text) in files {
            std::fs::write(version_dir.join(name), text).unwrap();
        }
        let staged = dir.join("..data_tmp");
        symlink(version, &staged).unwrap();
        std::fs::rename(&staged, dir.join("..data")).unwrap();
    }

    #[tokio::test]
    async fn rename_save_is_followed() {
        let dir = scratch_dir("rename-save");
        let config = dir.join("config.toml");
        std::fs::write(&config, policy_text("first")).unwrap();
        let (handle, _watching) = start_watching(&config);

        save_by_rename(&config, &policy_text("second"));
        wait_for_policy(&handle, "second").await;

        // Some editors move the old file away and write a new one.
        std::fs::rename(&config, dir.join("config.toml~")).unwrap();
        std::fs::write(&config, policy_text("third")).unwrap();
        wait_for_policy(&handle, "third").await;

        // Others write in place.
        std::fs::write(&config, policy_text("fourth")).unwrap();
        wait_for_policy(&handle, "fourth").await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn configmap_symlink_swap_is_followed() {
        let dir = scratch_dir("configmap-swap");
        publish_configmap_version(
            &dir,
            "..2026_12_04_10_00_00.000000001",
            &[("config.toml", &policy_text("first"))],
        );
        symlink("..data/config.toml", dir.join("config.toml")).unwrap();
        let (handle, _watching) = start_watching(&dir.join("config.toml"));

        publish_configmap_version(
            &dir,
            "..2026_12_04_10_01_00.000000002",
            &[("config.toml", &policy_text("second"))],
        );
        wait_for_policy(&handle, "second").await;
        std::fs::remove_dir_all(dir.join("..2026_12_04_10_00_00.000000001")).unwrap();

        // The old version is removed only after the policy changed, so the
        // `..data` rename alone must have started the reload. The watch
        // moved to the new version, so a second update is seen too.
        publish_configmap_version(
            &dir,
            "..2026_12_04_10_02_00.000000003",
            &[("config.toml", &policy_text("third"))],
        );
        wait_for_policy(&handle, "third").await;
        std::fs::remove_dir_all(dir.join("..2026_12_04_10_01_00.000000002")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn range_file_change_reloads() {
        let dir = scratch_dir("range-change");
        let config = dir.join("config.toml");
        let text = "default_upstream = \"main\"\n\
                    [[client_ranges]]\nformat = \"plain\"\npath = \"ranges.txt\"\n\
                    [upstreams.main]\nurl = \"http://127.0.0.1:9/main\"\n\
                    [upstreams.lab]\nurl = \"http://127.0.0.1:9/lab\"\n\
                    [[rules]]\nname = \"lab\"\nclouds = [\"test\"]\nregions = [\"lab-1\"]\nupstream = \"lab\"\n";
        std::fs::write(&config, text).unwrap();
        std::fs::write(dir.join("ranges.txt"), "127.0.0.0/8 test other-1\n").unwrap();
        let (handle, watching) = start_watching(&config);
        assert_eq!(watching.files(), [config.clone(), dir.join("ranges.txt")]);
        wait_for_policy(&handle, "main").await;

        save_by_rename(&dir.join("ranges.txt"), "127.0.0.0/8 test lab-1\n");
        wait_for_policy(&handle, "lab").await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn fixed_file_change_reloads() {
        let dir = scratch_dir("fixed-file");
        let config = dir.join("config.toml");
        std::fs::write(&config, policy_text("first")).unwrap();
        let certificate = dir.join("cert.pem");
        std::fs::write(&certificate, "first certificate").unwrap();
        let loaded = Config::load(&config).unwrap();
        let handle = PolicyHandle::new(loaded.policy.clone());
        let reloader = Reloader::new(config.clone(), handle.clone(), None, &loaded);
        let watching = watch_files(reloader, vec![certificate.clone()], TEST_QUIET).unwrap();
        assert_eq!(watching.files(), [config.clone(), certificate.clone()]);
        let before = handle.load_full();

        // A reload stores a new policy even when it equals the old one.
        save_by_rename(&certificate, "second certificate");
        let started = Instant::now();
        while Arc::ptr_eq(&before, &handle.load_full()) {
            assert!(
                started.elapsed() < RELOAD_DEADLINE,
                "no reload after the certificate changed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn unchanged_content_does_not_reload() {
        let dir = scratch_dir("unchanged");
        let config = dir.join("config.toml");
        std::fs::write(&config, policy_text("first")).unwrap();
        let (handle, _watching) = start_watching(&config);
        let before = handle.load_full();

        save_by_rename(&config, &policy_text("first"));
        std::fs::write(&config, policy_text("first")).unwrap();
        tokio::time::sleep(TEST_QUIET * 10).await;

        assert!(Arc::ptr_eq(&before, &handle.load_full()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn invalid_file_keeps_policy() {
        let dir = scratch_dir("invalid");
        let config = dir.join("config.toml");
        std::fs::write(&config, policy_text("first")).unwrap();
        let (handle, _watching) = start_watching(&config);

        save_by_rename(&config, "default_upstream = \"nowhere\"\n");
        tokio::time::sleep(TEST_QUIET * 10).await;
        assert_eq!(location(&handle), expected_location("first"));

        // The next valid file is loaded.
        save_by_rename(&config, &policy_text("second"));
        wait_for_policy(&handle, "second").await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Opens the FIFO at `path` for writing and closes it again whenever a
    /// reader waits in `open`, which returns that reader an empty file.
    /// Starts after `delay` and stops when `stop` is set or after 10 s.
    fn release_fifo_readers(
        path: PathBuf,
        delay: Duration,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            std::thread::sleep(delay);
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(10)
            {
                // Opening the writing end without blocking fails (ENXIO)
                // while no reader has the FIFO open.
                let _ = runtime.block_on(async {
                    tokio::net::unix::pipe::OpenOptions::new().open_sender(&path)
                });
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    }

    #[tokio::test]
    async fn fifo_config_does_not_stall_runtime() {
        let dir = scratch_dir("fifo");
        let config = dir.join("config.toml");
        std::fs::write(&config, policy_text("first")).unwrap();
        let (handle, _watching) = start_watching(&config);

        // Opening a FIFO for reading blocks until a writer opens it.
        std::fs::remove_file(&config).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&config)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {} failed", config.display());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let releaser =
            release_fifo_readers(config.clone(), Duration::from_secs(2), Arc::clone(&stop));

        // This test's runtime has one thread. A check that read the FIFO on
        // it would hold this timer until the releaser starts, 2 s later.
        let started = Instant::now();
        tokio::time::sleep(TEST_QUIET * 10).await;
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(1500),
            "a 500 ms timer took {elapsed:?} while the configuration file was a FIFO"
        );
        assert_eq!(location(&handle), expected_location("first"));

        // A reader blocked on the FIFO stays blocked when a rename replaces
        // it, so the releaser must return the blocked reads first. Then a
        // valid file is loaded again.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        save_by_rename(&config, &policy_text("second"));
        wait_for_policy(&handle, "second").await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        releaser.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "registry-redirect-watch-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn named_files_read_from_toml() {
        let dir = scratch_dir("range-paths");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            "default_upstream = \"a\"\n\
             [[client_ranges]]\nformat = \"plain\"\npath = \"ranges/a.txt\"\n\
             [[client_ranges]]\nformat = \"aws\"\npath = \"/srv/aws.json\"\n\
             [tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            read_named_files(&config),
            Some(vec![
                "ranges/a.txt".to_owned(),
                "/srv/aws.json".to_owned(),
                "tls/cert.pem".to_owned(),
                "tls/key.pem".to_owned(),
            ])
        );

        std::fs::write(&config, "this is = not [toml").unwrap();
        assert_eq!(read_named_files(&config), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn targets_of_plain_files() {
        let dir = scratch_dir("plain");
        let config = dir.join("config.toml");
        std::fs::write(&config, "").unwrap();
        let targets = find_targets(
            &config,
            &["ranges/a.txt".to_owned()],
            &[PathBuf::from("/etc/tls/cert.pem")],
        );

        assert_eq!(
            targets.files,
            [
                config.clone(),
                dir.join("ranges/a.txt"),
                PathBuf::from("/etc/tls/cert.pem")
            ]
        );
        assert!(targets.directories.contains(Path::new("/etc/tls")));
        assert!(targets.directories.contains(&dir));
        assert!(targets.directories.contains(&dir.join("ranges")));
        assert!(targets.names.contains(&OsString::from("config.toml")));
        assert!(targets.names.contains(&OsString::from("a.txt")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn targets_follow_configmap_links() {
        let dir = scratch_dir("configmap");
        let version = dir.join("..2026_12_04_10_00_00.000000001");
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("config.toml"), "").unwrap();
        symlink("..2026_12_04_10_00_00.000000001", dir.join("..data")).unwrap();
        symlink("..data/config.toml", dir.join("config.toml")).unwrap();

        let targets = find_targets(&dir.join("config.toml"), &[], &[]);

        assert!(targets.names.contains(&OsString::from("..data")));
        assert!(targets.names.contains(&OsString::from("config.toml")));
        assert!(targets.directories.contains(&dir));
        let resolved_dir = std::fs::canonicalize(&version).unwrap();
        assert!(targets.directories.contains(&resolved_dir));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn relevant_events_by_kind_and_name() {
        use notify::event::{AccessKind, CreateKind, ModifyKind, RenameMode};

        let names = RwLock::new(BTreeSet::from([
            OsString::from("config.toml"),
            OsString::from("..data"),
        ]));
        let event = |kind, path: &str| Ok(Event::new(kind).add_path(PathBuf::from(path)));
        let cases: [(&str, notify::Result<Event>, bool); 6] = [
            (
                "rename onto a watched name",
                event(
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                    "/etc/rr/config.toml",
                ),
                true,
            ),
            (
                "ConfigMap ..data swap",
                event(
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                    "/etc/rr/..data",
                ),
                true,
            ),
            (
                "another file",
                event(EventKind::Create(CreateKind::File), "/etc/rr/other.toml"),
                false,
            ),
            (
                "a read of a watched file",
                event(EventKind::Access(AccessKind::Any), "/etc/rr/config.toml"),
                false,
            ),
            (
                "an overflowed event queue",
                Ok(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)),
                true,
            ),
            (
                "an error",
                Err(notify::Error::generic("inotify failed")),
                true,
            ),
        ];
        for (case, event, expected) in cases {
            assert_eq!(is_relevant(&event, &names), expected, "{case}");
        }
    }

    #[test]
    fn fingerprint_ignores_touch() {
        let dir = scratch_dir("fingerprint");
        let file = dir.join("config.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let before = fingerprint(std::slice::from_ref(&file));

        std::fs::write(&file, "a = 1\n").unwrap();
        assert_eq!(fingerprint(std::slice::from_ref(&file)), before);

        std::fs::write(&file, "a = 2\n").unwrap();
        assert_ne!(fingerprint(std::slice::from_ref(&file)), before);

        std::fs::remove_file(&file).unwrap();
        assert_eq!(fingerprint(std::slice::from_ref(&file)), [(file, None)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
