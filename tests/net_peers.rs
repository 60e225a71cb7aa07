//! Two network threads on loopback exchange peer messages, in order, in both directions, and
//! a link comes back after the peer's network thread restarts on the same port.

mod net_common;

use net_common::*;
use rcraft_wire::*;
use std::time::{Duration, Instant};

#[test]
fn two_nodes_exchange_peer_messages_in_order() {
    let (listener_a, listener_b) = (listener(), listener());
    let (addr_a, addr_b) = (
        listener_a.local_addr().unwrap(),
        listener_b.local_addr().unwrap(),
    );
    let (a, events_a) = spawn(listener_a, config(1, addr_a, &[(2, addr_b)]), 4096);
    let (b, events_b) = spawn(listener_b, config(2, addr_b, &[(1, addr_a)]), 4096);

    let count = 2000;
    for n in 0..count {
        assert!(a.sender().send_peer(heartbeat(1, 2, n)));
    }
    for n in 0..count {
        assert_eq!(next_peer_message(&events_b), heartbeat(1, 2, n));
    }
    let batch: Vec<Message> = (0..count).map(|n| heartbeat(2, 1, n)).collect();
    assert!(b.sender().send_peers(batch.clone()));
    for expected in batch {
        assert_eq!(next_peer_message(&events_a), expected);
    }
    assert_eq!(a.stats().peer_dropped_queue_full, 0);
    a.shutdown();
    b.shutdown();
}

#[test]
fn large_append_request_arrives_intact() {
    let (listener_a, listener_b) = (listener(), listener());
    let (addr_a, addr_b) = (
        listener_a.local_addr().unwrap(),
        listener_b.local_addr().unwrap(),
    );
    let (a, _events_a) = spawn(listener_a, config(1, addr_a, &[(2, addr_b)]), 16);
    let (b, events_b) = spawn(listener_b, config(2, addr_b, &[(1, addr_a)]), 16);
    let entries: Vec<Entry> = (1..=2048)
        .map(|i| Entry {
            term: Term(2),
            index: LogIndex(i),
            payload: EntryPayload::Command {
                session: None,
                data: vec![i as u8; 1000],
            },
        })
        .collect();
    let append = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(2),
        body: MessageBody::AppendRequest {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries,
            leader_commit: LogIndex(0),
        },
    };
    assert!(a.sender().send_peer(append.clone()));
    assert_eq!(next_peer_message(&events_b), append);
    a.shutdown();
    b.shutdown();
}

#[test]
fn link_recovers_after_the_peer_restarts_on_the_same_port() {
    let (listener_a, listener_b) = (listener(), listener());
    let (addr_a, addr_b) = (
        listener_a.local_addr().unwrap(),
        listener_b.local_addr().unwrap(),
    );
    let (a, _events_a) = spawn(listener_a, config(1, addr_a, &[(2, addr_b)]), 4096);
    let (b, events_b) = spawn(listener_b, config(2, addr_b, &[(1, addr_a)]), 4096);
    a.sender().send_peer(heartbeat(1, 2, 0));
    assert_eq!(next_peer_message(&events_b), heartbeat(1, 2, 0));
    b.shutdown();
    drop(events_b);

    // While B is down, A's messages are dropped or lost with the failed connection.
    for n in 1..20 {
        a.sender().send_peer(heartbeat(1, 2, n));
        std::thread::sleep(Duration::from_millis(5));
    }

    let listener_b = std::net::TcpListener::bind(addr_b).expect("rebind the same port");
    let (b, events_b) = spawn(listener_b, config(2, addr_b, &[(1, addr_a)]), 4096);
    // A keeps sending (as Raft's heartbeats would) until one arrives over a new connection.
    let deadline = Instant::now() + WAIT;
    let mut n = 100;
    let received = loop {
        assert!(
            Instant::now() < deadline,
            "link to the restarted peer never came back"
        );
        a.sender().send_peer(heartbeat(1, 2, n));
        n += 1;
        if let Ok(event) = events_b.recv_timeout(Duration::from_millis(20)) {
            break event;
        }
    };
    assert!(matches!(received, rcraft::node::net::NetEvent::Peer(m) if m.from == NodeId(1)));
    // The message may arrive before A has read B's handshake answer; the count follows.
    wait_until("a second verified connection", || {
        a.stats().peer_connects >= 2
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn messages_to_an_unknown_node_are_dropped_and_counted() {
    let listener_a = listener();
    let addr_a = listener_a.local_addr().unwrap();
    let (a, _events) = spawn(listener_a, config(1, addr_a, &[]), 16);
    a.sender().send_peer(heartbeat(1, 7, 0));
    wait_until("the drop to be counted", || {
        a.stats().peer_dropped_unknown == 1
    });
    a.shutdown();
}
