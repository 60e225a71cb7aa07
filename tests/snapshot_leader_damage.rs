//! A leader whose own snapshot file is damaged on disk (real `rcraft serve` processes on
//! 127.0.0.1; a byte flipped in the data, or in the footer): it stops sending the damaged file,
//! says which file in its log, writes a new snapshot, and the follower that needed it catches
//! up. Every wait is bounded; processes are killed and directories removed on drop.

mod snapshot_support;

use rcraft::client::ClientOptions;
use rcraft::kv_client::KvClient;
use rcraft::wire::{NodeId, Role};
use snapshot_support::{Cluster, key, value, wait_for, write_keys};
use std::path::PathBuf;
use std::time::Duration;

/// The one complete snapshot file in node `id`'s data dir.
fn snapshot_file(cluster: &Cluster, id: usize) -> PathBuf {
    let dir = cluster.data_dir(id).join("snapshots");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

/// Where in the leader's snapshot file a byte is flipped.
#[derive(Clone, Copy)]
enum Flip {
    /// The middle of the file.
    Middle,
    /// Inside the first chunk: that chunk goes out before any check can have finished, so the
    /// follower holds damaged bytes and must fail its own whole-file check once.
    FirstChunk,
    /// The footer's data checksum: the file no longer opens.
    Footer,
}

/// Flips a byte of `path` in place, as bit rot would: in the data (a header is 36 bytes plus
/// the membership, a few dozen in all; the footer is the last 24 bytes, its data checksum at
/// 8..12: `storage/FORMAT.md` §3), or in the footer.
fn flip_byte(path: &PathBuf, flip: Flip) {
    let bytes = std::fs::read(path).unwrap();
    let at = match flip {
        Flip::Middle => bytes.len() / 2,
        Flip::FirstChunk => 500,
        Flip::Footer => bytes.len() - 24 + 9,
    };
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[bytes[at] ^ 0x20], at as u64).unwrap();
}

/// Makes node `id` the leader and reads every key through it.
fn check_keys_through(cluster: &Cluster, id: usize, count: usize, size: usize) {
    let mut client = cluster.client();
    let moved = wait_for("leadership to move", || {
        if cluster.status(id)?.role == Role::Leader {
            return Some(());
        }
        let _ = client.transfer_leader(NodeId(id as u64));
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    moved.unwrap_or_else(|| panic!("node {id} never led; logs:\n{}", cluster.logs()));
    let mut client = KvClient::new(&[cluster.addresses[id]], ClientOptions::default()).unwrap();
    for i in 0..count {
        let got = client.get(&key(i)).unwrap();
        assert_eq!(got, Some(value(i, size)), "key {i}");
    }
}

/// Runs the scenario; `more_writes` are made after the damage, before the follower returns
/// (then the new snapshot is at a later index, else it is rewritten under the same name).
fn follower_catches_up_from_a_leader_with_a_damaged_snapshot(flip: Flip, more_writes: usize) {
    let flags = [
        "--snapshot-every",
        "1000000",
        "--snapshot-retain-entries",
        "0",
        "--snapshot-chunk-bytes",
        "8192",
    ];
    let mut cluster = Cluster::start(&flags);
    let leader = cluster.wait_for_leader();
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let (count, size) = (600, 512);
    write_keys(&cluster, count, size);
    cluster.snapshot(leader);
    let damaged = snapshot_file(&cluster, leader);
    flip_byte(&damaged, flip);
    let mut client = cluster.client();
    for i in count..count + more_writes {
        client.put(&key(i), &value(i, size)).expect("put");
    }

    cluster.restart(follower);
    cluster.wait_caught_up(follower, leader);
    let leader_log = cluster.log_of(leader);
    let named = format!("snapshot file {} is damaged", damaged.display());
    assert!(
        leader_log.contains(&named),
        "the leader's log does not name the damaged file:\n{leader_log}"
    );
    assert_eq!(
        leader_log.matches(&named).count(),
        1,
        "reported more than once:\n{leader_log}"
    );
    assert!(
        cluster
            .log_of(follower)
            .contains("state restored from the snapshot at index"),
        "the follower caught up without a snapshot"
    );
    check_keys_through(&cluster, follower, count + more_writes, size);
}

#[test]
fn a_damaged_snapshot_is_rewritten_under_its_name_and_the_follower_catches_up() {
    follower_catches_up_from_a_leader_with_a_damaged_snapshot(Flip::Middle, 0);
}

#[test]
fn a_follower_that_received_damaged_bytes_catches_up_from_the_rewritten_snapshot() {
    follower_catches_up_from_a_leader_with_a_damaged_snapshot(Flip::FirstChunk, 0);
}

#[test]
fn a_snapshot_whose_footer_is_damaged_is_rewritten_and_the_follower_catches_up() {
    follower_catches_up_from_a_leader_with_a_damaged_snapshot(Flip::Footer, 0);
}

#[test]
fn a_damaged_snapshot_is_replaced_by_a_newer_one_and_the_follower_catches_up() {
    follower_catches_up_from_a_leader_with_a_damaged_snapshot(Flip::Middle, 20);
}
