//! Helpers shared by the network-thread tests: nodes on loopback ports, a blocking test
//! client, raw sockets for sending bad bytes.

#![allow(dead_code)] // each test binary uses a different part of the helpers

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rcraft::node::net::{ClientConnId, NetConfig, NetEvent, NetHandle, NetSender, Network};
use rcraft_wire::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CLUSTER: u64 = 0x5eed;
/// Generous bound for anything the tests wait for; never reached when things work.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind loopback")
}

pub fn config(id: u64, listen: SocketAddr, peers: &[(u64, SocketAddr)]) -> NetConfig {
    let peers: BTreeMap<NodeId, SocketAddr> =
        peers.iter().map(|&(id, addr)| (NodeId(id), addr)).collect();
    let mut config = NetConfig::new(NodeId(id), CLUSTER, listen, peers);
    config.reconnect_backoff_min = Duration::from_millis(20);
    config.reconnect_backoff_max = Duration::from_millis(200);
    config
}

pub fn spawn(
    listener: TcpListener,
    config: NetConfig,
    events_depth: usize,
) -> (NetHandle, Receiver<NetEvent>) {
    let (tx, rx) = crossbeam_channel::bounded(events_depth);
    let handle = Network::spawn_on(listener, config, tx).expect("spawn network thread");
    (handle, rx)
}

pub fn heartbeat(from: u64, to: u64, n: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: MessageBody::Heartbeat {
            leader_commit: LogIndex(n),
            read_context: n,
        },
    }
}

pub fn next_event(events: &Receiver<NetEvent>) -> NetEvent {
    match events.recv_timeout(WAIT) {
        Ok(event) => event,
        Err(RecvTimeoutError::Timeout) => panic!("no network event within {WAIT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("network thread gone"),
    }
}

pub fn next_peer_message(events: &Receiver<NetEvent>) -> Message {
    match next_event(events) {
        NetEvent::Peer(message) => message,
        other => panic!("expected a peer message, got {other:?}"),
    }
}

/// A blocking client speaking the wire protocol, as the real client will.
pub struct TestClient {
    pub stream: TcpStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl TestClient {
    pub fn connect(addr: SocketAddr) -> TestClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = TestClient {
            stream,
            decoder: FrameDecoder::new(FRAME_BYTES_MAX),
            buf: vec![0; 64 << 10],
        };
        client
            .stream
            .write_all(&Handshake::client(CLUSTER).encode())
            .unwrap();
        let answer = loop {
            if let Some(answer) = client.decoder.next_handshake().unwrap() {
                break answer;
            }
            client.fill();
        };
        answer.check_cluster(CLUSTER).unwrap();
        client
    }

    fn fill(&mut self) {
        let n = self
            .stream
            .read(&mut self.buf)
            .expect("read within the timeout");
        assert!(n > 0, "server closed the connection");
        self.decoder.push(&self.buf[..n]);
    }

    pub fn send(&mut self, request: &ClientRequest) {
        let mut out = Vec::new();
        encode_client_request(request, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn recv(&mut self) -> ClientResponse {
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return frame.to_client_response().unwrap();
            }
            self.fill();
        }
    }
}

pub fn write_request(id: u64, command: &[u8]) -> ClientRequest {
    ClientRequest {
        request_id: id,
        body: ClientRequestBody::Write {
            session: None,
            command: command.to_vec(),
        },
    }
}

/// Answers every client request with `Ok` echoing the command, until the channel closes.
/// Returns the ids of the connections reported closed.
pub fn echo_server(
    events: Receiver<NetEvent>,
    sender: NetSender,
) -> std::thread::JoinHandle<Vec<ClientConnId>> {
    std::thread::spawn(move || {
        let mut closed = Vec::new();
        echo_until_closed(&events, &sender, |conn| closed.push(conn));
        closed
    })
}

/// Like [`echo_server`], but records each close in `closed` as it is reported, so that a test
/// can wait for the closes while the network thread is still running.
pub fn echo_server_recording_closes(
    events: Receiver<NetEvent>,
    sender: NetSender,
    closed: Arc<Mutex<Vec<ClientConnId>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        echo_until_closed(&events, &sender, |conn| closed.lock().unwrap().push(conn));
    })
}

fn echo_until_closed(
    events: &Receiver<NetEvent>,
    sender: &NetSender,
    mut on_close: impl FnMut(ClientConnId),
) {
    while let Ok(event) = events.recv() {
        match event {
            NetEvent::Client { conn, request, .. } => {
                let result = match request.body {
                    ClientRequestBody::Write { command, .. } => command,
                    other => format!("{other:?}").into_bytes(),
                };
                let response = ClientResponse {
                    request_id: request.request_id,
                    body: ClientResponseBody::Ok {
                        term: Term(1),
                        index: LogIndex(request.request_id),
                        result,
                    },
                };
                if sender.reply(conn, response).is_err() {
                    return;
                }
            }
            NetEvent::ClientClosed(conn) => on_close(conn),
            NetEvent::Peer(_) => {}
        }
    }
}

/// Waits until the server closes `stream` (read returns 0 or a reset), within [`WAIT`].
pub fn assert_closed_by_server(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "server kept the connection open");
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // the server's handshake answer
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("server neither answered nor closed: {e}"),
        }
    }
}

/// Polls `condition` until it holds, failing the test after [`WAIT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
