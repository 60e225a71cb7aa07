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
        .map(|i| {
            Entry::new(
                Term(2),
                LogIndex(i),
                EntryPayload::Command {
                    session: None,
                    data: vec![i as u8; 1000].into(),
                },
            )
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

#[test]
fn a_peer_that_never_reads_gets_a_capped_queue() {
    // The "peer" is a listener nobody accepts from: the kernel completes the connection, the
    // socket buffers fill, and then the link's queue must stop at its cap.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listener_a = listener();
    let addr_a = listener_a.local_addr().unwrap();
    let mut config_a = config(1, addr_a, &[(2, silent.local_addr().unwrap())]);
    config_a.peer_queue_frames = 16;
    config_a.stall_timeout = Duration::from_secs(30);
    let (a, _events) = spawn(listener_a, config_a, 16);
    let big = |n: u64| Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta::default(),
            offset: n,
            data: vec![0u8; 64 << 10],
            chunk_crc: 0,
            done: false,
        },
    };
    // Well over what loopback socket buffers hold.
    for n in 0..400 {
        a.sender().send_peer(big(n));
    }
    // Every message is either written to the socket, among the 16 queued, or dropped.
    wait_until("every message to be accounted for", || {
        let stats = a.stats();
        stats.peer_frames_sent + 16 + stats.peer_dropped_queue_full >= 400
    });
    assert!(a.stats().peer_dropped_queue_full > 0, "{:?}", a.stats());
    a.shutdown();
}

#[test]
fn a_peer_that_never_answers_the_handshake_is_redialled() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listener_a = listener();
    let addr_a = listener_a.local_addr().unwrap();
    let mut config_a = config(1, addr_a, &[(2, silent.local_addr().unwrap())]);
    config_a.stall_timeout = Duration::from_millis(100);
    let (a, _events) = spawn(listener_a, config_a, 16);
    let sender = a.sender();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_pinger = std::sync::Arc::clone(&stop);
    let pinger = std::thread::spawn(move || {
        let mut n = 0;
        while !stop_pinger.load(std::sync::atomic::Ordering::SeqCst) {
            sender.send_peer(heartbeat(1, 2, n));
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    // Two dials reach the silent listener: the first link timed out waiting for the answer.
    let (_first, _) = silent.accept().unwrap();
    let (_second, _) = silent.accept().unwrap();
    assert_eq!(a.stats().peer_connects, 0);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    pinger.join().unwrap();
    assert!(a.stats().connections_refused >= 1);
    a.shutdown();
}
