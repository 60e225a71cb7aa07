//! The loadtest's view of a cluster: sessions that put, get, delete and compare-and-swap, and
//! per-node status.
//!
//! The rest of the tool talks to these traits only; [`RcraftCluster`] adapts
//! `rcraft::client::Client` to them, and unit tests use an in-memory fake. A session is owned
//! by one client thread; a `ClusterAccess` is shared by all threads.

use crate::limits::STATUS_TIMEOUT;
use rcraft::client::{Client, ClientError, ClientOptions};
use rcraft::kv::{KvCommand, KvResponse};
use rcraft::kv_client::KvClient;
use rcraft::wire::{NodeStatus, ReadMode, Role};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A write the cluster acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteAck {
    /// Term of the committed entry, when the client reports it.
    pub term: Option<u64>,
}

/// A compare-and-swap the cluster answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasReply {
    /// True when the new value was stored.
    pub swapped: bool,
    /// When not swapped, the value the key held (`None`: absent).
    pub current: Option<Vec<u8>>,
    /// Term of the committed entry, when the client reports it.
    pub term: Option<u64>,
}

/// A failed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// Certainly did not and will not take effect.
    Definite(String),
    /// May or may not take effect.
    Unknown(String),
}

/// One client connection to the cluster, used by one thread.
pub trait KvSession: Send {
    /// Stores `value` under `key`.
    fn put(&mut self, key: &str, value: &str) -> Result<WriteAck, OpError>;
    /// Linearizable read of `key`.
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, OpError>;
    /// Removes `key` (succeeds when absent).
    fn delete(&mut self, key: &str) -> Result<WriteAck, OpError>;
    /// Stores `new` under `key` if it holds `expected` (`None`: if absent).
    fn cas(&mut self, key: &str, expected: Option<&[u8]>, new: &str) -> Result<CasReply, OpError>;
}

/// Shared access to a cluster: opens sessions and asks nodes for their status.
pub trait ClusterAccess: Send + Sync {
    /// Opens a session (its own connection) to the cluster.
    fn session(&self) -> Result<Box<dyn KvSession>, OpError>;
    /// Asks one node for its status; `None` when it does not answer in time.
    fn status(&self, addr: SocketAddr) -> Option<NodeStatus>;
}

/// The leader among `addrs`: position in `addrs` and its status. When two nodes claim to lead
/// (a deposed leader that has not noticed yet), the higher term wins.
pub fn find_leader(
    access: &dyn ClusterAccess,
    addrs: &[SocketAddr],
) -> Option<(usize, NodeStatus)> {
    addrs
        .iter()
        .enumerate()
        .filter_map(|(i, &addr)| access.status(addr).map(|s| (i, s)))
        .filter(|(_, s)| s.role == Role::Leader)
        .max_by_key(|(_, s)| s.term)
}

/// [`ClusterAccess`] through the real client, `rcraft::client::Client`.
#[derive(Debug, Clone)]
pub struct RcraftCluster {
    servers: Vec<SocketAddr>,
    options: ClientOptions,
    /// Sessions opened so far, to spread follower reads (see [`RcraftCluster::session`]).
    sessions_opened: Arc<AtomicUsize>,
}

impl RcraftCluster {
    /// Access to the cluster at `servers` (id order) with `timeout` per operation, retries
    /// across leader changes included.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> RcraftCluster {
        let options = client_options(timeout);
        RcraftCluster {
            servers,
            options,
            sessions_opened: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The same access with gets read in `mode` (`--read-mode`).
    pub fn with_read_mode(mut self, mode: ReadMode) -> RcraftCluster {
        self.options.read_mode = mode;
        self
    }

    /// The same, over TLS when `tls` is given (`--cacert`).
    pub fn with_tls(mut self, tls: Option<rcraft::tls::ClientTls>) -> RcraftCluster {
        self.options.tls = tls;
        self
    }

    /// The same, sending `token` in every handshake (nodes with token files).
    pub fn with_token(mut self, token: Option<rcraft::node::net::auth::Token>) -> RcraftCluster {
        self.options.token = token;
        self
    }
}

/// The options of every client of a run: `timeout` per operation, retries included; the
/// library's defaults otherwise (attempt timeout, back-off, failover probe).
pub fn client_options(timeout: Duration) -> ClientOptions {
    let defaults = ClientOptions::default();
    ClientOptions {
        timeout,
        attempt_timeout: defaults.attempt_timeout.min(timeout),
        ..defaults
    }
}

fn op_error(error: ClientError) -> OpError {
    if error.is_definite() {
        OpError::Definite(error.to_string())
    } else {
        OpError::Unknown(error.to_string())
    }
}

struct RcraftSession {
    client: KvClient,
}

impl KvSession for RcraftSession {
    fn put(&mut self, key: &str, value: &str) -> Result<WriteAck, OpError> {
        // `submit` rather than `KvClient::put`: the result carries the entry's term, which the
        // failover measurement needs.
        let command = KvCommand::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        };
        match self.write(&command, "put")? {
            (KvResponse::Done, term) => Ok(WriteAck { term: Some(term) }),
            (other, _) => Err(OpError::Unknown(format!(
                "unexpected answer to put: {other:?}"
            ))),
        }
    }

    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, OpError> {
        self.client.get(key.as_bytes()).map_err(op_error)
    }

    fn delete(&mut self, key: &str) -> Result<WriteAck, OpError> {
        let command = KvCommand::Delete {
            key: key.as_bytes().to_vec(),
        };
        match self.write(&command, "del")? {
            (KvResponse::Done, term) => Ok(WriteAck { term: Some(term) }),
            (other, _) => Err(OpError::Unknown(format!(
                "unexpected answer to del: {other:?}"
            ))),
        }
    }

    fn cas(&mut self, key: &str, expected: Option<&[u8]>, new: &str) -> Result<CasReply, OpError> {
        let command = KvCommand::Cas {
            key: key.as_bytes().to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.as_bytes().to_vec(),
        };
        match self.write(&command, "cas")? {
            (KvResponse::Cas { swapped, current }, term) => Ok(CasReply {
                swapped,
                current,
                term: Some(term),
            }),
            (other, _) => Err(OpError::Unknown(format!(
                "unexpected answer to cas: {other:?}"
            ))),
        }
    }
}

impl RcraftSession {
    /// Submits a write and decodes the store's answer, with the entry's term. `submit`
    /// rather than `Client::put` and friends: the result carries the term, which the
    /// failover measurement needs.
    fn write(&mut self, command: &KvCommand, what: &str) -> Result<(KvResponse, u64), OpError> {
        let result = self.client.submit(command.encode()).map_err(op_error)?;
        match KvResponse::decode(&result.response) {
            // The entry committed but the store refused it: the store did not change.
            Ok(KvResponse::Error(message)) => Err(OpError::Definite(message)),
            Ok(response) => Ok((response, result.term.0)),
            Err(e) => Err(OpError::Unknown(format!(
                "undecodable answer to {what}: {e:?}"
            ))),
        }
    }
}

impl ClusterAccess for RcraftCluster {
    /// With follower reads, session `n` lists the servers starting from node `n` (mod the
    /// cluster size): a client's follower reads go to the node it is connected to, which is
    /// its first until a write moves it to the leader, so read-only sessions spread over
    /// every node. Leader hints carry addresses, so the rotated list still finds the leader.
    fn session(&self) -> Result<Box<dyn KvSession>, OpError> {
        let mut servers = self.servers.clone();
        if self.options.read_mode == ReadMode::Follower && !servers.is_empty() {
            let n = self.sessions_opened.fetch_add(1, Ordering::Relaxed);
            servers.rotate_left(n % self.servers.len());
        }
        let client = KvClient::new(&servers, self.options.clone()).map_err(op_error)?;
        Ok(Box::new(RcraftSession { client }))
    }

    fn status(&self, addr: SocketAddr) -> Option<NodeStatus> {
        let options = ClientOptions {
            attempt_timeout: STATUS_TIMEOUT,
            ..self.options.clone()
        };
        Client::new(&[addr], options).ok()?.status_of(addr).ok()
    }
}

#[cfg(test)]
pub mod fake {
    //! An in-memory linearizable "cluster" for unit tests of the workload and verification.

    use super::*;
    use rcraft::wire::{LogIndex, NodeId, Term};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// A map behind a mutex; every `fail_every`-th put has an unknown outcome (applied anyway).
    #[derive(Default)]
    pub struct MemoryCluster {
        /// The store.
        pub map: Arc<Mutex<HashMap<String, Vec<u8>>>>,
        /// Makes every n-th put report an unknown outcome.
        pub unknown_every: u64,
        /// Puts served so far.
        pub puts: Arc<Mutex<u64>>,
    }

    struct MemorySession {
        map: Arc<Mutex<HashMap<String, Vec<u8>>>>,
        unknown_every: u64,
        puts: Arc<Mutex<u64>>,
    }

    impl KvSession for MemorySession {
        fn put(&mut self, key: &str, value: &str) -> Result<WriteAck, OpError> {
            self.map
                .lock()
                .unwrap()
                .insert(key.to_string(), value.as_bytes().to_vec());
            let mut puts = self.puts.lock().unwrap();
            *puts += 1;
            if self.unknown_every > 0 && (*puts).checked_rem(self.unknown_every) == Some(0) {
                return Err(OpError::Unknown("simulated timeout".into()));
            }
            Ok(WriteAck { term: Some(1) })
        }

        fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, OpError> {
            Ok(self.map.lock().unwrap().get(key).cloned())
        }

        fn delete(&mut self, key: &str) -> Result<WriteAck, OpError> {
            self.map.lock().unwrap().remove(key);
            Ok(WriteAck { term: Some(1) })
        }

        fn cas(
            &mut self,
            key: &str,
            expected: Option<&[u8]>,
            new: &str,
        ) -> Result<CasReply, OpError> {
            let mut map = self.map.lock().unwrap();
            let current = map.get(key).cloned();
            if current.as_deref() == expected {
                map.insert(key.to_string(), new.as_bytes().to_vec());
                Ok(CasReply {
                    swapped: true,
                    current: None,
                    term: Some(1),
                })
            } else {
                Ok(CasReply {
                    swapped: false,
                    current,
                    term: Some(1),
                })
            }
        }
    }

    impl ClusterAccess for MemoryCluster {
        fn session(&self) -> Result<Box<dyn KvSession>, OpError> {
            Ok(Box::new(MemorySession {
                map: self.map.clone(),
                unknown_every: self.unknown_every,
                puts: self.puts.clone(),
            }))
        }

        fn status(&self, _addr: SocketAddr) -> Option<NodeStatus> {
            Some(NodeStatus {
                id: NodeId(0),
                role: Role::Leader,
                term: Term(1),
                leader: Some(NodeId(0)),
                commit_index: LogIndex(0),
                applied_index: LogIndex(0),
                last_index: LogIndex(0),
                snapshot_index: LogIndex(0),
                voters: vec![NodeId(0)],
                learners: vec![],
                membership: rcraft::wire::Membership::with_voters([NodeId(0)]),
                replication: Vec::new(),
                repairing: None,
                votes_unknown: None,
                lost: None,
            })
        }
    }
}
