//! Membership changes through `NodeHandle::change_membership` in an in-process cluster.

mod cluster_support;

use cluster_support::{cluster, propose, wait_converged, wait_for_leader, wait_until};
use rcraft::node::Error;
use rcraft::wire::{Membership, NodeId};
use std::time::Duration;

#[test]
fn remove_a_follower_then_add_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 0);
    nodes.iter_mut().for_each(|n| n.start());
    let mut expected = vec![b"three".to_vec()];
    propose(&nodes, &expected[0]);
    let leader = wait_for_leader(&nodes);
    let removed = (leader + 1) % 3;
    let remaining: Vec<NodeId> = (0..3u64)
        .filter(|i| *i as usize != removed)
        .map(NodeId)
        .collect();

    let unknown = Membership::with_voters([NodeId(0), NodeId(7)]);
    match nodes[leader].handle().change_membership(unknown) {
        Err(Error::Failed { definite: true, .. }) => {}
        other => panic!("a member without an address was accepted: {other:?}"),
    }

    let two = Membership::with_voters(remaining.clone());
    nodes[leader].handle().change_membership(two).unwrap();
    let status = nodes[leader].handle().status().unwrap();
    assert_eq!(status.voters, remaining);
    nodes[removed].stop();
    expected.push(b"two".to_vec());
    propose(&nodes, b"two");
    wait_converged(&nodes, &expected);

    // The removed node is no member: nobody sends it anything until it is added back, so it
    // learns the leader only after the change.
    let leader = wait_for_leader(&nodes);
    nodes[removed].start();
    let all = Membership::with_voters((0..3).map(NodeId));
    nodes[leader].handle().change_membership(all).unwrap();
    expected.push(b"three again".to_vec());
    propose(&nodes, b"three again");
    wait_converged(&nodes, &expected);
    wait_until(
        Duration::from_secs(10),
        "every node to see three voters",
        || {
            nodes
                .iter()
                .all(|n| n.handle().status().is_ok_and(|s| s.voters.len() == 3))
        },
    );
    nodes.iter_mut().for_each(|n| n.stop());
}
