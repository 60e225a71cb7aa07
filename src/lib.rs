//! rcraft: a Raft consensus server and library.
//!
//! - [`core`]: the pure, deterministic Raft state machine (no I/O, no clocks, no threads).
//! - [`node`]: the threads of a running node (network, ...).
//!
//! See `docs/ARCHITECTURE.md` for the thread map and the message catalogue.

pub mod core;
pub mod node;

pub use rcraft_wire as wire;
