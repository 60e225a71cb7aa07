//! A fake rcraft node for unit tests: speaks the real wire protocol (handshake, frames),
//! keeps a key-value map, always claims to lead, and answers every request in order. Lets the
//! tests drive the real client adapter and the pipelined clients over loopback TCP.
//!
//! It can carry a planted bug ([`FakeBug`]) so tests can show the linearizability checker
//! catches a server that misbehaves the way a real one could.

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

/// The running fake node; stopped and joined on drop.
pub struct FakeNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its store.
    pub map: Arc<Mutex<Map>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeNode {
    /// Starts a correct node listening on a free loopback port.
    pub fn start(cluster_id: u64) -> FakeNode {
        FakeNode::start_with(cluster_id, FakeBug::None)
    }

    /// Starts a node with `bug` planted.
    pub fn start_with(cluster_id: u64, bug: FakeBug) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let map = Arc::new(Mutex::new(HashMap::new()));
        let store = Arc::new(Store {
            bug,
            follower: Mutex::new((HashMap::new(), 0)),
            puts: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (map2, stop2) = (map.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            let mut connections = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (map, stop, store) = (map2.clone(), stop2.clone(), store.clone());
                        connections.push(std::thread::spawn(move || {
                            serve(stream, cluster_id, &map, &store, &stop)
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

fn status() -> NodeStatus {
    NodeStatus {
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
        membership: Membership::with_voters([NodeId(0)]),
        replication: Vec::new(),
    }
}

fn answer(body: ClientRequestBody, map: &Mutex<Map>, store: &Store) -> ClientResponseBody {
    let ok = |response: KvResponse| ClientResponseBody::Ok {
        term: Term(1),
        index: LogIndex(1),
        result: response.encode(),
    };
    let command = match &body {
        ClientRequestBody::Status => return ClientResponseBody::Status(status()),
        // A session registration: every client gets session 1 (sessions are not checked).
        ClientRequestBody::Write {
            session: Some(Session::REGISTER),
            ..
        } => {
            return ClientResponseBody::Ok {
                term: Term(1),
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
                FakeBug::None | FakeBug::LosesWrites { .. } => map.get(&key).cloned(),
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
            let current = map.get(&key).cloned();
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
    if let FakeBug::StaleReads { lag } = store.bug {
        let mut follower = store.follower.lock().unwrap();
        follower.1 += 1;
        if follower.1.is_multiple_of(lag.max(1)) {
            follower.0 = map.clone();
        }
    }
    ok(response)
}

fn serve(
    mut stream: TcpStream,
    cluster_id: u64,
    map: &Mutex<Map>,
    store: &Store,
    stop: &AtomicBool,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut greeted = false;
    let mut chunk = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => decoder.push(&chunk[..n]),
            Err(_) => continue,
        }
        if !greeted {
            match decoder.next_handshake() {
                Ok(Some(_)) => {
                    greeted = true;
                    let _ = stream.write_all(&Handshake::peer(cluster_id, NodeId(0)).encode());
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
            let response = ClientResponse {
                request_id: request.request_id,
                body: answer(request.body, map, store),
            };
            encode_client_response(&response, &mut out).unwrap();
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}
