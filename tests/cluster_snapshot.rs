//! Snapshots in an in-process cluster: taken every N entries, used on restart, and sent to a
//! follower that fell behind the leader's compacted log.

mod cluster_support;

use cluster_support::{TestNode, cluster, wait_converged, wait_for_leader, wait_until};
use std::time::Duration;

/// Writes `count` commands through the leader from several threads at once (so they batch).
fn write_many(nodes: &[TestNode], prefix: &str, count: usize) -> Vec<Vec<u8>> {
    write_many_padded(nodes, prefix, count, 0)
}

/// Like `write_many`, each command padded with `padding` bytes.
fn write_many_padded(
    nodes: &[TestNode],
    prefix: &str,
    count: usize,
    padding: usize,
) -> Vec<Vec<u8>> {
    let leader = wait_for_leader(nodes);
    let handle = nodes[leader].handle();
    let writers = 8;
    std::thread::scope(|scope| {
        for w in 0..writers {
            scope.spawn(move || {
                for i in (w..count).step_by(writers) {
                    let mut command = format!("{prefix}-{i:05}").into_bytes();
                    command.resize(command.len() + padding, b'.');
                    handle.propose(command).expect("write through the leader");
                }
            });
        }
    });
    nodes[leader].applied()
}

#[test]
fn lagging_follower_catches_up_by_snapshot_and_restarts_from_it() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 100);
    nodes.iter_mut().for_each(|n| n.start());
    let leader = wait_for_leader(&nodes);
    let lagging = (leader + 1) % 3;
    nodes[lagging].stop();

    // Far more entries than the leader keeps behind its snapshot, so the lagging follower
    // can only catch up by receiving the snapshot.
    let expected = write_many(&nodes, "w", 1500);
    assert_eq!(expected.len(), 1500);
    let leader_status = nodes[leader].handle().status().unwrap();
    assert!(leader_status.snapshot_index.0 >= 1400, "{leader_status:?}");

    nodes[lagging].start();
    wait_converged(&nodes, &expected);
    wait_until(
        Duration::from_secs(20),
        "the follower to record a snapshot",
        || {
            let status = nodes[lagging].handle().status().unwrap();
            status.snapshot_index.0 > 0
        },
    );

    // Every node restarts from its snapshot plus the log after it.
    nodes.iter_mut().for_each(|n| n.stop());
    nodes.iter_mut().for_each(|n| n.start());
    wait_for_leader(&nodes);
    wait_converged(&nodes, &expected);
    nodes.iter_mut().for_each(|n| n.stop());
}

#[test]
fn a_snapshot_of_many_chunks_is_streamed_to_a_lagging_follower() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, dir.path(), 500);
    nodes.iter_mut().for_each(|n| n.start());
    let leader = wait_for_leader(&nodes);
    let lagging = (leader + 2) % 3;
    nodes[lagging].stop();
    // 1600 commands of ~4 KiB: a snapshot of ~6.5 MB, several 1 MiB chunks.
    let expected = write_many_padded(&nodes, "big", 1600, 4096);
    nodes[lagging].start();
    wait_converged(&nodes, &expected);
    let status = nodes[lagging].handle().status().unwrap();
    assert!(status.snapshot_index.0 >= 500, "{status:?}");
    nodes.iter_mut().for_each(|n| n.stop());
}
