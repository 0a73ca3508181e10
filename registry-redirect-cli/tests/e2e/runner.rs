//! Runs an end-to-end script from `tests/e2e/` with the `registry-redirect`
//! binary, after checking that this machine can run it.
//!
//! The scripts need root and the Debian packages iproute2, docker-registry,
//! skopeo, curl and jq, and some scripts more (their callers list them).
//! Without them the test fails and names the packages to install, unless
//! `REGISTRY_REDIRECT_SKIP_E2E=1` is set, in which case it skips.

use std::env;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// Tools the script runs, with the Debian package that installs each.
const REQUIRED_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("curl", "curl"),
    ("jq", "jq"),
];

/// Upper bound for a whole script. A passing run takes seconds (the region
/// test about 10 s on 2 cores), and each step inside a script has its own
/// timeout well below this.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(600);

/// Time the script gets after SIGTERM to stop its servers and delete its
/// namespaces before it is killed.
const CLEANUP_GRACE: Duration = Duration::from_secs(150);

const SKIP_VARIABLE: &str = "REGISTRY_REDIRECT_SKIP_E2E";

fn is_on_path(tool: &str) -> bool {
    let Some(path) = env::var_os("PATH") else {
        return false;
    };
    env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

/// Returns whether the effective user is root. `/proc/self` is owned by the
/// effective uid of the process reading it.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// Lists what keeps this machine from running the script, one entry per
/// problem. `extra_tools` are the script's tools beyond `REQUIRED_TOOLS`.
fn missing_prerequisites(extra_tools: &[(&str, &str)]) -> Vec<String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root privileges (the script creates network namespaces)".to_string());
    }

    let mut packages: Vec<&str> = REQUIRED_TOOLS
        .iter()
        .chain(extra_tools)
        .filter(|(tool, _)| !is_on_path(tool))
        .map(|(_, package)| *package)
        .collect();
    packages.sort_unstable();
    packages.dedup();
    if !packages.is_empty() {
        missing.push(format!(
            "Debian packages {} (apt-get install -y --no-install-recommends {})",
            packages.join(", "),
            packages.join(" ")
        ));
    }
    missing
}

/// Runs `script` with `args`, its output going straight to this process's
/// stdout and stderr, and waits at most `deadline`. Past the deadline the
/// script gets SIGTERM so that its trap cleans up, then SIGKILL.
fn run_with_deadline(script: &Path, args: &[&str], deadline: Duration) -> ExitStatus {
    let mut child = Command::new("bash")
        .arg(script)
        .args(args)
        .spawn()
        .unwrap_or_else(|error| panic!("could not start bash {}: {error}", script.display()));

    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(error) => panic!("could not wait for {}: {error}", script.display()),
        }
        if started.elapsed() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }

    // std has no SIGTERM, and Child::kill sends SIGKILL, which would skip
    // the script's cleanup trap.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let terminated = Instant::now();
    while terminated.elapsed() < CLEANUP_GRACE {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "{} did not finish within {}s and was stopped",
        script.display(),
        deadline.as_secs()
    );
}

/// Runs `tests/e2e/{script}` with the binary under test and asserts that it
/// passed. `name` names the test in messages, and `extra_tools` lists the
/// script's tools beyond `REQUIRED_TOOLS`, each with its Debian package.
pub fn run_script(name: &str, script: &str, extra_tools: &[(&str, &str)]) {
    if env::var(SKIP_VARIABLE).as_deref() == Ok("1") {
        eprintln!("e2e {name} test skipped because {SKIP_VARIABLE}=1");
        return;
    }

    let missing = missing_prerequisites(extra_tools);
    assert!(
        missing.is_empty(),
        "the end-to-end {name} test cannot run on this machine; it needs: {}. \
         Set {SKIP_VARIABLE}=1 to skip it.",
        missing.join("; ")
    );

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e")
        .join(script);
    let binary = env!("CARGO_BIN_EXE_registry-redirect");
    let status = run_with_deadline(&script, &[binary], SCRIPT_DEADLINE);

    assert!(
        status.success(),
        "{} failed ({status}); its output above names the failing check",
        script.display()
    );
}
