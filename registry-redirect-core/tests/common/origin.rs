//! The `url` crate's view of a `Location`: it must parse as an absolute
//! URL whose scheme, host and port are those of a policy's upstream, and
//! parsing must not rewrite its path (no dot segments, no backslashes, no
//! characters a client would re-encode).
//!
//! Shared by the core's tests and the fuzz targets, which include this file
//! with `#[path]`; the tower and CLI tests have no `url` dependency.

// Each test crate that includes this file uses a different part of it.
#![allow(dead_code)]

use url::Url;

/// The scheme, host and port of a URL, the port made explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// The host as the `url` crate serializes it (IPv6 in brackets).
    pub host: String,
    /// The port, or the scheme's default port.
    pub port: u16,
}

impl Origin {
    /// Returns the origin of an absolute URL, or why there is none.
    pub fn of(text: &str) -> Result<(Origin, Url), String> {
        let url = Url::parse(text).map_err(|error| format!("{text:?} does not parse: {error}"))?;
        if url.cannot_be_a_base() {
            return Err(format!("{text:?} is not a hierarchical URL"));
        }
        let host = url
            .host()
            .map(|host| host.to_string())
            .ok_or_else(|| format!("{text:?} has no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{text:?} has no port and no default port"))?;
        let origin = Origin {
            scheme: url.scheme().to_owned(),
            host,
            port,
        };
        Ok((origin, url))
    }
}

/// Checks a `Location` against the origins of the upstream bases: it parses
/// as absolute, its origin is one of `allowed`, carries no credentials, and
/// its path survives parsing unchanged.
pub fn check_origin(location: &str, allowed: &[Origin]) -> Result<(), String> {
    let (origin, url) = Origin::of(location)?;
    if !allowed.contains(&origin) {
        return Err(format!(
            "Location {location:?} leads to {origin:?}, which is no upstream (upstreams: {allowed:?})"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("Location {location:?} carries credentials"));
    }
    if url.fragment().is_some() {
        return Err(format!("Location {location:?} has a fragment"));
    }
    let raw_path = raw_path(location);
    if url.path() != raw_path {
        return Err(format!(
            "Location {location:?}: the url crate reads path {:?}, not {raw_path:?}",
            url.path()
        ));
    }
    Ok(())
}

/// Returns the path of an absolute URL as written: from the first `/` after
/// `scheme://` up to the query.
fn raw_path(location: &str) -> &str {
    let after_scheme = location
        .split_once("://")
        .map_or(location, |(_, rest)| rest);
    let without_query = after_scheme
        .split_once('?')
        .map_or(after_scheme, |(before, _)| before);
    without_query
        .find('/')
        .map_or("/", |slash| &without_query[slash..])
}

/// Returns the distinct origins of `bases`, each an absolute URL.
pub fn origins<'a>(bases: impl IntoIterator<Item = &'a str>) -> Vec<Origin> {
    let mut out: Vec<Origin> = Vec::new();
    for base in bases {
        if let Ok((origin, _)) = Origin::of(base) {
            if !out.contains(&origin) {
                out.push(origin);
            }
        }
    }
    out
}
