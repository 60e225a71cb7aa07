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
            entries: vec![Entry::new(Term(3), LogIndex(9), EntryPayload::Noop)],
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

/// Three commands at `first..first + 3` of term 3, as a leader makes them.
fn commands(first: u64, term: u64) -> Vec<Entry> {
    (first..first + 3)
        .map(|i| {
            Entry::new(
                Term(term),
                LogIndex(i),
                EntryPayload::Command {
                    session: None,
                    data: vec![i as u8; 40].into(),
                },
            )
        })
        .collect()
}

fn append(from: u64, to: u64, term: u64, prev: (u64, u64), entries: Vec<Entry>) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body: MessageBody::AppendRequest {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries,
            leader_commit: LogIndex(0),
        },
    }
}

/// Where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the record travels as it is")
}

#[test]
fn an_append_with_a_damaged_record_is_refused_at_the_edge() {
    // Entries travel as their WAL records (PROTOCOL.md §4); a record whose checksum or length
    // does not hold closes the connection before anything reaches consensus.
    type Damage = fn(&mut [u8], usize, usize);
    let damages: [(&str, Damage); 3] = [
        ("a flipped payload bit", |frame, at, len| {
            frame[at + len - 1] ^= 1
        }),
        ("a flipped index bit", |frame, at, _| frame[at + 8] ^= 1),
        ("a length past the bytes", |frame, at, len| {
            frame[at..at + 4].copy_from_slice(&(len as u32 + 1).to_le_bytes())
        }),
    ];
    for (what, damage) in damages {
        let listener = listener();
        let addr = listener.local_addr().unwrap();
        let peer_2 = self::listener();
        let (node, events) = spawn(
            listener,
            config(1, addr, &[(2, peer_2.local_addr().unwrap())]),
            64,
        );
        let entries = commands(1, 3);
        let last = entries[2].record().to_vec();
        let mut frame = Vec::new();
        encode_message(&append(2, 1, 3, (0, 0), entries), &mut frame).unwrap();
        let at = find(&frame, &last);
        damage(&mut frame, at, last.len());
        let mut bytes = Handshake::peer(CLUSTER, NodeId(2)).encode().to_vec();
        bytes.extend_from_slice(&frame);
        let mut stream = raw(addr, &bytes);
        assert_closed_by_server(&mut stream);
        assert!(
            events.recv_timeout(Duration::from_millis(50)).is_err(),
            "{what}: nothing reaches consensus"
        );
        assert_eq!(node.stats().connections_refused, 1, "{what}");
        node.shutdown();
    }
}

mod cluster_support;

#[test]
fn a_follower_stores_a_leaders_records_as_they_are_and_refuses_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster_support::cluster(2, dir.path(), 1_000_000);
    // Node 0 is real; the test speaks for node 1, a leader of term 1000.
    let mut node = nodes.remove(0);
    node.config.cluster_id = Some(CLUSTER);
    node.start();
    let addr = node.config.servers[0];
    let good = commands(1, 1000);
    let mut bytes = Handshake::peer(CLUSTER, NodeId(1)).encode().to_vec();
    encode_message(&append(1, 0, 1000, (0, 0), good.clone()), &mut bytes).unwrap();
    let mut stream = raw(addr, &bytes);
    wait_until("node 0 to append the good entries", || {
        node.handle().status().unwrap().last_index == LogIndex(3)
    });

    // The next batch with its last record damaged: refused, the connection closed.
    let next = commands(4, 1000);
    let last = next[2].record().to_vec();
    let mut frame = Vec::new();
    encode_message(&append(1, 0, 1000, (3, 1000), next), &mut frame).unwrap();
    let at = find(&frame, &last);
    frame[at + last.len() - 1] ^= 0x10;
    stream.write_all(&frame).unwrap();
    assert_closed_by_server(&mut stream);
    assert_eq!(node.handle().status().unwrap().last_index, LogIndex(3));
    node.stop();

    // The WAL holds the three good records byte for byte (the leader's encoding), nothing more.
    let wal = rcraft_storage::Wal::open(
        &node.config.data_dir.join("wal"),
        rcraft_storage::WalOptions::default(),
    )
    .unwrap();
    assert_eq!(wal.last_index(), 3);
    let stored = wal.read(wal.first_index()..4).unwrap();
    let stored: Vec<&[u8]> = stored.iter().map(|r| r.encoded).collect();
    let sent: Vec<&[u8]> = good.iter().map(Entry::record).collect();
    assert_eq!(stored, sent);
}
