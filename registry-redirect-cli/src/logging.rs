//! Log output of `serve`: `tracing` events as text lines on stderr, filtered
//! by `--log-level`, else by the `RUST_LOG` environment variable, else at
//! `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter used when neither `--log-level` nor `RUST_LOG` sets one.
pub const DEFAULT_FILTER: &str = "info";

/// A log filter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid log filter \"{filter}\" from {origin}: {reason} \
     (expected a level such as info, or directives such as info,registry_redirect::access=off)"
)]
pub struct LogFilterError {
    /// The filter as given.
    pub filter: String,
    /// `--log-level` or `RUST_LOG`.
    pub origin: &'static str,
    /// The parser's error message.
    pub reason: String,
}

/// Picks the filter: `flag` when given, else `RUST_LOG` when set, else
/// [`DEFAULT_FILTER`].
pub fn filter(flag: Option<&str>) -> Result<EnvFilter, LogFilterError> {
    let (text, origin) = match (flag, std::env::var("RUST_LOG")) {
        (Some(flag), _) => (flag.to_owned(), "--log-level"),
        (None, Ok(env)) if !env.trim().is_empty() => (env, "RUST_LOG"),
        (None, _) => (DEFAULT_FILTER.to_owned(), "the default"),
    };
    EnvFilter::try_new(&text).map_err(|error| LogFilterError {
        filter: text,
        origin,
        reason: error.to_string(),
    })
}

/// Sends `tracing` events to stderr. Colors are used only when stderr is a
/// terminal, so log files stay plain text. A second call does nothing.
pub fn init(filter: EnvFilter) {
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_filters_parse_or_say_why() {
        assert!(filter(Some("debug")).is_ok());
        assert!(filter(Some("info,registry_redirect::access=off")).is_ok());
        let error = filter(Some("info,=x=y")).unwrap_err();
        assert_eq!(error.origin, "--log-level");
        assert!(error
            .to_string()
            .starts_with("invalid log filter \"info,=x=y\" from --log-level: "));
    }
}
