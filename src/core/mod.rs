//! The consensus core: a pure Raft state machine driven by inputs, producing actions.
//!
//! Owned by the node's consensus thread (or the simulator). It does no I/O and reads no clock:
//! time is a count of [`Input::Tick`]s and randomness comes from the seed in [`CoreConfig`], so
//! the same inputs always give the same actions. [`Replica`] is the entry point; the files
//! below each hold one concept of the algorithm.

mod ahead;
mod api;
pub mod describe;
mod dispatch;
mod election;
mod error;
mod follower_read;
mod gray_failure;
pub mod limits;
mod link_probe;
pub mod log;
mod membership;
pub mod progress;
pub mod quorum;
mod read_index;
mod repair;
mod replica;
mod replication;
pub mod rng;
mod snapshot;
#[cfg(test)]
pub(crate) mod testing;
mod transfer;
mod vote_recovery;

pub use api::*;
pub use error::{CoreError, Result};
pub use replica::{CoreStatus, Replica};
