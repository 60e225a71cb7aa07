//! Authentication on the network thread: the cluster secret that peers prove they hold, and
//! the tokens that give clients their permissions (SECURITY.md, `wire/PROTOCOL.md` section 2).
//!
//! Peers: a mutual challenge-response. The dialler sends a fresh random nonce with its
//! handshake; the acceptor answers with its own nonce and a proof, the HMAC-SHA256 under the
//! secret of a transcript binding both nonces, both node ids, the cluster id and the side
//! that computes it; the dialler checks that proof, then sends its own (the other side's
//! label). Neither side accepts a frame before checking the other's proof. A recorded
//! handshake replayed later fails because the other side's nonce is new, and a proof
//! reflected back to its sender fails because the side label differs.
//!
//! Clients: a bearer token sent after the client handshake. Tokens are kept as SHA-256
//! digests and compared in constant time, so a comparison reveals neither a token's bytes
//! nor its length.
//!
//! Pure values apart from [`fresh_nonce`] (the OS random source) and the file loaders; shared
//! read-only (behind `Arc`) by the network thread.

use hmac::{Hmac, Mac};
use rcraft_wire::{ClientRequestBody, MAC_BYTES, NONCE_BYTES, NodeId, TOKEN_BYTES_MAX};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use subtle::{Choice, ConstantTimeEq};

/// Shortest secret accepted, in bytes: guessing one must stay out of reach.
pub const SECRET_BYTES_MIN: usize = 16;
/// Most secrets (or tokens of one kind) a file may list: the current one and those being
/// rotated in or out.
pub const SECRETS_PER_FILE_MAX: usize = 8;

type HmacSha256 = Hmac<Sha256>;

/// A random nonce of one side of a peer handshake.
pub type Nonce = [u8; NONCE_BYTES];
/// A peer handshake proof.
pub type Proof = [u8; MAC_BYTES];

/// Why a set of secrets or tokens, or the file holding them, is refused.
#[derive(Debug)]
pub enum AuthError {
    /// No secret was given.
    NoSecret,
    /// More secrets (or tokens of one kind) than [`SECRETS_PER_FILE_MAX`].
    TooMany {
        /// "secrets" or "tokens".
        what: &'static str,
        /// How many were given.
        count: usize,
    },
    /// A secret shorter than [`SECRET_BYTES_MIN`].
    SecretTooShort {
        /// Its length.
        bytes: usize,
    },
    /// A token outside [`SECRET_BYTES_MIN`]..=[`TOKEN_BYTES_MAX`] bytes.
    BadTokenLength {
        /// Its length.
        bytes: usize,
    },
    /// A token file without a token.
    NoToken,
    /// The file could not be examined or read.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The path is not a regular file.
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file's mode lets its group or others access it.
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// What a file holds is refused (`problem` is not [`AuthError::Io`] nor about the file
    /// itself).
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        problem: Box<AuthError>,
    },
}

impl AuthError {
    fn in_file(path: &Path) -> impl FnOnce(AuthError) -> AuthError + '_ {
        move |problem| AuthError::InFile {
            path: path.to_path_buf(),
            problem: Box::new(problem),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::NoSecret => f.write_str("no secret given"),
            AuthError::TooMany { what, count } => {
                write!(f, "{count} {what} given; at most {SECRETS_PER_FILE_MAX}")
            }
            AuthError::SecretTooShort { bytes } => write!(
                f,
                "a secret of {bytes} bytes is too short (at least {SECRET_BYTES_MIN})"
            ),
            AuthError::BadTokenLength { bytes } => write!(
                f,
                "a token of {bytes} bytes (expected {SECRET_BYTES_MIN} to {TOKEN_BYTES_MAX})"
            ),
            AuthError::NoToken => f.write_str("no token in the file"),
            AuthError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            AuthError::NotAFile { path } => write!(f, "{}: not a regular file", path.display()),
            AuthError::NotPrivate { path, mode } => write!(
                f,
                "{}: mode {mode:03o} lets group or others access it; it must be private to its \
                 owner (chmod 600)",
                path.display()
            ),
            AuthError::InFile { path, problem } => write!(f, "{}: {problem}", path.display()),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuthError::Io { source, .. } => Some(source),
            AuthError::InFile { problem, .. } => Some(problem.as_ref()),
            _ => None,
        }
    }
}

/// Which side of a peer connection computes a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The node that dialled.
    Dialler,
    /// The node that accepted.
    Acceptor,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Dialler => b"rcraft peer proof v4: dialler",
            Side::Acceptor => b"rcraft peer proof v4: acceptor",
        }
    }
}

/// Everything a peer handshake proof is computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The cluster both sides claim.
    pub cluster_id: u64,
    /// The node that dialled.
    pub dialler: NodeId,
    /// The node that accepted.
    pub acceptor: NodeId,
    /// The dialler's fresh nonce.
    pub dialler_nonce: Nonce,
    /// The acceptor's fresh nonce.
    pub acceptor_nonce: Nonce,
}

/// The cluster secrets of this node. Invariant: at least one, each of at least
/// [`SECRET_BYTES_MIN`] bytes. The first proves this node's identity; any of them is accepted
/// from a peer, so a new secret can be rolled out without downtime (SECURITY.md).
#[derive(Clone)]
pub struct PeerSecrets {
    secrets: Vec<Vec<u8>>,
}

impl fmt::Debug for PeerSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerSecrets({} secret(s), redacted)", self.secrets.len())
    }
}

impl PeerSecrets {
    /// Secrets given directly (the first proves, all verify).
    pub fn new(secrets: Vec<Vec<u8>>) -> Result<PeerSecrets, AuthError> {
        if secrets.is_empty() {
            return Err(AuthError::NoSecret);
        }
        if secrets.len() > SECRETS_PER_FILE_MAX {
            return Err(AuthError::TooMany {
                what: "secrets",
                count: secrets.len(),
            });
        }
        if let Some(short) = secrets.iter().find(|s| s.len() < SECRET_BYTES_MIN) {
            return Err(AuthError::SecretTooShort { bytes: short.len() });
        }
        Ok(PeerSecrets { secrets })
    }

    /// Reads the secrets from `path`: one per line, blank lines and `#` comments ignored. The
    /// file must be private to its owner (no group or other permission bits).
    pub fn from_file(path: &Path) -> Result<PeerSecrets, AuthError> {
        let lines = read_private_lines(path)?;
        PeerSecrets::new(lines).map_err(AuthError::in_file(path))
    }

    /// This node's proof for `side` of `transcript`, under its first secret.
    pub fn prove(&self, side: Side, transcript: &Transcript) -> Proof {
        proof(&self.secrets[0], side, transcript)
    }

    /// True when `proof` is `side`'s proof of `transcript` under any of the secrets. Every
    /// secret is tried, in constant time, whatever matches.
    pub fn verify(&self, side: Side, transcript: &Transcript, theirs: &Proof) -> bool {
        let mut matched = Choice::from(0);
        for secret in &self.secrets {
            matched |= proof(secret, side, transcript).ct_eq(theirs);
        }
        matched.into()
    }
}

fn proof(secret: &[u8], side: Side, transcript: &Transcript) -> Proof {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(side.label());
    mac.update(&transcript.cluster_id.to_le_bytes());
    mac.update(&transcript.dialler.0.to_le_bytes());
    mac.update(&transcript.acceptor.0.to_le_bytes());
    mac.update(&transcript.dialler_nonce);
    mac.update(&transcript.acceptor_nonce);
    mac.finalize().into_bytes().into()
}

/// A fresh nonce from the operating system's random source.
pub fn fresh_nonce() -> std::io::Result<Nonce> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(format!("OS random: {e}")))?;
    Ok(nonce)
}

/// How every refusal for lack of permission starts.
pub const PERMISSION_DENIED: &str = "permission denied";

/// What a client connection may do. Ordered: each permission includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// Nothing: the connection sent no known token and the node requires one.
    None,
    /// Reads, writes, status and latency (the client token).
    Client,
    /// Everything, including membership changes, snapshots and backups, leadership transfer
    /// and the flight recorder's events (the admin token).
    Admin,
}

impl Permission {
    /// The permission `request` needs.
    pub fn needed_for(request: &ClientRequestBody) -> Permission {
        match request {
            ClientRequestBody::Write { .. }
            | ClientRequestBody::Read { .. }
            | ClientRequestBody::Status
            | ClientRequestBody::Latency => Permission::Client,
            ClientRequestBody::TransferLeader { .. }
            | ClientRequestBody::ChangeMembership { .. }
            | ClientRequestBody::Snapshot
            | ClientRequestBody::ReadSnapshot { .. }
            | ClientRequestBody::Events => Permission::Admin,
        }
    }

    /// The message of a definite refusal of a request needing `self`.
    pub fn refusal(self) -> String {
        match self {
            Permission::None => PERMISSION_DENIED.into(),
            Permission::Client => {
                format!("{PERMISSION_DENIED}: this request needs the client or admin token")
            }
            Permission::Admin => format!("{PERMISSION_DENIED}: this request needs the admin token"),
        }
    }
}

/// The client and admin tokens a node accepts, as SHA-256 digests. Either list may be empty
/// (only admin tokens configured: every client needs the admin token).
#[derive(Clone, Default)]
pub struct ClientTokens {
    client: Vec<[u8; 32]>,
    admin: Vec<[u8; 32]>,
}

impl fmt::Debug for ClientTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientTokens({} client, {} admin, redacted)",
            self.client.len(),
            self.admin.len()
        )
    }
}

impl ClientTokens {
    /// Tokens given directly.
    pub fn new(client: &[Vec<u8>], admin: &[Vec<u8>]) -> Result<ClientTokens, AuthError> {
        for token in client.iter().chain(admin) {
            check_token(token)?;
        }
        Ok(ClientTokens {
            client: client.iter().map(|t| digest(t)).collect(),
            admin: admin.iter().map(|t| digest(t)).collect(),
        })
    }

    /// Reads the token files (one token per line, as secret files); either may be absent.
    pub fn from_files(
        client: Option<&Path>,
        admin: Option<&Path>,
    ) -> Result<ClientTokens, AuthError> {
        let read = |path: Option<&Path>| -> Result<Vec<Vec<u8>>, AuthError> {
            let Some(path) = path else {
                return Ok(Vec::new());
            };
            let lines = read_private_lines(path)?;
            if lines.is_empty() {
                return Err(AuthError::in_file(path)(AuthError::NoToken));
            }
            if lines.len() > SECRETS_PER_FILE_MAX {
                return Err(AuthError::in_file(path)(AuthError::TooMany {
                    what: "tokens",
                    count: lines.len(),
                }));
            }
            for token in &lines {
                check_token(token).map_err(AuthError::in_file(path))?;
            }
            Ok(lines)
        };
        ClientTokens::new(&read(client)?, &read(admin)?)
    }

    /// What a connection that sent `token` (or none) may do.
    pub fn permission(&self, token: Option<&[u8]>) -> Permission {
        let Some(token) = token else {
            return Permission::None;
        };
        let theirs = digest(token);
        let found = |list: &[[u8; 32]]| {
            let mut matched = Choice::from(0);
            for ours in list {
                matched |= ours.ct_eq(&theirs);
            }
            bool::from(matched)
        };
        if found(&self.admin) {
            Permission::Admin
        } else if found(&self.client) {
            Permission::Client
        } else {
            Permission::None
        }
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn check_token(token: &[u8]) -> Result<(), AuthError> {
    if token.len() < SECRET_BYTES_MIN || token.len() > TOKEN_BYTES_MAX {
        return Err(AuthError::BadTokenLength { bytes: token.len() });
    }
    Ok(())
}

/// A token a client sends in its handshake; its bytes are never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(redacted)")
    }
}

impl Token {
    /// A token given directly: [`SECRET_BYTES_MIN`] to [`TOKEN_BYTES_MAX`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Token, AuthError> {
        check_token(&bytes)?;
        Ok(Token(bytes))
    }

    /// The first token of a token file (same rules as the node's files: private to its
    /// owner, one token per line).
    pub fn from_file(path: &Path) -> Result<Token, AuthError> {
        let mut lines = read_private_lines(path)?;
        if lines.is_empty() {
            return Err(AuthError::in_file(path)(AuthError::NoToken));
        }
        Token::new(lines.swap_remove(0)).map_err(AuthError::in_file(path))
    }

    /// The token's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The non-blank, non-comment lines of a file that only its owner may read or write.
fn read_private_lines(path: &Path) -> Result<Vec<Vec<u8>>, AuthError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io)?;
    if !metadata.is_file() {
        return Err(AuthError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AuthError::NotPrivate {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read(path).map_err(io)?;
    Ok(text
        .split(|&b| b == b'\n')
        .map(|line| line.trim_ascii())
        .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> PeerSecrets {
        PeerSecrets::new(list.iter().map(|s| s.as_bytes().to_vec()).collect()).unwrap()
    }

    fn transcript(dialler_nonce: Nonce, acceptor_nonce: Nonce) -> Transcript {
        Transcript {
            cluster_id: 7,
            dialler: NodeId(1),
            acceptor: NodeId(2),
            dialler_nonce,
            acceptor_nonce,
        }
    }

    #[test]
    fn a_proof_verifies_only_with_the_secret_the_side_and_the_transcript() {
        let ours = secrets(&["correct horse battery staple"]);
        let t = transcript([1; 32], [2; 32]);
        let proof = ours.prove(Side::Dialler, &t);
        assert!(ours.verify(Side::Dialler, &t, &proof));
        // Reflected: the acceptor's check of a dialler proof is not the dialler's.
        assert!(!ours.verify(Side::Acceptor, &t, &proof));
        let other = secrets(&["another secret entirely!"]);
        assert!(!other.verify(Side::Dialler, &t, &proof));
        for changed in [
            Transcript { cluster_id: 8, ..t },
            Transcript {
                dialler: NodeId(3),
                ..t
            },
            Transcript {
                acceptor: NodeId(3),
                ..t
            },
            transcript([9; 32], [2; 32]),
            transcript([1; 32], [9; 32]),
        ] {
            assert!(!ours.verify(Side::Dialler, &changed, &proof));
        }
    }

    #[test]
    fn a_recorded_handshake_replayed_against_a_fresh_nonce_fails() {
        let ours = secrets(&["correct horse battery staple"]);
        let dialler_nonce = fresh_nonce().unwrap();
        let recorded = transcript(dialler_nonce, fresh_nonce().unwrap());
        let recorded_proof = ours.prove(Side::Dialler, &recorded);
        // The attacker replays the dialler's nonce and proof; the acceptor picked a new nonce.
        let replay = transcript(dialler_nonce, fresh_nonce().unwrap());
        assert_ne!(replay.acceptor_nonce, recorded.acceptor_nonce);
        assert!(!ours.verify(Side::Dialler, &replay, &recorded_proof));
    }

    #[test]
    fn during_rotation_either_secret_verifies_and_the_first_proves() {
        let old = secrets(&["the old cluster secret"]);
        let both_new_first = secrets(&["the new cluster secret", "the old cluster secret"]);
        let both_old_first = secrets(&["the old cluster secret", "the new cluster secret"]);
        let t = transcript([1; 32], [2; 32]);
        assert!(both_new_first.verify(Side::Acceptor, &t, &old.prove(Side::Acceptor, &t)));
        assert!(both_old_first.verify(
            Side::Acceptor,
            &t,
            &both_new_first.prove(Side::Acceptor, &t)
        ));
        assert!(!old.verify(
            Side::Acceptor,
            &t,
            &both_new_first.prove(Side::Acceptor, &t)
        ));
    }

    #[test]
    fn during_a_token_rotation_both_tokens_are_valid() {
        let tokens = ClientTokens::new(
            &[],
            &[
                b"the old admin token, going".to_vec(),
                b"the new admin token, coming".to_vec(),
            ],
        )
        .unwrap();
        assert_eq!(
            tokens.permission(Some(b"the old admin token, going")),
            Permission::Admin
        );
        assert_eq!(
            tokens.permission(Some(b"the new admin token, coming")),
            Permission::Admin
        );
        // Only admin tokens configured: a client needs an admin token even to read.
        assert_eq!(
            tokens.permission(Some(b"some other token here")),
            Permission::None
        );
    }

    #[test]
    fn short_secrets_and_tokens_are_refused() {
        assert!(PeerSecrets::new(vec![b"short".to_vec()]).is_err());
        assert!(PeerSecrets::new(Vec::new()).is_err());
        assert!(ClientTokens::new(&[b"short".to_vec()], &[]).is_err());
    }

    #[test]
    fn tokens_give_their_permission_and_nothing_else() {
        let tokens = ClientTokens::new(
            &[b"client token number one".to_vec()],
            &[b"admin token number one!".to_vec()],
        )
        .unwrap();
        assert_eq!(tokens.permission(None), Permission::None);
        assert_eq!(
            tokens.permission(Some(b"guessing a token now")),
            Permission::None
        );
        assert_eq!(
            tokens.permission(Some(b"client token number one")),
            Permission::Client
        );
        assert_eq!(
            tokens.permission(Some(b"admin token number one!")),
            Permission::Admin
        );
        let membership = ClientRequestBody::Snapshot;
        let backup = ClientRequestBody::ReadSnapshot {
            index: rcraft_wire::LogIndex(0),
            offset: 0,
        };
        assert_eq!(Permission::needed_for(&backup), Permission::Admin);
        assert_eq!(Permission::needed_for(&membership), Permission::Admin);
        assert_eq!(
            Permission::needed_for(&ClientRequestBody::Status),
            Permission::Client
        );
    }

    #[test]
    fn a_file_readable_by_others_is_refused_and_a_private_one_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(
            &path,
            "# rotated in 2026\n\nthe old cluster secret\nthe new one, long enough\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = PeerSecrets::from_file(&path).unwrap_err();
        assert!(
            matches!(&refused, AuthError::NotPrivate { path: p, mode: 0o644 } if *p == path),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("mode 644"), "{refused}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let read = PeerSecrets::from_file(&path).unwrap();
        assert_eq!(read.secrets.len(), 2);
        let token = Token::from_file(&path).unwrap();
        assert_eq!(token.bytes(), b"the old cluster secret");
        assert_eq!(format!("{token:?}"), "Token(redacted)");
    }

    #[test]
    fn a_refused_file_is_named_and_an_unreadable_one_keeps_its_cause() {
        use std::error::Error as _;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "short\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let refused = ClientTokens::from_files(Some(&path), None).unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!(
                "{}: a token of 5 bytes (expected {SECRET_BYTES_MIN} to {TOKEN_BYTES_MAX})",
                path.display()
            )
        );
        assert!(matches!(
            refused.source().unwrap().downcast_ref::<AuthError>(),
            Some(AuthError::BadTokenLength { bytes: 5 })
        ));
        std::fs::write(&path, "# only a comment\n").unwrap();
        let empty = Token::from_file(&path).unwrap_err();
        assert_eq!(
            empty.to_string(),
            format!("{}: no token in the file", path.display())
        );
        let missing = dir.path().join("missing");
        let unreadable = PeerSecrets::from_file(&missing).unwrap_err();
        assert!(
            unreadable
                .to_string()
                .starts_with(&format!("{}: ", missing.display()))
        );
        let cause = unreadable
            .source()
            .unwrap()
            .downcast_ref::<std::io::Error>();
        assert_eq!(cause.unwrap().kind(), std::io::ErrorKind::NotFound);
    }
}
