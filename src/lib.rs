//! rcraft: a Raft consensus server and library.
//!
//! - [`core`]: the pure, deterministic Raft state machine (no I/O, no clocks, no threads).
//! - [`StateMachine`]: the trait a user implements to replicate their own state.
//! - [`Config`]: one node's configuration.
//!
//! See `docs/ARCHITECTURE.md` for the thread map and the message catalogue.

pub mod config;
pub mod core;
pub mod node;
pub mod state_machine;

pub use config::Config;
pub use state_machine::StateMachine;

pub use rcraft_wire as wire;
