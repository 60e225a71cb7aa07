//! In-process clusters over loopback: election, replication, reads, failover, restart.

mod cluster_support;

use cluster_support::{cluster, propose, read_from_leader, wait_converged, wait_for_leader};
use rcraft::node::Error;
use rcraft::wire::{NodeId, ReadMode, Session};

#[test]
fn single_node_proposes_reads_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(1, dir.path(), 0);
    nodes[0].start();
    wait_for_leader(&nodes);
    let written = nodes[0].handle().propose(b"one".to_vec()).unwrap();
    assert_eq!(written.response, written.index.0.to_le_bytes());
    let read = nodes[0].handle().read(b"last".to_vec()).unwrap();
    assert_eq!(read.response, b"one");
    assert!(read.index >= written.index);
    nodes[0].stop();
}

#[test]
fn three_nodes_elect_replicate_read_and_converge() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 0);
    nodes.iter_mut().for_each(|n| n.start());
    let leader = wait_for_leader(&nodes);
    let follower = (leader + 1) % 3;
    let applied_stream = nodes[follower].handle().subscribe_applied().unwrap();
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let command = format!("cmd-{i}").into_bytes();
        let result = nodes[leader].handle().propose(command.clone()).unwrap();
        assert_eq!(result.response, result.index.0.to_le_bytes());
        expected.push(command);
    }
    match nodes[follower].handle().propose(b"refused".to_vec()) {
        Err(Error::NotLeader { hint, address }) => {
            assert_eq!(hint, Some(NodeId(leader as u64)));
            assert_eq!(address, Some(nodes[leader].config.servers[leader]));
        }
        other => panic!("a follower accepted a proposal: {other:?}"),
    }
    let read = read_from_leader(&nodes, b"count");
    assert_eq!(read.response, 20u64.to_le_bytes());
    wait_converged(&nodes, &expected);
    // The follower's applied-entry stream (cRaft's ApplyMsg) carried every command in order.
    let streamed: Vec<_> = applied_stream.try_iter().collect();
    let commands: Vec<_> = streamed.iter().map(|m| m.command.clone()).collect();
    assert_eq!(commands, expected);
    assert!(streamed.windows(2).all(|w| w[0].index < w[1].index));
    nodes.iter_mut().for_each(|n| n.stop());
}

/// `NodeHandle::read_with` offers the client protocol's read modes to an embedding program.
#[test]
fn embedded_reads_in_each_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 0);
    nodes.iter_mut().for_each(|n| n.start());
    propose(&nodes, b"committed");
    let leader = wait_for_leader(&nodes);
    let follower = (leader + 1) % 3;

    // A follower serves a follower read once it applied through the leader's read index.
    let read = nodes[follower]
        .handle()
        .read_with(b"last".to_vec(), ReadMode::Follower)
        .unwrap();
    assert_eq!(read.response, b"committed");
    // A linearizable read (what `read` does) is the leader's alone.
    match nodes[follower].handle().read(b"last".to_vec()) {
        Err(Error::NotLeader { hint, .. }) => assert_eq!(hint, Some(NodeId(leader as u64))),
        other => panic!("a follower served a linearizable read: {other:?}"),
    }
    let read = nodes[leader]
        .handle()
        .read_with(b"last".to_vec(), ReadMode::Linearizable)
        .unwrap();
    assert_eq!(read.response, b"committed");
    // Lease reads need the setting: without it the refusal is definite and names it.
    match nodes[leader]
        .handle()
        .read_with(b"last".to_vec(), ReadMode::Lease)
    {
        Err(e @ Error::Failed { definite: true, .. }) => {
            assert!(e.to_string().contains("--lease-reads"), "{e}")
        }
        other => panic!("a lease read without lease reads on: {other:?}"),
    }
    nodes.iter_mut().for_each(|n| n.stop());

    // With lease reads on, the leader serves them.
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(1, dir.path(), 0);
    nodes[0].config.lease_reads = true;
    nodes[0].config.check_quorum = true;
    nodes[0].start();
    propose(&nodes, b"leased");
    let read = nodes[0]
        .handle()
        .read_with(b"last".to_vec(), ReadMode::Lease)
        .unwrap();
    assert_eq!(read.response, b"leased");
    nodes[0].stop();
}

#[test]
fn leader_shutdown_elects_a_new_leader_and_writes_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 0);
    nodes.iter_mut().for_each(|n| n.start());
    let mut expected = Vec::new();
    for i in 0..5u32 {
        let command = format!("before-{i}").into_bytes();
        propose(&nodes, &command);
        expected.push(command);
    }
    let old_leader = wait_for_leader(&nodes);
    nodes[old_leader].stop();
    let new_leader = wait_for_leader(&nodes);
    assert_ne!(new_leader, old_leader);
    for i in 0..5u32 {
        let command = format!("after-{i}").into_bytes();
        propose(&nodes, &command);
        expected.push(command);
    }
    wait_converged(&nodes, &expected);
    // The old leader comes back with its data directory and catches up.
    nodes[old_leader].start();
    wait_converged(&nodes, &expected);
    nodes.iter_mut().for_each(|n| n.stop());
}

#[test]
fn restart_with_the_same_data_recovers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 0);
    nodes.iter_mut().for_each(|n| n.start());
    let mut expected = Vec::new();
    for i in 0..10u32 {
        let command = format!("durable-{i}").into_bytes();
        propose(&nodes, &command);
        expected.push(command);
    }
    wait_converged(&nodes, &expected);
    nodes.iter_mut().for_each(|n| n.stop());

    nodes.iter_mut().for_each(|n| n.start());
    let read = read_from_leader(&nodes, b"count");
    assert_eq!(read.response, 10u64.to_le_bytes());
    let command = b"after-restart".to_vec();
    propose(&nodes, &command);
    expected.push(command);
    wait_converged(&nodes, &expected);
    nodes.iter_mut().for_each(|n| n.stop());
}

#[test]
fn a_retried_session_write_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 0);
    nodes.iter_mut().for_each(|n| n.start());
    let leader = wait_for_leader(&nodes);
    let handle = nodes[leader].handle();
    // A session must be registered before use: an unknown client is refused, not applied.
    let unknown = Session {
        client_id: 42,
        sequence: 1,
    };
    match handle.propose_in_session(Some(unknown), b"never".to_vec()) {
        Err(e) if e.is_session_expired() && e.is_definite() => {}
        other => panic!("a write from an unregistered client was not refused: {other:?}"),
    }
    let client_id = handle.register_session().unwrap();
    let session = Session {
        client_id,
        sequence: 1,
    };
    let first = handle
        .propose_in_session(Some(session), b"once".to_vec())
        .unwrap();
    let retry = handle
        .propose_in_session(Some(session), b"once".to_vec())
        .unwrap();
    assert!(retry.index > first.index, "the retry is a new log entry");
    assert_eq!(
        retry.response, first.response,
        "answered from the session table"
    );
    let next = Session {
        client_id,
        sequence: 2,
    };
    handle
        .propose_in_session(Some(next), b"twice".to_vec())
        .unwrap();
    // An older sequence than the last applied one is refused, outcome unknown to the table.
    match handle.propose_in_session(Some(session), b"once".to_vec()) {
        Err(Error::Failed {
            definite: false, ..
        }) => {}
        other => panic!("a superseded retry was not refused: {other:?}"),
    }
    wait_converged(&nodes, &[b"once".to_vec(), b"twice".to_vec()]);
    nodes.iter_mut().for_each(|n| n.stop());
}

#[test]
fn leadership_transfer_moves_the_leader_and_writes_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 0);
    nodes.iter_mut().for_each(|n| n.start());
    let mut expected = vec![b"before".to_vec()];
    propose(&nodes, &expected[0]);
    let leader = wait_for_leader(&nodes);
    let target = (leader + 2) % 3;
    match nodes[target]
        .handle()
        .transfer_leader(NodeId(leader as u64))
    {
        Err(Error::NotLeader { hint, .. }) => assert_eq!(hint, Some(NodeId(leader as u64))),
        other => panic!("a follower accepted a transfer: {other:?}"),
    }
    nodes[leader]
        .handle()
        .transfer_leader(NodeId(target as u64))
        .unwrap();
    cluster_support::wait_until(std::time::Duration::from_secs(20), "the transfer", || {
        wait_for_leader(&nodes) == target
    });
    expected.push(b"after".to_vec());
    propose(&nodes, b"after");
    wait_converged(&nodes, &expected);
    nodes.iter_mut().for_each(|n| n.stop());
}

#[test]
fn a_one_node_cluster_on_port_zero_serves_clients_on_its_real_port() {
    let dir = tempfile::tempdir().unwrap();
    let address: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = rcraft::Config::new(NodeId(0), vec![address], dir.path().to_path_buf());
    let node = rcraft::node::Node::start(config, rcraft::kv::KvStore::new()).unwrap();
    let real = node.local_addr().unwrap();
    assert_ne!(real.port(), 0);
    node.wait_for_leader(std::time::Duration::from_secs(10))
        .unwrap();
    let mut client = rcraft::kv_client::KvClient::connect(&[real], Default::default()).unwrap();
    client.put(b"k", b"v").unwrap();
    assert_eq!(client.get(b"k").unwrap(), Some(b"v".to_vec()));
    node.shutdown().unwrap();
}
