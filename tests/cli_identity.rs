//! Cluster id and data-dir incarnation in every peer handshake, through the real binary
//! against `rcraft serve` processes on 127.0.0.1: a node whose data dir was wiped and that
//! comes back under its old id, and a node of another cluster pointed at this one, are refused
//! with a message naming why, on both sides, and neither moves the cluster's term; the wiped
//! node is accepted again once removed and added back; a node that does not know the cluster
//! id yet learns it, through the authenticated handshake of a cluster with a secret.
//! Processes are killed on drop.

mod snapshot_support;

use snapshot_support::{BIN, Cluster, wait_for};
use std::process::Command;
use std::time::Duration;

/// Election timeouts (default 150-300 ms) the refused node gets to disturb the cluster.
const WATCH: Duration = Duration::from_secs(2);

/// Waits until node `id`'s log contains `needle`.
fn wait_for_log(cluster: &Cluster, id: usize, needle: &str) {
    let found = wait_for(&format!("node {id} to log {needle:?}"), || {
        cluster.log_of(id).contains(needle).then_some(())
    });
    found.unwrap_or_else(|| {
        panic!(
            "node {id} never logged {needle:?}; logs:\n{}",
            cluster.logs()
        )
    });
}

/// `rcraft members ARGS --servers ...`, which must succeed.
fn members_ok(cluster: &Cluster, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("members")
        .args(args)
        .args(["--servers", &cluster.servers(), "--timeout-ms", "20000"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rcraft members {args:?}: {stdout}{}\nlogs:\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    stdout
}

/// The terms of the nodes `ids`, as they report them.
fn terms(cluster: &Cluster, ids: &[usize]) -> Vec<u64> {
    ids.iter()
        .map(|&id| cluster.status(id).expect("the node answers").term.0)
        .collect()
}

/// The `cluster_id` line of a data dir's identity file.
fn recorded_cluster_id(cluster: &Cluster, id: usize) -> String {
    let text = std::fs::read_to_string(cluster.data_dir(id).join("identity")).unwrap();
    let line = text.lines().find(|l| l.starts_with("cluster_id = "));
    line.expect("a cluster_id line")["cluster_id = ".len()..].to_string()
}

#[test]
fn a_wiped_node_is_refused_until_it_is_removed_and_added_again() {
    let mut cluster = Cluster::start(&[]);
    let leader = cluster.wait_for_leader();
    cluster.client().put(b"before", b"the wipe").unwrap();
    let wiped = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&id| id != wiped).collect();
    cluster.wait_caught_up(wiped, leader);

    cluster.kill(wiped);
    std::fs::remove_dir_all(cluster.data_dir(wiped)).unwrap();
    let before = terms(&cluster, &others);
    cluster.restart(wiped);
    let came_back = format!("node {wiped} came back with a new data dir");
    wait_for_log(&cluster, wiped, &format!("refuses this node: {came_back}"));
    for &id in &others {
        wait_for_log(&cluster, id, &format!("refusing node {wiped}: {came_back}"));
    }
    // Refused before any of its frames was read: however long it campaigns, nobody's term
    // moves and the leader stays.
    std::thread::sleep(WATCH);
    assert_eq!(terms(&cluster, &others), before, "{}", cluster.logs());
    assert_eq!(cluster.wait_for_leader(), leader);

    // What the message says to do: remove it, restart it empty with --join, add it again.
    members_ok(&cluster, &["remove", &wiped.to_string()]);
    cluster.kill(wiped);
    std::fs::remove_dir_all(cluster.data_dir(wiped)).unwrap();
    cluster.flags = vec!["--join".to_string()];
    cluster.restart(wiped);
    members_ok(&cluster, &["add", &wiped.to_string()]);
    let leader = cluster.wait_for_leader();
    cluster.wait_caught_up(wiped, leader);
    // It learned the cluster id from the cluster and recorded it.
    assert_eq!(
        recorded_cluster_id(&cluster, wiped),
        recorded_cluster_id(&cluster, leader)
    );
    let status = cluster.status(wiped).expect("the re-added node answers");
    assert_eq!(status.membership.voters.len(), 3, "{status:?}");
}

#[test]
fn a_node_of_another_cluster_is_refused() {
    let cluster = Cluster::start(&[]);
    let leader = cluster.wait_for_leader();
    // Another cluster, bootstrapped on its own addresses, then stopped.
    let mut other = Cluster::start(&[]);
    other.wait_for_leader();
    (0..3).for_each(|id| other.kill(id));
    let (ours, theirs) = (
        recorded_cluster_id(&cluster, 0),
        recorded_cluster_id(&other, 0),
    );
    assert_ne!(ours, theirs);

    // Its node 0 comes back pointed at this cluster's nodes 1 and 2: it believes they are its
    // fellow voters and campaigns at them with its own term and log.
    other.addresses[1] = cluster.addresses[1];
    other.addresses[2] = cluster.addresses[2];
    let before = terms(&cluster, &[0, 1, 2]);
    other.restart(0);
    let refused_here = format!(
        "refusing node 0: it belongs to cluster {theirs}, not to this node's cluster {ours}"
    );
    wait_for_log(&cluster, 1, &refused_here);
    wait_for_log(&cluster, 2, &refused_here);
    let refused_there = format!(
        "refuses this node: it belongs to cluster {ours} and this node to cluster {theirs}"
    );
    wait_for_log(&other, 0, &refused_there);

    std::thread::sleep(WATCH);
    assert_eq!(terms(&cluster, &[0, 1, 2]), before, "{}", cluster.logs());
    assert_eq!(cluster.wait_for_leader(), leader);
    cluster.client().put(b"still", b"serving").unwrap();
}

/// A node that does not know the cluster id yet (a spare: an address outside the initial
/// voters, like a `--join` node) runs the authenticated handshake of a cluster with a secret
/// under the id its peer names, learns it, and is added.
#[test]
fn a_spare_learns_the_cluster_id_through_an_authenticated_handshake() {
    use std::os::unix::fs::PermissionsExt;
    let files = tempfile::tempdir().unwrap();
    let secret = files.path().join("secret");
    std::fs::write(&secret, "the cluster secret, 2026\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret = secret.to_str().unwrap();
    let flags = ["--secret-file", secret, "--initial-voters", "0,1,2"];
    let cluster = Cluster::start_nodes(4, &flags);
    let leader = cluster.wait_for_leader();
    cluster.client().put(b"secret", b"kept").unwrap();
    let added = members_ok(&cluster, &["add", "3"]);
    assert!(added.contains("now voters 0,1,2,3"), "{added}");
    cluster.wait_caught_up(3, leader);
    assert_eq!(
        recorded_cluster_id(&cluster, 3),
        recorded_cluster_id(&cluster, 0)
    );
    let log = cluster.log_of(3);
    assert!(log.contains("learned the cluster id"), "{}", cluster.logs());
}
