//! Certificates for the TLS tests, made with Debian's `openssl` (shared by `tests/cli_tls.rs`
//! and the loadtest's `tests/tls.rs`): two CAs, `ca` and `other`, and under each a
//! certificate for IP 127.0.0.1 usable by servers and clients (`node`, `stranger`).
//!
//! `openssl` is installed by .ci/run. Outside CI a machine without it skips the tests that
//! need it, saying so; with `CI=true` its absence fails them.

#![allow(dead_code)] // Each test file uses a different subset.

use rcraft::tls::ClientTls;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; `None` when openssl is not installed.
fn openssl(dir: &Path, args: &[&str]) -> Option<()> {
    let output = match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running openssl: {e}"),
    };
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(())
}

/// Certificates made for one test, in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// CAs `ca` and `other`, and under each a certificate for 127.0.0.1 (`node`, `stranger`).
    /// `None` (after saying so) when openssl is missing outside CI.
    pub fn new() -> Option<Pki> {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        let made = pki.make_ca("ca").and_then(|()| pki.make_ca("other"));
        if made.is_none() {
            assert!(
                std::env::var("CI").is_err(),
                "openssl is not installed (.ci/run installs it)"
            );
            eprintln!("skipped: openssl is not installed");
            return None;
        }
        pki.issue("node", "ca")?;
        pki.issue("stranger", "other")?;
        Some(pki)
    }

    fn make_ca(&self, name: &str) -> Option<()> {
        let subject = format!("/CN=rcraft test CA {name}");
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )
    }

    /// A certificate and key `name.pem`/`name.key` for IP 127.0.0.1, signed by CA `ca`, for
    /// server and client use (a node shows the same one to peers it dials).
    pub fn issue(&self, name: &str, ca: &str) -> Option<()> {
        let ext = self.dir.path().join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n\
             basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        )
        .unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN={name}");
        let dir = self.dir.path();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &subject,
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                &format!("{}", std::process::id() as u64 * 100 + name.len() as u64),
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                ext.to_str().unwrap(),
            ],
        )
    }

    /// A file private to its owner (secrets and tokens must be), in the test's directory.
    pub fn private(&self, name: &str, text: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.to_str().unwrap().to_string()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn arg(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_string()
    }

    /// `rcraft serve` flags: mutual TLS between peers and TLS for clients with `name`'s
    /// certificate, peers checked against CA `ca`.
    pub fn serve_flags(&self, name: &str, ca: &str) -> Vec<String> {
        let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
        vec![
            "--peer-cert-file".into(),
            self.arg(&pem),
            "--peer-key-file".into(),
            self.arg(&key),
            "--peer-trusted-ca-file".into(),
            self.arg(&format!("{ca}.pem")),
            "--cert-file".into(),
            self.arg(&pem),
            "--key-file".into(),
            self.arg(&key),
        ]
    }

    /// A client's TLS settings trusting CA `ca`.
    pub fn client_tls(&self, ca: &str) -> ClientTls {
        ClientTls::from_files(&self.path(&format!("{ca}.pem")), None, None).unwrap()
    }
}
