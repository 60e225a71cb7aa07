//! rcraft: a Raft consensus server and library.
//!
//! - [`core`]: the pure, deterministic Raft state machine (no I/O, no clocks, no threads).
//! - [`StateMachine`]: the trait a user implements to replicate their own state.
//! - [`Config`]: one node's configuration, read from a cRaft `craft.conf` and flags.
//! - [`client::Client`]: a blocking client that finds the leader and retries safely, for any
//!   state machine; [`kv_client::KvClient`] puts the KV store's commands on top of it.
//! - [`kv`]: the built-in key-value state machine served by `rcraft serve`.
//! - [`admin`]: membership changes planned against the leader's configuration, a learner
//!   promoted once caught up, replication lag (what `rcraft members` runs).
//!
//! - [`node`]: a running node ([`node::Node::start`], [`node::NodeHandle`]); `rcraft serve`
//!   is one with the built-in [`kv::KvStore`], stopped by SIGTERM/SIGINT.
//!
//! See `docs/ARCHITECTURE.md` for the thread map and the message catalogue.
//!
//! # Embedding a node
//!
//! Implement [`StateMachine`] for your state, start a node with a [`Config`], then propose
//! commands and read through the handle. This starts a one-node cluster on a free loopback
//! port; a real cluster lists every node's address in `servers` and starts one node per
//! process with its own `id`.
//!
//! ```
//! use rcraft::node::{Error, Node};
//! use rcraft::wire::{LogIndex, NodeId};
//! use rcraft::{Config, StateMachine};
//! use std::io::{self, Read, Write};
//! use std::time::Duration;
//!
//! /// A replicated counter: each command is a little-endian `u64` to add.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Vec<u8> {
//!         let mut word = [0u8; 8];
//!         word.copy_from_slice(&command[..8]);
//!         self.0 += u64::from_le_bytes(word);
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     fn query(&self, _query: &[u8]) -> Vec<u8> {
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
//!         out.write_all(&self.0.to_le_bytes())
//!     }
//!     fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
//!         let mut word = [0u8; 8];
//!         input.read_exact(&mut word)?;
//!         self.0 = u64::from_le_bytes(word);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = tempfile::tempdir()?;
//! let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
//! let config = Config::new(NodeId(0), vec![address], data.path().to_path_buf());
//! let node = Node::start(config, Counter::default())?;
//!
//! // A fresh node elects itself after one election timeout.
//! assert_eq!(node.wait_for_leader(Duration::from_secs(10))?, NodeId(0));
//! let written = node.propose(5u64.to_le_bytes().to_vec())?;
//! println!("committed at term {} index {}", written.term, written.index);
//! assert_eq!(written.response, 5u64.to_le_bytes());
//!
//! let read = node.read(Vec::new())?; // linearizable (ReadIndex)
//! assert_eq!(read.response, 5u64.to_le_bytes());
//!
//! // Only the leader takes proposals; others answer with a hint.
//! if let Err(Error::NotLeader { hint, .. }) = node.propose(vec![0; 8]) {
//!     println!("ask node {hint:?}");
//! }
//! node.shutdown()?; // threads joined, storage synced
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod client;
pub mod config;
pub mod core;
pub mod kv;
pub mod kv_client;
pub mod node;
pub mod state_machine;
pub mod tls;

pub use config::Config;
pub use state_machine::StateMachine;

pub use rcraft_wire as wire;
