//! The node runtime: the threads that turn the pure consensus core into a running server.
//!
//! A node is four threads joined by bounded channels (see `docs/ARCHITECTURE.md`, "Node
//! runtime"): network ([`net`], mio), consensus (owns the core), storage (owns the WAL, hard state and
//! snapshot files) and apply (owns the user's state machine). [`Node::start`] recovers the
//! durable state, starts them and returns a [`NodeHandle`].

// The runtime that uses these pieces is wired in as the core, storage and network land.
#![allow(dead_code)]

mod apply;
mod entry_codec;
mod error;
pub mod limits;
mod log_store;
pub mod net;
mod results;
mod sessions;
mod snapshot_files;
mod snapshot_format;
mod storage_io;
mod storage_thread;
mod transport;

pub use error::{Error, Result};
pub use results::{ApplyMsg, ProposeResult, ReadResult};
