//! HTTPS for `serve`: rustls (ring provider) with a certificate chain and
//! private key read from PEM files, HTTP/2, HTTP/1.1 and HTTP/1.0 offered
//! by ALPN.
//!
//! The certificate can be replaced while the server runs: [`Tls::reload`]
//! reads and checks both files completely (the key parses and matches the
//! certificate's public key) before anything is swapped, so a bad file
//! leaves the old certificate serving. Handshakes that have started keep
//! the certificate they picked.
//!
//! ```
//! use std::path::PathBuf;
//! use registry_redirect_cli::tls::{Tls, TlsError, TlsFiles};
//!
//! let files = TlsFiles {
//!     cert_file: PathBuf::from("/nonexistent/tls.crt"),
//!     key_file: PathBuf::from("/nonexistent/tls.key"),
//! };
//! let error = Tls::new(&files).unwrap_err();
//! assert!(matches!(error, TlsError::Read { .. }));
//! assert!(error.to_string().starts_with("failed to read /nonexistent/tls.crt: "));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The ALPN protocol ids offered, in order of preference (RFC 7301; `h2`
/// from RFC 9113). `http/1.0` is there for clients that offer only it,
/// such as `curl --http1.0`, which would otherwise fail the handshake.
pub const ALPN_PROTOCOLS: [&[u8]; 3] = [b"h2", b"http/1.1", b"http/1.0"];

/// The PEM files of the serving certificate, from `[tls]` or `--tls-cert`
/// and `--tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain: the server's certificate first, then the
    /// intermediates.
    pub cert_file: PathBuf,
    /// The private key of the server's certificate: PKCS#8, PKCS#1 (RSA)
    /// or SEC1 (EC).
    pub key_file: PathBuf,
}

/// A certificate or key that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error from the operating system.
        source: std::io::Error,
    },
    /// A file is not valid PEM, or contains nothing of the expected kind.
    #[error("{}: {reason} (expected PEM with {expected})", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The problem found.
        reason: String,
        /// The content expected.
        expected: &'static str,
    },
    /// rustls rejected the key, or the key does not belong to the
    /// certificate.
    #[error("{} and {}: {reason}", files.cert_file.display(), files.key_file.display())]
    Key {
        /// The files.
        files: TlsFiles,
        /// rustls' message.
        reason: String,
    },
    /// The certificate is not valid at the time of loading.
    #[error("{}: the certificate is valid from {not_before} to {not_after}, not now (expected a certificate valid at the time of loading)", path.display())]
    OutsideValidity {
        /// The certificate file.
        path: PathBuf,
        /// The start of the certificate's validity.
        not_before: String,
        /// The end of the certificate's validity.
        not_after: String,
    },
    /// rustls rejected the server configuration.
    #[error("failed to build the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The TLS side of `serve`'s listener: rustls' acceptor and the
/// certificate it serves.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    store: Arc<CertificateStore>,
    // In an Arc because every connection clones its settings.
    fixed_files: Option<Arc<TlsFiles>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate and key of `files` and builds the acceptor:
    /// TLS 1.2 and 1.3 with ring's safe defaults, no client certificates,
    /// ALPN `h2`, `http/1.1` and `http/1.0`.
    pub fn new(files: &TlsFiles) -> Result<Self, TlsError> {
        let loaded = load_certified_key(files)?;
        match loaded.validity.check(&files.cert_file) {
            Ok(()) => log_validity(files, &loaded.validity),
            // Starting anyway lets the operator put new files in place and
            // reload without a restart; the warning names the problem.
            Err(error) => tracing::warn!(%error, "serving a certificate that is not valid now"),
        }
        let store = Arc::new(CertificateStore {
            current: RwLock::new(Arc::new(loaded.key)),
            expiry: AtomicI64::new(loaded.validity.not_after),
        });
        let provider = Arc::new(ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|id| id.to_vec()).collect();
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            store,
            fixed_files: None,
        })
    }

    /// Makes [`reload_certificate`] read `files` rather than the new
    /// configuration's, for files given as flags.
    pub fn with_fixed_files(mut self, files: TlsFiles) -> Self {
        self.fixed_files = Some(Arc::new(files));
        self
    }

    /// Loads `files` and, once both are valid and the certificate is
    /// within its validity period, serves them from the next handshake on.
    /// On error the current certificate stays.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), TlsError> {
        let loaded = load_certified_key(files)?;
        loaded.validity.check(&files.cert_file)?;
        log_validity(files, &loaded.validity);
        self.store.replace(loaded);
        Ok(())
    }

    /// Returns when the certificate being served expires: its notAfter,
    /// in seconds since the Unix epoch.
    pub fn certificate_expiry(&self) -> i64 {
        self.store.expiry.load(Ordering::Relaxed)
    }

    /// Runs the server side of the handshake on `stream`. Returns the TLS
    /// stream and whether the client chose HTTP/2 by ALPN.
    pub async fn accept<IO>(&self, stream: IO) -> std::io::Result<(TlsStream<IO>, bool)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = self.acceptor.accept(stream).await?;
        let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok((stream, http2))
    }
}

/// The first byte of every TLS connection: the record type of a handshake.
const HANDSHAKE_RECORD: u8 = 0x16;

/// The OCI error body of the response to a plain HTTP request on the
/// HTTPS port, so that a client configured with `http://` by mistake learns
/// why instead of seeing the connection close.
const PLAIN_HTTP_BODY: &str = "{\"errors\":[{\"code\":\"UNSUPPORTED\",\
\"message\":\"this port serves HTTPS; send the request with https://\"}]}\n";

/// Tells whether `stream` starts with plain HTTP rather than a TLS
/// handshake, by peeking at its first byte without consuming it. HTTP
/// methods start with an upper-case ASCII letter; a TLS connection
/// starts with a handshake record.
pub async fn starts_with_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => first[0] != HANDSHAKE_RECORD && first[0].is_ascii_uppercase(),
        _ => false,
    }
}

/// Responds to a plain HTTP request on the HTTPS port with 400 and an OCI
/// error body, then closes the connection.
pub async fn respond_to_plain_http(stream: &mut TcpStream) {
    use tokio::io::AsyncWriteExt;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    if let Err(error) = stream.write_all(response.as_bytes()).await {
        tracing::debug!(%error, "failed to send the 400 response to plain HTTP on the HTTPS port");
    }
    let _ = stream.shutdown().await;
}

/// The serving certificate, replaceable while the server runs. rustls calls
/// its `resolve` at each handshake.
struct CertificateStore {
    current: RwLock<Arc<CertifiedKey>>,
    /// The notAfter of `current`'s certificate, in seconds since the Unix
    /// epoch.
    expiry: AtomicI64,
}

impl fmt::Debug for CertificateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateStore").finish_non_exhaustive()
    }
}

impl CertificateStore {
    fn replace(&self, loaded: Loaded) {
        // A poisoned lock still holds a whole Arc: it is replaced whole.
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(loaded.key);
        self.expiry
            .store(loaded.validity.not_after, Ordering::Relaxed);
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(current.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Describes a PEM error with the section's label as text, where the
/// error's own `Display` (rustls-pki-types 1.16) prints it as a byte list.
fn describe_pem_error(error: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;

    match error {
        Error::MissingSectionEnd { end_marker } => format!(
            "the \"{}\" section has no END line, so the file may be cut short",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => {
            format!("invalid BEGIN line \"{}\"", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}

/// A certificate and key that belong together, with the validity period
/// of the certificate.
struct Loaded {
    key: CertifiedKey,
    validity: Validity,
}

/// The validity period of a certificate, in seconds since the Unix epoch,
/// with its text for messages.
struct Validity {
    not_before: i64,
    not_after: i64,
    not_before_text: String,
    not_after_text: String,
}

impl Validity {
    /// Reads the validity period of the DER certificate `der`.
    fn of(der: &[u8]) -> Result<Self, String> {
        let (_, certificate) =
            x509_parser::parse_x509_certificate(der).map_err(|error| error.to_string())?;
        let validity = certificate.validity();
        Ok(Validity {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            not_before_text: validity.not_before.to_string(),
            not_after_text: validity.not_after.to_string(),
        })
    }

    /// Returns an error unless the current time is inside the period.
    fn check(&self, path: &Path) -> Result<(), TlsError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            });
        if (self.not_before..=self.not_after).contains(&now) {
            return Ok(());
        }
        Err(TlsError::OutsideValidity {
            path: path.to_owned(),
            not_before: self.not_before_text.clone(),
            not_after: self.not_after_text.clone(),
        })
    }
}

/// Logs a warning when fewer than 14 days of the certificate's validity
/// remain.
fn log_validity(files: &TlsFiles, validity: &Validity) {
    const WARN_DAYS: i64 = 14;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    let days_left = (validity.not_after - now) / 86_400;
    let cert_file = files.cert_file.display();
    if days_left < WARN_DAYS {
        tracing::warn!(%cert_file, not_after = %validity.not_after_text, days_left, "the TLS certificate expires soon");
    }
}

/// Reads the chain and key of `files`, checks that they belong together,
/// and reads the certificate's validity period.
fn load_certified_key(files: &TlsFiles) -> Result<Loaded, TlsError> {
    const CERTIFICATES: &str = "one or more CERTIFICATE blocks";
    const KEY: &str = "a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block";

    let cert_pem = read(&files.cert_file)?;
    let pem_error = |path: &Path, reason: String, expected| TlsError::Pem {
        path: path.to_owned(),
        reason,
        expected,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(&files.cert_file, describe_pem_error(&error), CERTIFICATES))?;
    if chain.is_empty() {
        return Err(pem_error(
            &files.cert_file,
            "no certificate found".to_owned(),
            CERTIFICATES,
        ));
    }

    let key_pem = read(&files.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
        let reason = match error {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key found".to_owned(),
            other => describe_pem_error(&other),
        };
        pem_error(&files.key_file, reason, KEY)
    })?;

    let first = chain.first().map_or(&[][..], |der| der.as_ref());
    let validity = Validity::of(first).map_err(|reason| {
        pem_error(
            &files.cert_file,
            format!("the first certificate does not parse as X.509: {reason}"),
            CERTIFICATES,
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, &ring::default_provider()).map_err(|error| {
        TlsError::Key {
            files: files.clone(),
            reason: match error {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not belong to the first certificate".to_owned()
                }
                other => other.to_string(),
            },
        }
    })?;
    Ok(Loaded { key, validity })
}

/// Reloads the certificate of a running server from the `[tls]` files of a
/// new configuration (or from its fixed files), and logs the outcome: INFO
/// on success, ERROR with the file and the reason when the old certificate
/// stays. A change between HTTP and HTTPS needs a restart, and is logged
/// with a warning. Returns whether the new certificate serves, or `None`
/// when no certificate was loaded.
pub fn reload_certificate(tls: Option<&Tls>, files: Option<&TlsFiles>) -> Option<bool> {
    let files = tls.and_then(|tls| tls.fixed_files.as_deref()).or(files);
    match (tls, files) {
        (Some(tls), Some(files)) => match tls.reload(files) {
            Ok(()) => {
                tracing::info!(
                    cert_file = %files.cert_file.display(),
                    key_file = %files.key_file.display(),
                    "TLS certificate reloaded"
                );
                Some(true)
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "TLS certificate reload failed; the previous certificate keeps serving"
                );
                Some(false)
            }
        },
        (Some(_), None) => {
            tracing::warn!(
                "[tls] was removed from the configuration; HTTPS with the previous \
                 certificate continues until a restart"
            );
            None
        }
        (None, Some(_)) => {
            tracing::warn!(
                "[tls] was added to the configuration; HTTPS starts only after a restart"
            );
            None
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `cert` and `key` to files in a new temp directory named after
    /// `name`, and returns them.
    fn write_files(name: &str, cert: &str, key: &str) -> TlsFiles {
        let dir = std::env::temp_dir().join(format!(
            "registry-redirect-tls-unit-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
        };
        std::fs::write(&files.cert_file, cert).unwrap();
        std::fs::write(&files.key_file, key).unwrap();
        files
    }

    #[test]
    fn invalid_pem_files_rejected() {
        let cases = [
            ("empty-cert", "", "", "tls.crt: no certificate found"),
            (
                "cut-cert",
                "-----BEGIN CERTIFICATE-----\nAAAA\n",
                "",
                "tls.crt: the \"CERTIFICATE\" section has no END line",
            ),
            (
                "no-key",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not a key\n",
                "tls.key: no private key found",
            ),
        ];
        for (name, cert, key, expected) in cases {
            let files = write_files(name, cert, key);
            let message = Tls::new(&files).unwrap_err().to_string();
            assert!(message.contains(expected), "{name}: {message}");
            let _ = std::fs::remove_dir_all(files.cert_file.parent().unwrap());
        }
    }

    /// Returns a new temp directory named after `name`, for certificates
    /// that [`self_signed`] makes.
    fn test_dir(name: &str) -> PathBuf {
        let files = write_files(name, "", "");
        files.cert_file.parent().unwrap().to_owned()
    }

    /// Runs openssl with the space-separated `args` in `dir`.
    fn openssl(dir: &Path, args: &str) {
        let status = std::process::Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args}");
    }

    /// Makes a self-signed P-256 certificate `NAME.crt` with key `NAME.key`
    /// in `dir`, valid for `days` from now (negative: already expired).
    fn self_signed(dir: &Path, name: &str, days: i32) -> TlsFiles {
        // An extension makes openssl write an X.509 v3 certificate, the
        // only version that webpki accepts.
        std::fs::write(dir.join("v3.ext"), "subjectAltName=DNS:localhost\n").unwrap();
        openssl(
            dir,
            &format!(
                "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                 -keyout {name}.key -out {name}.csr -subj /CN=localhost"
            ),
        );
        openssl(
            dir,
            &format!(
                "x509 -req -in {name}.csr -signkey {name}.key -days {days} \
                 -extfile v3.ext -out {name}.crt"
            ),
        );
        TlsFiles {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        }
    }

    #[test]
    fn expired_certificate_not_reloaded() {
        let dir = test_dir("expired");
        let good = self_signed(&dir, "good", 30);
        let expired = self_signed(&dir, "old", -1);

        let tls = Tls::new(&good).unwrap();
        let error = tls.reload(&expired).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, TlsError::OutsideValidity { .. }),
            "{message}"
        );
        assert!(
            message.contains("old.crt") && message.contains("not now"),
            "{message}"
        );
        // Starting with it works, so that the files can be fixed and
        // reloaded; the start logs a warning.
        assert!(Tls::new(&expired).is_ok());
        tls.reload(&good).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn certificate_expiry_follows_reloads() {
        let dir = test_dir("expiry");
        let short = self_signed(&dir, "short", 2);
        let long = self_signed(&dir, "long", 30);
        let expired = self_signed(&dir, "old", -1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        const DAY: i64 = 86_400;

        let tls = Tls::new(&short).unwrap();
        let first = tls.certificate_expiry();
        assert!((now + DAY..=now + 3 * DAY).contains(&first), "{first}");

        tls.reload(&long).unwrap();
        let second = tls.certificate_expiry();
        assert!(
            (now + 29 * DAY..=now + 31 * DAY).contains(&second),
            "{second}"
        );

        // A rejected certificate leaves the expiry of the one still serving.
        assert!(tls.reload(&expired).is_err());
        assert_eq!(tls.certificate_expiry(), second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_of_another_certificate_named_plainly() {
        let dir = test_dir("other-key");
        let first = self_signed(&dir, "first", 1);
        let second = self_signed(&dir, "second", 1);
        let mixed = TlsFiles {
            cert_file: first.cert_file,
            key_file: second.key_file,
        };

        let message = Tls::new(&mixed).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            message.contains("the private key does not belong to the first certificate"),
            "{message}"
        );
    }
}
