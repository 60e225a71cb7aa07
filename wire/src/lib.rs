//! `rcraft-wire`: the vocabulary every part of rcraft speaks, and the frame codec that carries it.
//!
//! - [`types`]: newtypes for ids, terms and indexes, log entries and cluster membership.
//! - [`message`]: every peer (Raft) message and every client request and response.
//!
//! The consensus core uses only the vocabulary; framing and byte layout belong to the network
//! thread. This crate depends on no other rcraft crate. See `wire/PROTOCOL.md` for the bytes.

// rkyv's derive generates public resolver types without docs; every hand-written item in
// these modules is documented all the same.
#[allow(missing_docs)]
pub mod message;
#[allow(missing_docs)]
pub mod types;

pub use message::*;
pub use types::*;
