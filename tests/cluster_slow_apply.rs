//! A slow state machine must never stop a node's consensus: with every state machine held
//! still, the leader goes on committing, heartbeating and answering while a backlog of
//! applies builds up past the apply thread's queue, nobody starts an election, and once the
//! state machines move again every node applies every accepted write, in order, once
//! (issue 14, finding 16 of docs/SIM_FINDINGS.md).

mod cluster_support;

use cluster_support::{
    Journal, Shared, TestNode, cluster, raw_client_stream, raw_request, wait_for_leader, wait_until,
};
use rcraft::StateMachine;
use rcraft::node::Node;
use rcraft::node::limits::APPLY_COMMAND_QUEUE_DEPTH;
use rcraft::wire::CLUSTER_ID_UNKNOWN;
use rcraft::wire::{
    ClientRequest, ClientRequestBody, ClientResponseBody, FRAME_BYTES_MAX, FrameDecoder, LogIndex,
    NodeStatus, encode_client_request,
};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Holds every state machine still while closed.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.changed.notify_all();
    }

    fn wait_open(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.changed.wait(closed).unwrap();
        }
    }
}

/// The test journal, applying nothing while the gate is closed.
struct GatedJournal {
    journal: Journal,
    gate: Arc<Gate>,
}

impl StateMachine for GatedJournal {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Vec<u8> {
        self.gate.wait_open();
        self.journal.apply(index, command)
    }

    fn query(&self, query: &[u8]) -> Vec<u8> {
        self.journal.query(query)
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        self.journal.snapshot(out)
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        self.journal.restore(input)
    }
}

fn start_gated(node: &mut TestNode, gate: &Arc<Gate>) {
    node.journal = Shared::default();
    let machine = GatedJournal {
        journal: Journal {
            commands: node.journal.clone(),
        },
        gate: gate.clone(),
    };
    node.handle = Some(Node::start(node.config.clone(), machine).expect("node starts"));
}

/// Writes per connection (under the node's limit of requests in flight per connection).
const WRITES_PER_CONNECTION: u64 = 1_000;
/// Connections writing at once: together more writes than the apply thread's queue holds.
const CONNECTIONS: u64 = 6;
const _: () = assert!(WRITES_PER_CONNECTION * CONNECTIONS > APPLY_COMMAND_QUEUE_DEPTH as u64);

/// Sends `writes` writes on connection `connection` at once (pipelined, without sessions)
/// and returns each answer with the command it answers.
fn write_all(
    address: SocketAddr,
    connection: u64,
    writes: u64,
) -> Vec<(Vec<u8>, ClientResponseBody)> {
    let mut stream = raw_client_stream(address, CLUSTER_ID_UNKNOWN, Duration::from_secs(120));
    let command = |i: u64| format!("c{connection}-{i}").into_bytes();
    let mut frames = Vec::new();
    for i in 0..writes {
        let request = ClientRequest {
            request_id: i,
            body: ClientRequestBody::Write {
                session: None,
                command: command(i),
            },
        };
        encode_client_request(&request, &mut frames).unwrap();
    }
    stream.write_all(&frames).unwrap();
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut answers = BTreeMap::new();
    let mut buf = vec![0u8; 256 << 10];
    while (answers.len() as u64) < writes {
        let n = stream.read(&mut buf).expect("answers arrive");
        assert!(n > 0, "the node closed the connection");
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame().unwrap() {
            let response = frame.to_client_response().unwrap();
            let earlier = answers.insert(response.request_id, response.body);
            assert!(
                earlier.is_none(),
                "request {} answered twice",
                response.request_id
            );
        }
    }
    (answers.into_iter())
        .map(|(id, body)| (command(id), body))
        .collect()
}

/// `node`'s status over TCP, failing after 5 s without an answer (a consensus thread stuck
/// behind its state machine never answers; `NodeHandle::status` would wait the rpc timeout).
fn status(node: &TestNode) -> NodeStatus {
    let address = node.config.own_address();
    let timeout = Duration::from_secs(5);
    match raw_request(
        address,
        CLUSTER_ID_UNKNOWN,
        ClientRequestBody::Status,
        timeout,
    ) {
        ClientResponseBody::Status(status) => *status,
        other => panic!("status answered with {other:?}"),
    }
}

#[test]
fn a_slow_state_machine_keeps_its_leader_while_a_backlog_of_applies_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 0);
    for node in &mut nodes {
        // Elections only after a second or two of silence: a busy test machine does not
        // cause them, a consensus thread stuck behind its state machine does.
        node.config.election_timeout_min_ms = 1_000;
        node.config.election_timeout_max_ms = 2_000;
        // Writes wait for the state machine for as long as the test holds it.
        node.config.rpc_timeout_ms = 60_000;
    }
    let gate = Arc::new(Gate::default());
    for node in &mut nodes {
        start_gated(node, &gate);
    }
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        hold_then_drain(&nodes, &gate);
    }));
    if let Err(failure) = checked {
        // A node whose consensus thread is stuck would never shut down: leave it.
        gate.set_closed(false);
        std::mem::forget(nodes);
        std::panic::resume_unwind(failure);
    }
    for node in &mut nodes {
        node.stop();
    }
}

fn hold_then_drain(nodes: &[TestNode], gate: &Gate) {
    let leader = wait_for_leader(nodes);
    let before = status(&nodes[leader]);
    gate.set_closed(true);
    let address = nodes[leader].config.own_address();
    // A first write commits and holds the leader's apply thread in the state machine, so
    // that everything after it queues up for the apply thread.
    let mut writers = vec![std::thread::spawn(move || {
        write_all(address, CONNECTIONS, 1)
    })];
    let first = before.commit_index.0 + 1;
    wait_until(Duration::from_secs(30), "the first write to commit", || {
        status(&nodes[leader]).commit_index.0 >= first
    });
    writers.extend((0..CONNECTIONS).map(|connection| {
        std::thread::spawn(move || write_all(address, connection, WRITES_PER_CONNECTION))
    }));

    // More writes commit than the apply thread's queue holds (one waiter per write besides
    // the entries): the leader's consensus thread goes on anyway.
    let target = first + APPLY_COMMAND_QUEUE_DEPTH as u64 + 100;
    wait_until(
        Duration::from_secs(60),
        "the leader to commit more writes than its apply queue holds, nothing applied",
        || status(&nodes[leader]).commit_index.0 >= target,
    );
    // Held past the longest election timeout: every node answers, in the same term, under
    // the same leader.
    let held_until = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < held_until {
        for node in nodes {
            let status = status(node);
            assert_eq!(status.term, before.term, "an election while applies waited");
            assert_eq!(status.leader, before.leader);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        nodes.iter().all(|node| node.applied().is_empty()),
        "applied while held"
    );

    gate.set_closed(false);
    let mut accepted = Vec::new();
    for writer in writers {
        for (command, answer) in writer.join().expect("writer") {
            match answer {
                ClientResponseBody::Ok { index, .. } => accepted.push((index, command)),
                // Refused outright while the backlog is full: never applied.
                ClientResponseBody::Overloaded => {}
                other => panic!("unexpected answer to a write: {other:?}"),
            }
        }
    }
    assert!(accepted.len() as u64 >= target - before.commit_index.0);
    accepted.sort();
    let expected: Vec<Vec<u8>> = accepted.into_iter().map(|(_, command)| command).collect();
    wait_until(
        Duration::from_secs(60),
        "every node to apply every accepted write, in order, once",
        || nodes.iter().all(|node| node.applied() == expected),
    );
    for node in nodes {
        assert_eq!(status(node).term, before.term);
    }
}
