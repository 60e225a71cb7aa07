//! A fake rcraft node for unit tests: speaks the real wire protocol (handshake, frames),
//! keeps a key-value map, always claims to lead, and answers every request in order. Lets the
//! tests drive the real client adapter and the pipelined clients over loopback TCP.
//!
//! It can carry a planted bug ([`FakeBug`]) so tests can show the linearizability checker
//! catches a server that misbehaves the way a real one could. Several fake nodes can share
//! one store and one [`Leadership`] ([`FakeNode::cluster`]): only the node it names leads
//! (the others answer `NotLeader` with its id), and a node can be paused (it reads requests
//! and never answers, as a stopped process), so tests can move the leader under clients.

use rcraft::kv::{KvCommand, KvResponse};
use rcraft::wire::{
    ClientRequestBody, ClientResponse, ClientResponseBody, FRAME_BYTES_MAX, FrameDecoder,
    Handshake, LogIndex, Membership, NodeId, NodeStatus, Role, Session, Term,
    encode_client_response,
};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

type Map = HashMap<Vec<u8>, Vec<u8>>;

/// A bug planted in the fake node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeBug {
    /// A correct, linearizable store.
    None,
    /// Reads are served from a copy of the store refreshed only every `lag` writes, as a
    /// node answering reads from a lagging follower's local state would.
    StaleReads {
        /// Writes between refreshes of the copy.
        lag: u64,
    },
    /// Compare-and-swaps are decided against the lagging copy of [`FakeBug::StaleReads`]
    /// (refreshed every `lag` writes), as a leader that checked a condition against a
    /// follower's local state would; the new value is then stored in the real store.
    StaleCas {
        /// Writes between refreshes of the copy.
        lag: u64,
    },
    /// Every `every`-th put is acknowledged without being applied, as a leader that
    /// answered before its entry was durable and then lost it would.
    LosesWrites {
        /// Puts between lost ones.
        every: u64,
    },
}

/// The store and what the planted bug needs.
struct Store {
    bug: FakeBug,
    /// The lagging copy reads come from under [`FakeBug::StaleReads`], and the writes
    /// applied so far.
    follower: Mutex<(Map, u64)>,
    /// Puts answered so far.
    puts: AtomicU64,
}

/// Which node of a fake cluster leads, in which term, and which nodes are paused.
#[derive(Debug, Default)]
pub struct Leadership {
    /// The leading node's id.
    pub leader: AtomicU64,
    /// The current term (answers carry it).
    pub term: AtomicU64,
    /// Bit `i` set: node `i` is paused.
    pub paused: AtomicU64,
}

impl Leadership {
    /// Makes node `id` the leader in a new term.
    pub fn elect(&self, id: u64) {
        self.term.fetch_add(1, Ordering::SeqCst);
        self.leader.store(id, Ordering::SeqCst);
    }

    /// Pauses node `id`: it keeps reading requests but answers none.
    pub fn pause(&self, id: u64) {
        self.paused.fetch_or(1 << id, Ordering::SeqCst);
    }

    fn is_paused(&self, id: u64) -> bool {
        self.paused.load(Ordering::SeqCst) & (1 << id) != 0
    }
}

/// The running fake node; stopped and joined on drop.
pub struct FakeNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its store.
    pub map: Arc<Mutex<Map>>,
    /// Requests answered `Ok` by this node.
    pub served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

/// What one node of a fake cluster shares with the others.
#[derive(Clone)]
struct Shared {
    id: u64,
    map: Arc<Mutex<Map>>,
    store: Arc<Store>,
    leadership: Arc<Leadership>,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FakeNode {
    /// Starts a correct node listening on a free loopback port.
    pub fn start(cluster_id: u64) -> FakeNode {
        FakeNode::start_with(cluster_id, FakeBug::None)
    }

    /// Starts a node with `bug` planted.
    pub fn start_with(cluster_id: u64, bug: FakeBug) -> FakeNode {
        let leadership = Arc::new(Leadership::default());
        leadership.elect(0);
        let map = Arc::new(Mutex::new(HashMap::new()));
        FakeNode::start_node(cluster_id, bug, 0, map, leadership)
    }

    /// Starts `n` correct nodes sharing one store and one [`Leadership`] (node 0 leads in
    /// term 1).
    pub fn cluster(cluster_id: u64, n: u64) -> (Vec<FakeNode>, Arc<Leadership>) {
        let leadership = Arc::new(Leadership::default());
        leadership.elect(0);
        let map = Arc::new(Mutex::new(HashMap::new()));
        let nodes = (0..n)
            .map(|id| {
                let (map, leadership) = (map.clone(), leadership.clone());
                FakeNode::start_node(cluster_id, FakeBug::None, id, map, leadership)
            })
            .collect();
        (nodes, leadership)
    }

    fn start_node(
        cluster_id: u64,
        bug: FakeBug,
        id: u64,
        map: Arc<Mutex<Map>>,
        leadership: Arc<Leadership>,
    ) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            id,
            map: map.clone(),
            store: Arc::new(Store {
                bug,
                follower: Mutex::new((HashMap::new(), 0)),
                puts: AtomicU64::new(0),
            }),
            leadership,
            served: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (served, stop) = (shared.served.clone(), shared.stop.clone());
        let acceptor = std::thread::spawn(move || {
            let mut connections = Vec::new();
            while !shared.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = shared.clone();
                        connections.push(std::thread::spawn(move || {
                            serve(stream, cluster_id, &shared)
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for connection in connections {
                let _ = connection.join();
            }
        });
        FakeNode {
            addr,
            map,
            served,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn status(node: &Shared) -> NodeStatus {
    let leader = node.leadership.leader.load(Ordering::SeqCst);
    let role = match leader == node.id {
        true => Role::Leader,
        false => Role::Follower,
    };
    NodeStatus {
        id: NodeId(node.id),
        role,
        term: Term(node.leadership.term.load(Ordering::SeqCst)),
        leader: Some(NodeId(leader)),
        commit_index: LogIndex(0),
        applied_index: LogIndex(0),
        last_index: LogIndex(0),
        snapshot_index: LogIndex(0),
        voters: vec![NodeId(0)],
        learners: vec![],
        membership: Membership::with_voters([NodeId(0)]),
        replication: Vec::new(),
        repairing: None,
        votes_unknown: None,
        lost: None,
    }
}

/// Answers as the node does: a follower refuses with the leader's id.
fn answer_as(node: &Shared, body: ClientRequestBody) -> ClientResponseBody {
    let leader = node.leadership.leader.load(Ordering::SeqCst);
    let answer = match body {
        ClientRequestBody::Status => ClientResponseBody::Status(Box::new(status(node))),
        _ if leader != node.id => ClientResponseBody::NotLeader {
            leader: Some(NodeId(leader)),
            leader_address: None,
        },
        body => answer(
            body,
            &node.map,
            &node.store,
            node.leadership.term.load(Ordering::SeqCst),
        ),
    };
    if matches!(answer, ClientResponseBody::Ok { .. }) {
        node.served.fetch_add(1, Ordering::Relaxed);
    }
    answer
}

fn answer(
    body: ClientRequestBody,
    map: &Mutex<Map>,
    store: &Store,
    term: u64,
) -> ClientResponseBody {
    let ok = |response: KvResponse| ClientResponseBody::Ok {
        term: Term(term),
        index: LogIndex(1),
        result: response.encode(),
    };
    let command = match &body {
        // A session registration: every client gets session 1 (sessions are not checked).
        ClientRequestBody::Write {
            session: Some(Session::REGISTER),
            ..
        } => {
            return ClientResponseBody::Ok {
                term: Term(term),
                index: LogIndex(1),
                result: 1u64.to_le_bytes().to_vec(),
            };
        }
        ClientRequestBody::Write { command, .. } => KvCommand::decode(command),
        ClientRequestBody::Read { query, .. } => KvCommand::decode(query),
        _ => {
            return ClientResponseBody::Error {
                definite: true,
                message: "unsupported".into(),
            };
        }
    };
    let mut map = map.lock().unwrap();
    let response = match command {
        Ok(KvCommand::Get { key }) => {
            let value = match store.bug {
                FakeBug::StaleReads { .. } => store.follower.lock().unwrap().0.get(&key).cloned(),
                FakeBug::None | FakeBug::LosesWrites { .. } | FakeBug::StaleCas { .. } => {
                    map.get(&key).cloned()
                }
            };
            return ok(KvResponse::Value(value));
        }
        Ok(KvCommand::Put { key, value }) => {
            let puts = store.puts.fetch_add(1, Ordering::Relaxed) + 1;
            let lost = matches!(store.bug, FakeBug::LosesWrites { every }
                if puts.is_multiple_of(every.max(1)));
            if !lost {
                map.insert(key, value);
            }
            KvResponse::Done
        }
        Ok(KvCommand::Delete { key }) => {
            map.remove(&key);
            KvResponse::Done
        }
        Ok(KvCommand::Cas { key, expected, new }) => {
            let current = match store.bug {
                FakeBug::StaleCas { .. } => store.follower.lock().unwrap().0.get(&key).cloned(),
                _ => map.get(&key).cloned(),
            };
            if current == expected {
                map.insert(key, new);
                KvResponse::Cas {
                    swapped: true,
                    current: None,
                }
            } else {
                KvResponse::Cas {
                    swapped: false,
                    current,
                }
            }
        }
        Ok(KvCommand::Scan { .. }) | Err(_) => {
            return ClientResponseBody::Error {
                definite: true,
                message: "unsupported".into(),
            };
        }
    };
    if let FakeBug::StaleReads { lag } | FakeBug::StaleCas { lag } = store.bug {
        let mut follower = store.follower.lock().unwrap();
        follower.1 += 1;
        if follower.1.is_multiple_of(lag.max(1)) {
            follower.0 = map.clone();
        }
    }
    ok(response)
}

fn serve(mut stream: TcpStream, cluster_id: u64, node: &Shared) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut greeted = false;
    let mut chunk = [0u8; 16 * 1024];
    while !node.stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => decoder.push(&chunk[..n]),
            Err(_) => continue,
        }
        if !greeted {
            match decoder.next_handshake() {
                Ok(Some(_)) => {
                    greeted = true;
                    let _ =
                        stream.write_all(&Handshake::peer(cluster_id, NodeId(node.id)).encode());
                }
                Ok(None) => continue,
                Err(_) => return,
            }
        }
        let mut out = Vec::new();
        while let Ok(Some(frame)) = decoder.next_frame() {
            let Ok(request) = frame.to_client_request() else {
                return;
            };
            if node.leadership.is_paused(node.id) {
                continue;
            }
            let response = ClientResponse {
                request_id: request.request_id,
                body: answer_as(node, request.body),
            };
            encode_client_response(&response, &mut out).unwrap();
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}
