//! rcraft: a Raft consensus server and library.
//!
//! - [`core`]: the pure, deterministic Raft state machine (no I/O, no clocks, no threads).
//! - [`StateMachine`]: the trait a user implements to replicate their own state.
//! - [`Config`]: one node's configuration, read from a cRaft `craft.conf` and flags.
//! - [`client::Client`]: a blocking client that finds the leader and retries safely.
//! - [`kv`]: the built-in key-value state machine served by `rcraft serve`.
//!
//! See `docs/ARCHITECTURE.md` for the thread map and the message catalogue.

pub mod client;
pub mod config;
pub mod core;
pub mod kv;
pub mod node;
pub mod state_machine;

pub use config::Config;
pub use state_machine::StateMachine;

pub use rcraft_wire as wire;
