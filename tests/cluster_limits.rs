//! In-process clusters at the size limit of a command (issue 14 A): a command over
//! `COMMAND_BYTES_MAX` is refused with a definite error naming its size and the limit, at the
//! `NodeHandle` and over the network, and the node keeps taking writes; a command of exactly
//! the limit replicates to every follower and commits.
//!
//! These clusters use election timeouts of seconds. A 64 MiB entry (or client request) keeps
//! a node's network thread busy for a few hundred milliseconds on the 2-core test machines
//! (decoding and copying it; docs/ARCHITECTURE.md, "Command size"), longer than the default
//! 150-300 ms election timeout, so with the defaults the followers elect a new leader while
//! the entry is on its way and the proposal fails definitely ("replaced by another leader's").

mod cluster_support;

use cluster_support::{TestNode, cluster, raw_request, wait_for_leader, wait_until};
use rcraft::client::ClientOptions;
use rcraft::kv_client::KvClient;
use rcraft::node::limits::COMMAND_BYTES_MAX;
use rcraft::wire::{ClientRequestBody, ClientResponseBody, FRAME_BYTES_MAX, Session};
use std::time::Duration;

/// Sizes a node must refuse: one byte over the limit, and a command that fits a client's
/// frame but not an AppendRequest carrying it (the size that blocked every write).
fn oversized() -> [usize; 2] {
    [COMMAND_BYTES_MAX + 1, FRAME_BYTES_MAX as usize - 64]
}

/// Three started nodes whose election timeouts and client waits are long enough for 64 MiB
/// entries on a busy machine (see the module header); returns them and the leader's position.
fn started_cluster(dir: &std::path::Path) -> (Vec<TestNode>, usize) {
    let mut nodes = cluster(3, dir, 0);
    for node in &mut nodes {
        node.config.election_timeout_min_ms = 3_000;
        node.config.election_timeout_max_ms = 6_000;
        node.config.heartbeat_ms = 100;
        node.config.rpc_timeout_ms = 60_000;
        node.start();
    }
    let leader = wait_for_leader(&nodes);
    (nodes, leader)
}

/// Sends one client request over a fresh connection and returns the answer's body.
/// True when `message` names `bytes` and the limit.
fn names_size_and_limit(message: &str, bytes: usize) -> bool {
    message.contains(&bytes.to_string()) && message.contains(&COMMAND_BYTES_MAX.to_string())
}

#[test]
fn a_command_over_the_limit_is_refused_definitely_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = started_cluster(dir.path());
    let handle = nodes[leader].handle();
    let session = Session {
        client_id: 1,
        sequence: 1,
    };
    for bytes in oversized() {
        let refused = handle.propose(vec![1; bytes]).unwrap_err();
        assert!(refused.is_definite(), "{refused}");
        assert!(
            names_size_and_limit(&refused.to_string(), bytes),
            "{refused}"
        );
        let refused = handle
            .propose_in_session(Some(session), vec![1; bytes])
            .unwrap_err();
        assert!(refused.is_definite(), "{refused}");
        let refused = handle.read(vec![1; bytes]).unwrap_err();
        assert!(refused.is_definite(), "{refused}");
        assert!(
            names_size_and_limit(&refused.to_string(), bytes),
            "{refused}"
        );
    }
    let written = handle.propose(b"after".to_vec()).unwrap();

    // The same over the network, as a client's Write and Read requests.
    let address = nodes[leader].config.servers[leader];
    let cluster_id = rcraft::wire::CLUSTER_ID_UNKNOWN;
    for bytes in oversized() {
        let write = ClientRequestBody::Write {
            session: Some(session),
            command: vec![2; bytes],
        };
        let read = ClientRequestBody::Read {
            query: vec![2; bytes],
            mode: rcraft_wire::ReadMode::Linearizable,
        };
        for request in [write, read] {
            match raw_request(address, cluster_id, request, Duration::from_secs(60)) {
                ClientResponseBody::Error { definite, message } => {
                    assert!(definite, "{message}");
                    assert!(names_size_and_limit(&message, bytes), "{message}");
                }
                other => panic!("an oversized request was answered {other:?}"),
            }
        }
    }
    let options = ClientOptions {
        timeout: Duration::from_secs(60),
        cluster_id,
        ..ClientOptions::default()
    };
    let mut client = KvClient::connect(&nodes[leader].config.servers, options).unwrap();
    let after = client.submit(b"over the network".to_vec()).unwrap();
    assert!(after.index > written.index);
    let expected = [b"after".to_vec(), b"over the network".to_vec()];
    wait_until(Duration::from_secs(20), "every node to apply both", || {
        nodes.iter().all(|n| n.applied() == expected)
    });
    nodes.iter_mut().for_each(TestNode::stop);
}

#[test]
fn a_command_of_exactly_the_limit_replicates_to_every_follower_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = started_cluster(dir.path());
    let command: Vec<u8> = (0..COMMAND_BYTES_MAX).map(|i| (i % 251) as u8).collect();
    // Commands in a session need the session registered first (issue 14, finding 6).
    let client_id = nodes[leader].handle().register_session().unwrap();
    let session = Session {
        client_id,
        sequence: 1,
    };
    let written = nodes[leader]
        .handle()
        .propose_in_session(Some(session), command.clone())
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "every node to apply the command",
        || nodes.iter().all(|n| n.journal.lock().unwrap().len() == 1),
    );
    for node in &nodes {
        assert!(node.journal.lock().unwrap()[0] == command);
        assert!(node.handle().status().unwrap().commit_index >= written.index);
    }
    // Writes go on after it.
    nodes[leader].handle().propose(b"next".to_vec()).unwrap();
    nodes.iter_mut().for_each(TestNode::stop);
}
