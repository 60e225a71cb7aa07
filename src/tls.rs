//! TLS for peer and client links (opt-in: the `tls` cargo feature): which files a node and a
//! client read, the rustls configurations built from them, and their reload on SIGHUP.
//!
//! rustls does no I/O of its own; [`crate::node::net::stream::Stream`] drives it around the
//! sockets of the mio event loop, below the rcraft handshake and framing, which do not change
//! (`wire/PROTOCOL.md`, "TLS"). One port serves peers and clients, so the two kinds of TLS
//! link are told apart by ALPN: a node dialling a peer offers [`ALPN_PEER`] and must present a
//! certificate of the peer CA (mutual TLS); a client offers [`ALPN_CLIENT`] and presents a
//! certificate only when the node asks for one (`--client-cert-auth`). Certificates name the
//! node by IP address (a SAN such as `IP:127.0.0.1`): peers and clients dial addresses.
//!
//! Without the feature the types exist so that configuration code compiles the same, but no
//! value of [`TlsSlot`] or [`ClientTls`] can be made: asking for TLS fails with
//! [`TLS_FEATURE_MISSING`].
//!
//! Threads: a [`TlsSlot`] is shared by the network thread, which takes the current
//! configuration for every new connection, and whoever reloads it (the binary's signal
//! thread). Invariant: the slot always holds a configuration that loaded completely; a reload
//! that fails leaves the previous one in place.

use std::path::PathBuf;

/// ALPN protocol offered by a node dialling a peer.
pub const ALPN_PEER: &[u8] = b"rcraft-peer";
/// ALPN protocol offered by a client.
pub const ALPN_CLIENT: &[u8] = b"rcraft-client";
/// What a build without the `tls` feature says when TLS is asked for.
pub const TLS_FEATURE_MISSING: &str =
    "TLS needs rcraft built with the `tls` cargo feature (cargo build --features tls)";

/// Why TLS flags or files are refused. Each names the flag, the file and the problem; the
/// text is what `rcraft serve` and the clients print (tests and scripts read it).
#[derive(Debug)]
pub enum TlsError {
    /// A node's TLS flags were given to a build without the `tls` feature.
    FeatureMissing {
        /// The flags given, for the message.
        given: String,
    },
    /// A client's `--cacert` was given to a build without the `tls` feature.
    ClientFeatureMissing,
    /// Flags that go together were given apart; the sentence says which.
    FlagsApart(&'static str),
    /// A certificate, key or CA file cannot be used.
    File {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: FileProblem,
    },
    /// A certificate and key refused together (`pair` names both flags and files, `problem`
    /// is rustls's reason, in an operator's words).
    Pair {
        /// The flags and files, `--cert-file A with --key-file B`.
        pair: String,
        /// Why they do not go together.
        problem: String,
    },
    /// The CA file loaded but no certificate verifier could be built from it.
    Verifier {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        problem: String,
    },
    /// rustls refused the protocol versions with the crypto provider (a build problem).
    Protocols(String),
}

/// What is wrong with one TLS file ([`TlsError::File`]).
#[derive(Debug)]
pub enum FileProblem {
    /// It cannot be read.
    Unreadable(std::io::Error),
    /// It is not valid PEM (the parser's reason).
    NotPem(String),
    /// It holds no certificate.
    NoCertificate,
    /// It holds no private key.
    NoKey,
    /// A certificate in it is not usable as a trust root (rustls's reason).
    NotACa(String),
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileProblem::Unreadable(e) => write!(f, "cannot read: {e}"),
            FileProblem::NotPem(why) => write!(f, "not valid PEM: {why}"),
            FileProblem::NoCertificate => f.write_str(
                "no certificate in it (expected a PEM -----BEGIN CERTIFICATE----- block)",
            ),
            FileProblem::NoKey => f.write_str(
                "no private key in it (expected a PEM -----BEGIN PRIVATE KEY----- block)",
            ),
            FileProblem::NotACa(why) => write!(f, "not a usable CA certificate: {why}"),
        }
    }
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::FeatureMissing { given } => {
                write!(f, "{given} were given: {TLS_FEATURE_MISSING}")
            }
            TlsError::ClientFeatureMissing => {
                write!(f, "--cacert was given: {TLS_FEATURE_MISSING}")
            }
            TlsError::FlagsApart(why) => f.write_str(why),
            TlsError::File {
                flag,
                path,
                problem,
            } => write!(f, "{flag} {}: {problem}", path.display()),
            TlsError::Pair { pair, problem } => write!(f, "{pair}: {problem}"),
            TlsError::Verifier {
                flag,
                path,
                problem,
            } => write!(f, "{flag} {}: {problem}", path.display()),
            TlsError::Protocols(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::File {
                problem: FileProblem::Unreadable(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

/// The certificate, key and CA files of a node (`rcraft serve`'s TLS flags, named as etcd's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--cert-file`: the certificate chain shown to clients (PEM). Turns on TLS for clients.
    pub cert_file: Option<PathBuf>,
    /// `--key-file`: the private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// `--trusted-ca-file`: the CA that client certificates are checked against (PEM).
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth`: clients must present a certificate of `trusted_ca_file`.
    pub client_cert_auth: bool,
    /// `--peer-cert-file`: the certificate chain this node shows peers, as server and as
    /// client (PEM). Turns on mutual TLS between peers.
    pub peer_cert_file: Option<PathBuf>,
    /// `--peer-key-file`: the private key of `peer_cert_file` (PEM).
    pub peer_key_file: Option<PathBuf>,
    /// `--peer-trusted-ca-file`: the CA that every peer's certificate is checked against.
    pub peer_trusted_ca_file: Option<PathBuf>,
}

impl TlsFiles {
    /// True when no TLS flag is given (links are plaintext).
    pub fn is_empty(&self) -> bool {
        *self == TlsFiles::default()
    }

    /// True when peer links use TLS.
    pub fn peer_tls(&self) -> bool {
        self.peer_cert_file.is_some()
    }

    /// True when client links use TLS.
    pub fn client_tls(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Checks that the flags given go together (and that this build has TLS). The files
    /// themselves are read by [`TlsSlot::load`].
    pub fn check(&self) -> Result<(), TlsError> {
        if self.is_empty() {
            return Ok(());
        }
        if !cfg!(feature = "tls") {
            return Err(TlsError::FeatureMissing {
                given: self.given(),
            });
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(TlsError::FlagsApart(
                "--cert-file and --key-file go together (TLS for clients)",
            ));
        }
        if self.trusted_ca_file.is_some() && self.cert_file.is_none() {
            return Err(TlsError::FlagsApart(
                "--trusted-ca-file needs --cert-file and --key-file (TLS for clients)",
            ));
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(TlsError::FlagsApart(
                "--client-cert-auth needs --trusted-ca-file (the CA of client certificates)",
            ));
        }
        let peer = [
            &self.peer_cert_file,
            &self.peer_key_file,
            &self.peer_trusted_ca_file,
        ];
        if peer.iter().any(|f| f.is_some()) && !peer.iter().all(|f| f.is_some()) {
            return Err(TlsError::FlagsApart(
                "TLS between peers needs --peer-cert-file, --peer-key-file and \
                 --peer-trusted-ca-file together (each node checks the other's certificate \
                 against the peer CA)",
            ));
        }
        Ok(())
    }

    /// The TLS flags given, for messages.
    fn given(&self) -> String {
        let flags = [
            ("--cert-file", self.cert_file.is_some()),
            ("--key-file", self.key_file.is_some()),
            ("--trusted-ca-file", self.trusted_ca_file.is_some()),
            ("--client-cert-auth", self.client_cert_auth),
            ("--peer-cert-file", self.peer_cert_file.is_some()),
            ("--peer-key-file", self.peer_key_file.is_some()),
            (
                "--peer-trusted-ca-file",
                self.peer_trusted_ca_file.is_some(),
            ),
        ];
        let given: Vec<&str> = flags.iter().filter(|f| f.1).map(|f| f.0).collect();
        given.join(", ")
    }
}

#[cfg(feature = "tls")]
pub use enabled::*;

#[cfg(not(feature = "tls"))]
pub use disabled::*;

#[cfg(feature = "tls")]
mod enabled {
    use super::{ALPN_CLIENT, ALPN_PEER, FileProblem, TlsError, TlsFiles};
    use parking_lot::RwLock;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use std::fmt;
    use std::net::IpAddr;
    use std::path::Path;
    use std::sync::Arc;

    /// The ring provider, chosen explicitly so that no process-wide default is needed. rustls
    /// 0.23.48 deprecates it for lacking post-quantum key exchange (X25519MLKEM768, which
    /// only the aws-lc-rs provider has); ring is kept because it builds with nothing but a C
    /// compiler, where aws-lc-rs needs far more C and cmake (SECURITY.md, "TLS").
    #[allow(deprecated)]
    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// What the PEM parser's error says about a file.
    fn pem_problem(e: rustls::pki_types::pem::Error) -> FileProblem {
        match e {
            rustls::pki_types::pem::Error::Io(e) => FileProblem::Unreadable(e),
            other => FileProblem::NotPem(format!("{other:?}")),
        }
    }

    /// The error of the file `path` named by `flag`.
    fn file_error(flag: &'static str, path: &Path, problem: FileProblem) -> TlsError {
        TlsError::File {
            flag,
            path: path.to_path_buf(),
            problem,
        }
    }

    /// The certificates of a PEM file, at least one.
    pub(crate) fn load_certs(
        flag: &'static str,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| file_error(flag, path, pem_problem(e)))?;
        if certs.is_empty() {
            return Err(file_error(flag, path, FileProblem::NoCertificate));
        }
        Ok(certs)
    }

    /// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn load_key(
        flag: &'static str,
        path: &Path,
    ) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                file_error(flag, path, FileProblem::NoKey)
            }
            other => file_error(flag, path, pem_problem(other)),
        })
    }

    /// The CA certificates of a PEM file as trust roots.
    pub(crate) fn load_roots(
        flag: &'static str,
        path: &Path,
    ) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in load_certs(flag, path)? {
            roots
                .add(cert)
                .map_err(|e| file_error(flag, path, FileProblem::NotACa(e.to_string())))?;
        }
        Ok(Arc::new(roots))
    }

    /// The verifier of certificates against the CA `ca` refused to build.
    fn verifier_error(flag: &'static str, ca: &Path, e: impl fmt::Display) -> TlsError {
        TlsError::Verifier {
            flag,
            path: ca.to_path_buf(),
            problem: e.to_string(),
        }
    }

    /// The rustls configurations of a node, built from its files.
    pub struct NodeTls {
        /// Accepting a peer (mutual TLS against the peer CA); `None` without peer TLS.
        pub(crate) peer_server: Option<Arc<ServerConfig>>,
        /// Dialling a peer (its certificate checked against the peer CA, ours presented).
        pub(crate) peer_client: Option<Arc<ClientConfig>>,
        /// Accepting a client; `None` without client TLS.
        pub(crate) client_server: Option<Arc<ServerConfig>>,
    }

    impl NodeTls {
        /// Reads every file `files` names and builds the configurations; the error names the
        /// flag, the file and the problem.
        pub fn load(files: &TlsFiles) -> Result<NodeTls, TlsError> {
            files.check()?;
            let (peer_server, peer_client) = match (
                &files.peer_cert_file,
                &files.peer_key_file,
                &files.peer_trusted_ca_file,
            ) {
                (Some(cert), Some(key), Some(ca)) => {
                    let (server, client) = peer_configs(cert, key, ca)?;
                    (Some(server), Some(client))
                }
                _ => (None, None),
            };
            let client_server = match (&files.cert_file, &files.key_file) {
                (Some(cert), Some(key)) => Some(client_server_config(cert, key, files)?),
                _ => None,
            };
            Ok(NodeTls {
                peer_server,
                peer_client,
                client_server,
            })
        }

        /// True when peers must connect over TLS.
        pub(crate) fn peer_tls(&self) -> bool {
            self.peer_server.is_some()
        }

        /// True when clients must connect over TLS.
        pub(crate) fn client_tls(&self) -> bool {
            self.client_server.is_some()
        }
    }

    /// The configurations for accepting and dialling peers: mutual TLS, both sides checked
    /// against the peer CA `ca`, this node showing `cert` either way.
    fn peer_configs(
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsError> {
        let roots = load_roots("--peer-trusted-ca-file", ca)?;
        let certs = load_certs("--peer-cert-file", cert)?;
        let key_der = load_key("--peer-key-file", key)?;
        let pair = || {
            format!(
                "--peer-cert-file {} with --peer-key-file {}",
                cert.display(),
                key.display()
            )
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| verifier_error("--peer-trusted-ca-file", ca, e))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Protocols(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key_der.clone_key())
            .map_err(|e| TlsError::Pair {
                pair: pair(),
                problem: key_problem(&e),
            })?;
        let client = client_config(roots, Some((certs, key_der)), ALPN_PEER, pair)?;
        Ok((with_alpn_server(server, ALPN_PEER), client))
    }

    /// The configuration for accepting clients: `cert` shown, client certificates checked
    /// against `--trusted-ca-file` when given, and required with `--client-cert-auth`.
    fn client_server_config(
        cert: &Path,
        key: &Path,
        files: &TlsFiles,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = load_certs("--cert-file", cert)?;
        let key_der = load_key("--key-file", key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Protocols(e.to_string()))?;
        let builder = match &files.trusted_ca_file {
            Some(ca) => {
                let roots = load_roots("--trusted-ca-file", ca)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier = match files.client_cert_auth {
                    true => verifier,
                    false => verifier.allow_unauthenticated(),
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| verifier_error("--trusted-ca-file", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let server = builder
            .with_single_cert(certs, key_der)
            .map_err(|e| TlsError::Pair {
                pair: format!(
                    "--cert-file {} with --key-file {}",
                    cert.display(),
                    key.display()
                ),
                problem: key_problem(&e),
            })?;
        Ok(with_alpn_server(server, ALPN_CLIENT))
    }

    /// A certificate and key rustls refused, in an operator's words.
    fn key_problem(e: &rustls::Error) -> String {
        match e {
            rustls::Error::InconsistentKeys(_) => {
                "the key is not the certificate's (its public key differs)".to_string()
            }
            other => other.to_string(),
        }
    }

    fn with_alpn_server(mut server: ServerConfig, alpn: &[u8]) -> Arc<ServerConfig> {
        server.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(server)
    }

    /// A client-side configuration trusting `roots`, showing `identity` when given (its
    /// refusal is named by `pair`, the flags and files of the certificate and key).
    fn client_config(
        roots: Arc<RootCertStore>,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        alpn: &[u8],
        pair: impl Fn() -> String,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair {
                pair: pair(),
                problem: e.to_string(),
            })?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((certs, key)) => {
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| TlsError::Pair {
                        pair: pair(),
                        problem: key_problem(&e),
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    }

    /// A node's TLS configuration, replaceable while the node runs (SIGHUP): connections
    /// opened after a reload use the new certificates; open ones keep theirs.
    pub struct TlsSlot {
        files: TlsFiles,
        current: RwLock<Arc<NodeTls>>,
    }

    impl fmt::Debug for TlsSlot {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TlsSlot")
                .field("files", &self.files)
                .finish()
        }
    }

    impl TlsSlot {
        /// Loads the files; `None` when `files` asks for no TLS.
        pub fn load(files: &TlsFiles) -> Result<Option<TlsSlot>, TlsError> {
            if files.is_empty() {
                return Ok(None);
            }
            let current = RwLock::new(Arc::new(NodeTls::load(files)?));
            Ok(Some(TlsSlot {
                files: files.clone(),
                current,
            }))
        }

        /// Reads the files again and, when all of them load, uses them for new connections.
        /// On an error the previous configuration stays in use.
        pub fn reload(&self) -> Result<(), TlsError> {
            let fresh = NodeTls::load(&self.files)?;
            *self.current.write() = Arc::new(fresh);
            Ok(())
        }

        /// The files this slot reads.
        pub fn files(&self) -> &TlsFiles {
            &self.files
        }

        /// The configuration for a new connection.
        pub(crate) fn current(&self) -> Arc<NodeTls> {
            self.current.read().clone()
        }
    }

    /// A client's TLS settings (`--cacert`, `--cert`, `--key`): the CA that node certificates
    /// are checked against and, optionally, the client's own certificate.
    #[derive(Clone)]
    pub struct ClientTls {
        config: Arc<ClientConfig>,
    }

    impl fmt::Debug for ClientTls {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("ClientTls")
        }
    }

    impl PartialEq for ClientTls {
        fn eq(&self, other: &ClientTls) -> bool {
            Arc::ptr_eq(&self.config, &other.config)
        }
    }

    impl Eq for ClientTls {}

    impl ClientTls {
        /// Reads the CA file and, when given, the client's certificate and key (both or
        /// neither).
        pub fn from_files(
            ca: &Path,
            cert: Option<&Path>,
            key: Option<&Path>,
        ) -> Result<ClientTls, TlsError> {
            let roots = load_roots("--cacert", ca)?;
            let identity = match (cert, key) {
                (Some(cert), Some(key)) => {
                    Some((load_certs("--cert", cert)?, load_key("--key", key)?))
                }
                (None, None) => None,
                _ => return Err(TlsError::FlagsApart("--cert and --key go together")),
            };
            let pair = || "--cert with --key".to_string();
            let config = client_config(roots, identity, ALPN_CLIENT, pair)?;
            Ok(ClientTls { config })
        }

        /// A client-side TLS session to the node at `ip`, whose certificate must name it.
        pub fn connect(&self, ip: IpAddr) -> std::io::Result<rustls::ClientConnection> {
            rustls::ClientConnection::new(self.config.clone(), ServerName::from(ip))
                .map_err(std::io::Error::other)
        }
    }

    /// A node's client-side session to the peer at `ip` (mutual TLS).
    pub(crate) fn dial_peer(
        node: &NodeTls,
        ip: IpAddr,
    ) -> Option<std::io::Result<rustls::ClientConnection>> {
        let config = node.peer_client.as_ref()?;
        Some(
            rustls::ClientConnection::new(config.clone(), ServerName::from(ip))
                .map_err(std::io::Error::other),
        )
    }
}

#[cfg(not(feature = "tls"))]
mod disabled {
    use super::{TlsError, TlsFiles};
    use std::convert::Infallible;
    use std::path::Path;

    /// Without the `tls` feature: never made (see the module header).
    #[derive(Debug)]
    pub struct TlsSlot {
        pub(crate) never: Infallible,
    }

    impl TlsSlot {
        /// `None` when `files` asks for no TLS; else the error that this build has none.
        pub fn load(files: &TlsFiles) -> Result<Option<TlsSlot>, TlsError> {
            files.check().map(|()| None)
        }

        /// Never called: no slot exists.
        pub fn reload(&self) -> Result<(), TlsError> {
            match self.never {}
        }

        /// Never called: no slot exists.
        pub fn files(&self) -> &TlsFiles {
            match self.never {}
        }
    }

    /// Without the `tls` feature: never made (see the module header).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ClientTls {
        pub(crate) never: Infallible,
    }

    impl ClientTls {
        /// Always the error that this build has no TLS.
        pub fn from_files(
            _ca: &Path,
            _cert: Option<&Path>,
            _key: Option<&Path>,
        ) -> Result<ClientTls, TlsError> {
            Err(TlsError::ClientFeatureMissing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that cannot be read and one without a certificate are refused with errors that
    /// say which (typed), and whose text names the flag, the file and the problem.
    #[cfg(feature = "tls")]
    #[test]
    fn unusable_files_are_typed_errors_naming_the_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let no_pem = dir.path().join("no_pem.pem");
        std::fs::write(&no_pem, "not a certificate\n").unwrap();
        let with_cert = |cert: &std::path::Path| TlsFiles {
            cert_file: Some(cert.to_path_buf()),
            key_file: Some(no_pem.clone()),
            ..TlsFiles::default()
        };
        let error = TlsSlot::load(&with_cert(&missing)).unwrap_err();
        assert!(
            matches!(
                &error,
                TlsError::File {
                    flag: "--cert-file",
                    path,
                    problem: FileProblem::Unreadable(_),
                } if *path == missing
            ),
            "{error:?}"
        );
        let text = error.to_string();
        let named = format!("--cert-file {}: cannot read: ", missing.display());
        assert!(text.starts_with(&named), "{text}");
        let error = TlsSlot::load(&with_cert(&no_pem)).unwrap_err();
        assert!(
            matches!(
                error,
                TlsError::File {
                    problem: FileProblem::NoCertificate,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "--cert-file {}: no certificate in it (expected a PEM -----BEGIN CERTIFICATE----- \
                 block)",
                no_pem.display()
            )
        );
        let error = ClientTls::from_files(&missing, None, None).unwrap_err();
        assert!(
            matches!(
                error,
                TlsError::File {
                    flag: "--cacert",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn flags_that_go_together_are_checked() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert!(TlsFiles::default().check().is_ok());
        let half = TlsFiles {
            cert_file: p("c.pem"),
            ..TlsFiles::default()
        };
        let peer_half = TlsFiles {
            peer_cert_file: p("c.pem"),
            peer_key_file: p("k.pem"),
            ..TlsFiles::default()
        };
        let auth_alone = TlsFiles {
            cert_file: p("c.pem"),
            key_file: p("k.pem"),
            client_cert_auth: true,
            ..TlsFiles::default()
        };
        for files in [half, peer_half, auth_alone] {
            let error = files.check().unwrap_err();
            let typed = if cfg!(feature = "tls") {
                matches!(error, TlsError::FlagsApart(_))
            } else {
                matches!(error, TlsError::FeatureMissing { .. })
            };
            assert!(typed, "{error:?}");
            let error = error.to_string();
            if cfg!(feature = "tls") {
                assert!(error.contains("--"), "{error}");
            } else {
                assert!(error.contains(TLS_FEATURE_MISSING), "{error}");
            }
        }
    }
}
