//! The crate's one error type and its `Result` alias.
//!
//! Every error names what was wrong with the bytes so the network thread can log a precise
//! reason when it closes a connection. Errors are plain values (`Clone`) because a frame
//! decoder that failed keeps returning the same error: the stream is out of sync for good.

use crate::frame::FrameKind;
use std::fmt;

/// What went wrong while encoding, decoding or checking wire bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The handshake does not start with the rcraft magic: not an rcraft peer or client.
    BadHandshakeMagic {
        /// The first bytes received.
        found: [u8; 6],
    },
    /// The other side speaks another protocol version.
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The other side belongs to another cluster.
    ClusterMismatch {
        /// Our cluster id.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
    /// The handshake names a role this version does not know.
    UnknownRole(u8),
    /// Reserved handshake bytes are not zero.
    NonZeroReserved,
    /// A checksum did not match: `what` says which one.
    ChecksumMismatch {
        /// "handshake", "frame header" or "frame payload".
        what: &'static str,
        /// The checksum carried in the bytes.
        expected: u32,
        /// The checksum computed over what arrived.
        computed: u32,
    },
    /// A frame header does not start with the frame magic: the stream is out of sync.
    BadFrameMagic {
        /// The two bytes found.
        found: [u8; 2],
    },
    /// A frame header names an unknown kind.
    UnknownFrameKind(u8),
    /// A frame announces (or an encoder produced) a payload over the limit.
    FrameTooLarge {
        /// Announced or produced payload length.
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// A frame of one kind was decoded as another.
    UnexpectedFrameKind {
        /// What the caller asked for.
        expected: FrameKind,
        /// What the frame is.
        found: FrameKind,
    },
    /// A peer connection's handshake named another node than the one dialled.
    UnexpectedPeer {
        /// The node this address belongs to in our configuration.
        expected: u64,
        /// The node that answered.
        found: u64,
    },
    /// The payload is not a valid archive of the expected type (rkyv's checked access).
    InvalidArchive(String),
    /// rkyv could not serialize or deserialize a value.
    Serialize(String),
    /// A client token block announces an empty token or one over the limit.
    BadTokenLength {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadHandshakeMagic { found } => {
                write!(f, "not an rcraft handshake (first bytes {found:02x?})")
            }
            Error::VersionMismatch { ours, theirs } => {
                write!(f, "protocol version {theirs} is not ours ({ours})")
            }
            Error::ClusterMismatch { ours, theirs } => {
                write!(f, "cluster id {theirs:#x} is not ours ({ours:#x})")
            }
            Error::UnknownRole(role) => write!(f, "unknown handshake role {role}"),
            Error::NonZeroReserved => write!(f, "reserved handshake bytes are not zero"),
            Error::ChecksumMismatch {
                what,
                expected,
                computed,
            } => write!(
                f,
                "{what} checksum mismatch: carried {expected:#010x}, computed {computed:#010x}"
            ),
            Error::BadFrameMagic { found } => {
                write!(f, "bad frame magic {found:02x?}: stream out of sync")
            }
            Error::UnknownFrameKind(kind) => write!(f, "unknown frame kind {kind}"),
            Error::FrameTooLarge { len, max } => {
                write!(f, "frame payload of {len} bytes exceeds the limit of {max}")
            }
            Error::UnexpectedFrameKind { expected, found } => {
                write!(f, "expected a {expected} frame, got a {found} frame")
            }
            Error::UnexpectedPeer { expected, found } => {
                write!(f, "dialled node {expected} but node {found} answered")
            }
            Error::InvalidArchive(why) => write!(f, "invalid payload archive: {why}"),
            Error::Serialize(why) => write!(f, "rkyv (de)serialization failed: {why}"),
            Error::BadTokenLength { len, max } => {
                write!(f, "client token of {len} bytes (expected 1 to {max})")
            }
        }
    }
}

impl std::error::Error for Error {}
