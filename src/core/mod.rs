//! The consensus core: a pure Raft state machine driven by inputs, producing actions.
//!
//! Owned by the node's consensus thread (or the simulator). It does no I/O and reads no clock:
//! time is a count of [`Input::Tick`]s and randomness comes from the seed in [`CoreConfig`], so
//! the same inputs always give the same actions.

mod api;

pub use api::*;
