//! The connection handshake: the first [`HANDSHAKE_BYTES`] bytes each side sends.
//!
//! The connecting side sends its handshake first; the accepting side checks it and answers
//! with its own, after which both sides exchange frames. Byte layout (all little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..6 | magic `RCRAFT` |
//! | 6..8 | protocol version, u16 |
//! | 8 | role: 1 = peer, 2 = client |
//! | 9 | flags: bit 0 = an authentication block follows ([`Handshake::auth`]); bit 1 = a refusal ([`Handshake::refusal`]) |
//! | 10..12 | refusal reason, u16 (zero unless bit 1 of the flags) |
//! | 12..20 | cluster id, u64 ([`CLUSTER_ID_UNKNOWN`]: the sender does not know it yet) |
//! | 20..28 | node id of a peer, u64 (zero for a client) |
//! | 28..36 | incarnation of a peer's data dir, u64 (zero for a client); in a refusal for [`Refusal::Incarnation`], the incarnation the refusing node knows for the refused one |
//! | 36..40 | CRC-32C of bytes 0..36, u32 |
//!
//! A refusal is an acceptor's answer saying why it will close the connection, so that the
//! refused node can tell its operator; it is never followed by anything.
//!
//! With the auth flag set, the handshake is followed by a block whose layout depends on who
//! sends it (`wire/PROTOCOL.md`, section 2): a peer's nonce ([`NONCE_BYTES`]), an acceptor's
//! nonce and proof ([`MAC_BYTES`]), or a client's token (a u16 length, then at most
//! [`TOKEN_BYTES_MAX`] bytes). [`FrameDecoder`](crate::FrameDecoder) takes these blocks off the
//! stream; computing and checking proofs is the node's business, not this crate's.
//!
//! Pure values: no I/O, no state; owned by whichever thread holds the connection.

use crate::error::{Error, Result};
use crate::limits::{HANDSHAKE_BYTES, PROTOCOL_VERSION};
use crate::types::NodeId;

/// First six bytes of every handshake.
pub const HANDSHAKE_MAGIC: [u8; 6] = *b"RCRAFT";

/// The cluster id of a sender that does not know it yet: a node started to join a cluster
/// before its first contact, or a client that was not given one. It matches any cluster id.
pub const CLUSTER_ID_UNKNOWN: u64 = 0;

const ROLE_PEER: u8 = 1;
const ROLE_CLIENT: u8 = 2;
/// Flag bit: an authentication block follows the handshake.
const FLAG_AUTH: u8 = 1;
/// Flag bit: the handshake is a refusal; the connection closes after it.
const FLAG_REFUSAL: u8 = 2;

/// Length of the random nonce each side of an authenticated peer handshake contributes.
pub const NONCE_BYTES: usize = 32;
/// Length of a handshake proof (an HMAC-SHA256 tag).
pub const MAC_BYTES: usize = 32;
/// Longest client token accepted in a handshake.
pub const TOKEN_BYTES_MAX: usize = 1024;
const CHECKSUMMED_BYTES: usize = HANDSHAKE_BYTES - 4;

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRole {
    /// Another node of the cluster, with its id.
    Peer(NodeId),
    /// A client (the `rcraft` CLI, the loadtest, an embedding application).
    Client,
}

/// Why an acceptor refuses a peer (the reason code of a refusal handshake).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The peer belongs to another cluster; the refusal carries the acceptor's cluster id.
    OtherCluster,
    /// The peer's data dir is not the one the acceptor knows for its node id (it was wiped
    /// or replaced); the refusal's incarnation is the one the acceptor knows.
    Incarnation,
    /// A reason this version does not know (sent by a newer node).
    Other(u16),
}

impl Refusal {
    fn code(self) -> u16 {
        match self {
            Refusal::OtherCluster => 1,
            Refusal::Incarnation => 2,
            Refusal::Other(code) => code,
        }
    }

    fn of(code: u16) -> Refusal {
        match code {
            1 => Refusal::OtherCluster,
            2 => Refusal::Incarnation,
            other => Refusal::Other(other),
        }
    }
}

/// The values a handshake carries besides magic and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Cluster id; both sides must agree, unless one of them sends [`CLUSTER_ID_UNKNOWN`].
    pub cluster_id: u64,
    /// The sender's role.
    pub role: ConnectionRole,
    /// An authentication block follows: a peer's nonce (and, from the acceptor, its proof),
    /// or a client's token.
    pub auth: bool,
    /// The random id of a peer's data dir, made when the data dir was created (zero for a
    /// client). A node whose data dir was wiped comes back under its old node id with a new
    /// incarnation, which its peers refuse.
    pub incarnation: u64,
    /// Set on an acceptor's answer that refuses the connection, with the reason.
    pub refusal: Option<Refusal>,
}

impl Handshake {
    /// The handshake of a node (peer role), without an incarnation (see
    /// [`Handshake::with_incarnation`]).
    pub fn peer(cluster_id: u64, node_id: NodeId) -> Handshake {
        Handshake {
            cluster_id,
            role: ConnectionRole::Peer(node_id),
            auth: false,
            incarnation: 0,
            refusal: None,
        }
    }

    /// The handshake of a client.
    pub fn client(cluster_id: u64) -> Handshake {
        Handshake {
            cluster_id,
            role: ConnectionRole::Client,
            auth: false,
            incarnation: 0,
            refusal: None,
        }
    }

    /// The same handshake announcing an authentication block after it.
    pub fn with_auth(self) -> Handshake {
        Handshake { auth: true, ..self }
    }

    /// The same handshake carrying the incarnation of the sender's data dir.
    pub fn with_incarnation(self, incarnation: u64) -> Handshake {
        Handshake {
            incarnation,
            ..self
        }
    }

    /// An acceptor's refusal of a peer: its own cluster id and node id, and for
    /// [`Refusal::Incarnation`] the incarnation it knows for the refused node (else zero).
    pub fn refusal(cluster_id: u64, node_id: NodeId, why: Refusal, incarnation: u64) -> Handshake {
        Handshake {
            refusal: Some(why),
            ..Handshake::peer(cluster_id, node_id).with_incarnation(incarnation)
        }
    }

    /// The bytes to send.
    pub fn encode(&self) -> [u8; HANDSHAKE_BYTES] {
        let mut bytes = [0u8; HANDSHAKE_BYTES];
        bytes[0..6].copy_from_slice(&HANDSHAKE_MAGIC);
        bytes[6..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        let (role, node_id) = match self.role {
            ConnectionRole::Peer(id) => (ROLE_PEER, id.0),
            ConnectionRole::Client => (ROLE_CLIENT, 0),
        };
        bytes[8] = role;
        bytes[9] = if self.auth { FLAG_AUTH } else { 0 };
        if let Some(why) = self.refusal {
            bytes[9] |= FLAG_REFUSAL;
            bytes[10..12].copy_from_slice(&why.code().to_le_bytes());
        }
        bytes[12..20].copy_from_slice(&self.cluster_id.to_le_bytes());
        bytes[20..28].copy_from_slice(&node_id.to_le_bytes());
        bytes[28..36].copy_from_slice(&self.incarnation.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..CHECKSUMMED_BYTES]);
        bytes[CHECKSUMMED_BYTES..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Checks the first bytes of a handshake, as soon as they arrive: magic then version.
    /// A sender of another protocol version may send a handshake of another length, so this
    /// is what names it, rather than a wait for bytes that never come.
    pub fn check_prefix(bytes: &[u8]) -> Result<()> {
        if let Some(found) = bytes.get(0..6) {
            let found: [u8; 6] = found.try_into().expect("six bytes");
            if found != HANDSHAKE_MAGIC {
                return Err(Error::BadHandshakeMagic { found });
            }
        }
        if let Some(version) = bytes.get(6..8) {
            let theirs = u16::from_le_bytes([version[0], version[1]]);
            if theirs != PROTOCOL_VERSION {
                return Err(Error::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs,
                });
            }
        }
        Ok(())
    }

    /// Parses received bytes, checking magic, version, checksum, role and reserved bytes in
    /// that order, so that a foreign protocol or another version is named as such rather
    /// than as a checksum failure. The cluster id is checked by [`Handshake::check_cluster`].
    pub fn decode(bytes: &[u8; HANDSHAKE_BYTES]) -> Result<Handshake> {
        Handshake::check_prefix(bytes)?;
        let expected = u32::from_le_bytes(bytes[CHECKSUMMED_BYTES..].try_into().expect("four"));
        let computed = crc32c::crc32c(&bytes[..CHECKSUMMED_BYTES]);
        if expected != computed {
            return Err(Error::ChecksumMismatch {
                what: "handshake",
                expected,
                computed,
            });
        }
        let flags = bytes[9];
        let reason = u16::from_le_bytes([bytes[10], bytes[11]]);
        let refused = flags & FLAG_REFUSAL != 0;
        if flags & !(FLAG_AUTH | FLAG_REFUSAL) != 0 || (reason != 0) != refused {
            return Err(Error::NonZeroReserved);
        }
        let cluster_id = u64::from_le_bytes(bytes[12..20].try_into().expect("eight bytes"));
        let node_id = u64::from_le_bytes(bytes[20..28].try_into().expect("eight bytes"));
        let incarnation = u64::from_le_bytes(bytes[28..36].try_into().expect("eight bytes"));
        let role = match bytes[8] {
            ROLE_PEER => ConnectionRole::Peer(NodeId(node_id)),
            ROLE_CLIENT if node_id == 0 && incarnation == 0 && !refused => ConnectionRole::Client,
            ROLE_CLIENT => return Err(Error::NonZeroReserved),
            other => return Err(Error::UnknownRole(other)),
        };
        Ok(Handshake {
            cluster_id,
            role,
            auth: flags & FLAG_AUTH != 0,
            incarnation,
            refusal: refused.then(|| Refusal::of(reason)),
        })
    }

    /// Refuses a handshake from another cluster. [`CLUSTER_ID_UNKNOWN`] on either side
    /// matches any id: a joining node or a client learns the id from the answer.
    pub fn check_cluster(&self, ours: u64) -> Result<()> {
        if self.cluster_id == ours
            || self.cluster_id == CLUSTER_ID_UNKNOWN
            || ours == CLUSTER_ID_UNKNOWN
        {
            Ok(())
        } else {
            Err(Error::ClusterMismatch {
                ours,
                theirs: self.cluster_id,
            })
        }
    }

    /// Refuses the answer to a dialled peer connection unless it comes from `expected`.
    pub fn check_peer(&self, expected: NodeId) -> Result<()> {
        match self.role {
            ConnectionRole::Peer(found) if found == expected => Ok(()),
            ConnectionRole::Peer(found) => Err(Error::UnexpectedPeer {
                expected: expected.0,
                found: found.0,
            }),
            ConnectionRole::Client => Err(Error::UnknownRole(ROLE_CLIENT)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_and_client_handshakes_roundtrip() {
        for handshake in [
            Handshake::peer(7, NodeId(3)),
            Handshake::client(7),
            Handshake::peer(7, NodeId(3)).with_auth(),
            Handshake::client(7).with_auth(),
            Handshake::peer(7, NodeId(3)).with_incarnation(0xfeed_beef),
            Handshake::refusal(7, NodeId(3), Refusal::OtherCluster, 0),
            Handshake::refusal(7, NodeId(3), Refusal::Incarnation, 42),
            Handshake::refusal(7, NodeId(3), Refusal::Other(9), 0),
        ] {
            assert_eq!(Handshake::decode(&handshake.encode()), Ok(handshake));
        }
    }

    #[test]
    fn an_older_peer_is_refused_by_name() {
        // Version 8 carries entries as WAL records, versions 9 and 10 changed `RepairAnswer`
        // and 10 `RepairQuery`, 11 `SnapshotMeta` (PROTOCOL.md, "Versions"): an older node
        // would misread them, so the two refuse each other at the handshake.
        assert_eq!(PROTOCOL_VERSION, 11);
        for version in [7u16, 8, 9, 10] {
            let mut old = Handshake::peer(7, NodeId(3)).encode();
            old[6..8].copy_from_slice(&version.to_le_bytes());
            let refused = Handshake::check_prefix(&old[..8]).unwrap_err();
            assert_eq!(
                refused.to_string(),
                format!("protocol version {version} is not ours (11)")
            );
            assert_eq!(Handshake::decode(&old), Err(refused));
        }
    }

    #[test]
    fn each_field_is_checked_and_named() {
        let good = Handshake::peer(7, NodeId(3)).encode();
        let mut bad_magic = good;
        bad_magic[0] = b'X';
        assert!(matches!(
            Handshake::decode(&bad_magic),
            Err(Error::BadHandshakeMagic { .. })
        ));
        let mut bad_version = good;
        bad_version[6..8].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        assert_eq!(
            Handshake::decode(&bad_version),
            Err(Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1
            })
        );
        let mut flipped = good;
        flipped[13] ^= 1;
        assert!(matches!(
            Handshake::decode(&flipped),
            Err(Error::ChecksumMismatch { .. })
        ));
        let other_cluster = Handshake::decode(&good).unwrap().check_cluster(8);
        assert_eq!(
            other_cluster,
            Err(Error::ClusterMismatch { ours: 8, theirs: 7 })
        );
        // A side that does not know the cluster id yet matches any.
        assert_eq!(Handshake::client(0).check_cluster(8), Ok(()));
        assert_eq!(Handshake::decode(&good).unwrap().check_cluster(0), Ok(()));
        let mut stray_reason = good;
        stray_reason[10] = 1;
        let crc = crc32c::crc32c(&stray_reason[..CHECKSUMMED_BYTES]);
        stray_reason[CHECKSUMMED_BYTES..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Handshake::decode(&stray_reason),
            Err(Error::NonZeroReserved)
        );
        // Another version is named from its first eight bytes, whatever its length.
        assert!(matches!(
            Handshake::check_prefix(&bad_version[..8]),
            Err(Error::VersionMismatch { theirs, .. }) if theirs == PROTOCOL_VERSION + 1
        ));
        assert_eq!(Handshake::check_prefix(&good[..5]), Ok(()));
        let wrong_peer = Handshake::decode(&good).unwrap().check_peer(NodeId(4));
        assert_eq!(
            wrong_peer,
            Err(Error::UnexpectedPeer {
                expected: 4,
                found: 3
            })
        );
    }
}
