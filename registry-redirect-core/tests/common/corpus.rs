//! The hostile request targets of `tests/data/hostile-targets.txt`, decoded
//! to the bytes a client puts on the wire, and a check of OCI error bodies.
//!
//! The core, tower and CLI tests all read the same file: the tower and CLI
//! tests include this module with `#[path]`. It uses `std` only. The file
//! format is described at the top of the data file.

// Each test crate that includes this file uses a different part of it.
#![allow(dead_code)]

/// The corpus, as committed.
pub const CORPUS: &str = include_str!("../data/hostile-targets.txt");

/// One hostile request.
#[derive(Debug, Clone)]
pub struct Target {
    /// The class from the nearest `## ` line above, such as `encoded-separators`.
    pub class: String,
    /// The line number in the file, from 1.
    pub line: usize,
    /// The request method, `GET` unless the line names another.
    pub method: String,
    /// The request target, as bytes on the wire.
    pub bytes: Vec<u8>,
}

impl Target {
    /// Returns the target for messages, with bytes outside printable ASCII
    /// escaped and long targets shortened.
    pub fn display(&self) -> String {
        let mut text = String::new();
        for &byte in self.bytes.iter().take(160) {
            if (0x20..0x7f).contains(&byte) {
                text.push(byte as char);
            } else {
                text.push_str(&format!("\\x{byte:02x}"));
            }
        }
        if self.bytes.len() > 160 {
            text.push_str(&format!("... ({} bytes)", self.bytes.len()));
        }
        format!("line {} [{}] {} {text}", self.line, self.class, self.method)
    }

    /// Returns whether the target has a byte that no valid request target
    /// contains raw: controls, space, DEL, or bytes that are not UTF-8.
    pub fn has_raw_forbidden_byte(&self) -> bool {
        self.bytes.iter().any(|&byte| byte <= 0x20 || byte == 0x7f)
            || std::str::from_utf8(&self.bytes).is_err()
    }
}

/// Parses the corpus, panicking with the line number on a malformed line.
pub fn targets() -> Vec<Target> {
    parse(CORPUS).unwrap_or_else(|error| panic!("hostile-targets.txt: {error}"))
}

/// Parses corpus text into targets.
pub fn parse(text: &str) -> Result<Vec<Target>, String> {
    let mut class = String::from("unclassified");
    let mut targets = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(name) = line.strip_prefix("## ") {
            class = name.trim().to_owned();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if !line.is_ascii() {
            return Err(format!(
                "line {number}: raw non-ASCII text; write such bytes as \\xHH"
            ));
        }
        let (method, bytes) = match line.strip_prefix("@repeat ") {
            Some(fields) => (
                "GET".to_owned(),
                repeat(fields).map_err(|e| format!("line {number}: {e}"))?,
            ),
            None => {
                let (method, target) = split_method(line);
                (
                    method,
                    unescape(target).map_err(|e| format!("line {number}: {e}"))?,
                )
            }
        };
        targets.push(Target {
            class: class.clone(),
            line: number,
            method,
            bytes,
        });
    }
    Ok(targets)
}

/// Splits an optional method (uppercase letters and `-`, then one space)
/// off the front of a line.
fn split_method(line: &str) -> (String, &str) {
    if let Some((word, rest)) = line.split_once(' ') {
        let is_method = !word.is_empty()
            && word
                .bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte == b'-');
        if is_method {
            return (word.to_owned(), rest);
        }
    }
    ("GET".to_owned(), line)
}

/// Expands `@repeat PREFIX UNIT COUNT [SUFFIX]`: PREFIX, then UNIT COUNT
/// times, then SUFFIX, each field escaped like a target.
fn repeat(fields: &str) -> Result<Vec<u8>, String> {
    let parts: Vec<&str> = fields.split(' ').collect();
    let (prefix, unit, count, suffix) = match parts[..] {
        [prefix, unit, count] => (prefix, unit, count, ""),
        [prefix, unit, count, suffix] => (prefix, unit, count, suffix),
        _ => {
            return Err(format!(
                "@repeat takes PREFIX UNIT COUNT [SUFFIX], not {fields:?}"
            ))
        }
    };
    let count: usize = count
        .parse()
        .map_err(|_| format!("@repeat count {count:?} is not a number"))?;
    let mut bytes = unescape(prefix)?;
    let unit = unescape(unit)?;
    for _ in 0..count {
        bytes.extend_from_slice(&unit);
    }
    bytes.extend(unescape(suffix)?);
    Ok(bytes)
}

/// Decodes `\xHH` and `\\`; every other character stands for itself.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'\\' {
            out.push(bytes[at]);
            at += 1;
            continue;
        }
        match bytes.get(at + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                at += 2;
            }
            Some(b'x') => {
                let hex = text
                    .get(at + 2..at + 4)
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| format!("\\x at byte {at} needs two hex digits"))?;
                out.push(hex);
                at += 4;
            }
            _ => {
                return Err(format!(
                    "unknown escape at byte {at} (expected \\xHH or \\\\)"
                ))
            }
        }
    }
    Ok(out)
}

/// Checks that a body is the OCI error body the core writes,
/// `{"errors":[{"code":"CODE","message":"...","detail":null}]}`, and
/// returns the code. Strict on purpose: it accepts exactly the shape the
/// core writes, so the crates without a JSON parser can check it too.
pub fn oci_error_code(body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the error body is not UTF-8".to_owned())?;
    let shape = || format!("not an OCI error body: {text:?}");
    let rest = text
        .strip_prefix(r#"{"errors":[{"code":""#)
        .ok_or_else(shape)?;
    let (code, rest) = rest.split_once('"').ok_or_else(shape)?;
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return Err(format!("error code {code:?} is not an OCI error code"));
    }
    let message = rest.strip_prefix(r#","message":""#).ok_or_else(shape)?;
    let end = json_string_end(message).ok_or_else(shape)?;
    if &message[end..] != r#"","detail":null}]}"# {
        return Err(shape());
    }
    Ok(code.to_owned())
}

/// Returns the byte offset of the quote that ends a JSON string body.
fn json_string_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => return Some(at),
            b'\\' => at += 2,
            byte if byte < 0x20 => return None,
            _ => at += 1,
        }
    }
    None
}
