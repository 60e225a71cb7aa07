//! `rcraft-wire`: the vocabulary every part of rcraft speaks, and the frame codec that carries it.
//!
//! - [`types`]: newtypes for ids, terms and indexes, log entries and cluster membership.
//! - [`record`]: an entry's one byte format (its WAL record); [`SharedBytes`], the view a
//!   command's bytes are of their record.
//! - [`message`]: every peer (Raft) message and every client request and response.
//! - [`handshake`]: the fixed-size greeting that opens every connection.
//! - [`frame`]: the frame header, the encoders and the sans-I/O [`FrameDecoder`].
//! - [`limits`]: protocol constants and size limits; [`error`]: the crate's error type.
//!
//! The consensus core uses only the vocabulary; framing and byte layout belong to the network
//! thread. This crate depends on no other rcraft crate. See `wire/PROTOCOL.md` for the bytes.

pub mod error;
pub mod frame;
pub mod handshake;
pub mod limits;
// rkyv's derive generates public resolver types without docs; every hand-written item in
// these modules is documented all the same.
#[allow(missing_docs)]
pub mod message;
pub mod record;
pub mod shared_bytes;
#[allow(missing_docs)]
pub mod types;

pub use error::{Error, Result};
pub use frame::{
    Frame, FrameDecoder, FrameKind, encode_client_request, encode_client_response, encode_message,
};
pub use handshake::{
    CLUSTER_ID_UNKNOWN, ConnectionRole, Handshake, MAC_BYTES, NONCE_BYTES, Refusal, TOKEN_BYTES_MAX,
};
pub use limits::*;
pub use message::*;
pub use shared_bytes::SharedBytes;
pub use types::*;
