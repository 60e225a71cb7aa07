//! The node runtime: the threads that turn the pure consensus core into a running server.
//!
//! A node is four threads joined by bounded channels (see `docs/ARCHITECTURE.md`, "Node
//! runtime"): network ([`net`], mio), consensus (owns the core), storage (owns the WAL, hard
//! state and snapshot files) and apply (owns the user's state machine). [`Node::start`] recovers the
//! durable state, starts them and returns a [`NodeHandle`].

mod apply;
pub mod backup;
mod consensus;
mod consensus_logic;
mod data_dir;
pub mod doctor;
mod entry_codec;
mod error;
pub mod flight_recorder;
pub mod force_new_cluster;
mod handle;
mod incoming_snapshot;
mod initial_voters;
pub mod limits;
mod log_store;
mod mailbox;
pub mod metrics;
mod metrics_http;
pub mod net;
mod observe;
mod peer_delay;
mod received_snapshot;
pub mod restore;
mod results;
mod runtime;
mod sessions;
mod snapshot_damage;
mod snapshot_files;
mod snapshot_format;
mod snapshot_send;
mod storage_error;
mod storage_io;
#[cfg(test)]
mod storage_sim;
mod storage_thread;
#[doc(hidden)]
pub mod testing;
mod transport;

pub use data_dir::{IdentityError, IdentityProblem};
pub use entry_codec::PayloadError;
pub use error::{Error, Fatal, Result};
pub use handle::NodeHandle;
pub use initial_voters::InitialVotersError;
pub use metrics_http::Unhealthy;
pub use peer_delay::FailpointError;
pub use received_snapshot::StageError;
pub use results::{ApplyMsg, ProposeResult, ReadResult, SnapshotResult};
pub use runtime::Node;
pub use snapshot_files::SnapshotFileError;
pub use storage_error::{DecodeProblem, Decoded, StorageError};
