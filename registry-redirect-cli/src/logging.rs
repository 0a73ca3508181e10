//! Log output of `serve`: `tracing` events on stderr, as text lines or as
//! one JSON object a line (`--log-format`), filtered by `--log-level`, else
//! by the `RUST_LOG` environment variable, else at `info`.

use std::io::IsTerminal;

use registry_redirect_tower::ClientAddressLogging;
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

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `key=value` text lines, colored when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object a line, with `timestamp`, `level`, `target`, and the
    /// event's fields (`message` among them) at the top level.
    Json,
}

/// Whether access-log lines carry the client address, as
/// `--log-client-addresses` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClientAddresses {
    /// No client addresses.
    #[default]
    Off,
    /// Whole client addresses.
    Full,
    /// Client addresses truncated to their network: the first
    /// `--log-client-ipv4-prefix` or `--log-client-ipv6-prefix` bits.
    Truncated,
}

impl ClientAddresses {
    /// Returns the layer's setting, with the prefix lengths used for
    /// [`ClientAddresses::Truncated`].
    pub fn logging(self, ipv4_prefix: u8, ipv6_prefix: u8) -> ClientAddressLogging {
        match self {
            ClientAddresses::Off => ClientAddressLogging::Off,
            ClientAddresses::Full => ClientAddressLogging::Full,
            ClientAddresses::Truncated => ClientAddressLogging::Truncated {
                ipv4_prefix,
                ipv6_prefix,
            },
        }
    }
}

/// Sends `tracing` events to stderr in `format`. Colors are used only for
/// text on a terminal, so log files stay plain. A second call does nothing.
pub fn init(filter: EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
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
