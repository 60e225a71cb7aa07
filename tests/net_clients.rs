//! Many client connections to one network thread each get exactly their own replies, also
//! when the consensus side is slow and the event channel is tiny (back-pressure, no loss).

mod net_common;

use net_common::*;
use rcraft_wire::*;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn run_clients(addr: std::net::SocketAddr, clients: u64, requests: u64) {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = TestClient::connect(addr);
                // Pipelined: every request is written before the first reply is read.
                for r in 0..requests {
                    let id = c * 1_000_000 + r;
                    client.send(&write_request(id, format!("c{c} r{r}").as_bytes()));
                }
                for r in 0..requests {
                    let id = c * 1_000_000 + r;
                    let response = client.recv();
                    assert_eq!(response.request_id, id);
                    let expected = format!("c{c} r{r}").into_bytes();
                    assert!(matches!(
                        response.body,
                        ClientResponseBody::Ok { ref result, .. } if *result == expected
                    ));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
}

#[test]
fn many_clients_get_their_own_replies() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let (node, events) = spawn(listener, config(1, addr, &[]), 1024);
    let closed = Arc::new(Mutex::new(Vec::new()));
    let echo = echo_server_recording_closes(events, node.sender(), Arc::clone(&closed));
    run_clients(addr, 32, 50);
    let stats = node.stats();
    assert_eq!(stats.connections_accepted, 32);
    assert_eq!(stats.connections_refused, 0);
    // Every client has dropped its connection, so every close must be reported while the
    // network thread still runs; closes arrive asynchronously, hence the bounded wait.
    wait_until("all 32 client closes to be reported", || {
        closed.lock().unwrap().len() >= 32
    });
    node.shutdown();
    echo.join().unwrap();
    let closed = closed.lock().unwrap();
    let distinct: BTreeSet<_> = closed.iter().collect();
    assert_eq!(closed.len(), 32, "closes reported: {closed:?}");
    assert_eq!(distinct.len(), 32, "a connection was reported closed twice");
}

#[test]
fn slow_consumer_applies_back_pressure_without_losing_requests() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let (node, events) = spawn(listener, config(1, addr, &[]), 1);
    let sender = node.sender();
    let slow_events = {
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            while let Ok(event) = events.recv() {
                std::thread::sleep(Duration::from_micros(200));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let echo = echo_server(slow_events, sender);
    run_clients(addr, 4, 200);
    node.shutdown();
    echo.join().unwrap();
}

#[test]
fn client_close_is_reported_and_late_replies_are_discarded() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let (node, events) = spawn(listener, config(1, addr, &[]), 16);
    let mut client = TestClient::connect(addr);
    client.send(&write_request(1, b"x"));
    let conn = match next_event(&events) {
        rcraft::node::net::NetEvent::Client { conn, request, .. } => {
            assert_eq!(request.request_id, 1);
            conn
        }
        other => panic!("unexpected {other:?}"),
    };
    drop(client);
    assert_eq!(
        next_event(&events),
        rcraft::node::net::NetEvent::ClientClosed(conn)
    );
    let late = ClientResponse {
        request_id: 1,
        body: ClientResponseBody::Overloaded,
    };
    node.sender().reply(conn, late).unwrap();
    wait_until("the late reply to be discarded", || {
        node.stats().replies_to_closed == 1
    });
    node.shutdown();
}

#[test]
fn a_client_that_does_not_read_is_paused_and_loses_nothing() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let (node, events) = spawn(listener, config(1, addr, &[]), 64);
    let echo = echo_server(events, node.sender());
    let mut client = TestClient::connect(addr);
    let writer_stream = client.stream.try_clone().unwrap();
    // 2000 requests whose echoed responses (64 KiB each, 125 MiB in all) are far more than
    // loopback socket buffers (at most 32 MiB + 4 MiB here) plus the node's per-client cap:
    // the node must stop reading requests while the client is not reading responses.
    let requests = 2000u64;
    let writer = std::thread::spawn(move || {
        let mut stream = writer_stream;
        let command = vec![9u8; 64 << 10];
        for id in 0..requests {
            let mut out = Vec::new();
            encode_client_request(&write_request(id, &command), &mut out).unwrap();
            std::io::Write::write_all(&mut stream, &out).unwrap();
        }
    });
    wait_until("the node to pause the client", || {
        node.stats().client_pauses > 0
    });
    for id in 0..requests {
        let response = client.recv();
        assert_eq!(response.request_id, id);
    }
    writer.join().unwrap();
    node.shutdown();
    echo.join().unwrap();
}
