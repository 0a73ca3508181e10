//! Writes the seed corpus of the structured targets from its readable form:
//! `seeds/decide.txt` to `corpus/decide/`, `seeds/client_address.txt` to
//! `corpus/client_address/`. Run it after editing a seed file:
//!
//! ```text
//! cargo run --manifest-path registry-redirect-core/fuzz/Cargo.toml --bin write-seeds
//! ```
//!
//! A seed file contains blocks. `=== NAME` starts one and names its corpus
//! file. The next line is `peer: ADDRESS` (or `peer: none`). In
//! `client_address.txt`, a line `header: NAME` follows: the forwarding
//! header the policy reads (`x-forwarded-for`, `forwarded` or `x-real-ip`).
//! The lines after them are the request text, escaped like the
//! hostile-targets corpus (`\xHH`, `\\`). Lines starting with `#` outside
//! a block are comments.
//! `corpus/policy_toml/` holds plain TOML files and needs no conversion.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use arbitrary::{Arbitrary, Unstructured};
use registry_redirect_core::ForwardedHeader;
use registry_redirect_core_fuzz::corpus::unescape;
use registry_redirect_core_fuzz::{
    ClientInput, DecideInput, PeerInput, RequestHead, FORWARDED_HEADERS,
};

struct Seed {
    name: String,
    peer: Option<IpAddr>,
    /// The forwarding header, for `client_address` seeds.
    header: Option<ForwardedHeader>,
    text: Vec<u8>,
}

fn parse_seeds(file: &str, source: &str) -> Result<Vec<Seed>, String> {
    let mut seeds: Vec<Seed> = Vec::new();
    let mut peer_pending = false;
    for (index, line) in source.lines().enumerate() {
        let at = || format!("{file}:{}", index + 1);
        if let Some(name) = line.strip_prefix("=== ") {
            seeds.push(Seed {
                name: name.trim().to_owned(),
                peer: None,
                header: None,
                text: Vec::new(),
            });
            peer_pending = true;
            continue;
        }
        let Some(seed) = seeds.last_mut() else {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            return Err(format!("{}: text before the first `=== NAME` line", at()));
        };
        if peer_pending {
            let value = line.strip_prefix("peer: ").ok_or_else(|| {
                format!(
                    "{}: expected `peer: ADDRESS` after `=== {}`",
                    at(),
                    seed.name
                )
            })?;
            seed.peer = match value.trim() {
                "none" => None,
                text => Some(
                    text.parse()
                        .map_err(|_| format!("{}: {text:?} is not an IP address", at()))?,
                ),
            };
            peer_pending = false;
            continue;
        }
        if let Some(name) = line
            .strip_prefix("header: ")
            .filter(|_| seed.text.is_empty())
        {
            let header = FORWARDED_HEADERS
                .into_iter()
                .find(|header| header.as_str() == name.trim())
                .ok_or_else(|| format!("{}: {name:?} is not a forwarding header", at()))?;
            seed.header = Some(header);
            continue;
        }
        if !seed.text.is_empty() {
            seed.text.push(b'\n');
        }
        seed.text
            .extend(unescape(line).map_err(|error| format!("{}: {error}", at()))?);
    }
    Ok(seeds)
}

fn encode(seed: &Seed) -> Vec<u8> {
    let mut bytes = PeerInput::encode(seed.peer).to_vec();
    if let Some(header) = seed.header {
        bytes.push(ClientInput::encode_header(header));
    }
    bytes.extend_from_slice(&seed.text);
    bytes
}

/// Checks that `arbitrary` reads the written bytes back as the seed.
fn check_round_trip(target: &str, seed: &Seed, bytes: &[u8]) -> Result<(), String> {
    let mismatch = |what: &str| format!("{target} seed {}: {what} does not read back", seed.name);
    match target {
        "decide" => {
            let input = DecideInput::arbitrary_take_rest(Unstructured::new(bytes))
                .map_err(|error| error.to_string())?;
            let head = RequestHead::parse(&seed.text);
            if input.peer.address() != seed.peer {
                return Err(mismatch("peer"));
            }
            if input.head.target != head.target || input.head.method != head.method {
                return Err(mismatch("request line"));
            }
        }
        _ => {
            let input = ClientInput::arbitrary_take_rest(Unstructured::new(bytes))
                .map_err(|error| error.to_string())?;
            if input.peer.address() != seed.peer {
                return Err(mismatch("peer"));
            }
            if Some(input.header) != seed.header {
                return Err(mismatch("header: line (missing, or not read back)"));
            }
            if input.headers.is_empty() && !seed.text.is_empty() {
                return Err(mismatch("headers"));
            }
        }
    }
    Ok(())
}

fn write_target(root: &Path, target: &str) -> Result<usize, String> {
    let file = format!("seeds/{target}.txt");
    let source = fs::read_to_string(root.join(&file))
        .map_err(|error| format!("failed to read {file}: {error}"))?;
    let seeds = parse_seeds(&file, &source)?;
    let dir = root.join("corpus").join(target);
    fs::create_dir_all(&dir)
        .map_err(|error| format!("failed to create {}: {error}", dir.display()))?;
    for seed in &seeds {
        let bytes = encode(seed);
        check_round_trip(target, seed, &bytes)?;
        let path = dir.join(&seed.name);
        fs::write(&path, &bytes)
            .map_err(|error| format!("failed to write {}: {error}", path.display()))?;
    }
    Ok(seeds.len())
}

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in ["decide", "client_address"] {
        match write_target(root, target) {
            Ok(count) => println!("corpus/{target}: {count} seeds written"),
            Err(error) => {
                eprintln!("write-seeds: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
