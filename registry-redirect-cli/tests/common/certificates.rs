//! Test certificates made with the `openssl` command: a CA and a server
//! certificate for 127.0.0.1 that it signed.

use std::path::PathBuf;
use std::process::Command;

use registry_redirect_cli::tls::TlsFiles;

/// A test CA and a server certificate for 127.0.0.1 that it signed, made
/// with the `openssl` command in a directory of their own.
pub struct TestCertificates {
    /// The directory of the files, removed on drop.
    pub dir: PathBuf,
}

impl TestCertificates {
    /// Creates the CA and the certificate in a new directory of the
    /// system's temp dir, named after `name` and this process.
    pub fn create(name: &str) -> TestCertificates {
        let dir = std::env::temp_dir().join(format!(
            "registry-redirect-tls-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=registry-redirect test CA",
            ],
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        ];
        for args in steps {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl runs (install the openssl package)");
            assert!(
                output.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        TestCertificates { dir }
    }

    /// Returns the server certificate and key.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.dir.join("server.crt"),
            key_file: self.dir.join("server.key"),
        }
    }

    /// Returns the CA certificate, for clients to trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

impl Drop for TestCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
