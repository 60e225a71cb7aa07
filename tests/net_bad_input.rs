//! Bad input on one connection closes that connection with a logged reason and disturbs no
//! other: garbage, an oversized length, a wrong protocol version, a wrong cluster, a frame
//! that stops half way, a peer that lies about who sends.

mod net_common;

use net_common::*;
use rcraft::node::net::NetEvent;
use rcraft_wire::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const STALL: Duration = Duration::from_millis(300);

struct Fixture {
    node: rcraft::node::net::NetHandle,
    addr: SocketAddr,
    echo: std::thread::JoinHandle<Vec<rcraft::node::net::ClientConnId>>,
    client: TestClient,
}

/// A node answering clients, with one good client connected and verified working.
fn fixture() -> Fixture {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let mut config = config(1, addr, &[]);
    config.stall_timeout = STALL;
    config.frame_bytes_max = 1 << 20;
    let (node, events) = spawn(listener, config, 64);
    let echo = echo_server(events, node.sender());
    let mut client = TestClient::connect(addr);
    check_client(&mut client, 0);
    Fixture {
        node,
        addr,
        echo,
        client,
    }
}

fn check_client(client: &mut TestClient, id: u64) {
    client.send(&write_request(id, b"still here"));
    let response = client.recv();
    assert_eq!(response.request_id, id);
}

fn finish(mut fixture: Fixture, expected_refusals: u64) {
    check_client(&mut fixture.client, 99);
    let stats = fixture.node.stats();
    assert_eq!(stats.connections_refused, expected_refusals, "{stats:?}");
    fixture.node.shutdown();
    fixture.echo.join().unwrap();
}

fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

fn client_handshake() -> Vec<u8> {
    Handshake::client(CLUSTER).encode().to_vec()
}

#[test]
fn garbage_instead_of_a_handshake_is_refused() {
    let fixture = fixture();
    let mut garbage = raw(fixture.addr, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    assert_closed_by_server(&mut garbage);
    finish(fixture, 1);
}

#[test]
fn garbage_after_a_good_handshake_is_refused() {
    let fixture = fixture();
    let mut bytes = client_handshake();
    bytes.extend_from_slice(&[0x5a; 64]);
    let mut stream = raw(fixture.addr, &bytes);
    assert_closed_by_server(&mut stream);
    finish(fixture, 1);
}

#[test]
fn oversized_length_is_refused() {
    let fixture = fixture();
    let mut frame = Vec::new();
    encode_client_request(&write_request(5, &vec![1u8; 2 << 20]), &mut frame).unwrap();
    let mut bytes = client_handshake();
    bytes.extend_from_slice(&frame[..FRAME_HEADER_BYTES]);
    // Only the header is sent: the limit must be enforced before the payload arrives.
    let mut stream = raw(fixture.addr, &bytes);
    assert_closed_by_server(&mut stream);
    finish(fixture, 1);
}

#[test]
fn wrong_version_and_wrong_cluster_are_refused() {
    let fixture = fixture();
    let mut old_version = Handshake::client(CLUSTER).encode();
    old_version[6] = 0;
    let mut stream = raw(fixture.addr, &old_version);
    assert_closed_by_server(&mut stream);
    let mut stream = raw(fixture.addr, &Handshake::client(CLUSTER + 1).encode());
    assert_closed_by_server(&mut stream);
    finish(fixture, 2);
}

#[test]
fn half_a_frame_that_stalls_is_closed_after_the_stall_timeout() {
    let fixture = fixture();
    let mut frame = Vec::new();
    encode_client_request(&write_request(5, b"never finished"), &mut frame).unwrap();
    let mut bytes = client_handshake();
    bytes.extend_from_slice(&frame[..frame.len() / 2]);
    let mut stream = raw(fixture.addr, &bytes);
    assert_closed_by_server(&mut stream);
    // A connection that never sends a handshake is closed the same way.
    let mut silent = TcpStream::connect(fixture.addr).unwrap();
    assert_closed_by_server(&mut silent);
    assert_eq!(fixture.node.stats().connections_stalled, 2);
    finish(fixture, 2);
}

#[test]
fn connections_over_the_per_address_cap_are_closed_at_once() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let mut config = config(1, addr, &[]);
    config.connections_per_address_max = 2;
    let (node, events) = spawn(listener, config, 64);
    let echo = echo_server(events, node.sender());
    let mut first = TestClient::connect(addr);
    let _second = raw(addr, &client_handshake());
    let mut third = TcpStream::connect(addr).unwrap();
    assert_closed_by_server(&mut third);
    assert_eq!(node.stats().connections_refused_per_address, 1);
    // The connections within the cap still work, and a slot freed is usable again.
    check_client(&mut first, 1);
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Answered with the node's handshake once the closed connection's slot is free.
        let mut stream = raw(addr, &client_handshake());
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = [0u8; HANDSHAKE_BYTES];
        if std::io::Read::read_exact(&mut stream, &mut answer).is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node.shutdown();
    echo.join().unwrap();
}

#[test]
fn peer_that_lies_about_the_sender_is_refused() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    // Node 2 is a configured peer; this listener stands in for it and never answers.
    let peer_2 = self::listener();
    let (node, events) = spawn(
        listener,
        config(1, addr, &[(2, peer_2.local_addr().unwrap())]),
        64,
    );
    let mut bytes = Handshake::peer(CLUSTER, NodeId(2)).encode().to_vec();
    encode_message(&heartbeat(2, 1, 1), &mut bytes).unwrap();
    encode_message(&heartbeat(3, 1, 2), &mut bytes).unwrap();
    let mut stream = raw(addr, &bytes);
    assert_eq!(next_peer_message(&events), heartbeat(2, 1, 1));
    assert_closed_by_server(&mut stream);
    assert!(events.recv_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(node.stats().connections_refused, 1);
    node.shutdown();
}

#[test]
fn a_peer_link_survives_garbage_on_other_connections() {
    let (listener_a, listener_b) = (listener(), listener());
    let (addr_a, addr_b) = (
        listener_a.local_addr().unwrap(),
        listener_b.local_addr().unwrap(),
    );
    let (a, _events_a) = spawn(listener_a, config(1, addr_a, &[(2, addr_b)]), 4096);
    let (b, events_b) = spawn(listener_b, config(2, addr_b, &[(1, addr_a)]), 4096);
    a.sender().send_peer(heartbeat(1, 2, 0));
    assert_eq!(next_peer_message(&events_b), heartbeat(1, 2, 0));
    let mut garbage: Vec<TcpStream> = (0..8u8).map(|i| raw(addr_b, &[i; 100])).collect();
    for stream in &mut garbage {
        assert_closed_by_server(stream);
    }
    for n in 1..100 {
        a.sender().send_peer(heartbeat(1, 2, n));
    }
    for n in 1..100 {
        match next_event(&events_b) {
            NetEvent::Peer(m) => assert_eq!(m, heartbeat(1, 2, n)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(a.stats().peer_connects, 1, "the link never dropped");
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_new_link_from_a_peer_replaces_its_stale_one() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let peer_2 = self::listener();
    let (node, events) = spawn(
        listener,
        config(1, addr, &[(2, peer_2.local_addr().unwrap())]),
        64,
    );
    let mut bytes = Handshake::peer(CLUSTER, NodeId(2)).encode().to_vec();
    encode_message(&heartbeat(2, 1, 1), &mut bytes).unwrap();
    let mut old = raw(addr, &bytes);
    assert_eq!(next_peer_message(&events), heartbeat(2, 1, 1));
    let mut bytes = Handshake::peer(CLUSTER, NodeId(2)).encode().to_vec();
    encode_message(&heartbeat(2, 1, 2), &mut bytes).unwrap();
    let _new = raw(addr, &bytes);
    assert_eq!(next_peer_message(&events), heartbeat(2, 1, 2));
    assert_closed_by_server(&mut old);
    assert_eq!(node.stats().connections_refused, 0);
    node.shutdown();
}

#[test]
fn a_handshake_from_a_node_outside_the_cluster_is_refused() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let peer_2 = self::listener();
    let (node, events) = spawn(
        listener,
        config(1, addr, &[(2, peer_2.local_addr().unwrap())]),
        64,
    );
    let mut bytes = Handshake::peer(CLUSTER, NodeId(7)).encode().to_vec();
    encode_message(&heartbeat(7, 1, 1), &mut bytes).unwrap();
    let mut stream = raw(addr, &bytes);
    assert_closed_by_server(&mut stream);
    assert!(events.recv_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(node.stats().connections_refused, 1);
    node.shutdown();
}

#[test]
fn an_append_with_entries_out_of_place_is_refused_at_the_edge() {
    use rcraft_wire::{Entry, EntryPayload, LogIndex, Message, MessageBody, Term};
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let peer_2 = self::listener();
    let (node, events) = spawn(
        listener,
        config(1, addr, &[(2, peer_2.local_addr().unwrap())]),
        64,
    );
    let bad = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(3),
        body: MessageBody::AppendRequest {
            prev_log_index: LogIndex(5),
            prev_log_term: Term(3),
            // Index 9 does not follow 5: a correct leader never sends this.
            entries: vec![Entry {
                term: Term(3),
                index: LogIndex(9),
                payload: EntryPayload::Noop,
            }],
            leader_commit: LogIndex(0),
        },
    };
    let mut bytes = Handshake::peer(CLUSTER, NodeId(2)).encode().to_vec();
    encode_message(&bad, &mut bytes).unwrap();
    let mut stream = raw(addr, &bytes);
    assert_closed_by_server(&mut stream);
    assert!(events.recv_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(node.stats().connections_refused, 1);
    node.shutdown();
}
