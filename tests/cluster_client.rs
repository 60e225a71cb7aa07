//! The built-in KV store served by in-process nodes, driven over TCP by `rcraft::client`:
//! client requests go through the network thread, the consensus loop and the apply thread.

mod cluster_support;

use cluster_support::{free_addresses, wait_until};
use rcraft::Config;
use rcraft::client::ClientOptions;
use rcraft::kv::KvStore;
use rcraft::kv_client::KvClient;
use rcraft::node::{Node, NodeHandle};
use rcraft::wire::{NodeId, Role};
use std::time::Duration;

fn start(config: &Config) -> NodeHandle {
    Node::start(config.clone(), KvStore::new()).expect("node starts")
}

fn leader_of(nodes: &[Option<NodeHandle>]) -> Option<usize> {
    nodes.iter().flatten().find_map(|n| {
        let status = n.status().ok()?;
        (status.role == Role::Leader).then_some(status.id.0 as usize)
    })
}

#[test]
fn kv_client_writes_reads_and_survives_a_leader_change() {
    let dir = tempfile::tempdir().unwrap();
    let servers = free_addresses(3);
    let configs: Vec<Config> = (0..3)
        .map(|i| Config::new(NodeId(i), servers.clone(), dir.path().join(format!("n{i}"))))
        .collect();
    let mut nodes: Vec<Option<NodeHandle>> = configs.iter().map(|c| Some(start(c))).collect();
    let options = ClientOptions {
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    let mut client = KvClient::connect(&servers, options).expect("client");

    client.put(b"a", b"1").unwrap();
    assert_eq!(client.get(b"a").unwrap(), Some(b"1".to_vec()));
    let swapped = client.cas(b"a", Some(b"1"), b"2").unwrap();
    assert!(swapped.swapped);
    let refused = client.cas(b"a", Some(b"1"), b"3").unwrap();
    assert_eq!(
        (refused.swapped, refused.current),
        (false, Some(b"2".to_vec()))
    );
    client.delete(b"a").unwrap();
    assert_eq!(client.get(b"a").unwrap(), None);
    client.put(b"k", b"before").unwrap();

    let leader = leader_of(&nodes).expect("a leader served the writes");
    let status = client.status_of(servers[leader]).unwrap();
    assert_eq!(status.role, Role::Leader);
    assert!(status.applied_index.0 >= 5, "{status:?}");

    nodes[leader].take().unwrap().shutdown().unwrap();
    client.put(b"k", b"after").unwrap();
    assert_eq!(client.get(b"k").unwrap(), Some(b"after".to_vec()));

    // The old leader restarts from its data directory and catches up.
    nodes[leader] = Some(start(&configs[leader]));
    let target = client
        .status_of(servers[(leader + 1) % 3])
        .unwrap()
        .commit_index;
    wait_until(
        Duration::from_secs(20),
        "the restarted node to catch up",
        || {
            nodes[leader]
                .as_ref()
                .and_then(|n| n.status().ok())
                .is_some_and(|s| s.applied_index >= target)
        },
    );
    for node in nodes.into_iter().flatten() {
        node.shutdown().unwrap();
    }
}
