//! Round-trip latency through the network threads next to a raw blocking TCP ping-pong
//! measured in the same run. Not a test: ignored by default, run in release with
//!
//! `cargo test --release -p rcraft --test net_bench -- --ignored --nocapture`
//!
//! and copy the printed table to docs/BENCHMARKS.md ("Wire").

mod net_common;

use net_common::*;
use rcraft::node::net::NetEvent;
use rcraft_wire::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const WARMUP: usize = 2_000;
const ROUNDS: usize = 20_000;

struct Summary {
    name: &'static str,
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn summarize(name: &'static str, mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let total: Duration = samples.iter().sum();
    Summary {
        name,
        mean: total / samples.len() as u32,
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
    }
}

fn measure(mut round_trip: impl FnMut(u64)) -> Vec<Duration> {
    for n in 0..WARMUP {
        round_trip(n as u64);
    }
    (0..ROUNDS)
        .map(|n| {
            let start = Instant::now();
            round_trip(n as u64);
            start.elapsed()
        })
        .collect()
}

/// Blocking TCP ping-pong of `size`-byte messages between two threads.
fn raw_tcp(size: usize) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; size];
        while stream.read_exact(&mut buf).is_ok() {
            stream.write_all(&buf).unwrap();
        }
    });
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buf = vec![7u8; size];
    let samples = measure(|_| {
        stream.write_all(&buf).unwrap();
        stream.read_exact(&mut buf).unwrap();
    });
    drop(stream);
    server.join().unwrap();
    samples
}

/// Node 1 sends a heartbeat to node 2, whose consensus stand-in answers at once.
fn peer_round_trip(spin: Duration) -> Vec<Duration> {
    let (listener_a, listener_b) = (listener(), listener());
    let (addr_a, addr_b) = (
        listener_a.local_addr().unwrap(),
        listener_b.local_addr().unwrap(),
    );
    let mut config_a = config(1, addr_a, &[(2, addr_b)]);
    config_a.idle_spin = spin;
    let mut config_b = config(2, addr_b, &[(1, addr_a)]);
    config_b.idle_spin = spin;
    let (a, events_a) = spawn(listener_a, config_a, 1024);
    let (b, events_b) = spawn(listener_b, config_b, 1024);
    let b_sender = b.sender();
    let echo = std::thread::spawn(move || {
        while let Ok(NetEvent::Peer(m)) = events_b.recv() {
            b_sender.send_peer(Message {
                from: m.to,
                to: m.from,
                term: m.term,
                body: MessageBody::HeartbeatResponse { read_context: 0 },
            });
        }
    });
    let sender = a.sender();
    let samples = measure(|n| {
        sender.send_peer(heartbeat(1, 2, n));
        next_peer_message(&events_a);
    });
    b.shutdown();
    echo.join().unwrap();
    a.shutdown();
    samples
}

/// A blocking client sends a request to a node whose consensus stand-in answers at once.
fn client_round_trip(spin: Duration) -> Vec<Duration> {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let mut config = config(1, addr, &[]);
    config.idle_spin = spin;
    let (node, events) = spawn(listener, config, 1024);
    let echo = echo_server(events, node.sender());
    let mut client = TestClient::connect(addr);
    let samples = measure(|n| {
        client.send(&write_request(n, b"0123456789"));
        client.recv();
    });
    drop(client);
    node.shutdown();
    echo.join().unwrap();
    samples
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn round_trip_latency_against_raw_tcp() {
    let mut frame = Vec::new();
    encode_message(&heartbeat(1, 2, 1), &mut frame).unwrap();
    let raw = summarize("raw blocking TCP ping-pong", raw_tcp(frame.len()));
    let spin = Duration::from_micros(50);
    let peer = summarize(
        "peer A->B->A (2 network threads)",
        peer_round_trip(Duration::ZERO),
    );
    let client = summarize(
        "client->node->client (1 network thread)",
        client_round_trip(Duration::ZERO),
    );
    let peer_spin = summarize("peer A->B->A, idle_spin 50 us", peer_round_trip(spin));
    let client_spin = summarize(
        "client->node->client, idle_spin 50 us",
        client_round_trip(spin),
    );
    println!(
        "\n{ROUNDS} round trips each (after {WARMUP} warm-up), {} B frames",
        frame.len()
    );
    println!("| path | mean | p50 | p99 | mean / raw |");
    println!("|---|---|---|---|---|");
    for s in [&raw, &peer, &client, &peer_spin, &client_spin] {
        let ratio = s.mean.as_secs_f64() / raw.mean.as_secs_f64();
        println!(
            "| {} | {:.1} us | {:.1} us | {:.1} us | {ratio:.2} |",
            s.name,
            s.mean.as_secs_f64() * 1e6,
            s.p50.as_secs_f64() * 1e6,
            s.p99.as_secs_f64() * 1e6,
        );
    }
}
