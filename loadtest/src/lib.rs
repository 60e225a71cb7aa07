//! `rcraft-loadtest` as a library: the stress tool's parts, driven by the binary in `main.rs`.
//!
//! The pure parts (latency summaries, the operation mix, the write history and its
//! read-back verification, the operation history and its linearizability checker, the JSON
//! and text reports, the SVG chart, the nemesis schedule) have no I/O and are unit-tested
//! here. The parts with processes and sockets (spawned cluster, client threads, fault
//! injection, network namespaces) are exercised by `tests/spawn.rs` and `tests/nemesis.rs`
//! against a real `rcraft` binary.
//!
//! Threads: the event-loop engine's (`engine`, `--engine-threads`, many clients each), or one
//! per client (`workload` with `--thread-per-client`, or `pipeline` with `--pipeline K`), one
//! ticker for
//! progress and per-second samples (`progress`, which also samples node memory) and one fault
//! injector (`faults`). They share only `Arc`s of mutex-protected state listed in each
//! module's header.

pub mod backend;
pub mod chart;
#[cfg(test)]
mod checker_runs;
pub mod cli;
pub mod cluster;
pub mod cpu;
pub mod engine;
pub mod error;
#[cfg(test)]
mod fake_server;
pub mod faults;
pub mod history;
pub mod limits;
pub mod linearizability;
pub mod mix;
pub mod nemesis;
pub mod netns;
pub mod oplog;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod run;
pub mod stats;
pub mod wal_damage;
pub mod workload;

pub use error::{Error, Result};
