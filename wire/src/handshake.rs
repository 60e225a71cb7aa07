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
//! | 9 | flags: bit 0 = an authentication block follows ([`Handshake::auth`]) |
//! | 10..12 | reserved, zero |
//! | 12..20 | cluster id, u64 |
//! | 20..28 | node id of a peer, u64 (zero for a client) |
//! | 28..32 | CRC-32C of bytes 0..28, u32 |
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

const ROLE_PEER: u8 = 1;
const ROLE_CLIENT: u8 = 2;
/// Flag bit: an authentication block follows the handshake.
const FLAG_AUTH: u8 = 1;

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

/// The values a handshake carries besides magic and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Cluster id; both sides must agree.
    pub cluster_id: u64,
    /// The sender's role.
    pub role: ConnectionRole,
    /// An authentication block follows: a peer's nonce (and, from the acceptor, its proof),
    /// or a client's token.
    pub auth: bool,
}

impl Handshake {
    /// The handshake of a node (peer role).
    pub fn peer(cluster_id: u64, node_id: NodeId) -> Handshake {
        Handshake {
            cluster_id,
            role: ConnectionRole::Peer(node_id),
            auth: false,
        }
    }

    /// The handshake of a client.
    pub fn client(cluster_id: u64) -> Handshake {
        Handshake {
            cluster_id,
            role: ConnectionRole::Client,
            auth: false,
        }
    }

    /// The same handshake announcing an authentication block after it.
    pub fn with_auth(self) -> Handshake {
        Handshake { auth: true, ..self }
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
        bytes[12..20].copy_from_slice(&self.cluster_id.to_le_bytes());
        bytes[20..28].copy_from_slice(&node_id.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..CHECKSUMMED_BYTES]);
        bytes[CHECKSUMMED_BYTES..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Parses received bytes, checking magic, version, checksum, role and reserved bytes in
    /// that order, so that a foreign protocol or another version is named as such rather
    /// than as a checksum failure. The cluster id is checked by [`Handshake::check_cluster`].
    pub fn decode(bytes: &[u8; HANDSHAKE_BYTES]) -> Result<Handshake> {
        let found: [u8; 6] = bytes[0..6].try_into().expect("six bytes");
        if found != HANDSHAKE_MAGIC {
            return Err(Error::BadHandshakeMagic { found });
        }
        let theirs = u16::from_le_bytes([bytes[6], bytes[7]]);
        if theirs != PROTOCOL_VERSION {
            return Err(Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs,
            });
        }
        let expected = u32::from_le_bytes(bytes[CHECKSUMMED_BYTES..].try_into().expect("four"));
        let computed = crc32c::crc32c(&bytes[..CHECKSUMMED_BYTES]);
        if expected != computed {
            return Err(Error::ChecksumMismatch {
                what: "handshake",
                expected,
                computed,
            });
        }
        if bytes[9] & !FLAG_AUTH != 0 || bytes[10..12] != [0, 0] {
            return Err(Error::NonZeroReserved);
        }
        let cluster_id = u64::from_le_bytes(bytes[12..20].try_into().expect("eight bytes"));
        let node_id = u64::from_le_bytes(bytes[20..28].try_into().expect("eight bytes"));
        let role = match bytes[8] {
            ROLE_PEER => ConnectionRole::Peer(NodeId(node_id)),
            ROLE_CLIENT if node_id == 0 => ConnectionRole::Client,
            ROLE_CLIENT => return Err(Error::NonZeroReserved),
            other => return Err(Error::UnknownRole(other)),
        };
        let auth = bytes[9] & FLAG_AUTH != 0;
        Ok(Handshake {
            cluster_id,
            role,
            auth,
        })
    }

    /// Refuses a handshake from another cluster.
    pub fn check_cluster(&self, ours: u64) -> Result<()> {
        if self.cluster_id == ours {
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
        ] {
            assert_eq!(Handshake::decode(&handshake.encode()), Ok(handshake));
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
        bad_version[6] = 9;
        assert_eq!(
            Handshake::decode(&bad_version),
            Err(Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 9
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
