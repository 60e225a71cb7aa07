//! A fake rcraft node for unit tests: speaks the real wire protocol (handshake, frames),
//! keeps a key-value map, always claims to lead, and answers every request in order. Lets the
//! tests drive the real client adapter and the pipelined clients over loopback TCP.

use rcraft::kv::{KvCommand, KvResponse};
use rcraft::wire::{
    ClientRequestBody, ClientResponse, ClientResponseBody, FRAME_BYTES_MAX, FrameDecoder,
    Handshake, LogIndex, Membership, NodeId, NodeStatus, Role, Session, Term,
    encode_client_response,
};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The running fake node; stopped and joined on drop.
pub struct FakeNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its store.
    pub map: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeNode {
    /// Starts listening on a free loopback port.
    pub fn start(cluster_id: u64) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let map = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (map2, stop2) = (map.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            let mut connections = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (map, stop) = (map2.clone(), stop2.clone());
                        connections.push(std::thread::spawn(move || {
                            serve(stream, cluster_id, &map, &stop)
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

fn answer(body: ClientRequestBody, map: &Mutex<HashMap<Vec<u8>, Vec<u8>>>) -> ClientResponseBody {
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
        ClientRequestBody::Read { query } => KvCommand::decode(query),
        _ => {
            return ClientResponseBody::Error {
                definite: true,
                message: "unsupported".into(),
            };
        }
    };
    let mut map = map.lock().unwrap();
    match command {
        Ok(KvCommand::Put { key, value }) => {
            map.insert(key, value);
            ok(KvResponse::Done)
        }
        Ok(KvCommand::Get { key }) => ok(KvResponse::Value(map.get(&key).cloned())),
        _ => ClientResponseBody::Error {
            definite: true,
            message: "unsupported".into(),
        },
    }
}

fn serve(
    mut stream: TcpStream,
    cluster_id: u64,
    map: &Mutex<HashMap<Vec<u8>, Vec<u8>>>,
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
                body: answer(request.body, map),
            };
            encode_client_response(&response, &mut out).unwrap();
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}
