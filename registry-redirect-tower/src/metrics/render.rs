//! The Prometheus text exposition format (version 0.0.4) of [`Inner`].

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::requests::{DecisionLabel, UNATTRIBUTED};
use super::{lock, Inner, ReloadCounts};

const REQUESTS: &str = "registry_redirect_requests_total";
const LATENCY: &str = "registry_redirect_decision_duration_seconds";

pub(super) fn render(inner: &Inner) -> String {
    let mut out = String::with_capacity(8 * 1024);
    render_requests(inner, &mut out);
    render_latency(inner, &mut out);
    render_reloads(inner, &mut out);
    render_connections(inner, &mut out);
    render_tls(inner, &mut out);
    render_checks(inner, &mut out);
    out
}

/// Writes the `# HELP` and `# TYPE` lines of a family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value as the format requires: backslash, double quote
/// and line feed.
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn render_requests(inner: &Inner, out: &mut String) {
    header(
        out,
        REQUESTS,
        "counter",
        "Requests answered, by decision, matching rule (empty for the default \
         upstream), upstream redirected to, and response status code.",
    );
    for (key, counter) in lock(&inner.series).iter() {
        let value = counter.load(Ordering::Relaxed);
        // Unattributed requests do not happen with the current core, so
        // their series appear only if one does.
        if key.rule == UNATTRIBUTED && value == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "{REQUESTS}{{decision=\"{}\",rule=\"{}\",upstream=\"{}\",code=\"{}\"}} {}",
            key.decision.as_str(),
            escape(&key.rule),
            escape(&key.upstream),
            key.code,
            value,
        );
    }
    for (decision, code, count) in inner.unrouted.nonzero() {
        let _ = writeln!(
            out,
            "{REQUESTS}{{decision=\"{}\",rule=\"\",upstream=\"\",code=\"{code}\"}} {count}",
            decision.as_str(),
        );
    }
}

fn render_latency(inner: &Inner, out: &mut String) {
    header(
        out,
        LATENCY,
        "histogram",
        "Time from a request's arrival to its response, blob checks included, by decision.",
    );
    for (decision, histogram) in DecisionLabel::ALL.iter().zip(&inner.latency) {
        // Only some policies fetch in resolve mode, and no current outcome
        // is "other", so these appear once they have observations.
        let optional = matches!(decision, DecisionLabel::Resolve | DecisionLabel::Other);
        if optional && histogram.count() == 0 {
            continue;
        }
        let labels = format!("decision=\"{}\"", decision.as_str());
        histogram.render(out, LATENCY, &labels);
    }
}

fn render_reloads(inner: &Inner, out: &mut String) {
    let name = "registry_redirect_reloads_total";
    header(
        out,
        name,
        "counter",
        "Configuration reloads, by result: success (the new policy serves) or \
         failure (the previous policy keeps serving).",
    );
    write_reload_counts(out, name, &inner.reloads);

    let Some(config) = lock(&inner.config).clone() else {
        return;
    };
    let name = "registry_redirect_config_info";
    header(
        out,
        name,
        "gauge",
        "The configuration in force: always 1, with the SHA-256 of its text as a label.",
    );
    let _ = writeln!(out, "{name}{{sha256=\"{}\"}} 1", escape(&config.sha256));
    let name = "registry_redirect_config_loaded_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "When the configuration in force was loaded, in seconds since the Unix epoch.",
    );
    let _ = writeln!(out, "{name} {}", config.loaded_at_seconds);
}

fn render_connections(inner: &Inner, out: &mut String) {
    let name = "registry_redirect_connections_accepted_total";
    header(out, name, "counter", "Client connections accepted.");
    let accepted = inner.connections_accepted.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name} {accepted}");
    let name = "registry_redirect_connections_open";
    header(out, name, "gauge", "Client connections open now.");
    let open = inner.connections_open.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name} {open}");
}

fn render_tls(inner: &Inner, out: &mut String) {
    let Some(not_after) = *lock(&inner.tls_certificate_expiry) else {
        return;
    };
    let name = "registry_redirect_tls_certificate_expiry_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "When the TLS certificate being served expires (its notAfter), in seconds since the Unix epoch.",
    );
    let _ = writeln!(out, "{name} {not_after}");

    let name = "registry_redirect_tls_reloads_total";
    header(
        out,
        name,
        "counter",
        "TLS certificate reloads, by result: success (the new certificate serves) or \
         failure (the previous certificate keeps serving).",
    );
    write_reload_counts(out, name, &inner.tls_reloads);
}

/// Writes the two samples of the reload counter `name`, by result.
fn write_reload_counts(out: &mut String, name: &str, counts: &ReloadCounts) {
    let succeeded = counts.succeeded.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}{{result=\"success\"}} {succeeded}");
    let _ = writeln!(out, "{name}{{result=\"failure\"}} {failed}");
}

fn render_checks(inner: &Inner, out: &mut String) {
    let Some(checks) = lock(&inner.checks).clone() else {
        return;
    };
    let stats = checks.blobs().stats();
    let counters = [
        (
            "registry_redirect_blob_check_cache_hits_total",
            "Blob checks answered from the cache.",
            stats.cache_hits,
        ),
        (
            "registry_redirect_blob_check_cache_misses_total",
            "Blob checks not in the cache, which sent or joined a HEAD request.",
            stats.cache_misses,
        ),
        (
            "registry_redirect_blob_check_skipped_total",
            "Blob checks skipped because a recent check of the same mirror timed out or failed.",
            stats.skipped_failing_mirror,
        ),
    ];
    for (name, help, value) in counters {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }

    let name = "registry_redirect_blob_check_requests_total";
    header(
        out,
        name,
        "counter",
        "HEAD requests sent to check a blob, by result: found, missing, timeout or error.",
    );
    let results = [
        ("found", stats.found),
        ("missing", stats.missing),
        ("timeout", stats.timeouts),
        ("error", stats.failures),
    ];
    for (result, value) in results {
        let _ = writeln!(out, "{name}{{result=\"{result}\"}} {value}");
    }

    let name = "registry_redirect_blob_check_cache_entries";
    header(
        out,
        name,
        "gauge",
        "Blob locations in the check cache; may exceed the capacity briefly.",
    );
    let _ = writeln!(out, "{name} {}", stats.cached_entries);

    let name = "registry_redirect_upstream_healthy";
    header(
        out,
        name,
        "gauge",
        "1 while a probed mirror passes its health probes, 0 while it is skipped.",
    );
    for mirror in checks.health().snapshot() {
        let region = mirror.target.region.as_deref().unwrap_or("");
        let _ = writeln!(
            out,
            "{name}{{upstream=\"{}\",region=\"{}\",url=\"{}\"}} {}",
            escape(&mirror.target.upstream),
            escape(region),
            escape(&mirror.target.url),
            u8::from(mirror.healthy),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let cases = [
            ("plain", "plain"),
            ("a\"b", "a\\\"b"),
            ("back\\slash", "back\\\\slash"),
            ("two\nlines", "two\\nlines"),
        ];
        for (value, expected) in cases {
            assert_eq!(escape(value), expected, "{value:?}");
        }
    }
}
