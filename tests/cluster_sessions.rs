//! Client sessions end to end (Raft thesis §6.3): the built-in KV store on an in-process node,
//! driven over TCP by `rcraft::client` and by raw wire requests. A session must be registered
//! before use; a write whose session the node forgot is refused, never applied twice.

mod cluster_support;

use cluster_support::{free_addresses, raw_client_stream, wait_until};
use rcraft::Config;
use rcraft::client::{ClientError, ClientOptions};
use rcraft::kv::{KvCommand, KvStore};
use rcraft::kv_client::KvClient;
use rcraft::node::limits::SESSIONS_MAX;
use rcraft::node::{Node, NodeHandle};
use rcraft::wire::CLUSTER_ID_UNKNOWN;
use rcraft::wire::{
    ClientRequest, ClientRequestBody, ClientResponseBody, FRAME_BYTES_MAX, FrameDecoder, NodeId,
    Session, encode_client_request, is_session_expired,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A one-node cluster (its own leader) serving the KV store.
fn start_single_node(dir: &std::path::Path) -> (NodeHandle, SocketAddr) {
    let servers = free_addresses(1);
    let config = Config::new(NodeId(0), servers.clone(), dir.join("n0"));
    let node = Node::start(config, KvStore::new()).expect("node starts");
    node.wait_for_leader(Duration::from_secs(10))
        .expect("a leader");
    (node, servers[0])
}

/// A client connection speaking the raw protocol, for requests `Client` would never send.
struct RawConnection {
    stream: TcpStream,
    decoder: FrameDecoder,
    next_request_id: u64,
}

impl RawConnection {
    fn open(address: SocketAddr) -> RawConnection {
        let stream = raw_client_stream(address, CLUSTER_ID_UNKNOWN, Duration::from_secs(30));
        RawConnection {
            stream,
            decoder: FrameDecoder::new(FRAME_BYTES_MAX),
            next_request_id: 1,
        }
    }

    /// Queues one request into `out`; returns its id.
    fn encode(&mut self, body: ClientRequestBody, out: &mut Vec<u8>) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let request = ClientRequest { request_id, body };
        encode_client_request(&request, out).unwrap();
        request_id
    }

    /// Reads at least one more answer; returns every answer decoded so far.
    fn answers(&mut self) -> Vec<(u64, ClientResponseBody)> {
        let mut buf = vec![0u8; 256 << 10];
        let n = self.stream.read(&mut buf).expect("read answers");
        assert!(n > 0, "the node closed the connection");
        self.decoder.push(&buf[..n]);
        let mut answers = Vec::new();
        while let Some(frame) = self.decoder.next_frame().unwrap() {
            let response = frame.to_client_response().unwrap();
            answers.push((response.request_id, response.body));
        }
        answers
    }

    /// Sends one request and waits for its answer.
    fn call(&mut self, body: ClientRequestBody) -> ClientResponseBody {
        let mut out = Vec::new();
        let id = self.encode(body, &mut out);
        self.stream.write_all(&out).unwrap();
        loop {
            if let Some((_, body)) = self.answers().into_iter().find(|(r, _)| *r == id) {
                return body;
            }
        }
    }

    /// Registers `count` new sessions, up to 1024 requests in flight (the node's limit per
    /// connection). Only answered registrations count; the others are sent again.
    fn register_sessions(&mut self, count: usize) {
        const IN_FLIGHT_MAX: usize = 1024;
        let (mut registered, mut in_flight, mut out) = (0, 0, Vec::new());
        while registered < count {
            while in_flight < IN_FLIGHT_MAX && registered + in_flight < count {
                self.encode(registration(), &mut out);
                in_flight += 1;
            }
            self.stream.write_all(&out).unwrap();
            out.clear();
            for (_, body) in self.answers() {
                in_flight -= 1;
                match body {
                    ClientResponseBody::Ok { .. } => registered += 1,
                    ClientResponseBody::Overloaded | ClientResponseBody::Error { .. } => {}
                    other => panic!("unexpected answer to a registration: {other:?}"),
                }
            }
        }
    }
}

fn registration() -> ClientRequestBody {
    ClientRequestBody::Write {
        session: Some(Session::REGISTER),
        command: Vec::new(),
    }
}

fn put(key: &str, value: &str) -> Vec<u8> {
    KvCommand::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
    .encode()
}

fn expect_session_expired(body: &ClientResponseBody) {
    assert!(
        matches!(body, ClientResponseBody::Error { definite: true, message }
            if is_session_expired(message)),
        "{body:?}"
    );
}

#[test]
fn a_write_needs_a_registered_session() {
    let dir = tempfile::tempdir().unwrap();
    let (node, address) = start_single_node(dir.path());
    let mut raw = RawConnection::open(address);
    let unknown = Session {
        client_id: 4242,
        sequence: 1,
    };
    let write = |session| ClientRequestBody::Write {
        session: Some(session),
        command: put("k", "unregistered"),
    };
    expect_session_expired(&raw.call(write(unknown)));

    let ClientResponseBody::Ok { index, result, .. } = raw.call(registration()) else {
        panic!("the registration failed");
    };
    assert_eq!(result, index.0.to_le_bytes(), "the client id is the index");
    let registered = Session {
        client_id: index.0,
        sequence: 1,
    };
    assert!(matches!(
        raw.call(write(registered)),
        ClientResponseBody::Ok { .. }
    ));

    let options = ClientOptions::default();
    let mut client = KvClient::connect(&[address], options).unwrap();
    assert_eq!(client.get(b"k").unwrap(), Some(b"unregistered".to_vec()));
    client.put(b"k", b"by-client").unwrap();
    let client_id = client.client_id().expect("registered at the first write");
    assert!(client_id > index.0, "{client_id}");
    assert_eq!(client.get(b"k").unwrap(), Some(b"by-client".to_vec()));
    node.shutdown().unwrap();
}

/// A TCP relay in front of one node that can lose the node's answers, as a network does.
struct Relay {
    address: SocketAddr,
    /// While set, bytes from the node are dropped instead of relayed.
    losing: Arc<AtomicBool>,
    /// The client side of every relayed connection, to cut them.
    clients: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(node: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let losing = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(Mutex::new(Vec::new()));
        let (lose, accepted) = (Arc::clone(&losing), Arc::clone(&clients));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(node) else {
                    continue;
                };
                accepted.lock().unwrap().push(client.try_clone().unwrap());
                let (client_in, upstream_out) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || copy(client_in, upstream_out, None));
                let lose = Arc::clone(&lose);
                std::thread::spawn(move || copy(upstream, client, Some(lose)));
            }
        });
        Relay {
            address,
            losing,
            clients,
        }
    }

    /// Closes every relayed connection (their clients see them drop).
    fn cut(&self) {
        for client in self.clients.lock().unwrap().drain(..) {
            let _ = client.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` until either closes, dropping the bytes while `losing` is set.
fn copy(mut from: TcpStream, mut to: TcpStream, losing: Option<Arc<AtomicBool>>) {
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if losing.as_ref().is_some_and(|l| l.load(Ordering::SeqCst)) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Issue 14, finding 6: a write is applied, its answer is lost, the node forgets the session
/// (more than `SESSIONS_MAX` newer ones), and the client retries. The retry must not be
/// applied again, and the client cannot claim either outcome.
#[test]
fn a_retried_write_whose_session_was_forgotten_is_not_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (node, address) = start_single_node(dir.path());
    let relay = Relay::start(address);
    let options = ClientOptions {
        timeout: Duration::from_secs(300),
        attempt_timeout: Duration::from_secs(240),
        ..ClientOptions::default()
    };
    let mut client = KvClient::connect(&[relay.address], options).unwrap();
    client.put(b"k", b"v1").unwrap();
    let first_session = client.client_id().expect("a session");

    // The next write is applied, but its answer is lost on the way back.
    relay.losing.store(true, Ordering::SeqCst);
    let retrying = std::thread::spawn(move || {
        let outcome = client.put(b"k", b"v2");
        (client, outcome)
    });
    let mut observer = KvClient::connect(&[address], ClientOptions::default()).unwrap();
    wait_until(Duration::from_secs(20), "the write to be applied", || {
        observer.get(b"k").unwrap() == Some(b"v2".to_vec())
    });

    // Meanwhile the node registers SESSIONS_MAX newer sessions and forgets the client's; then
    // another client overwrites the key.
    RawConnection::open(address).register_sessions(SESSIONS_MAX);
    observer.put(b"k", b"v3").unwrap();

    // The client's connection drops; it retries its write, which is refused.
    relay.losing.store(false, Ordering::SeqCst);
    relay.cut();
    let (mut client, outcome) = retrying.join().unwrap();
    let e = outcome.expect_err("a retry in a forgotten session cannot succeed");
    assert!(
        matches!(&e, ClientError::Server { definite: false, message }
            if is_session_expired(message)),
        "{e:?}"
    );
    assert_eq!(
        observer.get(b"k").unwrap(),
        Some(b"v3".to_vec()),
        "the retry was applied a second time"
    );

    // The next write registers a new session and is applied.
    client.put(b"k", b"v4").unwrap();
    let second_session = client.client_id().expect("a new session");
    assert!(second_session > first_session);
    assert_eq!(observer.get(b"k").unwrap(), Some(b"v4".to_vec()));
    node.shutdown().unwrap();
}
